"""Incomplete layers: dot products over the first k input channels, by slicing (SPEC §1).

At width p a layer keeps ``k = max(1, ceil(p·N))`` of its N input channels and computes only
as many outputs as the next layer consumes. The weight tensor is sliced, so the arithmetic
really shrinks; nothing is masked. The profile γ is folded into the sliced weight.

A model's width is set for all its incomplete layers at once with :func:`set_width` or the
:func:`width` context manager.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .profiles import ProfileSpec, make_profile


def check_width(p: float) -> float:
    """Validates a width fraction.

    Args:
        p: fraction of channels to keep.

    Returns:
        ``p`` as a float.

    Raises:
        ValueError: if ``p`` is NaN or outside (0, 1].
    """
    try:
        p = float(p)
    except (TypeError, ValueError):
        raise ValueError(f"width must be a number in (0, 1], got {p!r}") from None
    if math.isnan(p) or not 0.0 < p <= 1.0:
        raise ValueError(f"width must be in (0, 1], got {p}")
    return p


def kept_channels(n: int, p: float, multiple: int = 1) -> int:
    """Number of channels kept out of ``n`` at width ``p``: ``max(1, ceil(p·n))``.

    Args:
        n: channel count at full width.
        p: width fraction in (0, 1].
        multiple: round up to a multiple of this (grouped convolutions keep whole groups).

    Returns:
        The kept count, between ``multiple`` and ``n``.
    """
    # round() absorbs float error such as 0.3 * 10 == 3.0000000000000004.
    units = n // multiple
    return multiple * min(units, max(1, math.ceil(round(p * units, 9))))


class IncompleteLayer(nn.Module):
    """Mixin state shared by incomplete layers: the widths and which sides may be cut."""

    cut_input: bool
    cut_output: bool
    in_width: float
    out_width: float

    def _init_incomplete(self, n_in: int, profile: ProfileSpec, cut_input: bool,
                         cut_output: bool) -> None:
        self.cut_input = cut_input
        self.cut_output = cut_output
        self.in_width = 1.0
        self.out_width = 1.0
        self.register_buffer("profile", make_profile(profile, n_in))  # (N_in,)
        self._cache: tuple | None = None

    def _cached(self, key: tuple, build) -> tuple[torch.Tensor, torch.Tensor | None]:
        # Folding γ into the weight costs as much as a batch-1 product, so inference reuses it;
        # the key holds tensor versions, so an optimizer step or load_state_dict invalidates it.
        if self.training or torch.is_grad_enabled():
            return build()
        full_key = key + tuple((t._version, t.data_ptr()) for t in self._sources())
        if self._cache is None or self._cache[0] != full_key:
            self._cache = (full_key, build())
        return self._cache[1]

    def _sources(self) -> list[torch.Tensor]:
        tensors = [self.weight, self.profile]
        return tensors + ([self.bias] if self.bias is not None else [])

    def _check_input(self, x: torch.Tensor, k_in: int, dim: int) -> torch.Tensor:
        c = x.shape[dim]
        if c < k_in:
            raise ValueError(
                f"{type(self).__name__} at width {self.in_width} needs {k_in} input channels "
                f"but got {c}; the layer before it must keep at least as many (check its "
                "out_multiple, or that both sit in the same model passed to set_width)"
            )
        return x if c == k_in else x.narrow(dim, 0, k_in)


class IncompleteLinear(nn.Linear, IncompleteLayer):
    """A fully connected layer computing y_j = Σ_{i≤k} γ_i w_ji x_i + b_j.

    Args:
        in_features, out_features, bias: as for ``nn.Linear``.
        profile: the profile over input features (name, sequence, callable; None = all-one).
        cut_input: whether the width cuts the input (False for a network's first layer).
        cut_output: whether the width cuts the outputs (False for the class outputs).
        out_multiple: keep outputs in multiples of this (to feed a grouped layer).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 profile: ProfileSpec = None, cut_input: bool = True, cut_output: bool = True,
                 out_multiple: int = 1) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self._init_incomplete(in_features, profile, cut_input, cut_output)
        self.out_multiple = out_multiple

    def kept(self) -> tuple[int, int]:
        """Returns (input features used, outputs computed) at the current width."""
        k_in = kept_channels(self.in_features, self.in_width) if self.cut_input else self.in_features
        k_out = (kept_channels(self.out_features, self.out_width, self.out_multiple)
                 if self.cut_output else self.out_features)
        return k_in, k_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, ≥k_in) -> (B, k_out)
        k_in, k_out = self.kept()
        x = self._check_input(x, k_in, dim=-1)

        def build():
            w = self.weight[:k_out, :k_in] * self.profile[:k_in]  # (k_out, k_in)
            return w, None if self.bias is None else self.bias[:k_out]

        w, b = self._cached((k_in, k_out), build)
        return F.linear(x, w, b)


class IncompleteConv2d(nn.Conv2d, IncompleteLayer):
    """A 2-D convolution over the first k input channels, groups and depthwise included.

    With ``groups > 1`` whole groups are kept: the input keeps ``ceil(p·groups)`` groups and the
    output the matching groups, so a depthwise convolution keeps k channels in and k out.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias: as for
            ``nn.Conv2d``.
        profile: the profile over input channels (None = all-one).
        cut_input: whether the width cuts the input (False for a network's first layer).
        cut_output: whether the width cuts the outputs; must equal ``cut_input`` when grouped.
        out_multiple: keep outputs in multiples of this (to feed a grouped layer).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, profile: ProfileSpec = None,
                 cut_input: bool = True, cut_output: bool = True, out_multiple: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias=bias)
        if groups > 1 and cut_input != cut_output:
            raise ValueError(
                "a grouped IncompleteConv2d keeps whole groups, so cut_input and cut_output "
                f"must be equal (got {cut_input} and {cut_output})"
            )
        self._init_incomplete(in_channels, profile, cut_input, cut_output)
        self.out_multiple = out_multiple

    def kept(self) -> tuple[int, int]:
        """Returns (input channels used, output channels computed) at the current width."""
        if self.groups > 1:
            g = kept_channels(self.groups, self.in_width) if self.cut_input else self.groups
            return g * self.in_channels // self.groups, g * self.out_channels // self.groups
        k_in = kept_channels(self.in_channels, self.in_width) if self.cut_input else self.in_channels
        k_out = (kept_channels(self.out_channels, self.out_width, self.out_multiple)
                 if self.cut_output else self.out_channels)
        return k_in, k_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, ≥k_in, H, W) -> (B, k_out, H', W')
        k_in, k_out = self.kept()
        x = self._check_input(x, k_in, dim=1)
        groups = self.groups * k_in // self.in_channels if self.groups > 1 else 1

        def build():
            cin_g = k_in // groups
            cout_g = k_out // groups
            # γ for each (output channel, input-within-group) pair of the grouped weight.
            gamma = self.profile[:k_in].view(groups, cin_g)
            if groups > 1:
                gamma = gamma.repeat_interleave(cout_g, dim=0)  # (k_out, cin_g)
            # Grouped weights keep every input of a kept group; ungrouped ones are cut to k_in.
            weight = self.weight[:k_out] if self.groups > 1 else self.weight[:k_out, :k_in]
            w = weight * gamma[:, :, None, None]  # (k_out, cin_g, kh, kw)
            return w, None if self.bias is None else self.bias[:k_out]

        w, b = self._cached((k_in, k_out), build)
        return self._conv_forward(x, w, b) if groups == self.groups else F.conv2d(
            x, w, b, self.stride, self.padding, self.dilation, groups)


def incomplete_layers(model: nn.Module) -> list[IncompleteLayer]:
    """Returns the incomplete layers of a model in module order."""
    return [m for m in model.modules() if isinstance(m, IncompleteLayer)]


def set_width(model: nn.Module, p: float) -> nn.Module:
    """Sets the width of every incomplete layer of ``model`` to ``p``.

    Args:
        model: a model containing incomplete layers.
        p: fraction of channels to keep, in (0, 1].

    Returns:
        The same model, for chaining.

    Raises:
        ValueError: if ``p`` is NaN or outside (0, 1].
    """
    p = check_width(p)
    for layer in incomplete_layers(model):
        layer.in_width = p
        layer.out_width = p
    return model


@contextlib.contextmanager
def width(model: nn.Module, p: float) -> Iterator[nn.Module]:
    """Runs the block with ``model`` at width ``p``, restoring the previous widths after.

    Args:
        model: a model containing incomplete layers.
        p: fraction of channels to keep, in (0, 1].

    Yields:
        The model at width ``p``.
    """
    saved = [(m, m.in_width, m.out_width) for m in incomplete_layers(model)]
    set_width(model, p)
    try:
        yield model
    finally:
        for m, w_in, w_out in saved:
            m.in_width, m.out_width = w_in, w_out
