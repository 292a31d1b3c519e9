"""Accuracy of a model on a dataset split."""

from __future__ import annotations

import torch
from torch import nn

from ..cost import eval_mode


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
