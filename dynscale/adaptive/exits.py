"""Early exits on a backbone (SPEC §3): small classifiers after chosen stages.

The backbone is traced (:func:`dynscale.graph.trace`) and cut at the stage boundaries its
graph finds (the places where one tensor is live), so any traceable backbone takes exits: the
registered models, an ``nn.Sequential``, a converted torchvision model. An exit is named by its
boundary's name (the module whose output it is, e.g. ``layers.0``); a model's own stage names
(``stages()`` of the registered models: ``block1``, ``stage2``, ``layer1``…) name the boundary
at the end of each stage too. An exit after a convolutional stage is a global average pool and a
linear layer; after a flat stage, a linear layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..cost import count_macs, eval_mode
from ..graph import ModelGraph, trace
from ..models.common import input_shape as config_input_shape
from .graph import AdaptiveGraph, Node, node_macs

FINAL = "final"  # the backbone's own output, after the last segment


def _qualified(backbone: nn.Module, module: nn.Module) -> str | None:
    """The module's name in the backbone, or for a stage built on the fly (a Sequential of
    some of its layers) its last child's."""
    names = {id(m): n for n, m in backbone.named_modules()}
    while id(module) not in names and isinstance(module, nn.Sequential) and len(module):
        module = module[-1]
    return names.get(id(module))


def _stage_aliases(backbone: nn.Module, graph: ModelGraph) -> dict[str, str]:
    """The backbone's own stage names (``stages()``, where it has one; all but the last) → the
    node of the boundary where each stage ends: the last node run inside that stage's module."""
    if not hasattr(backbone, "stages"):
        return {}
    nodes = graph.nodes()
    aliases = {}
    for name, module in list(backbone.stages())[:-1]:
        qualname = _qualified(backbone, module)
        inside = [n.name for n in nodes
                  if qualname in [q for q, _ in (n.meta.get("nn_module_stack") or {}).values()]]
        if qualname is not None and inside:
            aliases[name] = inside[-1]
    return aliases


def exit_places(backbone: nn.Module, input_shape: tuple[int, ...] | None = None) -> tuple[ModelGraph, dict[str, str]]:
    """The backbone's graph, and every name an exit can follow → the fx node of its boundary:
    the backbone's own stage names first, then each boundary's name.

    Args:
        backbone: any model :func:`dynscale.graph.trace` understands.
        input_shape: one example's shape ``(C, H, W)`` or ``(F,)``; read from ``backbone.config``
            if None.

    Raises:
        GraphError: if the backbone cannot be traced (naming the operation and its place).
    """
    shape = tuple(input_shape) if input_shape is not None else config_input_shape(backbone)
    with eval_mode(backbone):
        device = next(backbone.parameters(), torch.zeros(0)).device  # "meta": names without weights
        graph = trace(backbone, torch.zeros(1, *shape, device=device))
    boundaries = {b.node for b in graph.stage_boundaries()}
    names = {alias: node for alias, node in _stage_aliases(backbone, graph).items() if node in boundaries}
    for b in graph.stage_boundaries():
        names.setdefault(b.name, b.node)
    return graph, names


def exit_points(backbone: nn.Module, input_shape: tuple[int, ...] | None = None) -> list[str]:
    """Every name an exit can follow, in the backbone's execution order of its own stage names
    first, then every stage boundary's (see :func:`exit_places`)."""
    return list(exit_places(backbone, input_shape)[1])


def backbone_stages(backbone: nn.Module, exits: Sequence[str],
                    input_shape: tuple[int, ...] | None = None) -> list[tuple[str, nn.Module]]:
    """The backbone cut after each exit: ``(exit name, segment)`` pairs in execution order, then
    ``("final", last segment)``; run in order, the segments compute the backbone's forward
    (they share its modules and parameters).

    Raises:
        ValueError: for no exits, an unknown or repeated name, or two names of one place.
    """
    graph, names = exit_places(backbone, input_shape)
    exits = list(exits)
    listed = ", ".join(names) or "none"
    if not exits:
        raise ValueError(f"give at least one exit; this backbone's exits can follow {listed}")
    for e in exits:
        if e == FINAL:
            raise ValueError(f"{e!r} is the backbone's own output; exits can follow {listed}")
        if e not in names:
            raise ValueError(f"unknown stage {e!r}; exits can follow {listed}")
    if len(set(exits)) != len(exits):
        raise ValueError(f"each stage takes at most one exit, got {', '.join(exits)}")
    places = {}
    for e in exits:
        if names[e] in places:
            raise ValueError(f"exits {places[names[e]]!r} and {e!r} name one place; give one of them")
        places[names[e]] = e
    position = {n.name: i for i, n in enumerate(graph.nodes())}
    ordered = sorted(exits, key=lambda e: position[names[e]])
    segments = graph.split([names[e] for e in ordered])
    return list(zip([*ordered, FINAL], segments, strict=True))


def exit_head(state: torch.Tensor, num_classes: int) -> nn.Module:
    """An exit for a stage output shaped like ``state``: pool + linear for ``(B, C, H, W)``,
    linear for ``(B, F)``."""
    if state.dim() == 4:
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(state.shape[1], num_classes))
    if state.dim() == 2:
        return nn.Linear(state.shape[1], num_classes)
    raise ValueError(f"cannot attach an exit to a stage output of shape {tuple(state.shape)}")


class Segment(nn.Module):
    """A piece of the backbone, then an exit head (none for the backbone's own end):
    ``state -> (state, logits)``."""

    def __init__(self, body: nn.Module, head: nn.Module | None) -> None:
        super().__init__()
        self.body = body
        self.head = head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        state = self.body(x)  # (B, C, H, W) or (B, F); the backbone's logits at the end
        return state, (self.head(state) if self.head is not None else state)


def _key(name: str) -> str:
    """A module-dict key for an exit name (a boundary name may hold dots)."""
    return name.replace(".", "-")


class EarlyExitNet(nn.Module):
    """A backbone with exit classifiers after chosen stages.

    ``forward`` returns the logits of every exit and then the backbone's own, for training;
    :meth:`graph` gives the adaptive graph that runs it with real exits.

    Args:
        backbone: any model :func:`dynscale.graph.trace` understands (a registered model, an
            ``nn.Sequential``, a converted one).
        exits: the places to put an exit after (see :func:`exit_points`): stage boundary names,
            or the backbone's own stage names.
        input_shape: one example's shape ``(C, H, W)``; read from ``backbone.config`` if None.

    Raises:
        ValueError: for no exits, an unknown or repeated name, or a backbone the graph cannot
            trace.
    """

    def __init__(self, backbone: nn.Module, exits: Sequence[str], input_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape) if input_shape is not None else config_input_shape(backbone)
        stages = backbone_stages(backbone, exits, self.input_shape)
        self.backbone = backbone
        self.exit_names = [name for name, _ in stages[:-1]]

        # Probe each segment's output shape to size its exit (eval: batch-norm statistics stay put).
        state = torch.zeros(1, *self.input_shape)
        shapes = {}
        with torch.no_grad(), eval_mode(backbone):
            for name, module in stages:
                state = module(state)
                shapes[name] = state
        self.num_classes = state.shape[1]
        self.exits = nn.ModuleDict({_key(name): exit_head(shapes[name], self.num_classes) for name in self.exit_names})

        # Segments reference the backbone's and exits' modules; they are not registered twice.
        self._segments = [Segment(module, self.exits[_key(name)] if name != FINAL else None)
                          for name, module in stages]

    def exit(self, name: str) -> nn.Module:
        """The exit head after ``name``."""
        return self.exits[_key(name)]

    @property
    def config(self):
        """The backbone's config (saved with the run)."""
        return self.backbone.config

    @property
    def node_names(self) -> list[str]:
        """The exits' names, then ``final`` for the backbone's own output."""
        return [*self.exit_names, "final"]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # (B, C, H, W) -> [(B, classes)] × exits + 1
        outputs = []
        state = x
        for segment in self._segments:
            state, logits = segment(state)
            outputs.append(logits)
        return outputs

    def graph(self) -> AdaptiveGraph:
        """The chain of segments as an adaptive graph, costs counted per example."""
        example = torch.zeros(1, *self.input_shape)
        k = len(self._segments)
        macs = node_macs(self._segments, example, [None, *range(k - 1)])
        nodes = [Node(name, seg, m) for name, seg, m in zip(self.node_names, self._segments, macs, strict=True)]
        return AdaptiveGraph(nodes, [[i + 1] for i in range(k - 1)] + [[]], count_macs(self.backbone, example))


@torch.no_grad()
def exit_accuracies(net: EarlyExitNet, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> dict[str, float]:
    """Accuracy of every exit (and the final output) on ``(x, y)``, each on all examples."""
    correct = torch.zeros(len(net.node_names))
    with eval_mode(net):
        for start in range(0, len(x), batch_size):
            for i, logits in enumerate(net(x[start:start + batch_size])):
                correct[i] += (logits.argmax(1) == y[start:start + batch_size]).sum()
    return {name: round(correct[i].item() / max(1, len(x)), 6) for i, name in enumerate(net.node_names)}
