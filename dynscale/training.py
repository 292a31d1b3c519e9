"""Training with the profile applied (the authors' MLP recipe: at full width)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .data import Dataset
from .evaluation import accuracy
from .layers import (
    PROFILE_GRADIENTS,
    check_width,
    incomplete_layers,
    set_profile_gradient,
    set_width,
    width_scaled,
)

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine", "step")
CUTS = ("full", "random")
RECIPES = ("idp", "us", "independent")


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
    cut: str = "full"  # "full": the MLP recipe; "random": the authors' per-layer random cuts
    profile_gradient: str = "chain"  # or "straight-through" (weight gradient without γ)
    train_limit: int | None = None  # train on the first N examples of a fixed shuffle
    holdout: int = 0  # examples set aside (Dataset.split_holdout) for fitting adaptive policies
    # "idp": the paper's recipes (by `cut`); "us": universally slimmable (sandwich rule and
    # in-place distillation); "independent": one network per width in `family_widths`.
    recipe: str = "idp"
    sandwich: int = 4  # widths per "us" step: the largest, the smallest, sandwich − 2 random
    min_width: float = 0.25  # the smallest width "us" trains
    distill: bool = True  # "us": narrower widths learn from the largest width's soft output
    family_widths: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose {' or '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.cut not in CUTS:
            raise ValueError(f"unknown cut {self.cut!r}; choose one of {', '.join(CUTS)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch size must be at least 1")
        if self.profile_gradient not in PROFILE_GRADIENTS:
            raise ValueError(f"unknown profile gradient {self.profile_gradient!r}; "
                             f"choose {' or '.join(PROFILE_GRADIENTS)}")
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; choose one of {', '.join(RECIPES)}")
        if self.sandwich < 2:
            raise ValueError(f"the sandwich rule needs at least 2 widths, got {self.sandwich}")
        check_width(self.min_width)
        self.family_widths = sorted(check_width(w) for w in self.family_widths)
        if not self.family_widths or self.family_widths[-1] != 1.0:
            raise ValueError(f"independent widths must include 1.0, got {self.family_widths}")
        if self.holdout < 0:
            raise ValueError(f"holdout must be >= 0 examples, got {self.holdout}")
        if self.train_limit is not None and self.train_limit < 1:
            raise ValueError(f"train limit must be at least 1, got {self.train_limit}")
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


def training_subset(data: Dataset, config: TrainConfig) -> Dataset:
    """The training examples a run uses: all but the held-out ones (``config.holdout``), or
    ``config.train_limit`` of those by a fixed shuffle."""
    if config.holdout:
        data, _ = data.split_holdout(config.holdout)
    return data.limit(config.train_limit, seed=config.seed) if config.train_limit else data


def draw_cut(generator: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    """The authors' random cut: p = 1 − d, d ~ Exponential(scale 0.1), redrawn until d < 1.

    With a profile range (low, high] (multiple profiles) p is mapped to low + (high − low)·p.

    Args:
        generator: the random source (seeded for reproducible training).
        low, high: the range of widths to draw from.

    Returns:
        A width in (low, high].
    """
    while True:
        d = torch.empty(1).exponential_(10.0, generator=generator).item()  # rate 10 = scale 0.1
        if d < 1.0:
            return low + (high - low) * (1.0 - d)


def apply_random_cuts(model: nn.Module, generator: torch.Generator, low: float = 0.0,
                      high: float = 1.0) -> None:
    """Draws a fresh input width for every incomplete layer whose input is cut.

    Every layer computes all its outputs (out width 1) so that each next layer can take its
    own draw of the prefix; this is how the authors' masked implementation behaves.
    """
    for m in width_scaled(model):
        m.in_width, m.out_width = 1.0, 1.0
    for layer in incomplete_layers(model):
        if layer.cut_input:
            layer.in_width = draw_cut(generator, low, high)


def sandwich_backward(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig,
                      generator: torch.Generator, low: float, high: float) -> torch.Tensor:
    """One universally slimmable step's gradients (SPEC §5), accumulated over its widths.

    The largest width learns from the labels; the smallest and ``sandwich − 2`` random widths
    learn from the largest width's detached softmax (in-place distillation), or from the
    labels with ``distill=False``. The losses are averaged over the widths, so a learning rate
    means the same as for one network (summing them made VGG-16 steps about 4× too large).
    The caller takes one optimizer step afterwards.

    Returns:
        The largest width's loss.
    """
    widths = [high, low] + [low + (high - low) * torch.rand(1, generator=generator).item()
                            for _ in range(config.sandwich - 2)]
    scale = 1.0 / len(widths)
    set_width(model, high)
    logits = model(x)  # (B, classes)
    loss = F.cross_entropy(logits, y)
    (loss * scale).backward()
    teacher = logits.detach().softmax(dim=1)
    for w in widths[1:]:
        set_width(model, w)
        student = model(x)
        if config.distill:
            narrow_loss = -(teacher * F.log_softmax(student, dim=1)).sum(dim=1).mean()
        else:
            narrow_loss = F.cross_entropy(student, y)
        (narrow_loss * scale).backward()
    set_width(model, high)
    return loss.detach()


def run_epochs(model: nn.Module, loader, optimizer: torch.optim.Optimizer,
               schedule: torch.optim.lr_scheduler.LRScheduler, epochs: int,
               backward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], progress: bool | None = None,
               desc: str = "train", before_epoch: Callable[[], None] | None = None,
               step_hook: Callable[[], None] | None = None) -> float:
    """The training loop shared by every recipe: per batch, clear the gradients, let
    ``backward(x, y)`` compute them and return the loss, step the optimizer and the schedule,
    and run the layers' ``after_step`` hooks (weight clipping, caches).

    Args:
        model: the model whose layers' ``after_step`` hooks run.
        loader: ``(x, y)`` batches.
        optimizer, schedule: stepped once per batch.
        epochs: passes over ``loader``.
        backward: computes the gradients of one batch and returns its (detached or not) loss.
        progress: show a tqdm bar; None shows it only on a terminal.
        desc: the bar's label.
        before_epoch: called before every epoch (e.g. to set train/eval modes).
        step_hook: called after every optimizer step.

    Returns:
        The last epoch's mean training loss.
    """
    after_step_layers = [m for m in model.modules() if hasattr(m, "after_step")]
    bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=None if progress is None else not progress)
    loss_value = float("nan")
    for _ in bar:
        if before_epoch is not None:
            before_epoch()
        total, count = 0.0, 0
        for x, y in loader:  # (B, C, H, W), (B,)
            optimizer.zero_grad(set_to_none=True)
            loss = backward(x, y)
            optimizer.step()
            schedule.step()
            for m in after_step_layers:
                m.after_step()
            if step_hook is not None:
                step_hook()
            total += loss.item() * len(y)
            count += len(y)
        loss_value = total / count
        bar.set_postfix(loss=f"{loss_value:.4f}")
    return loss_value


def train(model: nn.Module, data: Dataset, config: TrainConfig, progress: bool | None = None,
          width_range: tuple[float, float] = (0.0, 1.0), step_hook=None) -> dict:
    """Trains ``model`` on ``data`` with its profile applied.

    With ``cut="full"`` every step runs at the top of ``width_range`` (full width by default,
    the authors' MLP recipe); with ``cut="random"`` every incomplete layer draws its own width
    each step (their convolutional recipe).

    Args:
        model: a model with incomplete layers.
        data: the dataset; its train split is used.
        config: training settings.
        progress: show a tqdm bar; None shows it only on a terminal.
        width_range: (low, high] widths to train; multiple profiles train one range each.
        step_hook: called with no arguments after every optimizer step.

    Returns:
        Metrics: final training loss, test accuracy at the top width, seconds taken.
    """
    loader = training_subset(data, config).loader("train", config.batch_size, shuffle=True, seed=config.seed)
    optimizer = make_optimizer(model, config)
    schedule = make_schedule(optimizer, config, config.epochs * len(loader))
    cut_generator = torch.Generator().manual_seed(config.seed + 1)
    set_profile_gradient(model, config.profile_gradient)
    low, high = width_range
    set_width(model, high)

    def backward(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if config.recipe == "us":
            return sandwich_backward(model, x, y, config, cut_generator, max(low, config.min_width), high)
        if config.cut == "random":
            apply_random_cuts(model, cut_generator, low, high)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    model.train()
    start = time.perf_counter()
    loss_value = run_epochs(model, loader, optimizer, schedule, config.epochs, backward, progress,
                            step_hook=step_hook)
    set_width(model, high)
    set_profile_gradient(model, "chain")
    model.eval()
    return {
        "train_loss": loss_value,
        "test_accuracy": accuracy(model, data.test_x, data.test_y),
        "train_seconds": round(time.perf_counter() - start, 3),
    }


def sized_for(data: Dataset, model_options: dict | None = None) -> dict:
    """Model options with the input channels, input size and class count of ``data`` (the
    given options may override them)."""
    return {"in_channels": data.in_channels, "input_size": data.input_size,
            "num_classes": data.num_classes, **(model_options or {})}


def train_run(out: str | Path, model_name: str, data: Dataset | str, config: TrainConfig,
              model_options: dict | None = None, progress: bool | None = None,
              profile_ranges: list[tuple[float, float]] | None = None,
              calibrate: list[float] | None = None) -> Path:
    """Builds a registered model sized for the data, trains it, and writes a run directory.

    Args:
        out: the run directory to write.
        model_name: a registered model name.
        data: a dataset or its name.
        config: training settings (its seed also seeds the model's initialisation).
        model_options: model config fields (e.g. ``profile``, ``width_mult``); the input
            channels, input size and class count come from the data.
        progress: show a progress bar; None shows it only on a terminal.
        profile_ranges: train a multiple-profile model over these width ranges.
        calibrate: widths whose batch-norm statistics to measure after training.

    Returns:
        The run directory.
    """
    from .calibration import calibrate_bn
    from .checkpoint import build_model, save_run
    from .data import load_dataset
    from .layers import incomplete_batchnorms

    dataset = load_dataset(data) if isinstance(data, str) else data
    seed_everything(config.seed)
    options = sized_for(dataset, model_options)
    shared = True
    if config.recipe == "independent":
        if profile_ranges:
            raise ValueError("the independent recipe trains one network per width; it takes no --profiles")
        widths = config.family_widths
        profile_ranges, shared = list(zip([0.0, *widths[:-1]], widths, strict=True)), False
    model = build_model(model_name, options, profile_ranges, shared=shared)
    if calibrate and not incomplete_batchnorms(model):
        raise ValueError(f"model {model_name!r} has no batch-norm to calibrate; drop --calibrate")
    if config.recipe == "us" and calibrate is None and incomplete_batchnorms(model):
        calibrate = sorted({config.min_width, 0.25, 0.5, 0.75, 1.0})  # US needs per-width statistics
    if profile_ranges:
        from .multiprofile import train_multi_profile

        metrics = train_multi_profile(model, dataset, config, progress=progress)
    else:
        metrics = train(model, dataset, config, progress=progress)
    if calibrate:
        calibrate_bn(model, calibration_loader(dataset, config), calibrate, progress=progress)
        set_width(model, 1.0)
        metrics["test_accuracy"] = accuracy(model, dataset.test_x, dataset.test_y)
    return save_run(out, model, model_name, dataset.name, training=config.to_dict(),
                    metrics=metrics)


def calibration_loader(data: Dataset, config: TrainConfig, batches: int = 20):
    """Training batches for batch-norm calibration: the run's own training subset, in a fixed
    order, at most ``batches`` batches of 256."""
    subset = training_subset(data, config).limit(batches * 256, seed=config.seed)
    return subset.loader("train", 256)
