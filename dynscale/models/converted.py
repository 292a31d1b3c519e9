"""Converting a user's network into an incomplete one, on its traced graph; the ``converted`` family.

Convolutions and linear layers become incomplete layers, batch-norm becomes width-aware
batch-norm, each cut by the channel-dependency groups of :mod:`dynscale.graph`: at width p every
segment of a group keeps its prefix (``ceil(p·size)`` channels), so residual additions,
concatenations and flattens stay consistent; groups that an operation mixes (layer norm,
attention, a reduction over channels) are kept whole. The weights are divided by the profile,
so the converted network at any width computes the original one with the cut channels masked;
``convert`` checks exactly that at widths 0.25, 0.5, 0.75 and 1.0 before returning.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..graph import GraphError, trace
from ..graph.nodes import eval_mode
from ..graph.types import base_type, is_batchnorm, is_conv, is_layer, is_linear
from ..layers import (
    ChannelPlan,
    IncompleteBatchNorm1d,
    IncompleteBatchNorm2d,
    IncompleteConv2d,
    IncompleteLinear,
    set_width,
)
from ..profiles import ProfileSpec
from .common import replace_module
from .registry import register_model

CHECK_WIDTHS = (0.25, 0.5, 0.75, 1.0)
TOLERANCE = 1e-4  # of the largest output magnitude: float sums in another order, not a wrong channel
SIZES = (8, 16, 32, 64, 96, 128, 160, 224, 299)


def default_example(model: nn.Module) -> torch.Tensor:
    """An example input for a model without one: ``(2, F)`` for a first Linear, else
    ``(2, C, S, S)`` with the smallest S of :data:`SIZES` that runs through the model."""
    first = next((m for m in model.modules() if is_layer(m)), None)
    if first is None:
        raise ValueError("the model has no Conv2d or Linear layer to convert")
    if is_linear(first):
        return torch.randn(2, first.in_features)
    with eval_mode(model), torch.no_grad():
        for s in SIZES:
            x = torch.randn(2, first.in_channels, s, s)
            try:
                model(x)
                return x
            except Exception:  # a size too small for the model: try the next
                continue
    raise ValueError(f"no input of {first.in_channels} channels and size {SIZES[0]} to {SIZES[-1]} runs through the "
                     "model; give example=torch.randn(2, C, H, W)")


def _incomplete_conv(conv: nn.Conv2d, profile: ProfileSpec, plans: tuple[ChannelPlan, ChannelPlan]) -> IncompleteConv2d:
    in_plan, out_plan = plans
    cut_in, cut_out = in_plan.cuts(), out_plan.cuts()
    if conv.groups > 1:
        cut_in = cut_out = cut_in or cut_out
    new = IncompleteConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                           padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                           bias=conv.bias is not None, profile=profile if cut_in else None, cut_input=cut_in,
                           cut_output=cut_out)
    _plans(new, in_plan, out_plan, conv.groups)
    with torch.no_grad():
        new.weight.copy_(conv.weight / new.profile_factor())  # so that γ·W' = W at full width
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _plans(layer, in_plan: ChannelPlan, out_plan: ChannelPlan, groups: int = 1) -> None:
    """Plans where a prefix does not say which channels are kept (grouped layers: always)."""
    plan_in = in_plan if in_plan.cuts() and (groups > 1 or not in_plan.is_prefix()) else None
    plan_out = out_plan if out_plan.cuts() and (groups > 1 or not out_plan.is_prefix()) else None
    if plan_in is not None or plan_out is not None:
        layer.set_plans(plan_in, plan_out)


def _incomplete_linear(linear: nn.Linear, profile: ProfileSpec,
                       plans: tuple[ChannelPlan, ChannelPlan]) -> IncompleteLinear:
    in_plan, out_plan = plans
    new = IncompleteLinear(linear.in_features, linear.out_features, bias=linear.bias is not None,
                           profile=profile if in_plan.cuts() else None, cut_input=in_plan.cuts(),
                           cut_output=out_plan.cuts())
    _plans(new, in_plan, out_plan)
    with torch.no_grad():
        new.weight.copy_(linear.weight / new.profile)
        if linear.bias is not None:
            new.bias.copy_(linear.bias)
    return new


def _incomplete_batchnorm(bn: nn.modules.batchnorm._BatchNorm, plan: ChannelPlan | None) -> nn.Module:
    cls = IncompleteBatchNorm2d if isinstance(bn, nn.BatchNorm2d) else IncompleteBatchNorm1d
    new = cls(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
              track_running_stats=bn.track_running_stats)
    new.load_state_dict(bn.state_dict())
    if plan is not None and plan.cuts() and not plan.is_prefix():
        new.plan = plan
    new.train(bn.training)
    return new


def _check_module(name: str, module: nn.Module) -> None:
    if is_conv(module) and module.padding_mode != "zeros":
        raise ValueError(f"cannot convert module {name!r} ({type(module).__name__}): padding_mode "
                         f"{module.padding_mode!r}; only 'zeros' is supported")


def convert(model: nn.Module, profile: ProfileSpec = "linear", keep: tuple[str | None, str | None] = (None, None),
            example: torch.Tensor | None = None) -> nn.Module:
    """Returns an incomplete copy of ``model``: its outputs at width 1.0 equal the original's,
    and at any width it computes the original with the cut channels masked.

    Args:
        model: any network ``torch.fx`` can trace whose operations on channels the graph knows
            (residual additions, concatenation, flatten, squeeze-excitation, depthwise and
            grouped convolutions, ...). The network's inputs and outputs are never cut.
        profile: the profile of every converted layer whose input a width cuts. The weights
            are divided by it, so the outputs are unchanged.
        keep: optionally, a layer whose input is never cut and a layer whose outputs are never
            cut (beyond the network's own inputs and outputs).
        example: an input batch to trace on (default: :func:`default_example`).

    Returns:
        The converted model (the original is not changed; each layer keeps its train/eval mode).

    Raises:
        ValueError: naming the first operation or module that cannot be converted and why, a
            ``keep`` name that is not a layer, or the first layer where the converted network
            differs from the masked original.
    """
    original = model
    model = copy.deepcopy(model)
    if example is None:
        example = default_example(model)
    graph = trace(model, example)
    layers = graph.layers()
    if not layers:
        raise ValueError("the model has no Conv2d or Linear layer to convert")
    for name in keep:
        if name is not None and name not in layers:
            raise ValueError(f"keep names {name!r}, which is not a Conv2d or Linear of the model; "
                             f"its layers are {', '.join(layers[:8])}{'…' if len(layers) > 8 else ''}")
    channels = graph.channels(keep_input=keep[0], keep_output=keep[1])
    for name, module in model.named_modules():
        _check_module(name, module)
    plans = {name: channels.layer_plans(name) for name in layers}
    for name, module in list(model.named_modules()):
        if is_conv(module) or is_linear(module):
            if name not in plans:  # not run by forward: nothing to cut
                continue
            build = _incomplete_conv if is_conv(module) else _incomplete_linear
            new = build(module, profile, plans[name])
            new.train(module.training)
        elif is_batchnorm(module) and base_type(module) in (nn.BatchNorm1d, nn.BatchNorm2d):
            new = _incomplete_batchnorm(module, channels.norm_plan(name) if name in channels.walker.norm_ids else None)
        else:
            continue
        replace_module(model, name, new)
    self_check(original, model, plans, example)
    return model


def _mask(t: torch.Tensor, plan: ChannelPlan, p: float, dim: int) -> torch.Tensor:
    if not plan.cuts():
        return t
    shape = [1] * t.dim()
    shape[dim] = len(plan)
    return t * plan.mask(p).to(t.dtype).view(shape)


@torch.no_grad()
def self_check(original: nn.Module, converted: nn.Module, plans: dict[str, tuple[ChannelPlan, ChannelPlan]],
               example: torch.Tensor) -> None:
    """Compares the converted network at each of :data:`CHECK_WIDTHS` with the original whose
    layers see and produce only the kept channels (the rest zeroed).

    Raises:
        ValueError: naming the first layer whose kept outputs differ (or the error the converted
            network raised at that width).
    """
    reference = copy.deepcopy(original)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(example.shape, generator=gen, dtype=example.dtype)
    seen: dict[str, list] = {"ref": [], "new": []}
    hooks = []
    state = {"p": 1.0}
    for name, module in reference.named_modules():
        if name in plans:
            in_plan, out_plan = plans[name]
            dim = 1 if is_conv(module) else -1

            def pre(m, args, in_plan=in_plan, dim=dim):
                return (_mask(args[0], in_plan, state["p"], dim), *args[1:])

            def post(m, args, out, out_plan=out_plan, dim=dim, name=name):
                out = _mask(out, out_plan, state["p"], dim)
                seen["ref"].append((name, out.index_select(dim, out_plan.indices(state["p"]))
                                    if out_plan.cuts() else out))
                return out

            hooks += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    for name, module in converted.named_modules():
        if name in plans:
            hooks.append(module.register_forward_hook(
                lambda m, args, out, name=name: seen["new"].append((name, out))))
    widths = [m.in_width for m in converted.modules() if hasattr(m, "in_width")]
    try:
        with eval_mode(reference), eval_mode(converted):
            for p in CHECK_WIDTHS:
                state["p"] = p
                seen["ref"].clear()
                seen["new"].clear()
                expected = reference(x)
                set_width(converted, p)
                try:
                    got = converted(x)
                except Exception as e:
                    raise ValueError(f"cannot convert: the converted network fails at width {p} "
                                     f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
                if not _close(got, expected):
                    raise ValueError(f"cannot convert: at width {p} the converted network differs from the original "
                                     f"with the same channels masked, first at layer {_first_difference(seen)!r}")
    finally:
        for h in hooks:
            h.remove()
        set_width(converted, 1.0)
        for m, w in zip([m for m in converted.modules() if hasattr(m, "in_width")], widths, strict=True):
            m.in_width = m.out_width = w


def _flat(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _flat(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in _flat(v)]
    return []


def _close(a, b) -> bool:
    xs, ys = _flat(a), _flat(b)
    if len(xs) != len(ys):
        return False
    for x, y in zip(xs, ys, strict=True):
        if x.shape != y.shape or not bool(torch.isfinite(x).all()) or not bool(torch.isfinite(y).all()):
            return False
        scale = max(float(y.abs().max()) if y.numel() else 0.0, 1e-6)
        if float((x - y).abs().max()) > TOLERANCE * scale:
            return False
    return True


def _first_difference(seen: dict) -> str:
    for (name, ref), (_, new) in zip(seen["ref"], seen["new"], strict=False):
        if not _close(new, ref):
            return name
    return "the network's output"


# ---- the `converted` model family --------------------------------------------------------------

@dataclass
class ConvertedConfig:
    """A user's network, converted: ``factory`` builds it, ``input_shape`` is one example's shape.

    Attributes:
        factory: ``"MODULE:FACTORY"`` (an importable module) or ``"path/file.py:FACTORY"``; the
            factory is called with no arguments and returns the ``nn.Module``.
        input_shape: one example's shape, e.g. ``[3, 224, 224]``.
        profile: the profile of the converted layers.
    """

    factory: str = ""
    input_shape: list[int] = field(default_factory=lambda: [3, 32, 32])
    profile: ProfileSpec = "linear"

    def __post_init__(self) -> None:
        check_factory(self.factory)
        if not self.input_shape or not all(isinstance(s, int) and s >= 1 for s in self.input_shape):
            raise ValueError(f"input_shape must be positive whole numbers such as 3,224,224, got {self.input_shape}")


def check_factory(factory: str) -> tuple[str, str]:
    """Splits ``"MODULE:FACTORY"`` / ``"path/file.py:FACTORY"``.

    Raises:
        ValueError: naming the expected form.
    """
    module, sep, name = (factory or "").rpartition(":")
    if not sep or not module or not name.isidentifier():
        raise ValueError(f"factory must be MODULE:FACTORY or path/file.py:FACTORY (a function returning the "
                         f"nn.Module), got {factory!r}")
    return module, name


def load_factory(factory: str) -> nn.Module:
    """Imports the factory, calls it and returns its network (this runs the user's code).

    Raises:
        ValueError: one line naming what is wrong and how to fix it.
    """
    where, name = check_factory(factory)
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                raise ValueError(f"factory file {where} does not exist")
            spec = importlib.util.spec_from_file_location(f"dynscale_user_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except ValueError:
        raise
    except Exception as e:  # the user's code may raise anything
        raise ValueError(f"cannot import {where!r} for the factory {factory!r} ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:160]}); check the module path or file") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"{where!r} has no function {name!r}; the factory must name a function returning the "
                         "nn.Module")
    try:
        net = fn()
    except Exception as e:
        raise ValueError(f"the factory {factory!r} failed ({type(e).__name__}: {' '.join(str(e).split())[:160]})") \
            from None
    if not isinstance(net, nn.Module):
        raise ValueError(f"the factory {factory!r} returned a {type(net).__name__}, not an nn.Module")
    return net


@register_model(listed=False)
def converted(config: ConvertedConfig) -> nn.Module:
    """A user's network (``factory``), converted to incomplete layers (see ``dynscale convert``)."""
    net = load_factory(config.factory)
    example = torch.randn(2, *config.input_shape, generator=torch.Generator().manual_seed(0))
    model = convert(net, profile=config.profile, example=example)
    model.config = config
    return model


def mac_fraction(model: nn.Module, example: torch.Tensor) -> float:
    """The fraction of a converted model's layer MACs (on ``example``) that a width cuts."""
    total, scaled = 0, 0
    shapes: dict[str, tuple] = {}

    def record(name: str):
        def hook(module, args, out) -> None:
            shapes.setdefault(name, tuple(out.shape))
        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in model.named_modules()
             if isinstance(m, (IncompleteConv2d, IncompleteLinear))]
    with eval_mode(model), torch.no_grad():
        model(example)
    for h in hooks:
        h.remove()
    for name, m in model.named_modules():
        if name not in shapes:
            continue
        out = shapes[name]
        macs = math.prod(out) * (m.weight[0].numel())
        total += macs
        if m.cut_input or m.cut_output:
            scaled += macs
    return scaled / total if total else 0.0


__all__ = ["ConvertedConfig", "GraphError", "check_factory", "convert", "converted", "default_example",
           "load_factory", "mac_fraction", "self_check"]
