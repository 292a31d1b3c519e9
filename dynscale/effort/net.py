"""A trained network with effort knobs (SPEC §2), no retraining: ``apply(model, settings)``.

The network is exported dense and traced (:func:`dynscale.graph.trace`), so any model the graph
understands takes the knobs: chains of layers, residual networks, depthwise-separable ones, and
converted models. Every convolution and linear layer becomes an effort layer; a batch-norm that
is its output's only reader is folded into it, and where the graph finds a ReLU after it
(:meth:`~dynscale.graph.ModelGraph.relu_chains`) the ReLU is fused (SPET needs it). A ReLU
module called once is then removed; a functional one (``F.relu``) or one module called at
several places stays, and computes ReLU of an output that is already rectified: nothing changes.

For SPET the input channels of each layer are ordered once, offline, by significance — the mean
magnitude of the channel times the magnitude of its weights — by permuting the previous layer's
outputs where the graph shows that layer's output reaching this one alone, through channel-wise
operations only; elsewhere the layer gathers its inputs in that order at run time. The model as
given is kept: ``off()`` runs it unchanged.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch import nn

from ..export import plain_network
from ..graph import ModelGraph, trace
from ..models.common import input_shape, replace_module
from .layers import EffortConv2d, EffortLayer, EffortLinear
from .settings import EffortSettings, LayerEffort

BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
STAGES = 6  # cuts the tuner reruns from (each keeps the held-out data's activations there)


def _fold(layer: nn.Module, bn: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor]:
    weight = layer.weight.detach().clone()
    bias = layer.bias.detach().clone() if layer.bias is not None else torch.zeros(weight.shape[0])
    if bn is None:
        return weight, bias
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps) if bn.affine else \
        1 / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias.detach() if bn.affine else torch.zeros_like(scale)
    return weight * scale.view(-1, *[1] * (weight.dim() - 1)), (bias - bn.running_mean) * scale + shift


def _foldable(bn: nn.Module) -> bool:
    return type(bn) in BATCHNORMS and bn.running_mean is not None


def _calls(graph: ModelGraph) -> Counter:
    """How many times the traced forward calls each submodule."""
    return Counter(n.target for n in graph.gm.graph.nodes if n.op == "call_module")


# Operations that keep each channel to itself and hold no per-channel state, so a permutation
# of the channels passes through (a batch-norm that could not be folded has per-channel
# statistics: the next layer then reads its inputs in order instead). A flatten passes it when
# the spatial size is 1 (checked by the layer's width).
CHANNELWISE_MODULES = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Identity,
                       nn.Dropout, nn.Flatten)
CHANNELWISE_CALLS = {torch.relu, torch.relu_, torch.flatten, nn.functional.relu, nn.functional.relu_,
                     nn.functional.max_pool2d, nn.functional.avg_pool2d, nn.functional.adaptive_avg_pool2d,
                     nn.functional.dropout, "relu", "relu_", "flatten"}


def _channelwise(graph: ModelGraph, node) -> bool:
    if node.op == "call_module":
        return type(graph.gm.get_submodule(node.target)) in CHANNELWISE_MODULES
    return node.op in ("call_function", "call_method") and node.target in CHANNELWISE_CALLS


def _sole_producer(graph: ModelGraph, name: str, layers: list[str]) -> str | None:
    """The one of ``layers`` whose output alone reaches layer ``name`` through channel-wise
    operations that nothing else reads, if there is one."""
    (node,) = [n for n in graph.gm.graph.nodes if n.op == "call_module" and n.target == name]
    source = node.args[0]
    while isinstance(source, torch.fx.Node) and len(source.users) == 1:
        if source.op == "call_module" and source.target in layers:
            return source.target
        if not _channelwise(graph, source):
            return None
        source = source.args[0] if source.args else None
    return None


def _only_reader(graph: ModelGraph, name: str) -> str | None:
    """The batch-norm module that alone reads layer ``name``'s output, if one does."""
    (node,) = [n for n in graph.gm.graph.nodes if n.op == "call_module" and n.target == name]
    users = list(node.users)
    if len(users) == 1 and users[0].op == "call_module":
        return users[0].target
    return None


def _significance(layer: EffortLayer, inputs: torch.Tensor | None) -> torch.Tensor:
    """Per input channel: mean |x| (1 without data) times the summed |weight| it meets."""
    weight = layer.weight.abs()
    per_channel = weight.sum(dim=[d for d in range(weight.dim()) if d != 1])  # (C_in,)
    if inputs is None:
        return per_channel
    magnitude = inputs.abs().transpose(0, 1).reshape(inputs.shape[1], -1).mean(1)  # (C_in,)
    return per_channel * magnitude


class EffortNet(nn.Module):
    """The model with effort layers; ``off()`` runs the model as given, bit for bit.

    Args:
        model: a trained network that :func:`dynscale.graph.trace` understands (any registered
            model, an ``nn.Sequential``, a converted one); width-scaled models run at width 1.
        settings: the knobs (default: none, the dense network).
        calibration: example inputs ``(N, C, H, W)`` to order channels by significance (weights
            alone without them).
        orders: the input-channel order of each layer, as an earlier build chose it (to rebuild
            a saved one exactly); overrides ``calibration``.
        example: an input to trace with, ``(B, C, H, W)`` or ``(B, F)``; the first calibration
            example, else a zero input of the shape ``model.config`` declares, if None.

    Attributes:
        layer_names: the effort layers, in execution order (the names settings use).
        dense_reasons: per convolution or linear layer left as it was, why.

    Raises:
        ValueError: for a model the graph cannot trace (:class:`~dynscale.graph.GraphError`,
            naming the operation and its place), one without a layer, or settings it cannot take.
    """

    def __init__(self, model: nn.Module, settings: EffortSettings | None = None,
                 calibration: torch.Tensor | None = None, orders: dict[str, list[int]] | None = None,
                 example: torch.Tensor | None = None) -> None:
        super().__init__()
        self.original = model.eval()
        if example is None:
            example = calibration[:1] if calibration is not None else torch.zeros(1, *input_shape(model))
        plain = plain_network(model, example)
        graph = trace(plain, example[:1])
        self.net, self.layer_names, self.dense_reasons = self._build(plain, graph)
        self._graph = graph  # a plain attribute: its GraphModule calls the effort layers too
        self.orders = self._order(calibration, orders)
        self.enabled = True
        self.settings = EffortSettings()
        self.set_settings(settings or EffortSettings())
        self.eval()
        with torch.no_grad():
            self.net(example[:1])  # each layer notes its input size (the cost table's signatures)

    @property
    def config(self):
        """The model's config (for input shapes and saving)."""
        return self.original.config

    @property
    def model_name(self) -> str | None:
        return getattr(self.original, "model_name", None)

    @property
    def layers(self) -> dict[str, EffortLayer]:
        return {name: self.net.get_submodule(name) for name in self.layer_names}

    @staticmethod
    def _build(plain: nn.Module, graph: ModelGraph) -> tuple[nn.Module, list[str], dict[str, str]]:
        """Puts an effort layer in place of every convolution and linear layer, in the model and in
        its traced graph (which then computes the effort network too)."""
        calls = _calls(graph)
        chains = {chain.layer: chain for chain in graph.relu_chains()}
        names, reasons = [], {}

        def put(name: str, module: nn.Module) -> None:
            replace_module(plain, name, module)
            replace_module(graph.gm, name, module)

        for name in graph.layers():
            module = plain.get_submodule(name)
            if calls[name] != 1:
                reasons[name] = f"it is called at {calls[name]} places in the forward pass, with one set of weights"
                continue
            chain = chains.get(name)
            bn = chain.bn if chain is not None else _only_reader(graph, name)
            if bn is not None and not (_foldable(plain.get_submodule(bn)) and calls[bn] == 1):
                bn, chain = None, None  # not folded: the ReLU then does not follow the layer itself
            weight, bias = _fold(module, plain.get_submodule(bn) if bn else None)
            relu = chain is not None
            put(name, EffortConv2d(weight, bias, module, relu) if isinstance(module, nn.Conv2d) else
                EffortLinear(weight, bias, relu))
            if bn:
                put(bn, nn.Identity())
            if relu and chain.act_is_module and calls[chain.act] == 1:
                put(chain.act, nn.Identity())  # fused; a functional or shared ReLU stays (ReLU twice is ReLU)
            names.append(name)
        if not names:
            raise ValueError("the model has no convolution or linear layer to put effort knobs on" +
                             "".join(f"; {n} is left dense: {r}" for n, r in reasons.items()))
        return plain.eval(), names, reasons

    def _previous(self, name: str) -> EffortLayer | None:
        """The effort layer whose output alone reaches layer ``name``, through channel-wise
        operations only (so permuting its outputs is free), if there is one."""
        producer = _sole_producer(self._graph, name, self.layer_names)
        if producer is None:
            return None
        previous = self.net.get_submodule(producer)
        if getattr(previous, "groups", 1) != 1 or previous.weight.shape[0] != self.net.get_submodule(name).in_features:
            return None  # a grouped producer maps inputs to outputs; a flatten mixes positions
        return previous

    @torch.no_grad()
    def _order(self, calibration: torch.Tensor | None, orders: dict[str, list[int]] | None) -> dict[str, list[int]]:
        inputs: dict[str, torch.Tensor] = {}
        if orders is None and calibration is not None:
            hooks = [self.net.get_submodule(n).register_forward_pre_hook(
                lambda m, args, n=n: inputs.__setitem__(n, args[0])) for n in self.layer_names]
            try:
                self.net(calibration)
            finally:
                for hook in hooks:
                    hook.remove()
        chosen = {}
        for name in self.layer_names:
            layer = self.net.get_submodule(name)
            if not layer.relu or layer.in_features < 2:
                continue  # SPET cannot act here: no order needed
            if orders is not None:
                if name not in orders:
                    continue
                order = torch.tensor(orders[name])
            else:
                order = torch.argsort(_significance(layer, inputs.get(name)), descending=True, stable=True)
            previous = self._previous(name)
            if previous is not None:
                previous.weight.copy_(previous.weight[order])  # free: the previous outputs, reordered
                previous.bias.copy_(previous.bias[order])
                layer.weight.copy_(layer.weight[:, order])
            else:
                layer.order_inputs(order)
            chosen[name] = order.tolist()
        return chosen

    def segments(self, cuts: int = STAGES) -> list[nn.Module]:
        """The effort network cut at up to ``cuts`` stage boundaries the graph finds, spread
        over its layers: modules that, run in order, compute ``forward`` (what the tuner reruns
        from the stage a move changes)."""
        graph = self._graph
        position = {n.name: i for i, n in enumerate(graph.gm.graph.nodes)}
        called = sorted(position[n.name] for n in graph.gm.graph.nodes
                        if n.op == "call_module" and n.target in self.layer_names)
        boundaries = [(position[b.node], b.name) for b in graph.stage_boundaries() if b.node in position]
        chosen: list[str] = []
        for k in range(1, cuts + 1):
            after = called[min(len(called) - 1, k * len(called) // (cuts + 1))]  # the layer a cut follows
            later = [(p, name) for p, name in boundaries if p >= after]
            if later and later[0][1] not in chosen and later[0][0] < called[-1]:
                chosen.append(later[0][1])
        return graph.split(chosen) if chosen else [self.net]

    def set_settings(self, settings: EffortSettings) -> None:
        """Sets every layer's knobs (layers not named go dense).

        Raises:
            ValueError: for an unknown layer name or a knob a layer cannot take (nothing changes).
        """
        unknown = sorted(set(settings.layers) - set(self.layer_names))
        if unknown:
            raise ValueError(f"unknown layer {unknown[0]!r} in the effort settings; the layers are "
                             f"{', '.join(self.layer_names)}")
        layers = self.layers
        for name, effort in settings.layers.items():
            layers[name].check(effort, name)
        for name, layer in layers.items():
            layer.effort = settings.layers.get(name, LayerEffort())
        self.settings = settings

    def off(self) -> EffortNet:
        """Runs the model as given from now on: outputs bit-identical to it."""
        self.enabled = False
        return self

    def on(self) -> EffortNet:
        """Runs with the effort knobs again."""
        self.enabled = True
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) if self.enabled else self.original(x)

    def macs(self) -> torch.Tensor:
        """``(B,)``: multiply-accumulates each example of the last forward pass really took."""
        counts = [layer.last_macs for layer in self.layers.values()]
        if any(c is None for c in counts) or not self.enabled:
            raise ValueError("run the effort network (with its knobs on) before asking what it cost")
        return torch.stack(counts).sum(0)


def apply(model: nn.Module, settings: EffortSettings | dict | None = None,
          calibration: torch.Tensor | None = None) -> EffortNet:
    """The model with effort knobs (see :class:`EffortNet`); ``settings`` may be their JSON form."""
    if isinstance(settings, dict):
        settings = EffortSettings.from_json(settings)
    return EffortNet(model, settings, calibration)


def off(net: EffortNet) -> nn.Module:
    """Turns the knobs off: the network computes exactly what the model as given does."""
    return net.off()
