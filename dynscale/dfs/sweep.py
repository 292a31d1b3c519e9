"""The operating points of fractional-skipping runs and of the baselines a user would pick instead.

- A DFS run whose choices the CPU executes (``dfs train --execute``: skip, int8, float32; and
  SkipNet-style skip or float32) is run by :class:`~dynscale.dfs.execute.DFSExecutor` on each
  runtime, ``torch`` and ``onnxruntime``: accuracy through the real kernels, time measured
  (``saving`` "measured"); its knobs say how its fixed segments ran (``fixed``). Its recorded
  accuracy under the training's simulation is kept as ``simulated_accuracy``.
- A DFS run of simulated bit-widths (the paper's 8–16 bits) is measured by its simulation:
  its saving is counted (``executed=False``), never timed.
- A width run (the backbone) gives the dense network in eager PyTorch and ONNX Runtime, with
  ``int8`` static int8 in both (``dynscale.eval.baselines``), and with ``static_bits`` its
  simulated static quantization at each bit-width (counted).

Runs of one architecture on one dataset are timed together against one dense reference (a
width run's, else the first DFS run's backbone), so every ratio of a group comes from the same
rounds. Everything runs on the CPU (:data:`CPU_ONLY`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from ..data import Dataset
from ..errors import DynscaleError
from ..eval import (
    Candidate,
    Curve,
    CurveSpec,
    Measurement,
    Runner,
    TimingConfig,
    dense_baselines,
    evaluate,
    require_cpu,
)
from ..eval.runtime import channels_last_input
from ..export import dense
from ..runs import WIDTH, Run, open_runs
from .execute import DFSExecutor
from .kernels import RUNTIMES
from .model import FULL, SKIPNET_CHOICES, DFSNet, config_input_shape
from .runs import DFS

CALIBRATION_BATCHES = 20  # training batches of 256 that set a backbone's activation ranges (simulation)
INT8_CALIBRATION = (8, 64)  # training batches (count, size) that calibrate the int8 kernels
# Why a DFS sweep evaluates and times on the CPU only (``--device``).
CPU_ONLY = "the DFS executor's kernels, ONNX Runtime and static int8 run on the CPU only"


def _input_shape(backbone: torch.nn.Module, data: Dataset) -> tuple[int, ...]:
    """One input's shape: the backbone's config's, or the data's."""
    return config_input_shape(backbone) or tuple(data.test_x.shape[1:])


def calibrated(backbone: torch.nn.Module, data: Dataset) -> DFSNet:
    """A copy of ``backbone`` (left unchanged) with full-precision gates off and its activation
    ranges measured on training data, for static quantization; its batch-norm statistics stay
    the backbone's."""
    net = DFSNet(copy.deepcopy(backbone), input_shape=_input_shape(backbone, data))
    batches = (x for i, (x, _) in zip(range(CALIBRATION_BATCHES), data.loader("train", 256), strict=False))
    net.calibrate(batches)
    net.mode = "full"
    return net


def calibration_batches(data: Dataset) -> list[torch.Tensor]:
    """The training inputs that calibrate int8 kernels: the first :data:`INT8_CALIBRATION` batches."""
    count, size = INT8_CALIBRATION
    return [x for _, (x, _) in zip(range(count), data.loader("train", size), strict=False)]


def _measurement(net: DFSNet, accuracy: float, macs: float, bitops: float, chosen: torch.Tensor | None,
                 executed: bool, extra: dict | None = None) -> Measurement:
    """A measurement with what the gates chose (``chosen`` ``(N, gated blocks)``, None when no
    gate decided): the share of skipped blocks and, per block, the share of each choice."""
    extra = dict(extra or {})
    if chosen is not None:
        labels = ["skip" if c == 0 else "full" if c == FULL else f"{c} bits" for c in net.choices]
        extra["skipped"] = round((chosen == 0).float().mean().item(), 6) if 0 in net.choices else 0.0
        extra["choices"] = {block: {labels[c]: round((chosen[:, i] == c).float().mean().item(), 6)
                                    for c in range(len(labels))} for i, block in enumerate(net.block_names)}
    params = sum(p.numel() for p in net.backbone.parameters())
    return Measurement(accuracy, macs, params, bitops, extra, executed)


def _simulated(net: DFSNet, method: str, knobs: dict, label: str, mode: str, bits: int = FULL) -> Candidate:
    """A point of the simulation (fake-quantized bit-widths in float32): counted, not timed."""
    def measure(x: torch.Tensor, y: torch.Tensor) -> Measurement:
        net.mode, net.static_bits = mode, bits
        accuracy, macs, bitops, chosen = net.measure(x, y)
        return _measurement(net, accuracy, macs, bitops, chosen if mode == "gated" else None, executed=False)

    return Candidate(method, knobs, label, measure, lambda runtime: None)


def _executed(net: DFSNet, runtime: str, method: str, knobs: dict, label: str, calibration: list[torch.Tensor],
              threads: int, extra: dict, fixed: str) -> Candidate:
    """A point run by the executor on ``runtime`` (built once, when first needed)."""
    built: list[DFSExecutor] = []

    def executor() -> DFSExecutor:
        if not built:
            built.append(DFSExecutor(net, calibration, runtime, threads, fixed))
        return built[0]

    def measure(x: torch.Tensor, y: torch.Tensor) -> Measurement:
        return _measurement(net, *executor().measure(x, y), executed=True, extra=extra)

    def runner(timed: str) -> Runner | None:
        if timed != runtime:
            return None
        return Runner(executor(), convert=channels_last_input if runtime == "torch" else None)

    fixed = DFSExecutor.resolve_fixed(net, fixed)
    return Candidate(method, {**knobs, "runtime": runtime, "fixed": fixed}, label, measure, runner)


def _dfs_points(run: Run, calibration: list[torch.Tensor], threads: int, fixed: str) -> list[tuple[str, Candidate]]:
    """A DFS run's points, each with the curve it belongs to: executed on each runtime, or
    simulated."""
    net, name = run.model, Path(run.path).name
    method = "skipnet" if net.choices == list(SKIPNET_CHOICES) else "dfs"
    target = run.config.recipe.get("target")
    knobs, label = {"target": target}, f"{name} (target {target:g}%)"
    if not net.executable:
        return [(f"{method} (simulated)", _simulated(net, method, knobs, label, "gated"))]
    own = run.dataset.name == run.config.data and "test_accuracy" in run.metrics
    extra = {"simulated_accuracy": run.metrics["test_accuracy"]} if own else {}
    return [(f"{method} (executed, {runtime})", _executed(net, runtime, method, knobs, label, calibration, threads,
                                                          extra, fixed)) for runtime in RUNTIMES]


def _architecture(run: Run) -> str:
    """What timing groups runs by: the dataset and the (backbone) network."""
    return json.dumps([run.dataset.name, run.config.model.to_json()], sort_keys=True, default=str)


def dfs_curves(runs: Sequence[str | Path], static_bits: Sequence[int] = (), int8: bool = False,
               data: str | Dataset | None = None, timing: TimingConfig | None = None,
               progress: bool | None = None, choices_plot: bool = False,
               notes: list[str] | None = None, fixed: str = "auto") -> list[Curve]:
    """Operating points of DFS runs (one curve per method and how it ran: executed on each
    runtime, or simulated) and of the width runs' baselines: the dense network, with ``int8``
    static int8 in both runtimes, and static quantization simulated at ``static_bits``. Each
    group of runs of one architecture and dataset is timed against one dense reference.

    Args:
        notes: collects one line per baseline that could not be built (to print).
        fixed: how executed points run their fixed segments (``dynscale.dfs.execute.FIXED``).

    Raises:
        DynscaleError: for a run of another kind, a width run without residual blocks, options
            that need a kind of run none is.
        ValueError: for a timing on a GPU.
    """
    require_cpu(timing, CPU_ONLY)
    opened = open_runs(runs, (DFS, WIDTH), data, with_data=True, what="dfs sweep")
    for run in opened:  # every run checked before any evaluation
        if run.kind == WIDTH:
            try:
                DFSNet(run.model, SKIPNET_CHOICES, input_shape=_input_shape(run.model, run.dataset))
            except DynscaleError as e:
                raise DynscaleError(f"{run.path}: {e}; the static and int8 baselines take width runs of a network "
                                    "with residual blocks (ResNet runs, say)") from None
    kinds = {run.kind for run in opened}
    if choices_plot and DFS not in kinds:
        raise DynscaleError("--choices-plot draws what the gates chose: give at least one DFS run (dynscale dfs train)")
    if (static_bits or int8) and WIDTH not in kinds:
        raise DynscaleError(f"{'--static-bits' if static_bits else '--int8'} quantizes ResNet runs (width runs of a "
                            "network with residual blocks): give at least one (dynscale train --model resnet38), or "
                            "leave it out")
    groups: dict[str, list[Run]] = {}
    for run in opened:
        groups.setdefault(_architecture(run), []).append(run)
    curves = []
    for members in groups.values():
        curves += _group(members, static_bits, int8, timing, progress, notes if notes is not None else [], fixed)
    return curves


def _group(members: list[Run], static_bits: Sequence[int], int8: bool, timing: TimingConfig | None,
           progress: bool | None, notes: list[str], fixed: str) -> list[Curve]:
    """The curves of runs of one architecture and dataset, timed against one reference."""
    dataset = members[0].dataset
    threads = timing.threads if timing else 1
    calibration, example = calibration_batches(dataset), dataset.test_x[:16]
    gated: dict[str, list[tuple[Run, Candidate]]] = {}
    specs, reference = [], None
    for run in members:
        name = Path(run.path).name
        if run.kind == DFS:
            for curve, candidate in _dfs_points(run, calibration, threads, fixed):
                gated.setdefault(curve, []).append((run, candidate))
            continue
        baselines = dense_baselines(dense(run.model, 1.0, example[:1]), example, calibration, name=name, int8=int8,
                                    threads=threads)
        notes += baselines.notes
        reference = reference or baselines.reference
        specs += baselines.curves(name, dataset.name)
        if static_bits:
            net = calibrated(run.model, dataset)
            static = [_simulated(net, "static", {"bits": b}, f"{b} bits", "static", b) for b in static_bits]
            specs.append((CurveSpec(f"{name}: static quantization (simulated)", name, dataset.name, "static"), static))
    if reference is None:  # DFS runs only: their first one's dense backbone
        backbone = members[0].model.backbone
        reference = dense_baselines(dense(backbone, 1.0, example[:1]), example, calibration,
                                    name=Path(members[0].path).name, int8=False, threads=threads).reference
    gated_specs = [(CurveSpec(curve, ", ".join(dict.fromkeys(Path(r.path).name for r, _ in points)), dataset.name,
                              curve), [c for _, c in points]) for curve, points in gated.items()]
    measured = evaluate(gated_specs + specs, reference, (dataset.test_x, dataset.test_y), timing, progress)
    for curve in measured[:len(gated_specs)]:
        curve.points.sort(key=lambda p: p.bitops_ratio)
    return measured
