"""Incomplete layers: dot products over the first k input channels, by slicing (SPEC §1).

At width p a layer keeps ``k = max(1, ceil(p·N))`` of its N input channels and computes only
as many outputs as the next layer consumes. The weight tensor is sliced, so the arithmetic
really shrinks; nothing is masked. The profile γ is folded into the sliced weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..profiles import ProfileSpec, make_profile
from .plan import ChannelPlan
from .width import WidthScaled, kept_channels

PROFILE_GRADIENTS = ("chain", "straight-through")


class IncompleteLayer(WidthScaled):
    """State shared by incomplete layers: the profile, which sides may be cut, the cache."""

    cut_input: bool
    cut_output: bool
    # "straight-through" computes the weight gradient without γ, as the authors' code does.
    profile_gradient: str = "chain"
    # Index plans (``convert`` sets them where a prefix is not enough: concatenations, flatten).
    in_plan: ChannelPlan | None = None
    out_plan: ChannelPlan | None = None

    def set_plans(self, in_plan: ChannelPlan | None, out_plan: ChannelPlan | None) -> None:
        """Keeps, on each side with a plan, the positions the plan gives at the width instead of
        a prefix (a side with a plan is cut)."""
        self.in_plan, self.out_plan = in_plan, out_plan
        self.cut_input = self.cut_input or in_plan is not None
        self.cut_output = self.cut_output or out_plan is not None

    def _in_index(self) -> torch.Tensor | None:
        return self.in_plan.indices(self.in_width) if self.in_plan is not None else None

    def _out_index(self) -> torch.Tensor | None:
        return self.out_plan.indices(self.out_width) if self.out_plan is not None else None

    def _planned(self) -> bool:
        return self.in_plan is not None or self.out_plan is not None

    def _planned_input(self, x: torch.Tensor, k_in: int, dim: int) -> torch.Tensor:
        """The input of a layer with an input plan: already the kept positions, or the whole
        tensor (a producer that is not cut), from which they are gathered."""
        n = self.in_plan and len(self.in_plan)
        if x.shape[dim] == k_in:
            return x
        if x.shape[dim] == n:
            return x.index_select(dim, self._in_index())
        raise ValueError(f"{type(self).__name__} at width {self.in_width} needs {k_in} input channels (or all "
                         f"{n}) but got {x.shape[dim]}")

    def _init_incomplete(self, n_in: int, profile: ProfileSpec, cut_input: bool,
                         cut_output: bool, out_multiple: int) -> None:
        self.cut_input = cut_input
        self.cut_output = cut_output
        self.out_multiple = out_multiple
        self.in_width = 1.0
        self.out_width = 1.0
        self.register_buffer("profile", make_profile(profile, n_in))  # (N_in,)
        self._cache: tuple | None = None

    def effective_weight(self) -> torch.Tensor:
        """The weight the dot products use before slicing (binary layers return sign(W))."""
        return self.weight

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """Transforms the input before the product (binary layers binarize it)."""
        return x

    def _fold(self, weight: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        folded = weight * gamma
        if self.profile_gradient == "straight-through":
            return weight + (folded - weight).detach()  # forward uses γ, backward ignores it
        return folded

    def _cached(self, key: tuple, build) -> tuple:
        # Folding γ into the weight costs as much as a batch-1 product, so inference reuses it;
        # the key holds tensor versions, so an optimizer step or load_state_dict invalidates it.
        if self.training or torch.is_grad_enabled():
            return build()
        full_key = key + tuple((t._version, t.data_ptr()) for t in self._sources())
        if self._cache is None or self._cache[0] != full_key:
            self._cache = (full_key, build())
        return self._cache[1]

    def __getstate__(self) -> dict:
        # A copy rebuilds its own cache: a cached view of a weight that was since changed in
        # place (loading a checkpoint) cannot be deep-copied.
        state = super().__getstate__()
        return {**state, "_cache": None}

    def _sources(self) -> list[torch.Tensor]:
        tensors = [self.weight, self.profile]
        return tensors + ([self.bias] if self.bias is not None else [])

    def _input_channels(self, x: torch.Tensor, k_in: int, dim: int) -> int:
        c = x.shape[dim]
        if c < k_in:
            # With random cuts (training) the layer before may keep fewer channels than this
            # layer's own draw: using the c it has equals the authors' zero-masked channels.
            if self.training:
                return c
            raise ValueError(
                f"{type(self).__name__} at width {self.in_width} needs {k_in} input channels "
                f"but got {c}; the layer before it must keep at least as many (check its "
                "out_multiple, or that both sit in the same model passed to set_width)"
            )
        return k_in

    def after_step(self) -> None:
        """Called by the trainer after each optimizer step (binary layers clip weights)."""


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
        self._init_incomplete(in_features, profile, cut_input, cut_output, out_multiple)

    def kept(self) -> tuple[int, int]:
        """Returns (input features used, outputs computed) at the current width."""
        k_in = kept_channels(self.in_features, self.in_width) if self.cut_input else self.in_features
        k_out = (kept_channels(self.out_features, self.out_width, self.out_multiple)
                 if self.cut_output else self.out_features)
        if self.in_plan is not None:
            k_in = self.in_plan.count(self.in_width)
        if self.out_plan is not None:
            k_out = self.out_plan.count(self.out_width)
        return k_in, k_out

    def dense_weights(self, k_in: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The folded, sliced (weight, bias) at the current width, as ``forward`` uses them.

        Args:
            k_in: input features actually available (default: what the width keeps).
        """
        kept_in, k_out = self.kept()
        k_in = kept_in if k_in is None else k_in
        if self._planned():
            i_in, i_out = self._in_index(), self._out_index()
            weight = self.effective_weight()
            weight = weight[:k_out] if i_out is None else weight.index_select(0, i_out)
            weight = weight[:, :k_in] if i_in is None else weight.index_select(1, i_in)
            gamma = self.profile[:k_in] if i_in is None else self.profile[i_in]
            bias = None if self.bias is None else self.bias[:k_out] if i_out is None else self.bias[i_out]
            return self._fold(weight, gamma), bias  # (k_out, k_in)
        w = self._fold(self.effective_weight()[:k_out, :k_in], self.profile[:k_in])  # (k_out, k_in)
        return w, None if self.bias is None else self.bias[:k_out]

    def active_parameters(self) -> int:
        """Parameters the layer uses at the current width: its sliced weight and bias."""
        k_in, k_out = self.kept()
        return k_out * k_in + (k_out if self.bias is not None else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, ≥k_in) -> (B, k_out)
        k_in, k_out = self.kept()
        if self.in_plan is not None:
            x = self._planned_input(x, k_in, -1)
            w, b = self._cached((k_in, k_out, self.in_width, self.out_width), lambda: self.dense_weights(k_in))
            return F.linear(self.prepare_input(x), w, b)
        if self.out_plan is not None:
            k_in = self._input_channels(x, k_in, dim=-1)
            x = x[..., :k_in] if x.shape[-1] != k_in else x
            w, b = self._cached((k_in, k_out, self.in_width, self.out_width), lambda: self.dense_weights(k_in))
            return F.linear(self.prepare_input(x), w, b)
        k_in = self._input_channels(x, k_in, dim=-1)
        if x.shape[-1] != k_in:
            x = x[..., :k_in]
        w, b = self._cached((k_in, k_out), lambda: self.dense_weights(k_in))
        return F.linear(self.prepare_input(x), w, b)


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
        self._init_incomplete(in_channels, profile, cut_input, cut_output, out_multiple)

    def kept(self) -> tuple[int, int]:
        """Returns (input channels used, output channels computed) at the current width."""
        if self._planned():
            k_in = self.in_plan.count(self.in_width) if self.in_plan is not None else (
                kept_channels(self.in_channels, self.in_width) if self.cut_input else self.in_channels)
            k_out = self.out_plan.count(self.out_width) if self.out_plan is not None else (
                kept_channels(self.out_channels, self.out_width, self.out_multiple) if self.cut_output
                else self.out_channels)
            return k_in, k_out
        if self.groups > 1:
            g = kept_channels(self.groups, self.in_width) if self.cut_input else self.groups
            return g * self.in_channels // self.groups, g * self.out_channels // self.groups
        k_in = kept_channels(self.in_channels, self.in_width) if self.cut_input else self.in_channels
        k_out = (kept_channels(self.out_channels, self.out_width, self.out_multiple)
                 if self.cut_output else self.out_channels)
        return k_in, k_out

    def _plan(self, k_in: int) -> tuple[int, int, int]:
        """(inputs, outputs, groups) of the product when ``k_in`` input channels are used."""
        if self.groups == 1:
            return k_in, self.kept()[1], 1
        cin_g, cout_g = self.in_channels // self.groups, self.out_channels // self.groups
        groups = k_in // cin_g
        return groups * cin_g, groups * cout_g, groups

    def dense_weights(self, k_in: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """The folded, sliced (weight, bias, groups) at the current width, as ``forward`` uses them.

        Args:
            k_in: input channels actually available (default: what the width keeps).
        """
        k_in, k_out, groups = self._plan(self.kept()[0] if k_in is None else k_in)
        if self._planned():
            i_in, i_out = self._in_index(), self._out_index()
            weight = self.effective_weight()
            weight = weight[:k_out] if i_out is None else weight.index_select(0, i_out)
            if self.groups == 1:
                weight = weight[:, :k_in] if i_in is None else weight.index_select(1, i_in)
            bias = None if self.bias is None else self.bias[:k_out] if i_out is None else self.bias[i_out]
            return self._fold(weight, self.profile_factor(k_in, k_out, groups, i_in)), bias, groups
        # Grouped weights keep every input of a kept group; ungrouped ones are cut to k_in.
        weight = self.effective_weight()
        weight = weight[:k_out] if self.groups > 1 else weight[:k_out, :k_in]
        w = self._fold(weight, self.profile_factor(k_in, k_out, groups))  # (k_out, cin_g, kh, kw)
        return w, None if self.bias is None else self.bias[:k_out], groups

    def profile_factor(self, k_in: int | None = None, k_out: int | None = None,
                       groups: int | None = None, index: torch.Tensor | None = None) -> torch.Tensor:
        """γ of each weight entry, broadcastable to the (sliced) weight: (k_out or 1, cin_g, 1, 1).

        Defaults are the full layer; ``index`` gives the kept input positions of a plan.
        """
        k_in = self.in_channels if k_in is None else k_in
        k_out = self.out_channels if k_out is None else k_out
        groups = self.groups if groups is None else groups
        gamma = (self.profile[:k_in] if index is None else self.profile[index]).view(groups, k_in // groups)
        if groups > 1:
            gamma = gamma.repeat_interleave(k_out // groups, dim=0)  # (k_out, cin_g)
        return gamma[:, :, None, None]

    def active_parameters(self) -> int:
        """Parameters the layer uses at the current width: its sliced weight and bias."""
        k_in, k_out, groups = self._plan(self.kept()[0])
        kh, kw = self.kernel_size
        return k_out * (k_in // groups) * kh * kw + (k_out if self.bias is not None else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, ≥k_in, H, W) -> (B, k_out, H', W')
        if self._planned():
            k_in = self.kept()[0]
            if self.in_plan is not None:
                x = self._planned_input(x, k_in, 1)
            else:
                k_in = self._input_channels(x, k_in, dim=1)
                x = x[:, :k_in] if x.shape[1] != k_in else x
            k_in, k_out, groups = self._plan(k_in)
            w, b, groups = self._cached((k_in, k_out, self.in_width, self.out_width), lambda: self.dense_weights(k_in))
            return F.conv2d(self.prepare_input(x), w, b, self.stride, self.padding, self.dilation, groups)
        k_in = self._input_channels(x, self.kept()[0], dim=1)
        k_in, k_out, groups = self._plan(k_in)
        if x.shape[1] != k_in:
            x = x[:, :k_in]
        w, b, groups = self._cached((k_in, k_out), lambda: self.dense_weights(k_in))
        return F.conv2d(self.prepare_input(x), w, b, self.stride, self.padding, self.dilation, groups)


def incomplete_layers(model: nn.Module) -> list[IncompleteLayer]:
    """Returns the incomplete layers of a model in module order."""
    return [m for m in model.modules() if isinstance(m, IncompleteLayer)]


def set_profile_gradient(model: nn.Module, mode: str) -> None:
    """Sets how every incomplete layer differentiates through its profile.

    Args:
        model: the model.
        mode: ``"chain"`` (the exact gradient, γ·∂L/∂y) or ``"straight-through"`` (the
            authors' choice: the weight gradient computed without γ).
    """
    if mode not in PROFILE_GRADIENTS:
        raise ValueError(f"unknown profile gradient {mode!r}; choose {' or '.join(PROFILE_GRADIENTS)}")
    for layer in incomplete_layers(model):
        layer.profile_gradient = mode
