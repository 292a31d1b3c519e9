"""Exit and selection policies (SPEC §3): learned by weighted binary classification, trained
backwards from the last node, or the confidence-threshold baseline calibrated on held-out data.

A node's policy maps its logits to an option per example: 0 stops there, j goes to its j-th
successor. A node with several successors (a cascade's jump) decides by a chain of binary
decisions, each "take this option, or leave it to the rest of the chain": stop?, then the
first successor?, …; the last successor is what remains. The chain is fitted from its end.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression

from .graph import AdaptiveGraph


def confidence_features(logits: torch.Tensor) -> torch.Tensor:
    """The policy's view of an exit: softmax, max probability, margin and entropy.

    Args:
        logits: ``(B, classes)``.

    Returns:
        ``(B, classes + 3)`` float32 features.
    """
    p = logits.float().softmax(dim=1)  # (B, K)
    top = p.topk(min(2, p.shape[1]), dim=1).values  # (B, 2)
    margin = top[:, 0] - top[:, 1] if top.shape[1] > 1 else top[:, 0]
    entropy = -(p * p.clamp_min(1e-12).log()).sum(dim=1)
    return torch.cat([p, top[:, :1], margin[:, None], entropy[:, None]], dim=1)


def default_estimator() -> LogisticRegression:
    """The default policy classifier: logistic regression."""
    return LogisticRegression(C=1.0, max_iter=2000)


class Decision:
    """A binary decision "take this option" fitted with any scikit-learn classifier that
    accepts ``sample_weight``; a linear one (``coef_``, ``intercept_``) runs as one torch
    matrix-vector product and counts its multiply-accumulates."""

    def __init__(self, estimator=None, constant: bool | None = None) -> None:
        self.estimator = estimator
        self.constant = constant
        self._linear: tuple[torch.Tensor, float, bool] | None = None
        if estimator is not None and hasattr(estimator, "coef_") and hasattr(estimator, "intercept_"):
            coef = np.asarray(estimator.coef_, dtype=np.float32)
            classes = list(getattr(estimator, "classes_", [0, 1]))
            if coef.shape[0] == 1 and len(classes) == 2:
                self._linear = (torch.from_numpy(coef[0].copy()), float(np.ravel(estimator.intercept_)[0]),
                                bool(classes[1]))

    @property
    def macs(self) -> float:
        """Multiply-accumulates per example (a linear classifier's weights; 0 for a constant or
        other classifiers, whose cost is not counted)."""
        return float(len(self._linear[0])) if self._linear is not None else 0.0

    @property
    def parameters(self) -> int:
        """Stored numbers of a linear decision (weights and bias); 0 otherwise."""
        return len(self._linear[0]) + 1 if self._linear is not None else 0

    def take(self, features: torch.Tensor) -> torch.Tensor:
        """``(B,)`` bool: True where the option is taken."""
        if self.constant is not None:
            return torch.full((len(features),), self.constant, dtype=torch.bool)
        if self._linear is not None:
            weight, bias, positive_is_take = self._linear
            positive = features @ weight + bias > 0  # (B,)
            return positive if positive_is_take else ~positive
        if not len(features):
            return torch.zeros(0, dtype=torch.bool)
        return torch.from_numpy(np.asarray(self.estimator.predict(features.numpy())).astype(bool))

    def to_dict(self) -> dict:
        if self.constant is not None:
            return {"constant": self.constant}
        if self._linear is not None:
            weight, bias, positive_is_take = self._linear
            sign = 1.0 if positive_is_take else -1.0
            return {"weight": [sign * v for v in weight.tolist()], "bias": sign * bias}
        return {"estimator": type(self.estimator).__name__}


def fit_decision(estimator, features: torch.Tensor, take: torch.Tensor, weight: torch.Tensor) -> Decision:
    """Fits one weighted binary decision.

    Examples of zero weight do not matter and are dropped; weights are scaled to mean 1 so an
    estimator's regularisation means the same at every λ. When the examples that matter all
    want the same answer, the decision is that constant (ties take the option).
    """
    keep = weight > 0
    labels = take[keep]
    if not bool(keep.any()) or bool(labels.all()):
        return Decision(constant=True)
    if not bool(labels.any()):
        return Decision(constant=False)
    w = weight[keep].double()
    model = clone(estimator)
    model.fit(features[keep].numpy(), labels.long().numpy(), sample_weight=(w / w.mean()).numpy())
    return Decision(model)


class LearnedPolicy:
    """A node's learned policy: one decision per option but the last (see the module doc)."""

    def __init__(self, decisions: Sequence[Decision]) -> None:
        self.decisions = list(decisions)

    @property
    def macs(self) -> float:
        return sum(d.macs for d in self.decisions)

    @property
    def parameters(self) -> int:
        return sum(d.parameters for d in self.decisions)

    def choose(self, logits: torch.Tensor) -> torch.Tensor:
        features = confidence_features(logits)
        option = torch.full((len(logits),), len(self.decisions), dtype=torch.long)
        for d in reversed(range(len(self.decisions))):  # the earliest option taken wins
            option = torch.where(self.decisions[d].take(features), d, option)
        return option


class ThresholdPolicy:
    """The common baseline: stop when the max softmax probability reaches ``threshold``,
    otherwise go to the first (cheapest) successor."""

    macs = 0.0
    parameters = 1  # the threshold

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def choose(self, logits: torch.Tensor) -> torch.Tensor:
        confidence = logits.float().softmax(dim=1).amax(dim=1)  # (B,)
        return (confidence < self.threshold).long()


class FixedPolicy:
    """Always the same option (0: stop here); for forcing exits and for tests."""

    macs = 0.0
    parameters = 0

    def __init__(self, option: int) -> None:
        self.option = option

    def choose(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.full((len(logits),), self.option, dtype=torch.long)


def check_lambda(lam: float) -> float:
    """Validates a cost weight λ (>= 0, finite)."""
    lam = float(lam)
    if not math.isfinite(lam) or lam < 0:
        raise ValueError(f"λ (lambda) must be a finite number >= 0, got {lam}; 0 ignores cost, "
                         "larger values trade accuracy for fewer MACs")
    return lam


def fit_policies(graph: AdaptiveGraph, logits: Sequence[torch.Tensor], y: torch.Tensor, lam: float,
                 estimator=None) -> list:
    """Learns every node's policy for one λ, backwards from the last node (SPEC §3).

    With the later policies fixed, each example's cost of an option is its 0/1 loss where it
    would finally stop plus λ × the MACs still to spend, relative to the full network. Each
    binary decision is labelled with the cheaper side and weighted by the difference.

    Args:
        graph: the graph.
        logits: every node's logits on held-out examples (``graph.all_logits``).
        y: their labels ``(N,)``.
        lam: the cost weight λ >= 0: one full network's MACs are worth λ errors.
        estimator: a scikit-learn classifier taking ``sample_weight``; logistic regression by
            default.

    Returns:
        One policy per node (``None`` where the node has no successors).
    """
    lam = check_lambda(lam)
    estimator = default_estimator() if estimator is None else estimator
    if not hasattr(estimator, "fit"):
        raise TypeError(f"the policy estimator must be a scikit-learn classifier, got {type(estimator).__name__}")
    k = len(graph.nodes)
    errors = [(node_logits.argmax(1) != y).double() for node_logits in logits]  # (N,) each
    own_cost = [node.macs / graph.full_macs for node in graph.nodes]
    final_loss: list[torch.Tensor | None] = [None] * k  # loss where an example entering i stops
    cost_from: list[torch.Tensor | None] = [None] * k  # relative MACs spent from entering i on
    policies: list = [None] * k
    for i in reversed(range(k)):
        succ = graph.successors[i]
        if not succ:
            final_loss[i], cost_from[i] = errors[i], torch.full_like(errors[i], own_cost[i])
            continue
        # (N, 1 + m): stop now, or each successor with its later policies.
        option_cost = torch.stack([errors[i]] + [final_loss[j] + lam * cost_from[j] for j in succ], dim=1)
        features = confidence_features(logits[i])
        chosen = torch.full((len(y),), len(succ), dtype=torch.long)
        decisions: list[Decision] = [None] * len(succ)  # type: ignore[list-item]
        for d in reversed(range(len(succ))):
            take_cost = option_cost[:, d]
            rest_cost = option_cost.gather(1, chosen[:, None]).squeeze(1)
            decisions[d] = fit_decision(estimator, features, take_cost <= rest_cost, (take_cost - rest_cost).abs())
            chosen = torch.where(decisions[d].take(features), d, chosen)
        policies[i] = LearnedPolicy(decisions)
        stop = chosen == 0
        later_loss = torch.stack([final_loss[j] for j in succ], dim=1)  # (N, m)
        later_cost = torch.stack([cost_from[j] for j in succ], dim=1)
        pick = (chosen - 1).clamp_min(0)[:, None]
        final_loss[i] = torch.where(stop, errors[i], later_loss.gather(1, pick).squeeze(1))
        cost_from[i] = own_cost[i] + torch.where(stop, 0.0, later_cost.gather(1, pick).squeeze(1))
    return policies


def threshold_policies(graph: AdaptiveGraph, threshold: float) -> list:
    """The threshold policy at every node with successors."""
    return [ThresholdPolicy(threshold) if s else None for s in graph.successors]


def calibrate_threshold(graph: AdaptiveGraph, logits: Sequence[torch.Tensor], y: torch.Tensor,
                        target_accuracy: float, candidates: int = 400) -> float:
    """The cheapest shared confidence threshold whose held-out accuracy reaches a target.

    Args:
        graph: the graph.
        logits: every node's logits on held-out examples.
        y: their labels.
        target_accuracy: in [0, 1].
        candidates: thresholds tried (quantiles of the held-out confidences).

    Returns:
        The threshold; ``inf`` (never stop early) when no threshold reaches the target.
    """
    if not 0 <= target_accuracy <= 1:
        raise ValueError(f"target accuracy must be in [0, 1], got {target_accuracy}")
    confidences = torch.cat([logits[i].float().softmax(1).amax(1) for i in graph.decision_nodes()])
    grid = torch.quantile(confidences.double(), torch.linspace(0, 1, candidates, dtype=torch.float64))
    best, best_cost = math.inf, math.inf
    for t in sorted(set(grid.tolist())):
        outcome = graph.simulate(logits, threshold_policies(graph, t))
        cost = outcome.macs.mean().item()
        if outcome.accuracy(y) >= target_accuracy and cost < best_cost:
            best, best_cost = t, cost
    return best
