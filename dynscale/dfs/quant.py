"""Fake quantization with a straight-through gradient, in two schemes.

- ``uniform`` (SPEC §4, the paper's): ``2^bits`` uniform levels over the min/max, weights per
  tensor, activations over their running min/max, at any bit-width.
- ``int8`` (what the CPU's int8 kernels compute, for the executable choice set): weights
  symmetric per output channel in qint8 (scale ``max|w| / 127.5``, levels -128..127, as
  PyTorch's per-channel weight observer), activations affine per tensor in quint8 (0..255, an
  integer zero point, the range widened to hold 0) over their running min/max. The kernels
  also round each convolution's and addition's output to 8 bits, and PyTorch's x86 engine
  calibrates activations with histograms in 7 bits (``reduce_range``); the simulation leaves
  those out (docs/dfs/README.md), so an executed point's accuracy is measured through the
  real kernels.
"""

from __future__ import annotations

import torch
from torch import nn

FULL = 32  # the bit-width that means "full precision"
SCHEMES = ("uniform", "int8")
INT8 = 8  # the one bit-width the int8 scheme quantizes to


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


def affine_qparams(low: torch.Tensor, high: torch.Tensor, qmax: int = 255) -> tuple[torch.Tensor, torch.Tensor]:
    """The scale and integer zero point of quint8 over ``[low, high]`` widened to hold 0, as
    PyTorch's min/max observers compute them (levels 0..``qmax``)."""
    low, high = low.clamp(max=0.0), high.clamp(min=0.0)
    scale = ((high - low) / qmax).clamp_min(torch.finfo(torch.float32).eps)
    zero_point = (-torch.round(low / scale)).clamp(0, qmax).to(torch.int32)
    return scale.reshape(()).float(), zero_point.reshape(())


def quantize_weight(weight: torch.Tensor, bits: int, scheme: str = "uniform") -> torch.Tensor:
    """A weight tensor at ``bits``: over its own min/max (``uniform``, per tensor), or
    symmetric per output channel in qint8 (``int8``, dimension 0).

    Raises:
        ValueError: for the int8 scheme at another bit-width than 8 (or full precision).
    """
    if bits >= FULL:
        return weight
    if scheme == "uniform":
        return fake_quantize(weight, bits, weight.detach().min(), weight.detach().max())
    _int8_only(bits)
    amax = weight.detach().abs().flatten(1).amax(1)  # (out channels,)
    scale = (amax / 127.5).clamp_min(torch.finfo(torch.float32).eps)
    return torch.fake_quantize_per_channel_affine(weight, scale, torch.zeros_like(scale, dtype=torch.int32), 0,
                                                  -128, 127)


def _int8_only(bits: int) -> None:
    if bits != INT8:
        raise ValueError(f"the int8 scheme quantizes to 8 bits only, not {bits}")


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

    def quantize(self, x: torch.Tensor, bits: int, scheme: str = "uniform") -> torch.Tensor:
        """``x`` at ``bits`` over the stored range (no update), in ``scheme`` (see the module)."""
        if bits >= FULL:
            return x
        if scheme == "uniform":
            return fake_quantize(x, bits, self.low, self.high)
        _int8_only(bits)
        scale, zero_point = affine_qparams(self.low, self.high)
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, 255)

    def forward(self, x: torch.Tensor, bits: int, scheme: str = "uniform") -> torch.Tensor:
        if self.training:
            self.update(x)
        return self.quantize(x, bits, scheme)
