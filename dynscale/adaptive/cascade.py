"""Network selection (SPEC §3): separately trained networks of rising cost in a DAG. After each
network a policy stops, goes to the next network, or jumps further (paper: A → G → R, A → R)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..models.common import input_shape as config_input_shape
from .graph import AdaptiveGraph, Node, node_macs


class WholeNetwork(nn.Module):
    """A network as a graph node: the state is the input itself, passed on unchanged."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (B, C, H, W) -> x, (B, classes)
        return x, self.network(x)


def parse_edges(text: str) -> list[tuple[int, int]]:
    """Parses ``"0-1,1-2,0-2"`` into edges.

    Raises:
        ValueError: for anything but comma-separated ``A-B`` pairs of integers.
    """
    edges = []
    for part in (p.strip() for p in text.split(",")):
        a, sep, b = part.partition("-")
        if not sep or not a.strip().isdigit() or not b.strip().isdigit():
            raise ValueError(f"edges are comma-separated FROM-TO network indices like 0-1,1-2,0-2; got {part!r}")
        edges.append((int(a), int(b)))
    return edges


def check_edges(edges: Sequence[tuple[int, int]], count: int) -> list[list[int]]:
    """Validates edges between ``count`` networks and returns each network's successors.

    Raises:
        ValueError: for an index out of range, an edge that does not go to a later (costlier)
            network, a repeated edge, or a network no edge leads to.
    """
    successors: list[list[int]] = [[] for _ in range(count)]
    for a, b in edges:
        if not (0 <= a < count and 0 <= b < count):
            raise ValueError(f"edge {a}-{b} names an unknown network; the networks are 0..{count - 1}")
        if b <= a:
            raise ValueError(f"edge {a}-{b} goes backwards; edges go from a cheaper network to a later, "
                             "costlier one (list the networks by rising cost)")
        if b in successors[a]:
            raise ValueError(f"edge {a}-{b} is given twice")
        successors[a].append(b)
    for j in range(1, count):
        if not any(j in s for s in successors):
            raise ValueError(f"no edge leads to network {j}, so it could never run; add one such as {j - 1}-{j}")
    return [sorted(s) for s in successors]


class Cascade(nn.Module):
    """Separately trained networks of rising cost, chosen per example.

    Args:
        networks: the networks, cheapest first; each maps ``(B, C, H, W)`` to ``(B, classes)``.
        edges: ``(from, to)`` index pairs, each to a later network; a chain by default.
            ``[(0, 1), (1, 2), (0, 2)]`` adds the paper's jump from the first to the last.
        names: a label per network (``net0``… by default).
        input_shape: one example's shape ``(C, H, W)``; read from the first network's
            ``config`` if None.

    Raises:
        ValueError: for fewer than two networks or bad edges.
    """

    def __init__(self, networks: Sequence[nn.Module], edges: Sequence[tuple[int, int]] | None = None,
                 names: Sequence[str] | None = None, input_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        if len(networks) < 2:
            raise ValueError(f"a cascade needs at least two networks, got {len(networks)}")
        self.networks = nn.ModuleList(networks)
        edges = [(i, i + 1) for i in range(len(networks) - 1)] if edges is None else list(edges)
        self.successors = check_edges(edges, len(networks))
        self.edges = [tuple(e) for e in edges]
        self.names = list(names) if names is not None else [f"net{i}" for i in range(len(networks))]
        if len(self.names) != len(networks):
            raise ValueError(f"give one name per network ({len(networks)}), got {len(self.names)}")
        self.input_shape = tuple(input_shape) if input_shape is not None else config_input_shape(networks[0])

    def graph(self) -> AdaptiveGraph:
        """The cascade as an adaptive graph; costs are relative to the costliest network."""
        modules = [WholeNetwork(n) for n in self.networks]
        macs = node_macs(modules, torch.zeros(1, *self.input_shape), [None] * len(modules))
        nodes = [Node(name, m, c) for name, m, c in zip(self.names, modules, macs, strict=True)]
        return AdaptiveGraph(nodes, self.successors, max(macs))
