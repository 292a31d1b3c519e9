"""The dense kernels every effort layer runs on: a convolution as PyTorch runs it, as oneDNN runs
it, or as im2col and one matrix product (BLAS), whichever the measured cost table says is
fastest for the layer's shape and batch size (at batch 1 PyTorch's convolution is slow on the
2×2 maps at the end of a network, where the matrix product is not, and on strided ones, where
oneDNN is not), and the scatter of exactly computed positions back into a map."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# conv: PyTorch's own choice (at batch 1 its im2col path, at larger batches oneDNN); onednn:
# oneDNN at every batch (faster for strided convolutions at batch 1); gemm: conv_gemm below.
KERNELS = ("conv", "onednn", "gemm") if torch.backends.mkldnn.is_available() else ("conv", "gemm")


def out_size(size: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
             dilation: tuple[int, int]) -> tuple[int, int]:
    """A convolution's output height and width for an input of ``size``."""
    return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                 for n, k, s, p, d in zip(size, kernel, stride, padding, dilation, strict=True))


def conv_gemm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple[int, int],
              padding: tuple[int, int], dilation: tuple[int, int], columns_weight: torch.Tensor | None = None
              ) -> torch.Tensor:
    """A convolution as im2col and one matrix product, positions as the rows: (positions ×
    C_in·kh·kw) @ (C_in·kh·kw × C_out). On the few positions of a small map this orientation
    keeps BLAS on a wide product, where PyTorch's own batch-1 path (the transposed product)
    is several times slower.

    Args:
        x: ``(B, C_in, H, W)``; weight ``(C_out, C_in, kh, kw)``; bias ``(C_out,)`` or None.
        stride, padding, dilation: the convolution's.
        columns_weight: ``weight.flatten(1).t()`` made contiguous once (a layer keeps it).

    Returns:
        ``(B, C_out, H', W')``, equal to ``F.conv2d`` up to float rounding.
    """
    height, width = out_size(x.shape[2:], weight.shape[2:], stride, padding, dilation)
    if columns_weight is None:
        columns_weight = weight.flatten(1).t()  # (C_in·kh·kw, C_out)
    columns = F.unfold(x, weight.shape[2:], dilation, padding, stride).transpose(1, 2)  # (B, H'·W', C_in·kh·kw)
    if len(x) == 1:
        out = columns[0] @ columns_weight if bias is None else torch.addmm(bias, columns[0], columns_weight)
        out = out[None]  # (1, H'·W', C_out)
    else:
        out = torch.matmul(columns, columns_weight)  # (B, H'·W', C_out)
        if bias is not None:
            out += bias
    return out.transpose(1, 2).reshape(len(x), weight.shape[0], height, width)


def convolve(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple[int, int],
             padding: tuple[int, int], dilation: tuple[int, int], kernel: str = "conv",
             columns_weight: torch.Tensor | None = None) -> torch.Tensor:
    """The convolution with ``kernel``: ``"conv"`` (``F.conv2d``), ``"onednn"`` (oneDNN's
    convolution) or ``"gemm"`` (:func:`conv_gemm`, with ``columns_weight`` if given)."""
    if kernel == "gemm":
        return conv_gemm(x, weight, bias, stride, padding, dilation, columns_weight)
    if kernel == "onednn":
        return torch.mkldnn_convolution(x, weight, bias, padding, stride, dilation, 1)
    return F.conv2d(x, weight, bias, stride, padding, dilation)


def scatter_positions(out: torch.Tensor, positions: torch.Tensor, values: torch.Tensor) -> None:
    """Writes ``values`` ``(N, C)`` at ``positions`` ``(N, 3)`` (example, row, column) of
    ``out`` ``(B, C, H, W)``, in place."""
    out[positions[:, 0], :, positions[:, 1], positions[:, 2]] = values


def batch_fraction(active: torch.Tensor, batch: int, union: bool) -> float:
    """The share of a knob's work units done per batch of ``batch`` examples.

    Args:
        active: ``(N, U)`` bool: the units (positions, tiles, filters) each example needed.
        batch: the batch size the network runs at.
        union: the units are shared by a batch (SPET's filters: a filter one example needs is
            computed for the whole batch), so a batch does the union of its examples' units;
            otherwise each example does its own.

    Returns:
        The mean over batches of the units done, relative to all of them (1 without units).
    """
    if active.numel() == 0:
        return 1.0
    if not union:
        return active.float().mean().item()
    done = [active[start:start + batch].any(0).float().mean() for start in range(0, len(active), batch)]
    return torch.stack(done).mean().item()
