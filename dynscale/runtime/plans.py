"""How a bundle's graphs make up one operating point, executed with ONNX Runtime and NumPy.

- ``single``: one graph, input to logits (a width, a dense or int8 network).
- ``graph``: nodes in order of rising cost (early exits: a backbone segment and its exit head;
  network selection: a whole network), each ``state -> (next state, logits)``; after a node its
  policy sends each example on or stops it there. Examples that stop leave the batch, the
  rest are gathered for the next node, as ``dynscale.adaptive.AdaptiveGraph.run`` does.
- ``dfs``: fixed segments and gated blocks; at each gated block the gate picks a path per
  example (skip, int8 or float32), the batch is split by choice, each group runs its path and
  the block's output is put together in the original order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .manifest import BundleError

Session = Callable[[dict[str, np.ndarray]], list[np.ndarray]]  # feeds -> outputs


@dataclass
class Result:
    """What :meth:`dynscale.runtime.Bundle.run` computed, in the order of the inputs.

    Attributes:
        logits: ``(N, classes)`` float32.
        point: the operating point's name.
        route: per example, where it went: which nodes it ran ``(N, nodes)`` bool, the last
            one where it stopped (``graph`` plans); its choice index at each gated block
            ``(N, blocks)`` (``dfs`` plans); else None.
    """

    logits: np.ndarray
    point: str
    route: np.ndarray | None = None

    @property
    def predictions(self) -> np.ndarray:
        """``(N,)`` the class index of each example."""
        return self.logits.argmax(1)


def run_single(sessions: dict[str, Session], plan: dict, x: np.ndarray) -> tuple[np.ndarray, None]:
    """One graph: ``(N, C, H, W) -> (N, classes)``."""
    return sessions[plan["graph"]]({"input": x})[0], None


def confidence_features(logits: np.ndarray) -> np.ndarray:
    """A policy's view of an exit's logits ``(B, K)``: softmax, max probability, margin and
    entropy, ``(B, K + 3)`` (as ``dynscale.adaptive.confidence_features`` computes them)."""
    z = logits.astype(np.float32)
    z = np.exp(z - z.max(1, keepdims=True))
    p = z / z.sum(1, keepdims=True)  # (B, K)
    top = -np.sort(-p, axis=1)[:, :2]
    margin = top[:, 0] - top[:, 1] if p.shape[1] > 1 else top[:, 0]
    entropy = -(p * np.log(np.maximum(p, 1e-12))).sum(1)
    return np.concatenate([p, top[:, :1], margin[:, None], entropy[:, None]], axis=1).astype(np.float32)


def choose(policy: dict | None, logits: np.ndarray) -> np.ndarray:
    """A node's options per example ``(B,)``: 0 stops, j goes to the j-th successor.

    Policies: ``{"kind": "threshold", "threshold": t}`` (stop when the max softmax probability
    reaches t, else go to the first successor); ``{"kind": "learned", "decisions": [...]}`` (a
    chain of binary decisions, each ``{"constant": bool}`` or ``{"weight": [...], "bias": b}``
    on the confidence features; the earliest option taken wins); ``{"kind": "fixed",
    "option": j}``.
    """
    n = len(logits)
    if policy is None:
        return np.zeros(n, dtype=np.int64)
    kind = policy.get("kind")
    if kind == "fixed":
        return np.full(n, int(policy["option"]), dtype=np.int64)
    if kind == "threshold":
        z = np.exp(logits - logits.max(1, keepdims=True))
        confidence = (z / z.sum(1, keepdims=True)).max(1)
        return (confidence < float(policy["threshold"])).astype(np.int64)
    if kind == "learned":
        decisions = policy["decisions"]
        features = confidence_features(logits)
        option = np.full(n, len(decisions), dtype=np.int64)
        for d in reversed(range(len(decisions))):  # the earliest option taken wins
            decision = decisions[d]
            if "constant" in decision:
                take = np.full(n, bool(decision["constant"]))
            else:
                take = features @ np.asarray(decision["weight"], dtype=np.float32) + float(decision["bias"]) > 0
            option = np.where(take, d, option)
        return option
    raise BundleError(f"manifest.json: unknown policy kind {kind!r}; this runtime is older than the bundle")


def run_graph(sessions: dict[str, Session], structure: dict, plan: dict, x: np.ndarray) -> tuple[np.ndarray,
                                                                                                 np.ndarray]:
    """Nodes with exits: examples leave at their exit, the rest go on as one smaller batch.

    Returns:
        Logits ``(N, classes)`` of the node each example stopped at, and which nodes each ran
        ``(N, nodes)``.
    """
    successors = plan["successors"]
    n = len(x)
    logits_out: np.ndarray | None = None
    ran = np.zeros((n, len(plan["nodes"])), dtype=bool)
    pending: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {0: [(np.arange(n), x)]}
    for i, graph in enumerate(plan["nodes"]):
        parts = pending.pop(i, None)
        if not parts:
            continue  # no example needs this node: it does not run
        index = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        state = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
        state, logits = sessions[graph]({"input": np.ascontiguousarray(state)})[:2]
        option = choose(plan["policies"][i] if successors[i] else None, logits)
        if len(option) and (option.min() < 0 or option.max() > len(successors[i])):
            raise BundleError(f"node {i}'s policy chose an option outside 0..{len(successors[i])}; the bundle is "
                              "damaged")
        if logits_out is None:
            logits_out = np.zeros((n, logits.shape[1]), dtype=np.float32)
        stop = option == 0
        logits_out[index[stop]] = logits[stop]
        ran[index, i] = True
        for j, succ in enumerate(successors[i], start=1):
            go = np.flatnonzero(option == j)
            if len(go):
                pending.setdefault(succ, []).append((index[go], state[go]))
    assert logits_out is not None
    return logits_out, ran


def run_dfs(sessions: dict[str, Session], structure: dict, plan: dict, x: np.ndarray) -> tuple[np.ndarray,
                                                                                               np.ndarray]:
    """Fixed segments and gated blocks; each gated block's batch regrouped by the gate's choice.

    Returns:
        Logits ``(N, classes)`` and each example's choice index per gated block ``(N, blocks)``.
    """
    gate_kind = structure["gate"]
    hidden = int(structure.get("hidden", 0))
    n = len(x)
    state: tuple[np.ndarray, ...] | np.ndarray | None = None
    chosen = []
    block = 0
    for piece in plan["pieces"]:
        if isinstance(piece, str):
            x = sessions[piece]({"input": x})[0]
            continue
        gate = plan["gates"][block]
        if gate_kind == "lstm":
            h, c = state if state is not None else (np.zeros((n, hidden), np.float32),) * 2
            scores, h, c = sessions[gate]({"input": x, "h": h, "c": c})[:3]
            state = (h, c)
            choice = scores.argmax(1)
        elif gate_kind == "upfront":
            if block == 0:
                state = sessions[gate]({"input": x})[0].argmax(2)  # (N, blocks)
            choice = state[:, block]
        else:
            choice = sessions[gate]({"input": x})[0].argmax(1)
        chosen.append(choice)
        x = _regroup(sessions, piece, x, choice)
        block += 1
    return x, (np.stack(chosen, 1) if chosen else np.zeros((n, 0), np.int64))


def _regroup(sessions: dict[str, Session], paths: list, x: np.ndarray, choice: np.ndarray) -> np.ndarray:
    """One gated block: each example through the path of its choice (None: the input passes)."""
    groups = np.unique(choice)
    if len(groups) == 1:  # one group: no index operation
        path = paths[int(groups[0])]
        return x if path is None else sessions[path]({"input": x})[0]
    out = None
    for c in groups:
        index = np.flatnonzero(choice == c)
        part = x[index]
        path = paths[int(c)]
        if path is not None:
            part = sessions[path]({"input": part})[0]
        if out is None:
            out = np.empty((len(x), *part.shape[1:]), dtype=part.dtype)
        out[index] = part
    return out


RUNNERS = {"single": lambda sessions, structure, plan, x: run_single(sessions, plan, x),
           "graph": run_graph, "dfs": run_dfs}
