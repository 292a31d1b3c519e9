"""``dynscale.convert``: turn a user's network into an incomplete one, weights preserved.

Convolutions and linear layers become incomplete layers, batch-norm becomes width-aware
batch-norm; activations, pooling, dropout, flatten and containers pass through. Residual
additions keep working because every layer keeps the same prefix of a channel count at a given
width: both branches of an addition of C channels produce the first ``ceil(p·C)`` channels.

Anything that would break that prefix rule is refused, by name: the model is traced with
``torch.fx`` and every operation on the channel dimension between the first and the last
converted layer that the rule does not cover (concatenation, split and chunk, normalisation,
softmax or reductions over channels) is an error, as is a subclass of a converted layer type
that overrides ``forward``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .layers import IncompleteBatchNorm1d, IncompleteBatchNorm2d, IncompleteConv2d, IncompleteLinear
from .models.common import replace_module
from .profiles import ProfileSpec

PASS_THROUGH = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.Identity, nn.Flatten,
    nn.Dropout, nn.Dropout2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d, nn.Sequential, nn.ModuleList, nn.ModuleDict,
)
WHY_NOT = {
    nn.LayerNorm: "it normalizes across channels, so cutting channels would change every value",
    nn.GroupNorm: "its groups span channels, so a channel prefix does not keep whole groups",
    nn.ConvTranspose2d: "transposed convolutions are not supported yet",
    nn.Conv1d: "only 2-D convolutions are supported",
    nn.Conv3d: "only 2-D convolutions are supported",
    nn.Embedding: "embeddings have no input channels to cut",
    nn.MultiheadAttention: "attention mixes positions, not channels; it is not supported",
    nn.LSTM: "recurrent layers are not supported",
    nn.GRU: "recurrent layers are not supported",
    nn.PReLU: "a per-channel PReLU is not supported",
}


def _reject(name: str, module: nn.Module, why: str) -> ValueError:
    return ValueError(f"cannot convert module {name or '<root>'!r} ({type(module).__name__}): {why}")


CONVERTED = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)


def _check(name: str, module: nn.Module) -> None:
    for base in CONVERTED:
        if isinstance(module, base) and type(module).forward is not base.forward:
            raise _reject(name, module, f"it subclasses {base.__name__} but overrides forward, which converting "
                                        "it would lose")
    for cls, why in WHY_NOT.items():
        if isinstance(module, cls):
            raise _reject(name, module, why)
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros":
            raise _reject(name, module, f"padding_mode {module.padding_mode!r}; only 'zeros' is supported")
        if module.groups not in (1, module.in_channels):
            raise _reject(name, module, "grouped convolutions other than depthwise are not supported")
        return
    if isinstance(module, (nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, *PASS_THROUGH)):
        return
    own = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
    if own:
        raise _reject(name, module, f"it holds its own tensors ({', '.join(n for n, _ in own)}) "
                                    "whose meaning per channel is unknown; convert its parts instead")


F = torch.nn.functional
# Operations and where their dimension argument is (index in the call's arguments, the tensor or
# tensors first; keyword; default when absent).
CONCATENATION = {torch.cat: (1, "dim", 0), torch.concat: (1, "dim", 0), torch.stack: (1, "dim", 0),
                 torch.split: (2, "dim", 0), torch.chunk: (2, "dim", 0), torch.tensor_split: (2, "dim", 0),
                 torch.unbind: (1, "dim", 0), "split": (2, "dim", 0), "chunk": (2, "dim", 0),
                 "tensor_split": (2, "dim", 0), "unbind": (1, "dim", 0)}
OVER_A_DIMENSION = {F.softmax: (1, "dim", None), F.log_softmax: (1, "dim", None), torch.softmax: (1, "dim", None),
                    torch.log_softmax: (1, "dim", None), F.normalize: (2, "dim", 1), "softmax": (1, "dim", None),
                    "log_softmax": (1, "dim", None), torch.mean: (1, "dim", None), torch.sum: (1, "dim", None),
                    torch.amax: (1, "dim", None), torch.std: (1, "dim", None), torch.var: (1, "dim", None),
                    "mean": (1, "dim", None), "sum": (1, "dim", None), "amax": (1, "dim", None),
                    "max": (1, "dim", None), "min": (1, "dim", None), "norm": (2, "dim", None),
                    "std": (1, "dim", None), "var": (1, "dim", None)}
ALWAYS = {F.layer_norm: "layer normalisation", F.group_norm: "group normalisation",
          F.instance_norm: "instance normalisation", F.local_response_norm: "local response normalisation",
          F.batch_norm: "functional batch-norm with its own per-channel tensors"}
WHAT = {"cat": "concatenation", "concat": "concatenation", "stack": "stacking", "split": "split", "chunk": "chunk",
        "tensor_split": "split", "unbind": "unbind", "normalize": "normalisation"}


def _dimension(node, where: tuple[int, str, int | None]):
    position, keyword, default = where
    if keyword in node.kwargs:
        return node.kwargs[keyword]
    return node.args[position] if len(node.args) > position else default


def _touches_channels(dim) -> bool:
    # Channels are dimension 1 (N, C, ...); a negative or missing dimension may be them too.
    dims = dim if isinstance(dim, (tuple, list)) else [dim]
    return any(d is None or (isinstance(d, int) and (d == 1 or d < 0)) for d in dims)


def _check_channel_operations(model: nn.Module, first: str, last: str) -> None:
    """Traces the model and refuses channel operations between the first and last layer."""
    import torch.fx

    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as e:  # tracing fails with many error types
        raise ValueError(f"cannot convert: torch.fx cannot trace the model ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:200]}), so dynscale cannot check its operations on "
                         "channels; give it a forward without data-dependent control flow") from None
    nodes = list(graph.nodes)
    starts = [n for n in nodes if n.op == "call_module" and n.target == first]
    ends = [n for n in nodes if n.op == "call_module" and n.target == last]
    after, frontier = set(), list(starts)
    while frontier:  # everything computed from the first layer's output
        for user in frontier.pop().users:
            if user not in after:
                after.add(user)
                frontier.append(user)
    before, frontier = set(), list(ends)
    while frontier:  # everything the last layer's input is computed from
        for source in frontier.pop().all_input_nodes:
            if source not in before:
                before.add(source)
                frontier.append(source)
    for node in nodes:
        if node not in after or node not in before or node.op not in ("call_function", "call_method"):
            continue
        key = node.target  # a function, or a method's name
        name = key if isinstance(key, str) else getattr(key, "__name__", str(key))
        if key in ALWAYS:
            why = ALWAYS[key]
        elif key in CONCATENATION and _dimension(node, CONCATENATION[key]) != 0:
            why = f"{WHAT.get(name, name)} along dimension {_dimension(node, CONCATENATION[key])}"
        elif key in OVER_A_DIMENSION and _touches_channels(_dimension(node, OVER_A_DIMENSION[key])):
            why = f"{WHAT.get(name, name)} over dimension {_dimension(node, OVER_A_DIMENSION[key])}"
        else:
            continue
        raise ValueError(f"cannot convert: operation {node.name!r} ({name}) is {why}, which mixes or splits the "
                         "channels that a width cuts as a prefix; dynscale does not convert such models yet")


def _incomplete_conv(conv: nn.Conv2d, profile: ProfileSpec, cut_in: bool, cut_out: bool) -> IncompleteConv2d:
    new = IncompleteConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                           padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                           bias=conv.bias is not None, profile=profile, cut_input=cut_in,
                           cut_output=cut_out if conv.groups == 1 else cut_in)
    with torch.no_grad():
        new.weight.copy_(conv.weight / new.profile_factor())  # so that γ·W' = W at full width
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _incomplete_linear(linear: nn.Linear, profile: ProfileSpec, cut_in: bool, cut_out: bool) -> IncompleteLinear:
    new = IncompleteLinear(linear.in_features, linear.out_features, bias=linear.bias is not None,
                           profile=profile, cut_input=cut_in, cut_output=cut_out)
    with torch.no_grad():
        new.weight.copy_(linear.weight / new.profile)
        if linear.bias is not None:
            new.bias.copy_(linear.bias)
    return new


def _incomplete_batchnorm(bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    cls = IncompleteBatchNorm2d if isinstance(bn, nn.BatchNorm2d) else IncompleteBatchNorm1d
    new = cls(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
              track_running_stats=bn.track_running_stats)
    new.load_state_dict(bn.state_dict())
    return new


def convert(model: nn.Module, profile: ProfileSpec = "linear",
            keep: tuple[str | None, str | None] = (None, None)) -> nn.Module:
    """Returns an incomplete copy of ``model`` whose outputs at width 1.0 equal the original's.

    Args:
        model: a network of Conv2d (plain or depthwise), Linear, BatchNorm1d/2d, activations,
            pooling, dropout and flatten, in sequential or residual structure.
        profile: the profile of every converted layer but the first. The weights are divided
            by it, so the full-width outputs are unchanged.
        keep: module names of the layer whose input is the network's input (never cut, no
            profile) and of the layer whose outputs are the network's outputs (never cut).
            Default: the first and the last Conv2d/Linear in module order.

    Returns:
        The converted model (the original is not changed).

    Raises:
        ValueError: naming the first module that cannot be converted, and why; or a ``keep``
            name that is not a Conv2d/Linear of the model.
    """
    model = copy.deepcopy(model)
    for name, module in model.named_modules():
        _check(name, module)
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not layers:
        raise ValueError("the model has no Conv2d or Linear layer to convert")
    first = keep[0] or layers[0]
    last = keep[1] or layers[-1]
    for name in (first, last):
        if name not in layers:
            raise ValueError(f"keep names {name!r}, which is not a Conv2d or Linear of the model; "
                             f"its layers are {', '.join(layers[:8])}{'…' if len(layers) > 8 else ''}")
    _check_channel_operations(model, first, last)
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Conv2d):
            new = _incomplete_conv(module, None if name == first else profile, name != first, name != last)
        elif isinstance(module, nn.Linear):
            new = _incomplete_linear(module, None if name == first else profile, name != first, name != last)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            new = _incomplete_batchnorm(module)
        else:
            continue
        replace_module(model, name, new)
    return model
