"""Accuracy of a model on a dataset split."""

from __future__ import annotations

import torch
from torch import nn

from ..cost import eval_mode
from ..device import model_device, to_device


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Returns top-1 accuracy in [0, 1] of ``model`` on ``(x, y)``, in eval mode, on the
    model's device: each batch of inputs is put there (a no-op where it already is), the
    labels stay where they are.

    Args:
        model: the model at whatever width it is set to.
        x: inputs ``(N, C, H, W)``.
        y: labels ``(N,)``.
        batch_size: examples per forward pass.

    Returns:
        The share of examples whose highest logit is their label.
    """
    device = model_device(model)
    correct = 0
    with eval_mode(model):
        for start in range(0, len(x), batch_size):
            logits = model(to_device(x[start:start + batch_size], device))  # (b, classes)
            # Labels are compared where they are: only b class indices cross, not the logits.
            correct += (logits.argmax(1).to(y.device) == y[start:start + batch_size]).sum().item()
    return correct / max(1, len(x))
