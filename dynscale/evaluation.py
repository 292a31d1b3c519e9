"""Accuracy of a model on a dataset split, and whether a model fits a dataset."""

from __future__ import annotations

import torch
from torch import nn

from .cost import eval_mode
from .data import Dataset
from .errors import DynscaleError


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Returns top-1 accuracy in [0, 1] of ``model`` on ``(x, y)``, in eval mode.

    Args:
        model: the model at whatever width it is set to.
        x: inputs ``(N, C, H, W)``.
        y: labels ``(N,)``.
        batch_size: examples per forward pass.
    """
    correct = 0
    with eval_mode(model):
        for start in range(0, len(x), batch_size):
            logits = model(x[start:start + batch_size])  # (b, classes)
            correct += (logits.argmax(1) == y[start:start + batch_size]).sum().item()
    return correct / max(1, len(x))


def check_compatible(model_config: dict, data: Dataset, what: str) -> None:
    """Checks a model's input shape and class count against a dataset.

    Raises:
        DynscaleError: naming both shapes when they differ.
    """
    wanted = {"in_channels": data.in_channels, "input_size": data.input_size,
              "num_classes": data.num_classes}
    for key, value in wanted.items():
        if key in model_config and model_config[key] != value:
            raise DynscaleError(
                f"{what} has {key}={model_config[key]} but dataset {data.name} has {value}; "
                "evaluate it on data shaped like its training data"
            )
