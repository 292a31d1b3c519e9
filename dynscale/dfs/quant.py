"""Uniform min/max fake quantization with a straight-through gradient (SPEC §4): weights per
tensor, activations by running min/max."""

from __future__ import annotations

import torch
from torch import nn

FULL = 32  # the bit-width that means "full precision"


def fake_quantize(x: torch.Tensor, bits: int, low: torch.Tensor | float, high: torch.Tensor | float) -> torch.Tensor:
    """Rounds ``x`` to the ``2^bits`` levels of [low, high] (clamping outside), with the
    gradient passed straight through.

    Args:
        x: any tensor.
        bits: the bit-width (``FULL`` or more: returned unchanged).
        low, high: the range.

    Returns:
        The quantized tensor, same shape; its gradient with respect to ``x`` is 1.
    """
    if bits >= FULL:
        return x
    low = torch.as_tensor(low, dtype=x.dtype)
    high = torch.as_tensor(high, dtype=x.dtype)
    scale = (high - low).clamp_min(1e-8) / (2 ** bits - 1)
    q = torch.round((x.clamp(low, high) - low) / scale) * scale + low
    return x + (q - x).detach()


def quantize_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """A weight tensor quantized over its own min/max (per tensor)."""
    if bits >= FULL:
        return weight
    return fake_quantize(weight, bits, weight.detach().min(), weight.detach().max())


class RangeTracker(nn.Module):
    """The running min/max of an activation, for quantizing it.

    In training mode each batch moves the range towards the batch's min/max (exponential
    average, ``momentum``); in eval mode the stored range is used.
    """

    def __init__(self, momentum: float = 0.1) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("low", torch.tensor(0.0))
        self.register_buffer("high", torch.tensor(0.0))
        self.register_buffer("seen", torch.tensor(False))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        low, high = x.min(), x.max()
        if not bool(self.seen):
            self.low.copy_(low)
            self.high.copy_(high)
            self.seen.fill_(True)
        else:
            self.low.lerp_(low, self.momentum)
            self.high.lerp_(high, self.momentum)

    def quantize(self, x: torch.Tensor, bits: int) -> torch.Tensor:
        """``x`` at ``bits`` over the stored range (no update)."""
        if bits >= FULL:
            return x
        return fake_quantize(x, bits, self.low, self.high)

    def forward(self, x: torch.Tensor, bits: int) -> torch.Tensor:
        if self.training:
            self.update(x)
        return self.quantize(x, bits)
