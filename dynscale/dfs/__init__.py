"""Dynamic fractional skipping (SPEC §4): per-input, per-block choice of skip or bit-width."""

from ..methods import Method, register_method
from . import commands, deploy
from .blocks import BlockRunner
from .execute import DFSExecutor
from .gates import GATES, Gate, LinearGate, UpfrontGate, make_gate
from .model import DEFAULT_CHOICES, EXECUTE_CHOICES, SKIPNET_CHOICES, DFSNet, check_choices, residual_blocks
from .plot import plot_choices
from .quant import FULL, RangeTracker, fake_quantize, quantize_weight
from .recipes import FractionalSkipping, check_target
from .runs import train_dfs_run
from .sweep import calibrated, dfs_curves

__all__ = ["DEFAULT_CHOICES", "EXECUTE_CHOICES", "FULL", "GATES", "SKIPNET_CHOICES", "BlockRunner", "DFSExecutor",
           "DFSNet", "FractionalSkipping", "Gate", "LinearGate", "RangeTracker", "UpfrontGate", "calibrated",
           "check_choices", "check_target", "dfs_curves", "fake_quantize", "make_gate", "plot_choices",
           "quantize_weight", "residual_blocks", "train_dfs_run"]

register_method(Method("dfs", "dynamic fractional skipping: per example and block, skip or a bit-width",
                       kinds=("dfs",), recipes=("dfs",), add_commands=commands.add_commands, points=commands.points,
                       deploy=deploy.deploy))
