"""Training settings every recipe shares, and the optimizer, schedule and data they build."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..data import Dataset
from ..schema import Int, Num, Optional, Str, check_fields, setting

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine", "step")


@dataclass
class TrainConfig:
    """Settings shared by every recipe (a recipe's own settings live on the recipe).

    ``lr=None`` picks 0.05 for SGD and 1e-3 for Adam.
    """

    epochs: int = setting(30, "passes over the training data", Int(1))
    batch_size: int = setting(64, "examples per optimizer step", Int(1))
    optimizer: str = setting("sgd", "the optimizer", Str(OPTIMIZERS))
    lr: float | None = setting(None, "learning rate (default 0.05 for sgd, 0.001 for adam)",
                               Optional(Num(0.0, low_open=True)))
    momentum: float = setting(0.9, "SGD momentum, in [0, 1)", Num(0.0, 1.0, high_open=True))
    weight_decay: float = setting(0.0, "L2 weight decay, >= 0", Num(0.0))
    decay_bn_bias: bool = setting(True, "weight decay on batch-norm and bias parameters too (off: on the weights "
                                  "of convolutions and linear layers only, as BigNAS)")
    schedule: str = setting("cosine", "learning-rate schedule over the steps", Str(SCHEDULES))
    seed: int = setting(0, "seed of the initialisation and data order", Int(0))
    train_limit: int | None = setting(None, "train on N examples of a fixed shuffle (default: all)",
                                      Optional(Int(1)))
    holdout: int = setting(0, "training examples kept out (to fit adaptive policies on later)", Int(0))

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose {' or '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch size must be at least 1")
        if self.holdout < 0:
            raise ValueError(f"holdout must be >= 0 examples, got {self.holdout}")
        if self.train_limit is not None and self.train_limit < 1:
            raise ValueError(f"train limit must be at least 1, got {self.train_limit}")
        if self.lr is None:
            self.lr = 0.05 if self.optimizer == "sgd" else 1e-3
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"learning rate must be a finite number > 0, got {self.lr}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def check_dict(cls, values: dict, where: str = "training") -> None:
        """Checks the training settings a run's config records (each one given, by its field).

        Raises:
            SchemaError: naming the field.
        """
        check_fields(cls, values, where, partial=True)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Builds a config from a dict, ignoring keys that are not its fields."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and PyTorch, and asks PyTorch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def make_optimizer(parameters: Iterable[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """Builds the optimizer of ``config`` over ``parameters`` (without ``decay_bn_bias``, the
    one-dimensional ones, batch-norm scales and shifts and biases, in a group without decay)."""
    groups: list = list(parameters)
    if config.weight_decay and not config.decay_bn_bias:
        groups = [{"params": [p for p in groups if p.dim() > 1]},
                  {"params": [p for p in groups if p.dim() <= 1], "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)


def make_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig,
                  steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Builds a per-step learning-rate schedule over ``steps`` steps."""
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    if config.schedule == "step":  # ÷10 at 50% and 75% of training
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[steps // 2, (3 * steps) // 4], gamma=0.1)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)


def training_subset(data: Dataset, config: TrainConfig) -> Dataset:
    """The training examples a run uses: all but the held-out ones (``config.holdout``), or
    ``config.train_limit`` of those by a fixed shuffle."""
    if config.holdout:
        data, _ = data.split_holdout(config.holdout)
    return data.limit(config.train_limit, seed=config.seed) if config.train_limit else data


def sized_for(data: Dataset, model_options: dict | None = None) -> dict:
    """Model options with the input channels, input size and class count of ``data``.

    Raises:
        ValueError: if the options set one of those to something else than the data has.
    """
    sized = {"in_channels": data.in_channels, "input_size": data.input_size, "num_classes": data.num_classes}
    for key, value in (model_options or {}).items():
        if key in sized and value != sized[key]:
            raise ValueError(f"model option {key}={value!r} does not match the data ({data.name} has "
                             f"{key}={sized[key]}); drop it, it comes from the data")
    return {**sized, **(model_options or {})}
