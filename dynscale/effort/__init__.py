"""DyVEDeep (SPEC §2): input-adaptive effort knobs on a trained network, no retraining."""

from ..methods import Method, register_method
from . import commands, deploy
from .costs import CostTable, measure
from .layers import EffortConv2d, EffortLinear
from .net import EffortNet, apply, off
from .primitive import conv_at, gather_columns
from .runs import load_effort, sweep_effort_runs, tune_run
from .settings import SDSS, SFMA, SPET, EffortSettings, LayerEffort, parse_knobs
from .tune import Tuned, tune

__all__ = ["SDSS", "SFMA", "SPET", "CostTable", "EffortConv2d", "EffortLinear", "EffortNet", "EffortSettings",
           "LayerEffort", "Tuned", "apply", "conv_at", "gather_columns", "load_effort", "measure", "off",
           "parse_knobs", "sweep_effort_runs", "tune", "tune_run"]

register_method(Method("effort", "DyVEDeep: input-adaptive effort knobs on a trained network, no retraining",
                       kinds=("effort",), add_commands=commands.add_commands, points=commands.points,
                       deploy=deploy.deploy))
