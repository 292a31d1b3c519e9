"""Training early exits (SPEC §3): jointly with the backbone, or on a frozen pretrained one.
The loss is the weighted mean of every exit's cross-entropy, the final output included."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Dataset
from ..train import Recipe, TrainConfig, Trainer, register_recipe
from .exits import EarlyExitNet, exit_accuracies


def parse_exit_weights(weights: Sequence[float] | None, count: int) -> list[float]:
    """Validates per-exit loss weights (one per exit plus one for the final output).

    Raises:
        ValueError: for a wrong count, a negative or non-finite weight, or all zero.
    """
    if weights is None:
        return [1.0] * count
    weights = [float(w) for w in weights]
    if len(weights) != count:
        raise ValueError(f"give {count} exit loss weights (one per exit, then the final output), got {len(weights)}")
    if any(not (w >= 0 and w < float("inf")) for w in weights) or sum(weights) <= 0:
        raise ValueError(f"exit loss weights must be finite, >= 0 and not all 0, got {weights}")
    return weights


@register_recipe
@dataclass
class EarlyExits(Recipe):
    """Backbone and exits trained jointly on the weighted mean of the exits' losses."""

    name = "early-exit"
    exit_weights: list[float] | None = None  # one per exit, then the final output; all 1 by default

    def losses(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, rng: torch.Generator,
               phase: int) -> Iterator[torch.Tensor]:
        outputs = model(x)  # [(B, classes)] per exit, then the final output
        weights = parse_exit_weights(self.exit_weights, len(outputs))
        yield sum(w * F.cross_entropy(o, y) for w, o in zip(weights, outputs, strict=True)) / sum(weights)

    def evaluate(self, model: nn.Module, data: Dataset, phase: int) -> dict:
        return {"exit_accuracy": exit_accuracies(model, data.test_x, data.test_y)}


@register_recipe
@dataclass
class FrozenExits(EarlyExits):
    """Only the exits train; the backbone's weights and batch-norm statistics stay as they are."""

    name = "frozen-exits"

    def parameters(self, model: nn.Module, phase: int) -> Iterator[nn.Parameter]:
        return model.exits.parameters()

    def begin(self, model: nn.Module, phase: int) -> None:
        model.backbone.requires_grad_(False)

    def end(self, model: nn.Module, phase: int) -> None:
        model.backbone.requires_grad_(True)

    def train_mode(self, model: nn.Module, phase: int) -> None:
        model.train()
        model.backbone.eval()


def train_early_exit(net: EarlyExitNet, data: Dataset, config: TrainConfig,
                     exit_weights: Sequence[float] | None = None, freeze_backbone: bool = False,
                     progress: bool | None = None) -> dict:
    """Trains the exits, jointly with the backbone or on a frozen (pretrained) backbone.

    Args:
        net: the network.
        data: the dataset; the run's held-out examples (``config.holdout``) are left out.
        config: shared training settings.
        exit_weights: loss weight per exit, then the final output; all 1 by default.
        freeze_backbone: train only the exits.
        progress: show a progress bar; None shows it only on a terminal.

    Returns:
        Metrics: final training loss, test accuracy per exit, seconds taken.
    """
    weights = parse_exit_weights(exit_weights, len(net.node_names))
    recipe = FrozenExits(weights) if freeze_backbone else EarlyExits(weights)
    return Trainer(net, data, config, recipe, progress).fit()
