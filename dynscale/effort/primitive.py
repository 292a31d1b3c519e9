"""Exact computation at a chosen subset of a convolution's output positions, at a cost
proportional to that subset: their im2col columns gathered, then ONE matrix product over all of
them, all output channels at once (per-position or per-tile products would each pay a call)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..eval.profiling import span


def gather_columns(x: torch.Tensor, positions: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
                   padding: tuple[int, int], dilation: tuple[int, int]) -> torch.Tensor:
    """The im2col columns of chosen output positions, gathered as rows of contiguous memory.

    The padded input is laid out channels-last once; then each kernel row of a window is one
    contiguous run of ``kw`` pixels × ``C`` channels, so the gather is one ``index_select``
    of ``N·kh`` runs (a gather of scattered single values, as advanced indexing of an
    ``unfold`` view does, is 5–30× slower on a CPU).

    Args:
        x: the input ``(B, C, H, W)``.
        positions: ``(N, 3)`` rows of (example, output row, output column).
        kernel, stride, padding, dilation: the convolution's.

    Returns:
        ``(N, kh·kw·C)``: each position's window, ordered (kernel row, kernel column,
        channel), zero padding included (:func:`rows_weight` orders a weight to match).
    """
    (kh, kw), (dh, dw) = kernel, dilation
    channels = x.shape[1]
    xn = F.pad(x.permute(0, 2, 3, 1), (0, 0, padding[1], padding[1], padding[0], padding[0]))  # (B, Hp, Wp, C)
    hp, wp = xn.shape[1:3]
    run = (kw - 1) * dw + 1  # pixels a kernel row spans
    pixels = xn.numel() // channels
    runs = xn.reshape(-1).as_strided((pixels - run + 1, run * channels), (channels, 1))  # a run from each pixel
    steps = torch.tensor([hp * wp, stride[0] * wp, stride[1]])  # pixels per example, per output row, per column
    rows = torch.arange(0, kh * dh * wp, dh * wp)  # the kernel rows' offsets
    starts = (positions * steps).sum(1, keepdim=True) + rows  # (N, kh): the first pixel of each kernel row's run
    picked = runs.index_select(0, starts.flatten())  # (N·kh, run·C)
    if dw > 1:
        picked = picked.view(-1, run, channels)[:, ::dw]
    return picked.reshape(len(positions), kh * kw * channels)


def rows_weight(weight: torch.Tensor) -> torch.Tensor:
    """``(kh·kw·C_in, C_out)``: a convolution's weight ordered as :func:`gather_columns`' columns."""
    return weight.permute(2, 3, 1, 0).reshape(-1, weight.shape[0]).contiguous()


def conv_at(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, positions: torch.Tensor,
            stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
            ordered_weight: torch.Tensor | None = None) -> torch.Tensor:
    """The convolution's exact output at the chosen positions only: their im2col columns
    gathered, then one matrix product.

    Args:
        x: the input ``(B, C_in, H, W)``.
        weight: ``(C_out, C_in, kh, kw)``; bias ``(C_out,)`` or None.
        positions: ``(N, 3)`` rows of (example, output row, output column).
        stride, padding, dilation: the convolution's.
        ordered_weight: :func:`rows_weight` of ``weight``, if kept (made here otherwise).

    Returns:
        ``(N, C_out)``; costs N · C_out · C_in · kh · kw multiply-accumulates.
    """
    with span("effort.gather"):
        columns = gather_columns(x, positions, tuple(weight.shape[2:]), stride, padding, dilation)
    with span("effort.kernel"):
        flat = rows_weight(weight) if ordered_weight is None else ordered_weight
        return columns @ flat if bias is None else torch.addmm(bias, columns, flat)  # (N, C_out)
