"""The cost model shared by every method: counted MACs and measured latency."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.benchmark import Timer
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


@dataclass
class LatencyConfig:
    """How latency is measured: batch sizes, threads, and seconds of timing per point."""

    batch_sizes: list[int] = field(default_factory=lambda: [1, 64])
    threads: int = 1
    min_run_time: float = 0.3


def median_seconds(fn: Callable[[], object], threads: int = 1, min_run_time: float = 0.3) -> float:
    """Median seconds of one call of ``fn``, with ``torch.utils.benchmark.Timer`` (gradients off).

    Args:
        fn: what to time.
        threads: intra-op threads while timing.
        min_run_time: seconds of timing (``blocked_autorange``).
    """
    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads, setup="torch.set_grad_enabled(False)")
    return timer.blocked_autorange(min_run_time=min_run_time).median


def measure_latency(model: nn.Module, example_shape: tuple[int, ...], batch_size: int,
                    threads: int = 1, min_run_time: float = 0.3) -> float:
    """Median wall-clock latency of one forward pass, with ``torch.utils.benchmark.Timer``.

    Args:
        model: the model, at whatever width it is set to.
        example_shape: shape of one example, e.g. ``(1, 28, 28)``.
        batch_size: examples per forward pass.
        threads: intra-op threads used while timing.
        min_run_time: seconds of timing (``blocked_autorange``).

    Returns:
        Median milliseconds per forward pass.
    """
    x = torch.randn(batch_size, *example_shape)
    with eval_mode(model), torch.no_grad():
        model(x)  # warm-up, and fills the layers' folded-weight cache
        return median_seconds(lambda: model(x), threads, min_run_time) * 1e3
