"""The adaptive method's part of ``dynscale deploy``: the nodes of an early-exit network (each
backbone segment with its exit head) or of a cascade (each member network) as graphs, and the
policies as data: learned at several λ and the confidence threshold at several allowed losses,
fitted on the run's held-out split as ``adaptive sweep`` fits them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..cost import eval_mode
from ..deployable import Deployment, DeployPoint, GraphSpec
from ..errors import DynscaleError
from ..runs import Run
from .cascade import WholeNetwork
from .graph import AdaptiveGraph
from .policy import FixedPolicy, LearnedPolicy, ThresholdPolicy
from .runs import CASCADE
from .sweep import costliest_node, held_out, policy_sets

DEPLOY_LAMBDAS = (0.0, 0.01, 0.02, 0.05, 0.1)
DEPLOY_MAX_LOSSES = (0.5, 1.0, 2.0)


def policy_data(policy, node: str) -> dict | None:
    """A policy as the runtime reads it (``dynscale.runtime.plans.choose``).

    Raises:
        DynscaleError: for a learned decision that is not linear (its classifier cannot ship).
    """
    if policy is None:
        return None
    if isinstance(policy, ThresholdPolicy):
        if not np.isfinite(policy.threshold):
            return {"kind": "fixed", "option": 1}  # no threshold reached the target: never stop here
        return {"kind": "threshold", "threshold": float(policy.threshold)}
    if isinstance(policy, FixedPolicy):
        return {"kind": "fixed", "option": int(policy.option)}
    if isinstance(policy, LearnedPolicy):
        decisions = [d.to_dict() for d in policy.decisions]
        for d in decisions:
            if "estimator" in d:
                raise DynscaleError(f"the policy of {node} is a {d['estimator']}, which a bundle cannot hold; deploy "
                                    "policies of a linear classifier (the default, logistic regression)")
        return {"kind": "learned", "decisions": decisions}
    raise DynscaleError(f"the policy of {node} ({type(policy).__name__}) cannot be deployed")


def _node_inputs(graph: AdaptiveGraph, x: torch.Tensor) -> list[torch.Tensor]:
    """What each node takes when ``x`` enters the graph and every node runs (its first parent's state)."""
    states, inputs = {}, []
    with torch.no_grad(), eval_mode(*graph.modules):
        for i, node in enumerate(graph.nodes):
            parents = graph.parents(i)
            inputs.append(x if not parents else states[parents[0]])
            states[i] = node.module(inputs[-1])[0]
    return inputs


def deploy(run: Run, *, calibration: Sequence[torch.Tensor], lambdas: Sequence[float] | None = None) -> Deployment:
    """An early-exit or cascade run as node graphs and policy points.

    Args:
        run: an opened early-exit or cascade run, with its dataset.
        calibration: training inputs for the int8 graphs.
        lambdas: the learned policies' cost weights (default 0, 0.01, 0.02, 0.05, 0.1).
    """
    data = run.dataset
    graph = run.model.graph()
    k = len(graph.nodes)
    reference_node = costliest_node(graph) if run.kind == CASCADE else k - 1
    learned, threshold = policy_sets(graph, held_out(data, run.config, str(run.path)), reference_node,
                                     DEPLOY_LAMBDAS if lambdas is None else lambdas, DEPLOY_MAX_LOSSES)
    example = _node_inputs(graph, data.test_x[:8])
    feeds = list(zip(*[_node_inputs(graph, x) for x in calibration], strict=True))
    names = [f"node{i}-{n.name}".replace("/", "-").replace(":", "-") for i, n in enumerate(graph.nodes)]
    graphs = {names[i]: GraphSpec(node.module.eval(), {"input": example[i]}, ("state", "logits"),
                                  [{"input": f} for f in feeds[i]], "option") for i, node in enumerate(graph.nodes)}

    def point(label: str, policies: list, settings: dict) -> DeployPoint:
        costs = np.array([n.macs + (p.macs if p is not None else 0.0) for n, p in zip(graph.nodes, policies,
                                                                                       strict=True)])

        def reference(x: torch.Tensor) -> torch.Tensor:
            return graph.run(x, policies, len(x)).predictions

        plan = {"nodes": names, "successors": graph.successors,
                "policies": [policy_data(p, graph.names[i]) for i, p in enumerate(policies)]}
        return DeployPoint(label, plan, settings, reference, count=lambda ran: (ran @ costs, None))

    if run.kind == CASCADE:  # every example ends at the costliest network (directly where an edge goes there)
        chain = [None if not s else FixedPolicy(0) if i >= reference_node else
                 FixedPolicy(s.index(reference_node) + 1 if reference_node in s else 1)
                 for i, s in enumerate(graph.successors)]
        points = [point("full", chain, {"policy": "none: the costliest network"})]
    else:  # the backbone alone, without exit heads: what the exits save against
        backbone = WholeNetwork(run.model.backbone).eval()
        graphs["backbone"] = GraphSpec(backbone, {"input": data.test_x[:8]}, ("state", "logits"),
                                       [{"input": x} for x in calibration], "option")
        points = [DeployPoint("full", {"nodes": ["backbone"], "successors": [[]], "policies": [None]},
                              {"policy": "none: the backbone without exits"},
                              lambda x: backbone(x)[1].detach(), macs=graph.full_macs)]
    points += [point(label, policies, {"policy": "learned", **knobs}) for label, policies, knobs in learned]
    points += [point(label, policies, {"policy": "confidence threshold", **knobs})
               for label, policies, knobs in threshold]
    return Deployment({"kind": "graph"}, graphs, points, graph.full_macs)
