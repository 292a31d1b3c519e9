"""Effort runs: a trained run with its tuned knob settings, saved beside it as a run of kind
``effort``, and the operating points those settings give on the shared engine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import Dataset
from ..errors import DynscaleError
from ..eval import Candidate, Curve, CurveSpec, Measurement, Runner, TimingConfig, evaluate
from ..eval.runtime import torch_runner
from ..runs import WIDTH, ModelSpec, RunConfig, RunKind, check_output, open_run, open_runs, register_kind, save_run
from ..schema import Anything, Int, ListOf, MapOf, Num, Record, Str, setting
from .net import EffortNet
from .settings import KNOBS, EffortSettings
from .tune import evaluate as evaluate_settings
from .tune import tune

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
             force: bool = False, progress: bool | None = None) -> Path:
    """Tunes a trained run's effort knobs for each loss bound and saves them beside it.

    Args:
        run_dir: a width run (any network :func:`dynscale.graph.trace` understands).
        max_losses: accuracy-loss bounds in points (held-out data).
        knobs: the knobs to use.
        data: the dataset (default: the run's own).
        examples: held-out examples the search measures on.
        out: the effort run to write (default ``RUN-effort`` beside the run).
        force: replace an existing effort run at ``out``.
        progress: show progress bars; None shows them only on a terminal.

    Returns:
        The effort run directory. Its config records, per bound, the settings and their accuracy
        and MACs on the held-out data and on the test split (which the search never saw).
    """
    out = check_output(out or default_output(run_dir, knobs), force, inputs=[run_dir])
    run = open_run(run_dir, (WIDTH,), data, with_data=True, own_data=True, what="effort tune")
    if run.config.profile_ranges:
        raise DynscaleError(f"{run_dir} is a {run.model_name} run of several members; effort knobs take a single "
                            "network")
    dataset = run.dataset
    held, where = held_out(run.config, dataset, examples)
    net = EffortNet(run.model, calibration=held[0][:CALIBRATION])
    tuned = []
    dense_acc, dense_macs = evaluate_settings(net, dataset.test_x, dataset.test_y, EffortSettings())
    for result in tune(net, held, max_losses, knobs, progress):
        test_acc, test_macs = evaluate_settings(net, dataset.test_x, dataset.test_y, result.settings)
        tuned.append({"max_loss": result.max_loss, "settings": result.settings.to_json(),
                      "held_accuracy": result.accuracy, "held_broken": result.broken, "held_macs": result.macs,
                      "held_dense_accuracy": result.dense_accuracy, "held_dense_macs": result.dense_macs,
                      "test_accuracy": test_acc, "test_macs": test_macs, "test_dense_accuracy": dense_acc,
                      "test_dense_macs": dense_macs})
    net.set_settings(EffortSettings())
    net.tuned = tuned
    net.knobs = list(knobs)
    net.held_out = where
    return save_run(out, net, dataset.name, kind="effort", provenance={"source_run": str(run.path)},
                    metrics={"tuned": [{k: v for k, v in t.items() if k != "settings"} for t in tuned]})


def load_effort(directory: str | Path) -> tuple[EffortNet, RunConfig]:
    """Loads an effort run.

    Raises:
        DynscaleError: if it is another kind of run.
    """
    run = open_run(directory, (EFFORT,), what="effort sweep")
    return run.model, run.config


def effort_curve(net: EffortNet, config: RunConfig, name: str, data: Dataset, progress: bool | None = None,
                 timing: TimingConfig | None = None) -> list[Curve]:
    """The dense network and each tuned bound as operating points, on the test split."""
    knobs = "+".join(config.section.get("knobs", KNOBS))
    params = sum(p.numel() for p in net.original.parameters())

    def candidate(label: str, knob_values: dict, settings: EffortSettings, method: str) -> Candidate:
        def measure(x: torch.Tensor, y: torch.Tensor) -> Measurement:
            acc, macs = evaluate_settings(net, x, y, settings)
            return Measurement(acc, macs, params)

        def runner(runtime: str) -> Runner:
            if runtime != "torch":
                raise DynscaleError(f"effort networks are timed in eager PyTorch only, not {runtime}")
            return torch_runner(net, prepare=lambda: net.set_settings(settings))

        return Candidate(method, knob_values, label, measure, runner)

    dense = candidate("dense", {}, EffortSettings(), "dense")
    points = [candidate(f"loss≤{t['max_loss']:g}", {"max_loss": t["max_loss"], "knobs": knobs},
                        EffortSettings.from_json(t["settings"]), "dyvedeep") for t in config.section["tuned"]]
    curves = [(CurveSpec(f"{name}: dense", name, data.name, "dense"), [dense]),
              (CurveSpec(f"{name}: {knobs}", name, data.name, knobs), points)]
    try:
        return evaluate(curves, dense, (data.test_x, data.test_y), timing, progress)
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
                                        "held_out": getattr(net, "held_out", ""), "tuned": getattr(net, "tuned", [])}


def _build(config: RunConfig) -> EffortNet:
    try:
        net = EffortNet(config.model.build(), orders=config.section["orders"])
    except (IndexError, RuntimeError) as e:  # an order of another length than its layer's inputs
        raise ValueError(f"section.orders does not fit the network ({' '.join(str(e).split())})") from None
    net.tuned, net.knobs, net.held_out = config.section["tuned"], config.section["knobs"], config.section["held_out"]
    return net


def _summary(config: RunConfig) -> list[tuple[str, str]]:
    lines = [("knobs", ", ".join(config.section["knobs"])), ("tuned on", config.section["held_out"])]
    for t in config.section["tuned"]:
        lines.append((f"loss≤{t['max_loss']:g}", f"test accuracy {100 * t['test_accuracy']:.2f}% (dense "
                      f"{100 * t['test_dense_accuracy']:.2f}%), {t['test_dense_macs'] / t['test_macs']:.2f}× fewer "
                      "MACs"))
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


@dataclass
class EffortSection:
    """The ``section`` of an effort run's config."""

    orders: dict = setting(check=MapOf(ListOf(Int(0), min_len=1, unique=True)),
                           help="each layer's input-channel order, a permutation")
    knobs: list[str] = setting(check=ListOf(Str(KNOBS), min_len=1, unique=True), help="the knobs tuned")
    held_out: str = setting(check=Str(empty=True), help="where the search measured")
    tuned: list[dict] = setting(check=ListOf(Record(TunedBound)), help="each bound's settings and results")


def _check(config: RunConfig) -> None:
    for name, order in config.section["orders"].items():
        if sorted(order) != list(range(len(order))):
            raise ValueError(f"section.orders.{name} is not a permutation of 0..{len(order) - 1}")
    for i, tuned in enumerate(config.section["tuned"]):
        try:
            EffortSettings.from_json(tuned["settings"])
        except ValueError as e:
            raise ValueError(f"section.tuned[{i}].settings: {e}") from None


register_kind(RunKind(EFFORT, EffortNet, _describe, _build, _summary, noun="an effort run",
                      made_by="`dynscale effort tune`", used_by="`dynscale effort sweep`", section=EffortSection,
                      check=_check))
