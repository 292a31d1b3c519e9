"""Early exits on a backbone (SPEC §3): small classifiers after chosen stages.

A backbone is split into stages by its ``stages()`` method (every registered model has one; an
``nn.Sequential`` is split into its children). An exit after a convolutional stage is a global
average pool and a linear layer; after a flat stage, a linear layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..cost import count_macs, eval_mode
from ..models.common import input_shape as config_input_shape
from .graph import AdaptiveGraph, Node, node_macs


def backbone_stages(backbone: nn.Module) -> list[tuple[str, nn.Module]]:
    """The backbone's stages as ``(name, module)`` pairs that, run in order, compute its forward.

    Raises:
        TypeError: if the backbone has no ``stages()`` method and is not an ``nn.Sequential``.
    """
    if hasattr(backbone, "stages"):
        return list(backbone.stages())
    if isinstance(backbone, nn.Sequential):
        return [(name, module) for name, module in backbone.named_children()]
    raise TypeError(f"{type(backbone).__name__} cannot be split into stages; give it a stages() method "
                    "returning (name, module) pairs in order, or pass an nn.Sequential")


def exit_head(state: torch.Tensor, num_classes: int) -> nn.Module:
    """An exit for a stage output shaped like ``state``: pool + linear for ``(B, C, H, W)``,
    linear for ``(B, F)``."""
    if state.dim() == 4:
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(state.shape[1], num_classes))
    if state.dim() == 2:
        return nn.Linear(state.shape[1], num_classes)
    raise ValueError(f"cannot attach an exit to a stage output of shape {tuple(state.shape)}")


class Segment(nn.Module):
    """Consecutive backbone stages, then an exit head (none for the backbone's own end):
    ``state -> (state, logits)``."""

    def __init__(self, stages: Sequence[nn.Module], head: nn.Module | None) -> None:
        super().__init__()
        self.stages = nn.Sequential(*stages)
        self.head = head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        state = self.stages(x)  # (B, C, H, W) or (B, F); the backbone's logits at the end
        return state, (self.head(state) if self.head is not None else state)


class EarlyExitNet(nn.Module):
    """A backbone with exit classifiers after chosen stages.

    ``forward`` returns the logits of every exit and then the backbone's own, for training;
    :meth:`graph` gives the adaptive graph that runs it with real exits.

    Args:
        backbone: a registered model (or any model with ``stages()``, or an ``nn.Sequential``).
        exits: names of the stages to put an exit after (see :func:`backbone_stages`); not the
            last stage, which is the network's own output.
        input_shape: one example's shape ``(C, H, W)``; read from ``backbone.config`` if None.

    Raises:
        ValueError: for no exits, an unknown or repeated stage name, or an exit after the last
            stage.
    """

    def __init__(self, backbone: nn.Module, exits: Sequence[str], input_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        stages = backbone_stages(backbone)
        names = [name for name, _ in stages]
        exits = list(exits)
        if not exits:
            raise ValueError(f"give at least one exit; this backbone's stages are {', '.join(names[:-1])}")
        for e in exits:
            if e not in names:
                raise ValueError(f"unknown stage {e!r}; exits can follow {', '.join(names[:-1])}")
        if names[-1] in exits:
            raise ValueError(f"{names[-1]!r} is the backbone's own output; exits can follow {', '.join(names[:-1])}")
        if len(set(exits)) != len(exits):
            raise ValueError(f"each stage takes at most one exit, got {', '.join(exits)}")
        self.backbone = backbone
        self.exit_names = sorted(exits, key=names.index)
        self.input_shape = tuple(input_shape) if input_shape is not None else config_input_shape(backbone)

        # Probe each stage's output shape to size its exit (eval: batch-norm statistics stay put).
        state = torch.zeros(1, *self.input_shape)
        shapes = {}
        with torch.no_grad(), eval_mode(backbone):
            for name, module in stages:
                state = module(state)
                shapes[name] = state
        self.num_classes = state.shape[1]
        self.exits = nn.ModuleDict({name: exit_head(shapes[name], self.num_classes) for name in self.exit_names})

        # Segments reference the backbone's and exits' modules; they are not registered twice.
        segments, current = [], []
        for name, module in stages:
            current.append(module)
            if name in self.exits:
                segments.append(Segment(current, self.exits[name]))
                current = []
        segments.append(Segment(current, None))
        self._segments = segments

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
