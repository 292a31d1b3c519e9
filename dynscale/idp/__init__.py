"""Incomplete dot products (SPEC §1): the training recipes, batch-norm calibration per width,
width runs and the width knob's operating points."""

from ..methods import Method, register_method
from . import commands, deploy
from .calibration import calibrate_bn, calibrate_run, calibration_loader
from .recipes import IDP, MultiProfile, apply_random_cuts, draw_cut, freeze_blocks
from .runs import train_run
from .sweep import DEFAULT_WIDTHS, parse_widths, sweep_model, sweep_runs, width_candidates

__all__ = ["DEFAULT_WIDTHS", "IDP", "MultiProfile", "apply_random_cuts", "calibrate_bn", "calibrate_run",
           "calibration_loader", "draw_cut", "freeze_blocks", "parse_widths", "sweep_model", "sweep_runs",
           "train_run", "width_candidates"]

register_method(Method("width", "a width knob: IDP profiles, universally slimmable and independent networks",
                       kinds=("width", "dense"), recipes=("idp", "multi-profile", "us", "independent"),
                       add_commands=commands.add_commands, points=commands.points,
                       deploy=deploy.deploy))
