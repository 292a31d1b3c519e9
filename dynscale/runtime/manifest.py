"""The bundle's ``manifest.json``: what each file is, how the graphs make up each operating
point, and what each point costs. Checked field by field when a bundle is loaded (plain Python:
the runtime needs neither PyTorch nor the rest of dynscale)."""

from __future__ import annotations

import math
from typing import Any

FORMAT = "dynscale-bundle"
MANIFEST_VERSION = 1
PLANS = ("single", "graph", "dfs")  # one graph per point; nodes with exits (early exit, cascade); gated blocks
PRECISIONS = ("float32", "int8")


class BundleError(ValueError):
    """A bundle that cannot be loaded or run: names the problem and what to do."""


def _where(path: str) -> str:
    return f"manifest.json: {path.lstrip('.')}"


def need(doc: Any, key: str, kind: type | tuple[type, ...], path: str) -> Any:
    """``doc[key]``, checked to be of ``kind``.

    Raises:
        BundleError: naming the field.
    """
    if not isinstance(doc, dict) or key not in doc:
        raise BundleError(f"{_where(path)} lacks {key!r}; the bundle is damaged, make it again with `dynscale deploy`")
    value = doc[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise BundleError(f"{_where(path + '.' + key)} is {type(value).__name__}, not {names}; the bundle is "
                          "damaged")
    if isinstance(value, float) and not math.isfinite(value):
        raise BundleError(f"{_where(path + '.' + key)} is {value}; a bundle holds finite numbers only")
    return value


def _number(doc: dict, key: str, path: str, low: float = -math.inf, high: float = math.inf,
            optional: bool = False) -> float | None:
    if optional and doc.get(key) is None:
        return None
    value = float(need(doc, key, (int, float), path))
    if not low <= value <= high:
        raise BundleError(f"{_where(path + '.' + key)} = {value} lies outside [{low}, {high}]; the bundle is damaged")
    return value


def check_manifest(doc: Any) -> dict:
    """Checks a parsed ``manifest.json`` and returns it.

    Raises:
        BundleError: for a foreign file, a newer schema version, or a missing or mistyped field.
    """
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BundleError("manifest.json is not a dynscale bundle's manifest; give a directory written by "
                          "`dynscale deploy`")
    version = need(doc, "schema_version", int, "")
    if version < 1:
        raise BundleError(f"{_where('schema_version')} is {version}; the bundle is damaged")
    if version > MANIFEST_VERSION:
        raise BundleError(f"the bundle's manifest has schema version {version}, newer than this runtime reads "
                          f"({MANIFEST_VERSION}); upgrade dynscale")
    plan = need(doc, "plan", dict, "")
    kind = need(plan, "kind", str, "plan")
    if kind not in PLANS:
        raise BundleError(f"{_where('plan.kind')} is {kind!r}, not one of {', '.join(PLANS)}")
    sample = need(doc, "sample", dict, "")
    need(sample, "file", str, "sample")
    need(sample, "sha256", str, "sample")
    inputs = need(doc, "input", dict, "")
    shape = need(inputs, "shape", list, "input")
    if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        raise BundleError(f"{_where('input.shape')} must be positive integers, got {shape}")
    classes = need(doc, "classes", list, "")
    if not classes or not all(isinstance(c, str) for c in classes):
        raise BundleError(f"{_where('classes')} must name each class (strings)")
    graphs = need(doc, "graphs", dict, "")
    for name, graph in graphs.items():
        need(graph, "file", str, f"graphs.{name}")
        need(graph, "sha256", str, f"graphs.{name}")
        need(graph, "inputs", list, f"graphs.{name}")
        need(graph, "outputs", list, f"graphs.{name}")
        if need(graph, "precision", str, f"graphs.{name}") not in PRECISIONS:
            raise BundleError(f"{_where(f'graphs.{name}.precision')} must be one of {', '.join(PRECISIONS)}")
    points = need(doc, "points", list, "")
    if not points:
        raise BundleError("manifest.json lists no operating point; make the bundle again with `dynscale deploy`")
    names = set()
    for i, point in enumerate(points):
        where = f"points[{i}]"
        name = need(point, "name", str, where)
        if name in names:
            raise BundleError(f"{_where(where)}: the name {name!r} appears twice")
        names.add(name)
        if need(point, "precision", str, where) not in PRECISIONS:
            raise BundleError(f"{_where(where + '.precision')} must be one of {', '.join(PRECISIONS)}")
        _number(point, "accuracy", where, 0.0, 1.0)
        _number(point, "macs", where, 0.0)
        _number(point, "macs_ratio", where, 0.0)
        _number(point, "bitops_ratio", where, 0.0, optional=True)
        latency = need(point, "latency_ms", dict, where)
        for batch, ms in latency.items():
            if not batch.isdecimal() or isinstance(ms, bool) or not isinstance(ms, (int, float)) or not ms > 0 \
                    or not math.isfinite(ms):
                raise BundleError(f"{_where(where + '.latency_ms')}: {batch!r}: {ms!r} is not a batch size and a "
                                  "positive time in ms")
        need(point, "settings", dict, where)
        for graph in point_graphs(plan, need(point, "plan", dict, where), len(classes)):
            if graph not in graphs:
                raise BundleError(f"{_where(where + '.plan')} names the graph {graph!r}, which the bundle lacks")
    return doc


GATES = ("lstm", "linear", "upfront")
POLICIES = ("threshold", "learned", "fixed")


def _names(values: list, where: str) -> list[str]:
    if not all(isinstance(v, str) for v in values):
        raise BundleError(f"{_where(where)} must name graphs (strings), got {values!r}")
    return values


def _check_policy(policy: object, successors: list, classes: int, where: str) -> None:
    """A node's policy as :func:`dynscale.runtime.plans.choose` reads it."""
    kind = need(policy, "kind", str, where)
    if kind not in POLICIES:
        raise BundleError(f"{_where(where + '.kind')} is {kind!r}, not one of {', '.join(POLICIES)}")
    if kind == "threshold":
        _number(policy, "threshold", where, 0.0, 1.0)
    elif kind == "fixed":
        option = need(policy, "option", int, where)
        if not 0 <= option <= len(successors):
            raise BundleError(f"{_where(where + '.option')} = {option} lies outside 0..{len(successors)}")
    else:
        decisions = need(policy, "decisions", list, where)
        if len(decisions) != len(successors):
            raise BundleError(f"{_where(where + '.decisions')}: {len(decisions)} decisions for {len(successors)} "
                              "successors; they must match")
        for d, decision in enumerate(decisions):
            at = f"{where}.decisions[{d}]"
            if isinstance(decision, dict) and "constant" in decision:
                need(decision, "constant", bool, at)
                continue
            weight = need(decision, "weight", list, at)
            _number(decision, "bias", at)
            if len(weight) != classes + 3 or not all(
                    isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) for w in weight):
                raise BundleError(f"{_where(at + '.weight')} must be {classes + 3} finite numbers (softmax, max, "
                                  "margin, entropy)")


def point_graphs(plan: dict, point_plan: dict, classes: int = 0) -> list[str]:
    """Checks one operating point's plan against the bundle's and returns the graph names it runs.

    Raises:
        BundleError: for a point plan of the wrong shape.
    """
    kind = plan["kind"]
    where = "points[].plan"
    if kind == "single":
        return [need(point_plan, "graph", str, where)]
    if kind == "graph":
        nodes = _names(need(point_plan, "nodes", list, where), where + ".nodes")
        policies = need(point_plan, "policies", list, where)
        successors = need(point_plan, "successors", list, where)
        if not len(nodes) == len(policies) == len(successors) or not nodes:
            raise BundleError(f"{_where(where)}: {len(nodes)} nodes, {len(policies)} policies and "
                              f"{len(successors)} successor lists; they must match")
        for i, policy in enumerate(policies):
            succ = successors[i]
            if not isinstance(succ, list) or any(isinstance(j, bool) or not isinstance(j, int) or not i < j < len(nodes)
                                                 for j in succ):
                raise BundleError(f"{_where(where + '.successors')}[{i}] must list nodes after {i}, got {succ!r}")
            if succ:
                _check_policy(policy, succ, classes, f"{where}.policies[{i}]")
        return nodes
    gate = need(plan, "gate", str, "plan")
    if gate not in GATES:
        raise BundleError(f"{_where('plan.gate')} is {gate!r}, not one of {', '.join(GATES)}")
    choices = need(plan, "choices", list, "plan")
    if gate == "lstm" and need(plan, "hidden", int, "plan") < 1:
        raise BundleError(f"{_where('plan.hidden')} must be a positive size for the lstm gate")
    pieces = need(point_plan, "pieces", list, where)
    gates = need(point_plan, "gates", list, where)
    names = []
    gated = 0
    for piece in pieces:
        if isinstance(piece, str):
            names.append(piece)
        elif isinstance(piece, list) and len(piece) == len(choices) and all(p is None or isinstance(p, str)
                                                                            for p in piece):
            names.extend(p for p in piece if p is not None)
            gated += 1
        else:
            raise BundleError(f"{_where(where + '.pieces')}: a piece is a graph name or a list of {len(choices)} paths "
                              f"(a graph name or null per choice), got {piece!r}")
    if len(gates) != gated:
        raise BundleError(f"{_where(where + '.gates')}: {len(gates)} gates for {gated} gated blocks; they must match")
    for g, name in enumerate(gates):
        wanted = name is None if gate == "upfront" and g else isinstance(name, str)
        if not wanted:
            raise BundleError(f"{_where(where + '.gates')}[{g}] must be "
                              f"{'null (decided at the first block)' if gate == 'upfront' and g else 'a graph name'}")
    return names + [g for g in gates if g is not None]
