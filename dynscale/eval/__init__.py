"""The evaluation engine shared by every method: operating points and curves, one timing
protocol (PyTorch and ONNX Runtime), one report writer and the budget controller."""

from .controller import Controller, describe_knobs
from .engine import Candidate, CurveSpec, Measurement, evaluate
from .metrics import accuracy
from .points import Curve, Latency, OperatingPoint, curves_from_json, curves_to_json, read_curves
from .report import format_table, human_count, plot, to_csv, write_report
from .runtime import onnxruntime_runner, parse_runtimes, timing_copy, torch_runner
from .timing import RUNTIMES, Runner, TimingConfig, time_points

__all__ = ["RUNTIMES", "Candidate", "Controller", "Curve", "CurveSpec", "Latency", "Measurement", "OperatingPoint",
           "Runner", "TimingConfig", "accuracy", "curves_from_json", "curves_to_json", "describe_knobs", "evaluate",
           "format_table", "human_count", "onnxruntime_runner", "parse_runtimes", "plot", "read_curves",
           "time_points", "timing_copy", "to_csv", "torch_runner", "write_report"]
