"""Adaptive inference (SPEC §3): learned early exits and network selection, with real exits."""

from ..methods import Method, register_method
from . import commands, deploy
from .cascade import Cascade
from .exits import EarlyExitNet, backbone_stages, exit_accuracies, exit_points
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
from .recipes import EarlyExits, FrozenExits, train_early_exit
from .runs import load_early_exit, train_early_exit_run
from .sweep import build_cascade, sweep_adaptive_run, sweep_cascade, sweep_graph

__all__ = [
    "AdaptiveGraph", "Cascade", "EarlyExitNet", "EarlyExits", "FixedPolicy", "FrozenExits", "LearnedPolicy", "Node",
    "Outcome", "ThresholdPolicy", "backbone_stages", "build_cascade", "calibrate_threshold", "confidence_features",
    "exit_accuracies", "exit_points", "fit_policies", "load_early_exit", "sweep_adaptive_run", "sweep_cascade",
    "sweep_graph", "threshold_policies", "train_early_exit", "train_early_exit_run",
]

register_method(Method("adaptive", "adaptive inference: learned early exits and network selection",
                       kinds=("early-exit", "cascade"), recipes=("early-exit", "frozen-exits"),
                       add_commands=commands.add_commands, points=commands.points,
                       deploy=deploy.deploy))
