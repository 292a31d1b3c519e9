"""The evaluation engine shared by every method: operating points and curves, one timing
protocol (PyTorch and ONNX Runtime), the baselines a user would pick instead, one report writer,
profiles and the budget controller."""

from .baselines import Baselines, dense_baselines
from .controller import Controller, describe_knobs
from .engine import Candidate, CurveSpec, Measurement, evaluate
from .metrics import accuracy
from .points import Curve, Latency, OperatingPoint, curves_from_json, curves_to_json, read_curves
from .profiling import Profile, profile_point, profiles_markdown, span
from .report import format_table, human_count, plot, to_csv, write_report
from .runtime import onnxruntime_runner, parse_runtimes, timing_copy, torch_runner
from .timing import RUNTIMES, Runner, TimingConfig, require_cpu, time_points

__all__ = ["RUNTIMES", "Baselines", "Candidate", "Controller", "Curve", "CurveSpec", "Latency", "Measurement",
           "OperatingPoint", "Profile", "Runner", "TimingConfig", "accuracy", "curves_from_json", "curves_to_json",
           "dense_baselines", "describe_knobs", "evaluate", "format_table", "human_count", "onnxruntime_runner",
           "parse_runtimes", "plot", "profile_point", "profiles_markdown", "read_curves", "require_cpu", "span",
           "time_points", "timing_copy", "to_csv", "torch_runner", "write_report"]
