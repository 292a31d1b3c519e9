"""Binary layers (BinaryNet): sign weights and sign activations, with IDP (SPEC §1).

Weights are sign(W) in the forward pass with the gradient passed straight through, and clipped
to [−1, 1] after each optimizer step. Activations are sign(x) with the clipped straight-through
gradient: 1 where |x| ≤ 1, 0 elsewhere.
"""

from __future__ import annotations

import torch
from torch import nn

from ..profiles import ProfileSpec
from .incomplete import IncompleteConv2d, IncompleteLinear


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


def binarize(x: torch.Tensor) -> torch.Tensor:
    """sign(x) ∈ {−1, +1} (sign(0) = +1), with the clipped straight-through gradient."""
    return _SignSTE.apply(x)


class Sign(nn.Module):
    """sign(x) as a module: what an exported binary layer runs before its product."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


class _Binary:
    binarize_input: bool

    def effective_weight(self) -> torch.Tensor:
        return binarize(self.weight)

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        return binarize(x) if self.binarize_input else x

    @torch.no_grad()
    def after_step(self) -> None:
        self.weight.clamp_(-1.0, 1.0)


class BinaryConv2d(_Binary, IncompleteConv2d):
    """An incomplete convolution with binary weights and (optionally) binary inputs.

    Args:
        binarize_input: apply sign to the input (False for a network's first layer, whose
            input is the image).
        Others: as for :class:`IncompleteConv2d`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 bias: bool = False, profile: ProfileSpec = None, cut_input: bool = True,
                 cut_output: bool = True, binarize_input: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         bias=bias, profile=profile, cut_input=cut_input, cut_output=cut_output)
        self.binarize_input = binarize_input


class BinaryLinear(_Binary, IncompleteLinear):
    """An incomplete fully connected layer with binary weights and binary inputs."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False,
                 profile: ProfileSpec = None, cut_input: bool = True, cut_output: bool = True,
                 binarize_input: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias, profile=profile,
                         cut_input=cut_input, cut_output=cut_output)
        self.binarize_input = binarize_input
