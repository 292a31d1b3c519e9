"""Training with the profile applied (the authors' MLP recipe: at full width)."""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .data import Dataset
from .evaluation import accuracy
from .layers import set_width

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine", "step")
CUTS = ("full",)


@dataclass
class TrainConfig:
    """Training settings. ``lr=None`` picks 0.05 for SGD and 1e-3 for Adam."""

    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    seed: int = 0
    cut: str = "full"

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose {' or '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.cut not in CUTS:
            raise ValueError(f"unknown cut {self.cut!r}; choose one of {', '.join(CUTS)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch size must be at least 1")
        if self.lr is None:
            self.lr = 0.05 if self.optimizer == "sgd" else 1e-3
        if not self.lr > 0:
            raise ValueError(f"learning rate must be > 0, got {self.lr}")

    def to_dict(self) -> dict:
        return asdict(self)


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and PyTorch, and asks PyTorch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Builds the optimizer of ``config`` over the model's parameters."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def make_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig,
                  steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Builds a per-step learning-rate schedule over ``steps`` steps."""
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    if config.schedule == "step":  # ÷10 at 50% and 75% of training
        return torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=[steps // 2, (3 * steps) // 4], gamma=0.1)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)


def train(model: nn.Module, data: Dataset, config: TrainConfig,
          progress: bool | None = None) -> dict:
    """Trains ``model`` on ``data`` at full width with its profile applied.

    Args:
        model: a model with incomplete layers.
        data: the dataset; its train split is used.
        config: training settings.
        progress: show a tqdm bar; None shows it only on a terminal.

    Returns:
        Metrics: final training loss, test accuracy at full width, seconds taken.
    """
    loader = data.loader("train", config.batch_size, shuffle=True, seed=config.seed)
    optimizer = make_optimizer(model, config)
    schedule = make_schedule(optimizer, config, config.epochs * len(loader))
    set_width(model, 1.0)
    model.train()
    start = time.perf_counter()
    bar = tqdm(range(config.epochs), desc="train", unit="epoch",
               disable=None if progress is None else not progress)
    loss_value = float("nan")
    for _ in bar:
        total, count = 0.0, 0
        for x, y in loader:  # (B, C, H, W), (B,)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(y)
            count += len(y)
        loss_value = total / count
        bar.set_postfix(loss=f"{loss_value:.4f}")
    model.eval()
    return {
        "train_loss": loss_value,
        "test_accuracy": accuracy(model, data.test_x, data.test_y),
        "train_seconds": round(time.perf_counter() - start, 3),
    }


def train_run(out: str | Path, model_name: str, data: Dataset | str, config: TrainConfig,
              model_options: dict | None = None, progress: bool | None = None) -> Path:
    """Builds a registered model sized for the data, trains it, and writes a run directory.

    Args:
        out: the run directory to write.
        model_name: a registered model name.
        data: a dataset or its name.
        config: training settings (its seed also seeds the model's initialisation).
        model_options: model config fields (e.g. ``profile``, ``hidden``); the input
            channels, input size and class count come from the data.
        progress: show a progress bar; None shows it only on a terminal.

    Returns:
        The run directory.
    """
    from .checkpoint import save_run
    from .data import load_dataset
    from .models import get_model

    dataset = load_dataset(data) if isinstance(data, str) else data
    seed_everything(config.seed)
    options = {"in_channels": dataset.in_channels, "input_size": dataset.input_size,
               "num_classes": dataset.num_classes, **(model_options or {})}
    model = get_model(model_name, **options)
    metrics = train(model, dataset, config, progress=progress)
    return save_run(out, model, model_name, dataset.name, training=config.to_dict(),
                    metrics=metrics)
