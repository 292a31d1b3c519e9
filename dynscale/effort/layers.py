"""Effort layers: a convolution or linear layer (batch-norm folded in, ReLU fused) that runs its
knob (:mod:`dynscale.effort.knobs`) or, without one, the dense kernel the measured cost table
says is faster for its batch size, and which counts the multiply-accumulates it performs."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from ..eval.profiling import span
from .kernels import KERNELS, convolve
from .knobs import KnobResult, sdss, sfma, spet_conv, spet_linear
from .primitive import rows_weight
from .settings import LayerEffort


class EffortLayer(nn.Module):
    """What effort layers share: their knob, their dense kernel per batch size, and what their
    last forward pass did.

    Attributes:
        effort: the knob settings.
        kernels: (batch size, grid) → the dense kernel (:data:`~dynscale.effort.kernels.KERNELS`)
            measured fastest for the layer (grid 1) or for SDSS's grid convolution of that
            stride, at that batch size; the nearest measured batch size (in ratio) decides,
            ``"conv"`` without any.
        input_size: the input's shape without the batch, as last seen.
    """

    relu: bool

    def __init__(self) -> None:
        super().__init__()
        self.effort = LayerEffort()
        self.kernels: dict[tuple[int, int], str] = {}
        self._last_macs: Callable[[], torch.Tensor] | None = None  # computes them when asked
        self._last_result: KnobResult | None = None
        self.input_size: tuple[int, ...] | None = None
        self._derived: dict = {}
        # Where no earlier layer's outputs can be permuted (the first layer), the input is
        # gathered into significance order at run time (data movement, no arithmetic).
        self.register_buffer("input_order", None)

    def order_inputs(self, order: torch.Tensor) -> None:
        """Reads the inputs in ``order`` from now on (the weight's columns follow)."""
        self.weight.copy_(self.weight[:, order])
        self.input_order = order.clone()

    def _ordered(self, x: torch.Tensor) -> torch.Tensor:
        self.input_size = tuple(x.shape[1:])
        return x if self.input_order is None else x.index_select(1, self.input_order)

    def derived(self, key: Hashable, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """A tensor computed from the weight once (split, summed, normed), made again only when
        the weight changes (reordered, loaded)."""
        stamp = (self.weight.data_ptr(), self.weight._version)
        entry = self._derived.get(key)
        if entry is None or entry[0] != stamp:
            entry = self._derived[key] = (stamp, make())
        return entry[1]

    def kernel_for(self, batch: int, grid: int = 1) -> str:
        """The dense kernel at ``batch`` (of SDSS's grid convolution of stride ``grid``; 1: the
        layer's own): that of the nearest measured batch size."""
        measured = [b for b, g in self.kernels if g == grid]
        if not measured:
            return "conv"
        nearest = min(measured, key=lambda b: (abs(math.log(b / batch)), b))
        return self.kernels[nearest, grid]

    def set_kernels(self, kernels: dict[tuple[int, int], str]) -> None:
        """Sets the dense kernels per (batch size, grid).

        Raises:
            ValueError: for an unknown kernel.
        """
        for kernel in kernels.values():
            if kernel not in KERNELS:
                raise ValueError(f"unknown dense kernel {kernel!r}; the kernels are {', '.join(KERNELS)}")
        self.kernels = {(int(b), int(g)): k for (b, g), k in kernels.items()}

    def _record(self, result: KnobResult) -> torch.Tensor:
        self._last_result = replace(result, out=None)  # not the output: it would stay in memory
        self._last_macs = self._last_result.count
        return result.out

    def _record_dense(self, batch: int, macs: int) -> None:
        self._last_result = None
        self._last_macs = lambda: torch.full((batch,), float(macs), dtype=torch.float64)

    @property
    def last_macs(self) -> torch.Tensor | None:
        """``(B,)`` float64: the multiply-accumulates per example of the last forward pass
        (counted when asked), or None before any."""
        return None if self._last_macs is None else self._last_macs()

    @property
    def last_active(self) -> torch.Tensor | None:
        """``(B, U)`` bool: the knob's units of work each example of the last forward pass
        needed (None without a knob)."""
        return None if self._last_result is None else self._last_result.active

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
    """A convolution (batch-norm folded, optional ReLU) with one of the SPET, SDSS and SFMA
    knobs (:mod:`dynscale.effort.knobs`), decided per example; without one, the dense
    convolution on the kernel measured faster for the batch size.
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
                return ("is a depthwise convolution: testing a tile for uniformity costs as many MACs as the "
                        "convolution itself (kh·kw per channel and position), so SFMA cannot save work")
            return ("is a depthwise convolution; SDSS's exact positions run as one matrix product over all channels, "
                    "which a depthwise convolution does not have (it costs only kh·kw MACs per output)")
        return "is a grouped convolution; effort knobs take ungrouped ones"

    def macs_per_position(self) -> int:
        """Multiply-accumulates of one output position (every output channel)."""
        return self.weight[0].numel() * self.weight.shape[0]

    def columns_weight(self) -> torch.Tensor:
        """``(C_in·kh·kw, C_out)``: the weight as im2col's matrix product reads it (kept)."""
        return self.derived("columns", lambda: self.weight.flatten(1).t().contiguous())

    def ordered_weight(self) -> torch.Tensor:
        """``(kh·kw·C_in, C_out)``: the weight as gathered columns read it (kept)."""
        return self.derived("rows", lambda: rows_weight(self.weight))

    def dense(self, x: torch.Tensor, kernel: str | None = None, grid: int = 1) -> torch.Tensor:
        """The layer without a knob — or, with ``grid`` > 1, its output on SDSS's grid of that
        stride (the layer's stride times ``grid``) — on ``kernel`` (default: the one measured
        fastest at this batch size); ReLU applied where the layer has one."""
        kernel = kernel or self.kernel_for(len(x), grid)
        stride = (self.stride[0] * grid, self.stride[1] * grid)
        if self.groups != 1:
            y = F.conv2d(x, self.weight, self.bias, stride, self.padding, self.dilation, self.groups)
        else:
            y = convolve(x, self.weight, self.bias, stride, self.padding, self.dilation, kernel,
                         self.columns_weight() if kernel == "gemm" else None)
        return F.relu_(y) if self.relu else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, C_out, H', W')
        x = self._ordered(x)
        knob = self.effort.knob
        if knob is None:
            with span("effort.kernel"):
                y = self.dense(x)
            self._record_dense(len(x), self.macs_per_position() * y.shape[2] * y.shape[3])
            return y
        return self._record(self.run_knob(x, knob))

    def run_knob(self, x: torch.Tensor, knob: str, force: torch.Tensor | None = None) -> KnobResult:
        """The layer with its ``knob`` (set in ``effort``) on an input already in order;
        ``force`` replaces its decision (see :mod:`dynscale.effort.knobs`)."""
        run = {"spet": spet_conv, "sdss": sdss, "sfma": sfma}[knob]
        return run(self, x, getattr(self.effort, knob), self.kernel_for(len(x)), force)


class EffortLinear(EffortLayer):
    """A linear layer (batch-norm folded, optional ReLU) with SPET on each neuron, per example
    (:func:`dynscale.effort.knobs.spet_linear`)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, relu: bool) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())  # (N_out, K)
        self.register_buffer("bias", bias.detach().clone())
        self.relu = relu

    def check(self, effort: LayerEffort, name: str) -> None:
        super().check(effort, name)
        if effort.sdss.active or effort.sfma.active:
            raise ValueError(f"layer {name!r} is a linear layer; SDSS and SFMA take convolutions")

    def dense(self, x: torch.Tensor, kernel: str | None = None, grid: int = 1) -> torch.Tensor:
        """The layer without a knob (one dense kernel, no grid: the arguments are ignored)."""
        y = F.linear(x, self.weight, self.bias)
        return F.relu_(y) if self.relu else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, K) -> (B, N_out)
        x = self._ordered(x)
        if not self.effort.spet.active:
            self._record_dense(len(x), self.weight.numel())
            with span("effort.kernel"):
                return self.dense(x)
        return self._record(self.run_knob(x, "spet"))

    def run_knob(self, x: torch.Tensor, knob: str, force: torch.Tensor | None = None) -> KnobResult:
        """The layer with SPET on an input already in order; ``force`` replaces its decision."""
        return spet_linear(self, x, self.effort.spet, "linear", force)
