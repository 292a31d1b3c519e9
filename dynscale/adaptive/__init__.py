"""Adaptive inference (SPEC §3): learned early exits and network selection, with real exits."""

from .cascade import Cascade
from .exits import EarlyExitNet, backbone_stages, exit_accuracies, train_early_exit
from .graph import AdaptiveGraph, Node, Outcome
from .policy import (
    FixedPolicy,
    LearnedPolicy,
    ThresholdPolicy,
    calibrate_threshold,
    confidence_features,
    fit_policies,
    threshold_policies,
)
from .runs import load_early_exit, train_early_exit_run
from .sweep import AdaptiveCurve, AdaptivePoint, sweep_cascade, sweep_early_exit, sweep_graph

__all__ = [
    "AdaptiveCurve", "AdaptiveGraph", "AdaptivePoint", "Cascade", "EarlyExitNet", "FixedPolicy",
    "LearnedPolicy", "Node", "Outcome", "ThresholdPolicy", "backbone_stages", "calibrate_threshold",
    "confidence_features", "exit_accuracies", "fit_policies", "load_early_exit", "sweep_cascade",
    "sweep_early_exit", "sweep_graph", "threshold_policies", "train_early_exit", "train_early_exit_run",
]
