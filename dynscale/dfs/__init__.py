"""Dynamic fractional skipping (SPEC §4): per-input, per-block choice of skip or bit-width."""

from ..methods import Method, register_method
from . import commands
from .blocks import BlockRunner
from .gates import GATES, Gate, LinearGate, UpfrontGate, make_gate
from .model import DEFAULT_CHOICES, EXECUTE_CHOICES, SKIPNET_CHOICES, DFSNet, check_choices, residual_blocks
from .quant import FULL, RangeTracker, fake_quantize, quantize_weight
from .recipes import FractionalSkipping, check_target
from .runs import calibrated, dfs_curves, int8_curve, plot_choices, train_dfs_run

__all__ = ["BlockRunner", "DEFAULT_CHOICES", "DFSNet", "EXECUTE_CHOICES", "FULL", "FractionalSkipping", "GATES",
           "Gate", "LinearGate", "RangeTracker", "SKIPNET_CHOICES", "UpfrontGate", "calibrated", "check_choices",
           "check_target", "dfs_curves", "fake_quantize", "int8_curve", "make_gate", "plot_choices",
           "quantize_weight", "residual_blocks", "train_dfs_run"]

register_method(Method("dfs", "dynamic fractional skipping: per example and block, skip or a bit-width",
                       kinds=("dfs",), recipes=("dfs",), add_commands=commands.add_commands, points=commands.points))
