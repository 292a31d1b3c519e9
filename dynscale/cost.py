"""The cost model shared by every method: multiply-accumulates and parameters that really run.

Wall-clock time is measured by the evaluation engine (``dynscale.eval.timing``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Puts modules in eval mode and afterwards restores every submodule's own training flag
    (restoring only the top module's flag would, for a wrapper built in training mode, switch
    the network inside to training mode)."""
    flags = [(m, m.training) for module in modules for m in module.modules()]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for m, training in flags:
            m.training = training


def count_macs(model: nn.Module, example: torch.Tensor) -> float:
    """Counts multiply-accumulates per example on the ops that actually run.

    Uses ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2) on one forward pass.

    Args:
        model: the model, at whatever width it is set to.
        example: an input batch ``(B, C, H, W)``; the count is divided by B.

    Returns:
        MACs per example.
    """
    with eval_mode(model), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(example)
    return counter.get_total_flops() / 2 / example.shape[0]


def count_parameters(model: nn.Module, example: torch.Tensor) -> int:
    """Counts the parameters a forward pass really uses.

    Only modules that run count (a multiple-profile model runs one member), each once however
    often it runs; a width-scaled layer counts its sliced weights (``active_parameters()``).

    Args:
        model: the model, at whatever width it is set to.
        example: an input batch ``(B, C, H, W)``.

    Returns:
        The number of parameters used.
    """
    used: dict[int, int] = {}

    def record(module: nn.Module, *_) -> None:
        if hasattr(module, "active_parameters"):
            used[id(module)] = module.active_parameters()
        else:
            used[id(module)] = sum(p.numel() for p in module.parameters(recurse=False))

    hooks = [m.register_forward_hook(record) for m in model.modules()]
    try:
        with eval_mode(model), torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    return sum(used.values())
