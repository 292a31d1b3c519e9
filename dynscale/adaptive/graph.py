"""The adaptive graph shared by early exits and network selection (SPEC §3).

A graph is a list of nodes in order of rising cost. A node maps a state to a new state and
logits: for early exits the state is the backbone's feature map and a node is the next
segment of the backbone plus its exit head; for network selection the state is the input and a
node is a whole network. After a node, its policy decides per example: stop (predict with this
node's logits) or go on to one of the node's successors.

``run`` executes this for real: examples that stop are removed, the others are gathered into a
smaller batch for the next node, and the predictions are put back in the original order.
``simulate`` does the same bookkeeping on logits computed beforehand at every node, for fitting
and calibrating policies.

The nodes compute on their device (a GPU, say); logits, decisions and the bookkeeping are on
the CPU, where the policies run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..cost import count_macs, eval_mode
from ..device import model_device, to_device


@dataclass
class Node:
    """One step of the graph: ``module(state) -> (next state, logits)`` costing ``macs`` per
    example (its exit head included)."""

    name: str
    module: nn.Module
    macs: float


@dataclass
class Outcome:
    """What a graph did with each example, in the examples' original order."""

    predictions: torch.Tensor  # (N,) class index
    exit_node: torch.Tensor  # (N,) index of the node each example stopped at
    macs: torch.Tensor  # (N,) MACs spent on each example, policies included
    ran: torch.Tensor  # (nodes,) how many examples each node computed

    @classmethod
    def empty(cls, n: int, nodes: int) -> Outcome:
        return cls(torch.empty(n, dtype=torch.long), torch.empty(n, dtype=torch.long),
                   torch.zeros(n, dtype=torch.float64), torch.zeros(nodes, dtype=torch.long))

    def ran_fractions(self, names: Sequence[str]) -> dict[str, float]:
        n = max(1, len(self.exit_node))
        return {name: round(self.ran[i].item() / n, 6) for i, name in enumerate(names)}

    def accuracy(self, y: torch.Tensor) -> float:
        return (self.predictions == y).float().mean().item()

    def exit_fractions(self, names: Sequence[str]) -> dict[str, float]:
        counts = torch.bincount(self.exit_node, minlength=len(names)).float() / max(1, len(self.exit_node))
        return {name: round(counts[i].item(), 6) for i, name in enumerate(names)}


class AdaptiveGraph:
    """Nodes, their successors, and the cost of the full network that the graph replaces.

    Args:
        nodes: in topological order (every edge goes from a lower to a higher index).
        successors: per node, the indices it may continue to, cheapest first; empty for a node
            where every example stops.
        full_macs: MACs per example of the reference network (the backbone without exits, or the
            costliest network of a cascade); costs are reported relative to it.
    """

    def __init__(self, nodes: Sequence[Node], successors: Sequence[Sequence[int]], full_macs: float) -> None:
        if len(successors) != len(nodes):
            raise ValueError(f"{len(nodes)} nodes but {len(successors)} successor lists")
        for i, succ in enumerate(successors):
            if any(not i < j < len(nodes) for j in succ):
                raise ValueError(f"node {i} has a successor outside {i + 1}..{len(nodes) - 1}: {list(succ)}")
        self.nodes = list(nodes)
        self.successors = [list(s) for s in successors]
        self.full_macs = float(full_macs)

    @property
    def modules(self) -> list[nn.Module]:
        return [n.module for n in self.nodes]

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.nodes]

    @property
    def device(self) -> torch.device:
        """Where the nodes compute (the first node's device; they are placed together)."""
        return model_device(self.nodes[0].module) if self.nodes else torch.device("cpu")

    def decision_nodes(self) -> list[int]:
        """Indices of the nodes that have a policy (those with successors)."""
        return [i for i, s in enumerate(self.successors) if s]

    def parents(self, j: int) -> list[int]:
        return [i for i, s in enumerate(self.successors) if j in s]

    @torch.no_grad()
    def all_logits(self, x: torch.Tensor, batch_size: int = 512) -> list[torch.Tensor]:
        """Logits of every node for every example (no exits), for fitting policies.

        Every node runs on its first parent's state (all parents of a cascade node pass it the
        same input).

        Returns:
            One ``(N, classes)`` tensor per node, on the CPU.
        """
        outputs: list[list[torch.Tensor]] = [[] for _ in self.nodes]
        with eval_mode(*self.modules):
            self._all_logits(x, batch_size, outputs)
        return [torch.cat(o) for o in outputs]

    def _all_logits(self, x: torch.Tensor, batch_size: int, outputs: list[list[torch.Tensor]]) -> None:
        device = self.device
        for start in range(0, len(x), batch_size):
            states: dict[int, torch.Tensor] = {}
            for i, node in enumerate(self.nodes):
                parents = self.parents(i)
                state_in = to_device(x[start:start + batch_size], device) if not parents else states[parents[0]]
                states[i], logits = node.module(state_in)
                outputs[i].append(logits.cpu())

    @torch.no_grad()
    def run(self, x: torch.Tensor, policies: Sequence, batch_size: int = 256) -> Outcome:
        """Runs the graph with real exits, ``batch_size`` examples at a time.

        At each node only the examples routed to it are computed; those that stop leave the
        batch, the rest are gathered per successor.

        Args:
            x: inputs ``(N, C, H, W)``, anywhere (each batch goes to the nodes' device).
            policies: one per node (``None`` where the node has no successors); a policy maps
                logits ``(b, classes)`` to options ``(b,)``: 0 stops, j goes to successor j.
            batch_size: examples that enter the first node together.

        Returns:
            Predictions, exit nodes and per-example MACs in the order of ``x``, on the CPU.
        """
        with eval_mode(*self.modules):
            return self._run(x, policies, batch_size)

    def _run(self, x: torch.Tensor, policies: Sequence, batch_size: int) -> Outcome:
        self._check_policies(policies)
        n, device = len(x), self.device
        out = Outcome.empty(n, len(self.nodes))
        for start in range(0, n, batch_size):
            # Per node: the (original indices, states) routed to it, from each parent.
            pending: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {
                0: [(torch.arange(start, min(n, start + batch_size)), to_device(x[start:start + batch_size], device))]}
            for i, node in enumerate(self.nodes):
                parts = pending.pop(i, None)
                if not parts:
                    continue  # no example needs this node: it does not run
                index = torch.cat([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]  # (b,)
                state = torch.cat([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
                state, logits = node.module(state)  # (b, ...), (b, classes)
                option = self._settle(i, policies, logits.cpu(), index, out)  # (b,): the policy runs on the CPU
                for j, succ in enumerate(self.successors[i], start=1):
                    go = (option == j).nonzero().squeeze(1)
                    if len(go):
                        # Indexing (unlike index_select) keeps a channels-last state channels-last.
                        pending.setdefault(succ, []).append((index[go], state[go.to(state.device)]))
        return out

    def simulate(self, logits: Sequence[torch.Tensor], policies: Sequence) -> Outcome:
        """The bookkeeping of :meth:`run` on logits computed beforehand at every node."""
        self._check_policies(policies)
        n = len(logits[0])
        out = Outcome.empty(n, len(self.nodes))
        reached = [torch.zeros(n, dtype=torch.bool) for _ in self.nodes]
        reached[0][:] = True
        for i in range(len(self.nodes)):
            index = reached[i].nonzero().squeeze(1)
            if not len(index):
                continue
            option = self._settle(i, policies, logits[i][index], index, out)
            for j, succ in enumerate(self.successors[i], start=1):
                reached[succ][index[option == j]] = True
        return out

    def _settle(self, i: int, policies: Sequence, logits: torch.Tensor, index: torch.Tensor,
                out: Outcome) -> torch.Tensor:
        """Node ``i``'s decisions for the examples ``index`` it computed: counts them and their
        MACs, records the predictions of those that stop, and returns every example's option."""
        option = self._choose(i, policies[i], logits)
        out.ran[i] += len(index)
        out.macs[index] += self.nodes[i].macs + (policies[i].macs if policies[i] is not None else 0.0)
        stop = option == 0
        out.predictions[index[stop]] = logits[stop].argmax(1)
        out.exit_node[index[stop]] = i
        return option

    def _choose(self, i: int, policy, logits: torch.Tensor) -> torch.Tensor:
        if not self.successors[i]:
            return torch.zeros(len(logits), dtype=torch.long)
        option = policy.choose(logits)
        if len(option) and (option.min() < 0 or option.max() > len(self.successors[i])):
            raise ValueError(f"the policy of node {self.nodes[i].name} chose an option outside "
                             f"0..{len(self.successors[i])}")
        return option

    def _check_policies(self, policies: Sequence) -> None:
        if len(policies) != len(self.nodes):
            raise ValueError(f"give one policy per node ({len(self.nodes)}), got {len(policies)}")
        for i in self.decision_nodes():
            if policies[i] is None:
                raise ValueError(f"node {self.nodes[i].name} has successors but no policy")


def node_macs(modules: Sequence[nn.Module], example: torch.Tensor, parents: Sequence[int | None]) -> list[float]:
    """Counts each node's MACs per example, feeding each the state of its parent (or
    ``example`` for a node without one)."""
    states: list[torch.Tensor] = []
    counts = []
    with torch.no_grad(), eval_mode(*modules):
        for module, parent in zip(modules, parents, strict=True):
            state_in = example if parent is None else states[parent]
            counts.append(count_macs(module, state_in))
            states.append(module(state_in)[0])
    return counts
