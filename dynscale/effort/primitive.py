"""The one primitive every effort knob uses, in PyTorch: a convolution computed exactly at a
chosen subset of its output positions (gather each position's input window, then one matmul),
or a linear layer at a chosen subset of its neurons, at a cost proportional to that subset.

:func:`dynscale.effort.kernels.conv_at_positions` is the same convolution compiled (numba),
with SPET, SDSS and SFMA's per-neuron and per-channel decisions inside; the PyTorch code here is
its reference and its fallback.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gather_windows(x: torch.Tensor, positions: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
                   padding: tuple[int, int], dilation: tuple[int, int]) -> torch.Tensor:
    """The input windows of chosen output positions.

    Args:
        x: the input ``(B, C, H, W)``.
        positions: ``(N, 3)`` rows of (example, output row, output column).
        kernel, stride, padding, dilation: the convolution's.

    Returns:
        ``(N, C, kh, kw)``: each position's window (zero padding included).
    """
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True)]
    xp = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    windows = xp.unfold(2, span[0], stride[0]).unfold(3, span[1], stride[1])  # (B, C, H', W', span, span), a view
    picked = windows[positions[:, 0], :, positions[:, 1], positions[:, 2]]  # (N, C, span, span)
    return picked[:, :, ::dilation[0], ::dilation[1]]


def conv_at(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, positions: torch.Tensor,
            stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int]) -> torch.Tensor:
    """The convolution's exact output at the chosen positions only.

    Args:
        x: the input ``(B, C_in, H, W)``.
        weight: ``(C_out, C_in, kh, kw)``; bias ``(C_out,)`` or None.
        positions: ``(N, 3)`` rows of (example, output row, output column).
        stride, padding, dilation: the convolution's.

    Returns:
        ``(N, C_out)``; costs N · C_out · C_in · kh · kw multiply-accumulates.
    """
    windows = gather_windows(x, positions, tuple(weight.shape[2:]), stride, padding, dilation)
    out = windows.flatten(1) @ weight.flatten(1).t()  # (N, C_out)
    return out if bias is None else out + bias


def linear_at(x: torch.Tensor, weight: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """A linear layer's dot products for chosen (example, neuron) pairs only.

    Args:
        x: inputs ``(B, K)``.
        weight: ``(N_out, K)``.
        pairs: ``(N, 2)`` rows of (example, neuron).

    Returns:
        ``(N,)``: ``x[b] · weight[o]`` for each pair; costs N · K multiply-accumulates.
    """
    if len(pairs) == 0:
        return x.new_zeros(0)
    return torch.einsum("nk,nk->n", x[pairs[:, 0]], weight[pairs[:, 1]])
