"""The three knobs as coarse decisions whose remaining work runs through dense kernels.

Each function runs one layer with one knob and returns its output, the multiply-accumulates
each example took (decision work included) and which of the knob's units of work (positions,
tiles, filters) each example needed. ``force`` replaces the decision by a given one: the cost
table (:mod:`dynscale.effort.costs`) times each knob at chosen active fractions that way, the
decision itself still computed and paid for.

Why this shape: on a CPU, per-position or per-tile gathers and scatters lose to a dense
convolution at every kept fraction, so each knob decides coarsely and then makes few, large
calls into oneDNN or BLAS — SDSS one strided convolution and one matrix product over the
gathered columns of all positions it computes exactly; SFMA one matrix product for all uniform
tiles and one convolution over all the others, gathered; SPET one convolution over the
significant input channels and one over the rest, for the filters some example needs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..eval.profiling import span
from .kernels import convolve, out_size, scatter_positions
from .primitive import conv_at
from .settings import SDSS, SFMA, SPET

# The layers passed in are dynscale.effort.layers' EffortConv2d and EffortLinear (which import
# this module): typed here by what the knobs read of them.
EffortConv2d = EffortLinear = nn.Module

INTERPOLATION_MACS = 4  # a bilinear value: four products


@dataclass
class KnobResult:
    """What one layer with a knob did on a batch.

    Attributes:
        out: the layer's output (ReLU applied where the layer has one).
        count: computes ``(B,)`` float64, the multiply-accumulates per example, decisions
            included (when asked: at batch 1 every tensor operation costs microseconds, and a
            timed forward pass asks nothing).
        units: ``(B, ...)`` bool: per example, the units of work it needed (SDSS: output
            positions computed exactly; SFMA: tiles computed exactly; SPET: filters finished).
        counted: the flat indices of the units that count (SDSS: the positions off the grid),
            or None for all.
    """

    out: torch.Tensor
    count: Callable[[], torch.Tensor]
    units: torch.Tensor
    counted: torch.Tensor | None = None

    @property
    def macs(self) -> torch.Tensor:
        """``(B,)`` float64: the multiply-accumulates per example."""
        return self.count()

    @property
    def active(self) -> torch.Tensor:
        """``(B, U)`` bool: the counted units each example needed (made only when asked: the
        tuner asks, a timed forward pass does not)."""
        flat = self.units.flatten(1)
        return flat if self.counted is None else flat.index_select(1, self.counted)


def _relu(y: torch.Tensor, relu: bool) -> torch.Tensor:
    return F.relu_(y) if relu else y


def _per_example(positions: torch.Tensor, batch: int) -> torch.Tensor:
    """``(B,)`` float64: how many of ``positions`` (rows starting with the example) each example has."""
    return torch.bincount(positions[:, 0], minlength=batch).to(torch.float64)


@functools.lru_cache(maxsize=256)
def _sdss_geometry(height: int, width: int, hg: int, wg: int, s: int) -> tuple[torch.Tensor, ...]:
    """For an ``height``×``width`` output and its ``hg``×``wg`` grid of stride ``s``: the grid
    cell each output row and column is interpolated from (``hg - 1`` / ``wg - 1``, a cell
    that is never calm, past the last one), the positions off the grid ``(H', W')`` bool, and
    their flat indices."""
    rows = (torch.arange(height) // s).clamp(max=max(hg - 2, 0))
    cols = (torch.arange(width) // s).clamp(max=max(wg - 2, 0))
    rows[torch.arange(height) > s * (hg - 1)] = hg - 1
    cols[torch.arange(width) > s * (wg - 1)] = wg - 1
    off_grid = torch.ones(height, width, dtype=torch.bool)
    off_grid[::s, ::s] = False
    return rows, cols, off_grid, off_grid.flatten().nonzero()[:, 0]


def _corners(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The largest and smallest of each 2×2 cell's four corners (last two dimensions): six
    elementwise operations on four shifted views (PyTorch's 2×2 pooling parallelises over the
    B·C small planes and is several times slower)."""
    a, b, c, d = y[..., :-1, :-1], y[..., 1:, :-1], y[..., :-1, 1:], y[..., 1:, 1:]
    return torch.maximum(torch.maximum(a, b), torch.maximum(c, d)), torch.minimum(torch.minimum(a, b),
                                                                                  torch.minimum(c, d))


def cell_spread(coarse: torch.Tensor) -> torch.Tensor:
    """``(B, Hg-1, Wg-1)``: per grid cell, the largest spread (max − min) of its four corners over
    the output channels (SDSS's agreement statistic; the tuner scales thresholds by it)."""
    high, low = _corners(coarse)
    return (high - low).amax(1)


def _calm_cells(coarse: torch.Tensor, setting: SDSS, relu: bool) -> torch.Tensor:
    """``(B, Hg-1, Wg-1)`` bool: grid cells whose four corners are, over every output channel,
    all below the insignificance threshold in magnitude, or all within the spread of each
    other (per channel). Each test is computed only when its threshold acts."""
    calm = torch.zeros(len(coarse), coarse.shape[2] - 1, coarse.shape[3] - 1, dtype=torch.bool)
    if setting.insignificant > 0:
        magnitude = (coarse if relu else coarse.abs()).amax(1)  # (B, Hg, Wg): channels first, then corners
        calm |= _corners(magnitude)[0] < setting.insignificant
    if setting.spread > 0:
        calm |= cell_spread(coarse) < setting.spread
    return calm


def sdss(layer: EffortConv2d, x: torch.Tensor, setting: SDSS, kernel: str,
         force: torch.Tensor | None = None) -> KnobResult:
    """SDSS as perforation: the exact output on a ``stride``-spaced grid (one dense strided
    convolution), bilinear interpolation between grid positions where, over every output
    channel, the cell's four corners are insignificant or agree, and the other positions
    computed exactly (one matrix product over their gathered columns).

    Decisions are per output position over all output channels: a gathered position computes
    every channel anyway. A position is filled from the grid cell whose corners the
    interpolation reads; positions past the last grid row or column have no such cell and are
    computed exactly.

    Args:
        layer: the convolution.
        x: its input ``(B, C_in, H, W)``.
        setting: the SDSS knob.
        kernel: unused (the grid convolution runs on the layer's kernel for its stride).
        force: ``(B, U)`` bool over the U positions off the grid (row-major): those to compute
            exactly, in place of the decision (which is still made, and paid for).
    """
    s = setting.stride
    weight, bias = layer.weight, layer.bias
    height, width = out_size(x.shape[2:], weight.shape[2:], layer.stride, layer.padding, layer.dilation)
    with span("effort.kernel"):
        coarse = layer.dense(x, grid=s)
    hg, wg = coarse.shape[2:]  # (B, C_out, Hg, Wg): output positions (s·i, s·j)
    rows, cols, off_grid, off_index = _sdss_geometry(height, width, hg, wg, s)
    cells = hg >= 2 and wg >= 2
    extent = (s * (hg - 1) + 1, s * (wg - 1) + 1)  # the positions inside some cell
    with span("effort.decide"):
        restless = torch.ones(len(x), hg, wg, dtype=torch.bool)  # the last row and column: no cell
        if cells:
            restless[:, :-1, :-1] = ~_calm_cells(coarse, setting, layer.relu)
        exact = restless.index_select(1, rows).index_select(2, cols) & off_grid  # (B, H', W')
        if force is not None:
            exact = torch.zeros(len(x), height * width, dtype=torch.bool).index_copy_(1, off_index, force)
            exact = exact.view(len(x), height, width)
        positions = exact.nonzero()  # (N, 3)
    with span("effort.kernel"):
        if cells:
            out = F.interpolate(coarse, size=extent, mode="bilinear", align_corners=True)  # (B, C_out, He, We)
            if extent != (height, width):  # the positions past the last cell are computed exactly
                out = F.pad(out, (0, width - extent[1], 0, height - extent[0]))
        else:
            out = coarse.new_zeros(len(x), weight.shape[0], height, width)
            out[:, :, ::s, ::s] = coarse
    if len(positions):
        values = conv_at(x, weight, bias, positions, layer.stride, layer.padding, layer.dilation,
                         layer.ordered_weight())
        with span("effort.scatter"):
            scatter_positions(out, positions, _relu(values, layer.relu))
    batch = len(x)  # the closure below must not keep the input alive

    def count() -> torch.Tensor:
        computed = _per_example(positions, batch)
        filled = len(off_index) - computed
        return layer.macs_per_position() * (hg * wg + computed) + INTERPOLATION_MACS * weight.shape[0] * filled

    return KnobResult(out, count, exact, off_index)


@functools.lru_cache(maxsize=256)
def _sfma_geometry(height: int, width: int, tile: int, stride: tuple[int, int], kernel: tuple[int, int],
                   padded: tuple[int, int]) -> dict:
    """The tiling of an ``height``×``width`` output: tile size and count, each tile's input
    region and step, the zeros to add past the padded input so that every region is whole,
    and the correction of the statistics for the part of a region inside the padded input
    (what the tile reads)."""
    th, tw = min(tile, height), min(tile, width)
    nh, nw = math.ceil(height / th), math.ceil(width / tw)
    region = ((th - 1) * stride[0] + kernel[0], (tw - 1) * stride[1] + kernel[1])
    step = (th * stride[0], tw * stride[1])
    extra = [max(0, (n - 1) * st + r - p) for n, st, r, p in zip((nh, nw), step, region, padded, strict=True)]
    inside = [torch.clamp(p - torch.arange(n) * st, max=r) for n, st, r, p in zip((nh, nw), step, region, padded,
                                                                                 strict=True)]
    count = (inside[0][:, None] * inside[1][None, :]).float()  # (nh, nw): region elements read
    return {"tile": (th, tw), "tiles": (nh, nw), "region": region, "step": step, "extra": extra,
            "scale": None if bool((count == region[0] * region[1]).all()) else region[0] * region[1] / count,
            "root": count.sqrt()}


def tile_bounds(layer: EffortConv2d, x: torch.Tensor, g: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """SFMA's statistic: per output tile of the tiling ``g`` (:func:`_sfma_geometry`), the bound
    on the error of reading its windows as their means, ``(B, nh, nw)``, and the means of its
    input region, ``(B, C_in, nh, nw)``."""
    padding, (nh, nw), region, step = layer.padding, g["tiles"], g["region"], g["step"]
    xq = F.pad(x, (padding[1], padding[1] + g["extra"][1], padding[0], padding[0] + g["extra"][0]))
    mean = F.avg_pool2d(xq, region, step)[:, :, :nh, :nw]  # (B, C_in, nh, nw)
    square = F.avg_pool2d(xq * xq, region, step)[:, :, :nh, :nw]
    if g["scale"] is not None:  # the zeros past the padded input are not read
        mean, square = mean * g["scale"], square * g["scale"]
    # E[x²] − E[x]², less float32's rounding of it (a constant region's variance is 0).
    variance = torch.addcmul(square, mean, mean, value=-1).add_(square, alpha=-1e-6).clamp_min_(0)
    weight = layer.weight
    norms = layer.derived("channel_norms", lambda: weight.flatten(2).norm(dim=2).amax(0))  # (C_in,)
    return torch.einsum("bchw,c->bhw", variance.sqrt_(), norms).mul_(g["root"]), mean


def sfma_tiling(layer: EffortConv2d, x: torch.Tensor, tile: int) -> dict:
    """The tiling SFMA uses on input ``x`` with tiles of ``tile`` (see :func:`_sfma_geometry`)."""
    height, width = out_size(x.shape[2:], layer.weight.shape[2:], layer.stride, layer.padding, layer.dilation)
    padded = (x.shape[2] + 2 * layer.padding[0], x.shape[3] + 2 * layer.padding[1])
    return _sfma_geometry(height, width, tile, layer.stride, tuple(layer.weight.shape[2:]), padded)


def sfma(layer: EffortConv2d, x: torch.Tensor, setting: SFMA, kernel: str,
         force: torch.Tensor | None = None) -> KnobResult:
    """SFMA on uniform tiles: per output tile, a bound on how far reading every window as its
    mean could move any output of the tile, √(region size) · Σ_c σ_c · max_o ‖w_oc‖ (σ_c the
    spread of input channel c over the tile's input region; Cauchy–Schwarz per channel);
    where it is within the threshold the tile gets mean·Σw (one 1×1 convolution over the
    tiles' means, broadcast over each tile), elsewhere the exact convolution at the tile's
    positions (one matrix product over their gathered columns).

    Args:
        layer: an undilated convolution.
        x: its input ``(B, C_in, H, W)``.
        setting: the SFMA knob.
        kernel: unused (the exact tiles run as one matrix product); kept so every knob is
            called alike.
        force: ``(B, tiles)`` bool (tiles row-major): those to compute exactly, in place of
            the decision (which is still made, and paid for).
    """
    weight, bias, stride, padding = layer.weight, layer.bias, layer.stride, layer.padding
    height, width = out_size(x.shape[2:], weight.shape[2:], stride, padding, layer.dilation)
    g = sfma_tiling(layer, x, setting.tile)
    (th, tw), (nh, nw) = g["tile"], g["tiles"]
    c_in, c_out = weight.shape[1], weight.shape[0]
    with span("effort.decide"):
        bound, mean = tile_bounds(layer, x, g)
        exact = bound > setting.threshold if force is None else force.view(len(x), nh, nw)
    with span("effort.kernel"):
        sums = layer.derived("window_sums", lambda: weight.sum((2, 3))[:, :, None, None].contiguous())
        approx = _relu(F.conv2d(mean, sums, bias), layer.relu)  # (B, C_out, nh, nw): mean·Σw, every tile
        out = F.interpolate(approx, scale_factor=(th, tw), mode="nearest")  # (B, C_out, nh·th, nw·tw)
    with span("effort.decide"):
        positions = exact[:, :, None, :, None].expand(len(x), nh, th, nw, tw).reshape(len(x), nh * th, nw * tw)
        positions = positions[:, :height, :width].nonzero()  # (N, 3): the exact tiles' output positions
    out = out[:, :, :height, :width]
    if len(positions):
        values = conv_at(x, weight, bias, positions, stride, padding, layer.dilation, layer.ordered_weight())
        with span("effort.scatter"):
            scatter_positions(out, positions, _relu(values, layer.relu))
    if (nh * th, nw * tw) != (height, width):
        out = out.contiguous()
    padded = (x.shape[2] + 2 * padding[0], x.shape[3] + 2 * padding[1])
    statistics = c_in * (padded[0] * padded[1] + nh * nw)  # the squares, and the bound's weighting

    batch = len(x)  # the closure below must not keep the input alive

    def count() -> torch.Tensor:
        exact_positions = _per_example(positions, batch)
        return statistics + nh * nw * c_in * c_out + exact_positions * layer.macs_per_position()

    return KnobResult(out, count, exact)


def first_channels(fraction: float, channels: int) -> int:
    """The input channels of SPET's partial sum."""
    return max(1, min(channels, round(fraction * channels)))


def spet_partial(layer: EffortConv2d | EffortLinear, x: torch.Tensor, first: int, kernel: str) -> torch.Tensor:
    """SPET's partial sums over the first ``first`` input channels (bias included): ``(B, C_out,
    H', W')`` for a convolution (on ``kernel``), ``(B, N_out)`` for a linear layer."""
    head = layer.derived(("head", first), lambda: layer.weight[:, :first].contiguous())
    if head.dim() == 2:
        return F.linear(x[:, :first], head, layer.bias)
    return convolve(x[:, :first], head, layer.bias, layer.stride, layer.padding, layer.dilation, kernel)


def spet_conv(layer: EffortConv2d, x: torch.Tensor, setting: SPET, kernel: str,
              force: torch.Tensor | None = None) -> KnobResult:
    """SPET per whole filter: one dense convolution over the significant input channels (the
    first ones: ordered offline), a filter predicted zero for an example where its partial map
    stays below the threshold everywhere, and one dense convolution over the other channels
    for the filters some example of the batch needs (their union; a filter predicted zero for
    an example stays zero there, so the output never depends on how examples are batched).

    Args:
        layer: a convolution followed by ReLU.
        x: its input ``(B, C_in, H, W)``, channels in significance order.
        setting: the SPET knob.
        kernel: the dense kernel of both convolutions.
        force: ``(B, C_out)`` bool, the filters to finish.
    """
    weight = layer.weight
    first = first_channels(setting.fraction, weight.shape[1])
    with span("effort.kernel"):
        partial = spet_partial(layer, x, first, kernel)
    with span("effort.decide"):
        needed = partial.amax((2, 3)) >= setting.threshold  # (B, C_out)
        if force is not None:
            needed = force
        union = needed.any(0).nonzero()[:, 0]
    _finish(partial, union, lambda w: convolve(x[:, first:], w, None, layer.stride, layer.padding, layer.dilation,
                                               kernel), layer, first)
    with span("effort.scatter"):
        out = F.relu_(partial.mul_(needed[:, :, None, None]))
    per_channel = weight.shape[2] * weight.shape[3] * partial.shape[2] * partial.shape[3]  # one filter's, one channel

    def count() -> torch.Tensor:
        finished = needed.sum(1).to(torch.float64)
        return per_channel * (weight.shape[0] * first + finished * (weight.shape[1] - first))

    return KnobResult(out, count, needed)


def spet_linear(layer: EffortLinear, x: torch.Tensor, setting: SPET, kernel: str,
                force: torch.Tensor | None = None) -> KnobResult:
    """SPET per neuron of a linear layer, as :func:`spet_conv` per filter: the partial products
    for every neuron, the rest for the neurons some example of the batch needs.

    Args:
        layer: a linear layer followed by ReLU.
        x: its input ``(B, K)``, in significance order.
        setting: the SPET knob.
        kernel: unused (a linear layer has one dense kernel).
        force: ``(B, N_out)`` bool, the neurons to finish.
    """
    weight = layer.weight
    first = first_channels(setting.fraction, weight.shape[1])
    with span("effort.kernel"):
        partial = spet_partial(layer, x, first, kernel)  # (B, N_out)
    with span("effort.decide"):
        needed = partial >= setting.threshold
        if force is not None:
            needed = force
        union = needed.any(0).nonzero()[:, 0]
    _finish(partial, union, lambda w: F.linear(x[:, first:], w), layer, first)
    with span("effort.scatter"):
        out = F.relu_(partial.mul_(needed))
    def count() -> torch.Tensor:
        return weight.shape[0] * first + needed.sum(1).to(torch.float64) * (weight.shape[1] - first)

    return KnobResult(out, count, needed)


def _finish(partial: torch.Tensor, union: torch.Tensor, product, layer, first: int) -> None:
    """Adds the rest of the sum (over the inputs from ``first`` on) to the filters or neurons in
    ``union`` (dimension 1 of ``partial``), computed by ``product(weights of those filters)``."""
    if not len(union):
        return
    weight = layer.weight
    with span("effort.gather"):
        if len(union) == weight.shape[0]:
            tail = layer.derived(("tail", first), lambda: weight[:, first:].contiguous())
        else:
            tail = weight[union, first:]  # (U, C_in - first, ...)
    with span("effort.kernel"):
        rest = product(tail)
    with span("effort.scatter"):
        if len(union) == weight.shape[0]:
            partial += rest
        else:
            partial.index_add_(1, union, rest)

