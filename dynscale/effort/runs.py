"""Effort runs: a trained run with its tuned knob settings, saved beside it as a run of kind
``effort``, and the operating points those settings give on the shared engine, beside the
baselines a user would pick instead (the dense network in eager PyTorch and ONNX Runtime, the
knobs off on the fastest dense kernels, static int8)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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
from ..eval.baselines import int8_calibration
from ..eval.runtime import torch_runner
from ..export import plain_network
from ..runs import WIDTH, ModelSpec, RunConfig, RunKind, check_output, open_run, open_runs, register_kind, save_run
from ..schema import Anything, Int, ListOf, MapOf, Num, Optional, Record, Str, setting
from .costs import measure
from .net import EffortNet
from .settings import KNOBS, EffortSettings
from .tune import OBJECTIVES, tune
from .tune import evaluate as evaluate_settings

HELD_OUT = 2000  # examples the search measures on
CALIBRATION = 512  # examples that order the channels


@dataclass
class TuneSettings:
    """What ``effort tune`` searches (the options of the command, and :func:`tune_run`'s defaults)."""

    max_loss: list[float] = setting(
        factory=lambda: [0.5], check=ListOf(Num(0.0, 100.0), min_len=1),
        help="accuracy points (0-100) the knobs may lose on the held-out data, one search per value: the share of "
             "examples the dense network gets right and the knobs get wrong")
    knobs: list[str] = setting(factory=lambda: list(KNOBS), check=ListOf(Str(KNOBS), min_len=1, unique=True),
                               help="the knobs to use: spet, sdss, sfma")
    examples: int = setting(HELD_OUT, "held-out examples the search measures on", Int(1))
    batch: list[int] = setting(
        factory=lambda: [1], check=ListOf(Int(1), min_len=1, unique=True),
        help="batch sizes to tune for: one search per bound and batch size, each maximising the time saved at that "
             "batch size (a knob's cost, and SPET's share of the work, depend on it)")
    objective: str = setting("time", check=Str(OBJECTIVES),
                             help="time: the time saved, predicted from costs measured on this machine (cached); "
                                  "macs: the multiply-accumulates saved, counted")


def default_output(run_dir: str | Path, knobs: Sequence[str]) -> Path:
    """Beside the run: ``RUN-effort`` (``RUN-effort-spet`` for a subset of the knobs)."""
    run_dir = Path(run_dir)
    suffix = "" if set(knobs) == set(KNOBS) else "-" + "-".join(knobs)
    return run_dir.parent / f"{run_dir.name}-effort{suffix}"


def held_out(run: RunConfig, data: Dataset, examples: int) -> tuple[tuple[torch.Tensor, torch.Tensor], str]:
    """Where the search measures: the run's held-out split, else (said so) a fixed sample of its
    training split."""
    if run.holdout:
        x, y = data.split_holdout(run.holdout)[1]
        return (x[:examples], y[:examples]), f"the run's held-out split (first {min(examples, len(y))} examples)"
    order = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(0))[:examples]
    return ((data.train_x[order], data.train_y[order]),
            f"{len(order)} training examples (the run held none out, so the network has seen them)")


def tune_run(run_dir: str | Path, max_losses: Sequence[float], knobs: Sequence[str] = KNOBS,
             data: str | Dataset | None = None, examples: int = HELD_OUT, out: str | Path | None = None,
             force: bool = False, progress: bool | None = None, batches: Sequence[int] = (1,),
             objective: str = "time", threads: int | None = None) -> Path:
    """Tunes a trained run's effort knobs for each loss bound and batch size and saves them
    beside it.

    Args:
        run_dir: a width run (any network :func:`dynscale.graph.trace` understands).
        max_losses: accuracy-loss bounds in points (held-out data).
        knobs: the knobs to use.
        data: the dataset (default: the run's own).
        examples: held-out examples the search measures on.
        out: the effort run to write (default ``RUN-effort`` beside the run).
        force: replace an existing effort run at ``out``.
        progress: show progress bars; None shows them only on a terminal.
        batches: batch sizes to tune for.
        objective: ``"time"`` (measured) or ``"macs"`` (counted).
        threads: the thread count costs are measured at (default: PyTorch's current one).

    Returns:
        The effort run directory. Its config records, per bound and batch size, the settings
        and their accuracy and MACs on the held-out data and on the test split (which the
        search never saw), and their predicted time.
    """
    out = check_output(out or default_output(run_dir, knobs), force, inputs=[run_dir])
    run = open_run(run_dir, (WIDTH,), data, with_data=True, own_data=True, what="effort tune")
    if run.config.profile_ranges:
        raise DynscaleError(f"{run_dir} is a {run.model_name} run of several members; effort knobs take a single "
                            "network")
    threads = threads or torch.get_num_threads()
    dataset = run.dataset
    held, where = held_out(run.config, dataset, examples)
    net = EffortNet(run.model, calibration=held[0][:CALIBRATION])
    tuned = []
    dense_acc, dense_macs = evaluate_settings(net, dataset.test_x, dataset.test_y, EffortSettings())
    for result in tune(net, held, max_losses, knobs, progress, batches, objective, threads):
        test_acc, test_macs = evaluate_settings(net, dataset.test_x, dataset.test_y, result.settings)
        tuned.append({"max_loss": result.max_loss, "batch": result.batch, "settings": result.settings.to_json(),
                      "held_accuracy": result.accuracy, "held_broken": result.broken, "held_macs": result.macs,
                      "held_dense_accuracy": result.dense_accuracy, "held_dense_macs": result.dense_macs,
                      "held_seconds": result.seconds, "held_dense_seconds": result.dense_seconds,
                      "test_accuracy": test_acc, "test_macs": test_macs, "test_dense_accuracy": dense_acc,
                      "test_dense_macs": dense_macs})
    net.set_settings(EffortSettings())
    net.tuned, net.knobs, net.held_out = tuned, list(knobs), where
    net.objective, net.threads = objective, threads
    return save_run(out, net, dataset.name, kind="effort", provenance={"source_run": str(run.path)},
                    metrics={"tuned": [{k: v for k, v in t.items() if k != "settings"} for t in tuned]})


def load_effort(directory: str | Path) -> tuple[EffortNet, RunConfig]:
    """Loads an effort run.

    Raises:
        DynscaleError: if it is another kind of run.
    """
    run = open_run(directory, (EFFORT,), what="effort sweep")
    return run.model, run.config


# Why an effort sweep evaluates and times on the CPU only (``--device``).
CPU_ONLY = "the effort knobs' kernels, ONNX Runtime and static int8 run on the CPU only"


def effort_curve(net: EffortNet, config: RunConfig, name: str, data: Dataset, progress: bool | None = None,
                 timing: TimingConfig | None = None) -> list[Curve]:
    """Each tuned bound as an operating point on the test split, one curve per batch size it
    was tuned for, beside the baselines: the dense network (the reference, in eager PyTorch
    and ONNX Runtime), the knobs off (batch-norm folded, each layer on its fastest dense
    kernel: a gain there is not the knobs'), and static int8. A bound whose setting keeps
    every layer dense runs as the dense network (it is the dense network).

    The knobs run in eager PyTorch only (``onnxruntime``: not timed). With ``timing``, each
    layer's dense kernels come from the cost table measured at its batch sizes and threads.
    Everything runs on the CPU (:data:`CPU_ONLY`).

    Raises:
        ValueError: for a timing on a GPU.
    """
    require_cpu(timing, CPU_ONLY)
    section = config.section
    knobs = "+".join(section.get("knobs", KNOBS))
    params = sum(p.numel() for p in net.original.parameters())
    x_test, y_test = data.test_x, data.test_y
    threads = timing.threads if timing is not None else 1
    if timing is not None:
        measure(net.layers, section["knobs"], timing.batch_sizes, threads, progress=progress)
    plain = plain_network(net.original, x_test[:1])
    calibration = int8_calibration(data.train_x)
    baselines = dense_baselines(plain, x_test[:256], calibration, name=name, threads=threads)
    for note in baselines.notes:
        print(note)

    def candidate(label: str, knob_values: dict, settings: EffortSettings, method: str) -> Candidate:
        def measure_point(x: torch.Tensor, y: torch.Tensor) -> Measurement:
            acc, macs = evaluate_settings(net, x, y, settings)
            return Measurement(acc, macs, params)

        def runner(runtime: str) -> Runner | None:
            if runtime != "torch":
                return None  # the knobs decide per example in eager PyTorch; no other runtime runs them
            if method == "dyvedeep" and not any(layer.active for layer in settings.layers.values()):
                # Every layer dense: the point is the dense network (the reference), not the effort
                # layers' copy (whose folded batch norm and per-layer kernels are the "knobs off" row).
                return torch_runner(plain)
            return torch_runner(net, prepare=lambda: net.set_settings(settings))

        return Candidate(method, knob_values, label, measure_point, runner)

    off = candidate("knobs off (BN folded, fastest dense kernel per layer)", {"knobs": "off"}, EffortSettings(),
                    "dense kernels")
    curves = baselines.curves(name, data.name)
    curves.insert(1, (CurveSpec(f"{name}: knobs off", name, data.name, "knobs off"), [off]))
    for batch in sorted({t.get("batch", 1) for t in section["tuned"]}):
        points = [candidate(f"loss≤{t['max_loss']:g} @b{batch}",
                            {"max_loss": t["max_loss"], "knobs": knobs, "tuned_batch": batch},
                            EffortSettings.from_json(t["settings"]), "dyvedeep")
                  for t in section["tuned"] if t.get("batch", 1) == batch]
        curves.append((CurveSpec(f"{name}: {knobs} (tuned for batch {batch})", name, data.name,
                                 f"{knobs} @b{batch}"), points))
    try:
        return evaluate(curves, baselines.reference, (x_test, y_test), timing, progress)
    finally:
        net.set_settings(EffortSettings())


def sweep_effort_runs(run_dirs: Sequence[str | Path], data: str | Dataset | None = None,
                      timing: TimingConfig | None = None, progress: bool | None = None) -> list[Curve]:
    """Each effort run's tuned settings as operating points (its dense network the reference)."""
    curves = []
    for run in open_runs(run_dirs, (EFFORT,), data, with_data=True, what="effort sweep"):
        curves += effort_curve(run.model, run.config, run.path.name, run.dataset, progress, timing)
    return curves


def _describe(net: EffortNet) -> tuple[ModelSpec, dict]:
    return ModelSpec.of(net.original), {"orders": net.orders, "knobs": list(getattr(net, "knobs", KNOBS)),
                                        "held_out": getattr(net, "held_out", ""), "tuned": getattr(net, "tuned", []),
                                        "objective": getattr(net, "objective", "time"),
                                        "threads": getattr(net, "threads", 1)}


def _build(config: RunConfig) -> EffortNet:
    try:
        net = EffortNet(config.model.build(), orders=config.section["orders"])
    except (IndexError, RuntimeError) as e:  # an order of another length than its layer's inputs
        raise ValueError(f"section.orders does not fit the network ({' '.join(str(e).split())})") from None
    section = config.section
    net.tuned, net.knobs, net.held_out = section["tuned"], section["knobs"], section["held_out"]
    net.objective, net.threads = section.get("objective", "macs"), section.get("threads", 1)
    return net


def _summary(config: RunConfig) -> list[tuple[str, str]]:
    section = config.section
    lines = [("knobs", ", ".join(section["knobs"])), ("tuned on", section["held_out"]),
             ("objective", section.get("objective", "macs"))]
    for t in section["tuned"]:
        text = (f"test accuracy {100 * t['test_accuracy']:.2f}% (dense {100 * t['test_dense_accuracy']:.2f}%), "
                f"{t['test_dense_macs'] / t['test_macs']:.2f}× fewer MACs")
        if t.get("held_seconds"):
            text += f", {t['held_dense_seconds'] / t['held_seconds']:.2f}× faster predicted (knobs' layers)"
        lines.append((f"loss≤{t['max_loss']:g} @b{t.get('batch', 1)}", text))
    return lines


EFFORT = "effort"
FRACTION = Num(0.0, 1.0)
MACS = Num(0.0, low_open=True)


@dataclass
class TunedBound:
    """One tuned bound of an effort run: its settings, and what they gave."""

    max_loss: float = setting(check=Num(0.0, 100.0), help="the accuracy points the knobs could lose")
    settings: dict = setting(check=MapOf(MapOf(Anything())), help="the knob settings by layer")
    held_accuracy: float = setting(check=FRACTION)
    held_macs: float = setting(check=MACS)
    held_dense_accuracy: float = setting(check=FRACTION)
    held_dense_macs: float = setting(check=MACS)
    test_accuracy: float = setting(check=FRACTION)
    test_macs: float = setting(check=MACS)
    test_dense_accuracy: float = setting(check=FRACTION)
    test_dense_macs: float = setting(check=MACS)
    batch: int = setting(1, check=Int(1), help="the batch size the settings were tuned for")
    held_seconds: float | None = setting(None, check=Optional(Num(0.0, low_open=True)),
                                         help="the layers' predicted seconds per batch (tuned for time)")
    held_dense_seconds: float | None = setting(None, check=Optional(Num(0.0, low_open=True)),
                                               help="the same, every layer dense on its fastest kernel")


@dataclass
class EffortSection:
    """The ``section`` of an effort run's config."""

    orders: dict = setting(check=MapOf(ListOf(Int(0), min_len=1, unique=True)),
                           help="each layer's input-channel order, a permutation")
    knobs: list[str] = setting(check=ListOf(Str(KNOBS), min_len=1, unique=True), help="the knobs tuned")
    held_out: str = setting(check=Str(empty=True), help="where the search measured")
    tuned: list[dict] = setting(check=ListOf(Record(TunedBound)), help="each bound's settings and results")
    objective: str = setting("macs", check=Str(OBJECTIVES), help="what the search saved: time (measured) or macs")
    threads: int = setting(1, check=Int(1), help="the thread count the costs were measured at")


def _check(config: RunConfig) -> None:
    for name, order in config.section["orders"].items():
        if sorted(order) != list(range(len(order))):
            raise ValueError(f"section.orders.{name} is not a permutation of 0..{len(order) - 1}")
    for i, tuned in enumerate(config.section["tuned"]):
        for layer, knobs in tuned["settings"].items():
            if isinstance(knobs, dict) and len(knobs) > 1:  # valid once: not damage, an older version's run
                raise DynscaleError(f"layer {layer!r} of the effort run's tuned bound {i} has {' and '.join(knobs)}; "
                                    "the knobs now run on dense kernels, one per layer: tune the run again with "
                                    "`dynscale effort tune`")
        try:
            EffortSettings.from_json(tuned["settings"])
        except ValueError as e:
            raise ValueError(f"section.tuned[{i}].settings: {e}") from None


register_kind(RunKind(EFFORT, EffortNet, _describe, _build, _summary, noun="an effort run",
                      made_by="`dynscale effort tune`", used_by="`dynscale effort sweep`", section=EffortSection,
                      check=_check))
