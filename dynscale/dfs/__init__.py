"""Dynamic fractional skipping (SPEC §4): per-input, per-block choice of skip or bit-width."""

from ..methods import Method, register_method
from . import commands
from .blocks import BlockRunner
from .model import DEFAULT_CHOICES, SKIPNET_CHOICES, DFSNet, Gate, check_choices, residual_blocks
from .quant import FULL, RangeTracker, fake_quantize, quantize_weight
from .recipes import FractionalSkipping, check_target
from .runs import calibrated, dfs_curves, int8_curve, plot_choices, train_dfs_run

__all__ = ["DEFAULT_CHOICES", "FULL", "SKIPNET_CHOICES", "BlockRunner", "DFSNet", "FractionalSkipping", "Gate",
           "RangeTracker", "calibrated", "check_choices", "check_target", "dfs_curves", "fake_quantize",
           "int8_curve", "plot_choices", "quantize_weight", "residual_blocks", "train_dfs_run"]

register_method(Method("dfs", "dynamic fractional skipping: per example and block, skip or a bit-width",
                       kinds=("dfs",), recipes=("dfs",), add_commands=commands.add_commands, points=commands.points))
