"""Effort layers: a convolution or linear layer (batch-norm folded in, ReLU fused) whose knobs
skip or approximate work per example, and which counts the multiply-accumulates it performs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .kernels import conv_at_positions, simulate_positions
from .primitive import linear_at
from .settings import SDSS, SFMA, LayerEffort


class EffortLayer(nn.Module):
    """What effort layers share: their knobs and the MACs of their last forward pass."""

    relu: bool

    def __init__(self) -> None:
        super().__init__()
        self.effort = LayerEffort()
        self.last_macs: torch.Tensor | None = None  # (B,) float64, per example
        self.simulate = False  # dense convolutions for the same outputs and counts (tuning)
        # Where no earlier layer's outputs can be permuted (the first layer), the input is
        # gathered into significance order at run time (data movement, no arithmetic).
        self.register_buffer("input_order", None)

    def order_inputs(self, order: torch.Tensor) -> None:
        """Reads the inputs in ``order`` from now on (the weight's columns follow)."""
        self.weight.copy_(self.weight[:, order])
        self.input_order = order.clone()

    def _ordered(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.input_order is None else x.index_select(1, self.input_order)

    def check(self, effort: LayerEffort, name: str) -> None:
        """Refuses knobs this layer cannot take.

        Raises:
            ValueError: naming the layer and the knob.
        """
        if effort.spet.active and (not self.relu or self.in_features < 2):
            raise ValueError(f"layer {name!r} cannot take SPET: it needs a layer followed by ReLU with at least two "
                             "inputs")

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]


class EffortConv2d(EffortLayer):
    """A convolution (batch-norm folded, optional ReLU) with the SPET, SDSS and SFMA knobs.

    Decisions are made per example: SDSS fills calm neurons of each output map from a
    stride-2 grid, SFMA reads each input channel's uniform windows as their mean, SPET stops
    neurons whose partial sum predicts a zero, and the rest is computed exactly by
    :func:`~dynscale.effort.kernels.conv_at_positions`.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, conv: nn.Conv2d, relu: bool) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())  # (C_out, C_in/groups, kh, kw)
        self.register_buffer("bias", bias.detach().clone())  # (C_out,)
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.relu = relu

    def check(self, effort: LayerEffort, name: str) -> None:
        if self.groups != 1 and effort.active:
            raise ValueError(f"layer {name!r} {self._grouped_reason(effort)}")
        super().check(effort, name)
        if effort.sfma.active and self.dilation != (1, 1):
            raise ValueError(f"layer {name!r} is dilated; SFMA takes undilated convolutions")
        if isinstance(self.padding, str):
            raise ValueError(f"layer {name!r} pads by name ({self.padding!r}); effort knobs need numeric padding")

    def _grouped_reason(self, effort: LayerEffort) -> str:
        """Why a grouped convolution takes no knob (the one asked for, for a depthwise one)."""
        if self.weight.shape[1] == 1 and self.groups == self.weight.shape[0]:
            if effort.spet.active:
                return ("is a depthwise convolution: each neuron reads one input channel, so SPET has no partial sum "
                        "over the first channels to stop early")
            if effort.sfma.active:
                return ("is a depthwise convolution: testing a window for uniformity costs as many MACs as the "
                        "convolution itself (kh·kw per channel and position), so SFMA cannot save work")
            return ("is a depthwise convolution; SDSS's sparse kernels take ungrouped convolutions (a depthwise one "
                    "costs only kh·kw MACs per output)")
        return "is a grouped convolution; effort knobs take ungrouped ones"

    def macs_per_position(self, channels: int | None = None) -> int:
        """Multiply-accumulates of one output position (over ``channels`` inputs; all by default)."""
        kh, kw = self.weight.shape[2:]
        return self.weight.shape[0] * (channels or self.weight.shape[1]) * kh * kw

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, C_out, H', W')
        x = self._ordered(x)
        effort = self.effort
        if not effort.active:
            y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
            self.last_macs = torch.full((len(x),), float(self.macs_per_position() * y.shape[2] * y.shape[3]),
                                        dtype=torch.float64)
            return F.relu(y) if self.relu else y
        kh, kw = self.weight.shape[2:]
        height = (x.shape[2] + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        width = (x.shape[3] + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        out = x.new_zeros(len(x), self.weight.shape[0], height, width)
        macs = torch.zeros(len(x), dtype=torch.float64)
        skip = self._sample(x, effort.sdss, out, macs) if effort.sdss.active else None  # (B, C_out, H', W')
        uniform = means = None
        if effort.sfma.active:
            uniform, means = self._uniform_windows(x, effort.sfma, macs)  # (B, C_in, H', W') each
        if skip is None:
            positions = torch.ones(len(x), height, width, dtype=torch.bool).nonzero()
        else:
            positions = (~skip).any(1).nonzero()  # where some neuron is left to compute
        first = max(1, min(self.weight.shape[1], round(effort.spet.fraction * self.weight.shape[1])))
        compute = simulate_positions if self.simulate else conv_at_positions
        compute(x, self.weight, self.bias, positions, self.stride, self.padding, self.dilation, out, macs, first,
                effort.spet.threshold, self.relu, skip, uniform, means)
        self.last_macs = macs
        return out

    def _sample(self, x: torch.Tensor, sdss: SDSS, out: torch.Tensor, macs: torch.Tensor) -> torch.Tensor:
        """SDSS, per output map: the exact output on a stride-2 grid; a neuron whose surrounding
        grid values (in its own map) are all insignificant, or all within the spread of each
        other, is filled by bilinear interpolation. Returns the neurons computed on the grid or
        filled, ``(B, C_out, H', W')``."""
        s = sdss.stride
        coarse = F.conv2d(x, self.weight, self.bias, tuple(st * s for st in self.stride), self.padding, self.dilation)
        coarse = F.relu(coarse) if self.relu else coarse  # (B, C, Hg, Wg): positions (s·i, s·j)
        hg, wg = coarse.shape[2:]
        macs += self.macs_per_position() * hg * wg
        done = torch.zeros(out.shape, dtype=torch.bool)
        out[:, :, ::s, ::s] = coarse
        done[:, :, ::s, ::s] = True
        if hg < 2 or wg < 2:
            return done
        high = F.max_pool2d(coarse, 2, 1)  # (B, C, Hg-1, Wg-1): the four corners of each cell
        low = -F.max_pool2d(-coarse, 2, 1)
        largest = F.max_pool2d(coarse.abs(), 2, 1)  # |y|: without a ReLU, outputs may be negative
        calm = (largest < sdss.insignificant) | (high - low < sdss.spread)  # (B, C, Hg-1, Wg-1)
        # A neuron is filled when every cell touching it is calm in its map: cell centres sit at
        # odd positions of the fine grid, and a 3×3 maximum gathers the cells around a position.
        extent = (s * (hg - 1) + 1, s * (wg - 1) + 1)
        restless = x.new_zeros(*coarse.shape[:2], *extent)
        restless[:, :, 1::2, 1::2] = (~calm).to(x.dtype)
        fill = F.max_pool2d(restless, 3, 1, 1) == 0  # (B, C, He, We)
        fill &= ~done[:, :, :extent[0], :extent[1]]
        up = F.interpolate(coarse, size=extent, mode="bilinear", align_corners=True)
        region = out[:, :, :extent[0], :extent[1]]
        region.copy_(torch.where(fill, up, region))
        done[:, :, :extent[0], :extent[1]] |= fill
        macs += fill.sum((1, 2, 3)).to(torch.float64) * 4  # bilinear: four products a value
        return done

    def _uniform_windows(self, x: torch.Tensor, sfma: SFMA, macs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SFMA's statistics, per input channel and output position: whether the window's
        variance is below the threshold, ``(B, C_in, H', W')``, and the window's mean."""
        kernel = tuple(self.weight.shape[2:])
        mean = F.avg_pool2d(x, kernel, self.stride, self.padding, count_include_pad=True)  # (B, C_in, H', W')
        square = F.avg_pool2d(x * x, kernel, self.stride, self.padding, count_include_pad=True)
        uniform = square - mean * mean < sfma.threshold
        macs += self.weight.shape[1] * kernel[0] * kernel[1] * mean.shape[2] * mean.shape[3]  # the x² window sums
        return uniform, mean


class EffortLinear(EffortLayer):
    """A linear layer (batch-norm folded, optional ReLU) with SPET on each neuron, per example:
    the partial sum over the first inputs for every neuron, the rest only for the neurons whose
    partial sum reaches the threshold."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, relu: bool) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())  # (N_out, K)
        self.register_buffer("bias", bias.detach().clone())
        self.relu = relu

    def check(self, effort: LayerEffort, name: str) -> None:
        super().check(effort, name)
        if effort.sdss.active or effort.sfma.active:
            raise ValueError(f"layer {name!r} is a linear layer; SDSS and SFMA take convolutions")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, K) -> (B, N_out)
        x = self._ordered(x)
        n_out, k = self.weight.shape
        spet = self.effort.spet
        first = max(1, min(k, round(spet.fraction * k)))
        if not spet.active or first == k:  # with every input in the partial sum, nothing to skip
            y = F.linear(x, self.weight, self.bias)
            self.last_macs = torch.full((len(x),), float(n_out * k), dtype=torch.float64)
            return F.relu(y) if self.relu else y
        partial = F.linear(x[:, :first], self.weight[:, :first], self.bias)  # (B, N_out)
        needed = partial >= spet.threshold
        pairs = needed.nonzero()  # (N, 2): (example, neuron)
        y = torch.zeros_like(partial)
        y[needed] = partial[needed] + linear_at(x[:, first:], self.weight[:, first:], pairs)
        self.last_macs = (torch.full((len(x),), float(n_out * first), dtype=torch.float64)
                          + needed.sum(1).to(torch.float64) * (k - first))
        return F.relu(y)
