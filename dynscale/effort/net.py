"""A trained network with effort knobs (SPEC §2), no retraining: ``apply(model, settings)``.

The network is exported dense, every batch-norm that follows a convolution or linear layer is
folded into it, and each such layer becomes an effort layer (with its ReLU fused). For SPET the
input channels of each layer are ordered once, offline, by significance — the mean magnitude
of the channel times the magnitude of its weights — by permuting the previous layer's outputs,
which costs nothing at run time. The model as given is kept: ``off()`` runs it unchanged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..layers import WidthScaled
from ..models.common import replace_module
from .layers import EffortConv2d, EffortLayer, EffortLinear
from .settings import EffortSettings, LayerEffort

# Modules between two layers that keep each channel to itself and hold no per-channel state, so
# a permutation of the channels passes through. (A batch-norm that could not be folded has
# per-channel statistics: the next layer then reads its inputs in order instead.)
CHANNELWISE = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Identity, nn.Dropout)
CHAIN_MODELS = ("mlp", "vgg16")


def _fold(layer: nn.Module, bn: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor]:
    weight = layer.weight.detach().clone()
    bias = layer.bias.detach().clone() if layer.bias is not None else torch.zeros(weight.shape[0])
    if bn is None:
        return weight, bias
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps) if bn.affine else \
        1 / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias.detach() if bn.affine else torch.zeros_like(scale)
    return weight * scale.view(-1, *[1] * (weight.dim() - 1)), (bias - bn.running_mean) * scale + shift


def _is_chain(model: nn.Module) -> bool:
    return getattr(model, "model_name", None) in CHAIN_MODELS or isinstance(model, nn.Sequential)


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if not list(m.children()) and n]


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
        model: a trained chain network (the registered ``mlp`` and ``vgg16``, or an
            ``nn.Sequential``) of convolutions and linear layers, each optionally followed by
            batch-norm and ReLU.
        settings: the knobs (default: none, the dense network).
        calibration: example inputs ``(N, C, H, W)`` to order channels by significance (weights
            alone without them).
        orders: the input-channel order of each layer, as an earlier build chose it (to rebuild
            a saved one exactly); overrides ``calibration``.

    Raises:
        ValueError: for a model that is not such a chain, or settings it cannot take.
    """

    def __init__(self, model: nn.Module, settings: EffortSettings | None = None,
                 calibration: torch.Tensor | None = None, orders: dict[str, list[int]] | None = None) -> None:
        super().__init__()
        if not _is_chain(model):
            raise ValueError(f"effort knobs take chain networks (the registered {' and '.join(CHAIN_MODELS)}, or an "
                             f"nn.Sequential); {type(model).__name__} is not one")
        self.original = model.eval()
        plain = copy.deepcopy(model)
        if any(isinstance(m, WidthScaled) for m in plain.modules()):
            from ..export import dense

            plain = dense(model, 1.0)
        self.net, self.layer_names = self._build(plain)
        self.orders = self._order(calibration, orders)
        self.enabled = True
        self.settings = EffortSettings()
        self.set_settings(settings or EffortSettings())
        self.eval()

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

    def _build(self, plain: nn.Module) -> tuple[nn.Module, list[str]]:
        leaves = _leaves(plain)
        names = []
        for i, (name, module) in enumerate(leaves):
            if not isinstance(module, (nn.Conv2d, nn.Linear)):
                continue
            after = [m for _, m in leaves[i + 1:i + 3]]
            bn = after[0] if after and isinstance(after[0], (nn.BatchNorm1d, nn.BatchNorm2d)) else None
            relu_at = 1 if bn is not None else 0
            relu = len(after) > relu_at and isinstance(after[relu_at], nn.ReLU)
            weight, bias = _fold(module, bn)
            layer = EffortConv2d(weight, bias, module, relu) if isinstance(module, nn.Conv2d) else \
                EffortLinear(weight, bias, relu)
            replace_module(plain, name, layer)
            for offset in range(1, relu_at + 1 + relu):  # the folded batch-norm and the fused ReLU
                replace_module(plain, leaves[i + offset][0], nn.Identity())
            names.append(name)
        if not names:
            raise ValueError("the model has no convolution or linear layer to put effort knobs on")
        return plain.eval(), names

    def _permutable(self, before: str, after: str) -> bool:
        """Whether only channel-wise modules (or a global pool and a flatten) lie between."""
        leaves = _leaves(self.net)
        names = [n for n, _ in leaves]
        between = [m for _, m in leaves[names.index(before) + 1:names.index(after)]]
        pooled = False
        for m in between:
            if isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1)):
                pooled = True
            elif isinstance(m, nn.Flatten) and pooled:
                continue
            elif not isinstance(m, CHANNELWISE):
                return False
        return True

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
        for i, name in enumerate(self.layer_names):
            layer = self.net.get_submodule(name)
            if not layer.relu or layer.in_features < 2:
                continue  # SPET cannot act here: no order needed
            if orders is not None:
                if name not in orders:
                    continue
                order = torch.tensor(orders[name])
            else:
                order = torch.argsort(_significance(layer, inputs.get(name)), descending=True, stable=True)
            before = self.layer_names[i - 1] if i else None
            previous = self.net.get_submodule(before) if before else None
            if previous is not None and self._permutable(before, name) and \
                    layer.weight.shape[1] == previous.weight.shape[0]:
                previous.weight.copy_(previous.weight[order])  # free: the previous outputs, reordered
                previous.bias.copy_(previous.bias[order])
                layer.weight.copy_(layer.weight[:, order])
            else:
                layer.order_inputs(order)
            chosen[name] = order.tolist()
        return chosen

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

    def simulate(self, on: bool = True) -> EffortNet:
        """Computes each layer's chosen positions with dense convolutions (same outputs up to
        rounding, same counts; what tuning uses) or, with ``on=False``, for real."""
        for layer in self.layers.values():
            layer.simulate = on
        return self

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
