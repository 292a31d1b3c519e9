"""``dynscale report``: every method on one backbone family and one dataset, side by side.

The plan (``experiments/report.yaml``) lists one dynscale command per run; the report trains
each run once into a cache (reused while its command is unchanged), measures every run with
its method's registered ``points`` in one process on one machine (one timing protocol: the
same batch sizes, rounds and threads), and writes one directory, whole: ``report.html``
(self-contained, its figures embedded), ``report.md`` with the PNGs beside it, and
``report.json`` (the curves, readable by ``pick --sweep``, plus the budget tables, commands and
versions).

Every ratio is relative to the plan's dense network (``baseline: true``): MACs counted against
its MACs; wall-clock against the method's own full network, which has the dense network's
architecture and ONNX graph, timed in the same interleaved rounds as the method's points, in
ONNX Runtime (what a user would ship instead) and in eager PyTorch. The report imports no method by name: the methods
are the plan's commands and the registry's ``points``.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import html
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
import yaml

from .command import dataset as load_named
from .data import Dataset
from .errors import DynscaleError
from .eval import Curve, CurveSpec, TimingConfig, evaluate
from .eval.baselines import dense_baselines, int8_calibration
from .eval.points import OperatingPoint, curves_to_json
from .eval.report import render_table
from .export import dense
from .files import atomic_directory, atomic_write, dumps_json
from .methods import measure_run
from .progress import progress_bar
from .runs import check_directory, check_output, load_run
from .train import state_directory

BUDGETS = (0.25, 0.5, 0.75)
BATCHES = (1, 64)
TIMED_EXAMPLES = 64  # test examples per timed call: input-dependent methods see a spread of inputs
# The cost axes: (key, title). ``ort@B``: wall-clock relative to the dense network in ONNX
# Runtime at batch B; ``torch@B``: relative to the method's own full network in eager PyTorch.
AXES = [("macs", "MACs (counted)")] + [(f"ort@{b}", f"wall-clock vs dense in ONNX Runtime, batch {b}")
                                        for b in BATCHES] + \
       [(f"torch@{b}", f"wall-clock vs full network in eager PyTorch, batch {b}") for b in BATCHES]
TABLE_AXES = ["macs", "ort@1", "ort@64"]


def load_report_plan(path: str | Path | None = None) -> dict:
    """The report's plan: ``experiments/report.yaml`` or the YAML file at ``path``.

    Raises:
        DynscaleError: for a plan that is not a mapping with ``modes`` and ``runs``.
    """
    where = str(path) if path else "the report plan"
    try:
        text = Path(path).read_text() if path else \
            resources.files("dynscale.experiments").joinpath("report.yaml").read_text()
        plan = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise DynscaleError(f"cannot read {where} as YAML ({' '.join(str(e).split())[:200]})") from None
    check_plan(plan, where)
    return plan


MODE_KEYS = {"backbone": list, "train": list, "exits": list, "gates": list, "test_limit": (int, type(None)),
             "rounds": int, "min_run_time": (int, float), "targets": list}
# The options a plan may pass to a method's ``points`` (``"@widths"``: the plan's widths); each
# method refuses, when measuring, one it does not take.
MEASURE_KEYS = {"widths": (str, list), "int8": bool}
RUN_KEYS = {"label": str, "command": list, "baseline": bool, "measure": dict, "keep": list, "stacked": bool,
            "stacked_curves": list, "per_target": bool}


def check_plan(plan: object, where: str = "the report plan") -> None:
    """Checks a report plan's structure: ``modes`` (each with ``backbone`` and ``train``),
    ``runs`` (each a ``command`` list, known fields of known types, one ``baseline``).

    Raises:
        DynscaleError: naming the first field that is wrong.
    """
    def fail(what: str) -> None:
        raise DynscaleError(f"{where}: {what}; see dynscale/experiments/report.yaml for the form")

    if not isinstance(plan, dict) or not isinstance(plan.get("modes"), dict) or not isinstance(plan.get("runs"), dict):
        fail("not a report plan (a mapping with modes and runs)")
    for mode, settings in plan["modes"].items():
        if not isinstance(settings, dict) or not all(k in settings for k in ("backbone", "train")):
            fail(f"mode {mode!r} needs backbone and train (lists of arguments)")
        for key, value in settings.items():
            if key not in MODE_KEYS or not isinstance(value, MODE_KEYS[key]):
                fail(f"mode {mode!r}: {key!r} is not a setting of a mode, or not of its type")
    for key in plan:
        if key not in ("modes", "runs", "widths"):
            fail(f"{key!r} is not a part of a plan (modes, runs, widths)")
    if not all(isinstance(w, (int, float)) and 0 < w <= 1 for w in plan.get("widths", [])) or \
            not isinstance(plan.get("widths", []), list):
        fail("widths must be a list of widths in (0, 1]")
    per_target = {name for name, spec in plan["runs"].items() if isinstance(spec, dict) and spec.get("per_target")}
    for mode, settings in plan["modes"].items():
        targets = settings.get("targets", []) if isinstance(settings, dict) else []
        if not isinstance(targets, list) or not all(isinstance(t, (int, float)) and t > 0 for t in targets):
            fail(f"mode {mode!r}: targets must be a list of positive numbers")
        if per_target and not targets:
            fail(f"mode {mode!r} has no targets for the per_target runs ({', '.join(sorted(per_target))})")
    for name, spec in plan["runs"].items():
        if not isinstance(spec, dict) or not isinstance(spec.get("command"), list) or not spec["command"]:
            fail(f"run {name!r} needs a command (a list of arguments)")
        for key, value in spec.items():
            if key not in RUN_KEYS or not isinstance(value, RUN_KEYS[key]):
                fail(f"run {name!r}: {key!r} is not a field of a run, or not of its type")
        for arg in spec["command"]:
            if not isinstance(arg, (str, int, float)):
                fail(f"run {name!r}: every argument of its command is a string")
        fields = {f for arg in spec["command"] for f in re.findall(r"\{([^{}]*)\}", str(arg))}
        unknown = sorted(fields - set(plan["runs"]) - {"out", "target"})
        if unknown:
            fail(f"run {name!r}: {{{unknown[0]}}} is neither a run of the plan nor {{out}} or {{target}}")
        if "target" in fields and not spec.get("per_target"):
            fail(f"run {name!r} uses {{target}} without per_target: true")
        refs = fields & set(plan["runs"])
        if refs & per_target:
            fail(f"run {name!r} reads a per_target run ({', '.join(sorted(refs & per_target))}): it has one run per "
                 "target, not one directory")
        for key in ("keep", "stacked_curves"):
            if not all(isinstance(k, str) for k in spec.get(key, [])):
                fail(f"run {name!r}: {key} is a list of curve or method names")
        for key, value in (spec.get("measure") or {}).items():
            if key not in MEASURE_KEYS or not isinstance(value, MEASURE_KEYS[key]):
                fail(f"run {name!r}: measure.{key} is not a measuring option the report passes on ("
                     f"{', '.join(MEASURE_KEYS)})")
        if any(list(plan["runs"]).index(r) >= list(plan["runs"]).index(name) for r in refs):
            fail(f"run {name!r} reads a run listed after it; list its inputs first")
    if sum(bool(s.get("baseline")) for s in plan["runs"].values()) != 1:
        fail("exactly one run must be the baseline (baseline: true)")


def is_report(path: Path) -> bool:
    """Whether a directory holds a report this command wrote (the one ``--force`` replaces)."""
    return (path / "report.json").is_file() and (path / "report.html").is_file()


@dataclass
class Step:
    """One run of the plan: its name, the command that makes it, and how it is measured."""

    name: str
    spec: dict
    argv: list[str]
    out: Path
    target: float | None = None

    @property
    def label(self) -> str:
        return self.spec.get("label", self.name)


def expand(plan: dict, mode: str, data: str, cache: Path, threads: int) -> list[Step]:
    """The plan's runs as commands, in order (a run's inputs come before it)."""
    settings = plan["modes"][mode]
    lists = {"@backbone": settings["backbone"], "@train": settings["train"], "@exits": settings.get("exits", []),
             "@gates": settings.get("gates", [])}
    outs = {name: cache / name for name in plan["runs"]}
    steps = []
    for name, spec in plan["runs"].items():
        targets = settings.get("targets", []) if spec.get("per_target") else [None]
        for target in targets:
            run_name = name if target is None else f"{name}-{target:g}"
            out = cache / run_name
            argv: list[str] = []
            for arg in spec["command"]:
                if arg in lists:
                    argv += [str(a) for a in lists[arg]]
                else:
                    argv.append(str(arg).format(out=out, target=target, **{k: v for k, v in outs.items()}))
            if "{out}" not in spec["command"]:
                argv += ["--out", str(out)]
            argv += ["--data", data, "--threads", str(threads), "--quiet"]
            steps.append(Step(run_name, spec, argv, out, target))
    return steps


def _record(step: Step) -> Path:
    """What made a cached run (written once it is made): :func:`identity`."""
    return step.out.parent / f"{step.out.name}.command.json"


def _started(step: Step) -> Path:
    """The command last started for a run (a stopped training resumes only under the same one)."""
    return step.out.parent / f"{step.out.name}.started.json"


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # the runs' clean-up stops the trainings, which save their state


def _command_key(step: Step) -> list[str]:
    """The command as it decides the run: without ``--threads N`` and ``--quiet``, which change
    how long it takes, not what it makes."""
    key, skip = [], False
    for arg in step.argv:
        if skip:
            skip = False
        elif arg == "--threads":
            skip = True
        elif arg != "--quiet":
            key.append(arg)
    return ["dynscale", *key]


def _inputs(step: Step, outs: set[Path]) -> list[Path]:
    return [Path(a) for a in step.argv if Path(a) in outs and Path(a) != step.out]


def identity(step: Step, outs: set[Path]) -> dict:
    """What a run is made of: its command and a digest of every input run's config (which a
    retraining changes), so that a run reading a remade run is remade too."""
    inputs = {}
    for path in _inputs(step, outs):
        config = path / "config.json"
        inputs[str(path)] = hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else None
    return {"command": _command_key(step), "inputs": inputs}


def _read_record(path: Path) -> object:
    """A record file's JSON, or None where it is missing or unreadable (then the run counts as
    made by another command)."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def make_runs(steps: Sequence[Step], force: bool, progress: bool | None, jobs: int = 1) -> list[dict]:
    """Runs each step's command unless its run is cached with the same :func:`identity` (its
    command, less ``--threads``, and the configs of the runs it reads; a run reading a remade
    run is remade too), up to ``jobs``
    at a time (a step starts once the runs it reads are made). Each command's output goes to
    ``CACHE/NAME.log``. Stopped (Ctrl-C, SIGTERM), the running trainings save their state; the
    next report with the same commands resumes them.

    Returns:
        One entry per step, in the plan's order: ``{"name", "command", "seconds", "reused"}``.

    Raises:
        DynscaleError: for a cached run made by another command (without ``force``), checked
            for every step before any starts; or a command that fails (with its last error
            line; the others running are stopped).
    """
    entries: dict[str, dict] = {}
    pending: list[Step] = []
    extra: dict[str, list[str]] = {}  # --resume or --force, per step
    outs = {step.out for step in steps}
    remade: set[Path] = set()
    for step in steps:  # the plan lists a run's inputs before it
        command = ["dynscale", *step.argv]
        stale_inputs = [p.name for p in _inputs(step, outs) if p in remade]
        stopped = (state_directory(step.out) / "state.json").is_file()
        if step.out.exists() and not stale_inputs and _read_record(_record(step)) == identity(step, outs):
            entries[step.name] = {"name": step.name, "command": shlex.join(command), "seconds": None, "reused": True}
            continue
        if stopped and not stale_inputs and _read_record(_started(step)) == _command_key(step):
            extra[step.name] = ["--resume"]  # a training this report stopped: it goes on where it was
        elif step.out.exists() or stopped:
            if not force:
                why = f"reads {', '.join(stale_inputs)}, which is remade" if stale_inputs else \
                    "was made by another command than the report's (or from other inputs)"
                raise DynscaleError(f"{step.out} {why}; pass --force to remake it, or choose another --cache")
            extra[step.name] = ["--force"]
        pending.append(step)
        remade.add(step.out)
    needs = {step.name: set(_inputs(step, outs)) for step in pending}
    made = {step.out for step in steps if step.name in entries}
    failure: DynscaleError | None = None
    running: dict[str, tuple[Step, subprocess.Popen, float]] = {}
    bar = progress_bar(total=len(pending), progress=progress, desc="runs", unit="run")
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        while (pending and failure is None) or running:
            ready = [] if failure is not None else [s for s in pending if needs[s.name] <= made]
            for step in ready[:max(0, jobs - len(running))]:
                pending.remove(step)
                resuming = " (resuming)" if "--resume" in extra.get(step.name, []) else ""
                print(f"[report] {step.name}{resuming}: {shlex.join(['dynscale', *step.argv])}", flush=True)
                argv = [*step.argv, *extra.get(step.name, [])]
                atomic_write(_started(step), lambda path, c=_command_key(step): path.write_text(json.dumps(c)))
                with open(step.out.parent / f"{step.out.name}.log", "a") as log:
                    process = subprocess.Popen([sys.executable, "-m", "dynscale", *argv], stdout=log,
                                               stderr=subprocess.STDOUT, text=True)
                running[step.name] = (step, process, time.perf_counter())
            if not running:
                if failure is not None:
                    break
                raise DynscaleError(f"report runs {', '.join(s.name for s in pending)} read runs that are never made")
            time.sleep(0.2)
            for name, (step, process, started) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[name]
                command = ["dynscale", *step.argv]
                if process.returncode != 0:
                    lines = [ln for ln in (step.out.parent / f"{step.out.name}.log").read_text().splitlines()
                             if ln.strip()]
                    last = lines[-1].removeprefix("dynscale: error: ") if lines else f"exit {process.returncode}"
                    failure = failure or DynscaleError(f"report run {step.name} failed ({shlex.join(command)}): "
                                                       f"{last}")
                    for _, other, _ in running.values():
                        other.terminate()  # the others stop (and save their state): the report is over
                    continue
                atomic_write(_record(step), lambda path, c=identity(step, outs): path.write_text(json.dumps(c)))
                entries[name] = {"name": name, "command": shlex.join(command),
                                 "seconds": round(time.perf_counter() - started, 1), "reused": False}
                made.add(step.out)
                bar.update(1)
        if failure is not None:
            raise failure
    finally:
        signal.signal(signal.SIGTERM, previous)
        for _, process, _ in running.values():
            process.terminate()  # a training saves its state on SIGTERM: the next report resumes it
        for _, process, _ in running.values():
            process.wait()
        bar.close()
    return [entries[step.name] for step in steps]


def _kept(curves: list[Curve], keep: list[str] | None) -> list[Curve]:
    if not keep:
        return curves
    out = []
    for c in curves:
        if c.curve in keep:
            out.append(c)
            continue
        points = [p for p in c.points if p.method in keep]
        if points:
            out.append(dataclasses.replace(c, points=points))
    return out


def _suffix(curve: Curve) -> str:
    """What tells a run's curves apart: the curve's name without the method's."""
    if curve.curve is None:
        return ""
    method = curve.points[0].method if curve.points else ""
    return curve.curve.removeprefix(method).strip()


@dataclass
class Row:
    """A curve of the report: a method (or two stacked) with its points."""

    label: str
    curve: Curve
    stacked: bool = False
    runs: list[str] = field(default_factory=list)
    reference: bool = False  # the dense network every ratio is relative to


def measure(steps: Sequence[Step], dataset: Dataset, timing: TimingConfig, widths: list[float],
            progress: bool | None) -> tuple[list[Row], float]:
    """Measures every run with its method, and the baseline run as the dense network and its
    static int8 versions. Curves of one label (a method's runs at several targets) are merged.

    Returns:
        The rows and the dense network's MACs.
    """
    rows: dict[str, Row] = {}
    dense_macs = None
    for step in progress_bar(steps, progress, desc="measure", unit="run"):
        spec = step.spec
        if spec.get("baseline"):
            curves, dense_macs = baseline_curves(step, dataset, timing, progress)
        elif "label" in spec:
            options = {k: (widths if v == "@widths" else v) for k, v in (spec.get("measure") or {}).items()}
            curves = _kept(measure_run(step.out, data=dataset, timing=timing, progress=False, **options),
                           spec.get("keep"))
            if not curves:
                raise DynscaleError(f"report run {step.name}: its method measured no curve named {spec.get('keep')}")
        else:
            continue  # an input of other runs only (a cascade's member)
        for curve in curves:
            suffix = _suffix(curve) if len(curves) > 1 and not spec.get("baseline") else ""
            label = curve.label if spec.get("baseline") else f"{step.label} {suffix}".strip()
            stacked = bool(spec.get("stacked")) or suffix in (spec.get("stacked_curves") or [])
            if label in rows:
                rows[label].curve.points += curve.points
                rows[label].runs.append(str(step.out))
            else:
                rows[label] = Row(label, dataclasses.replace(curve, label=label, points=list(curve.points)), stacked,
                                  [str(step.out)], reference=bool(spec.get("baseline")) and curve.curve == "dense")
    if dense_macs is None:
        raise DynscaleError("the report plan has no baseline run")
    for row in rows.values():
        row.curve.points.sort(key=lambda p: p.macs)
    return list(rows.values()), dense_macs


def baseline_curves(step: Step, dataset: Dataset, timing: TimingConfig,
                    progress: bool | None) -> tuple[list[Curve], float]:
    """The baseline run as the dense network (eager PyTorch and ONNX Runtime) and its static
    int8 versions (ONNX Runtime QDQ, PyTorch x86), timed against the dense network."""
    run = load_run(step.out)
    example = dataset.test_x[:256]
    plain = dense(run.model, 1.0, example[:1])
    calibration = int8_calibration(dataset.train_x)
    baselines = dense_baselines(plain, example, calibration, name=step.label, threads=timing.threads)
    for note in baselines.notes:
        print(f"[report] {note}")
    specs = [(CurveSpec(step.label, str(step.out), dataset.name, "dense"), [baselines.reference])] + \
        [(CurveSpec(f"{step.label}, static int8 ({c.label.removeprefix('int8 (').rstrip(')')})", str(step.out),
                    dataset.name, "static int8"), [c]) for c in baselines.int8]
    curves = evaluate(specs, baselines.reference, (dataset.test_x, dataset.test_y), timing, progress)
    return curves, curves[0].points[0].macs


def cost(point: OperatingPoint, axis: str, dense_macs: float) -> tuple[float | None, str]:
    """A point's cost on ``axis`` (see :data:`AXES`) and the runtime it was measured on.

    ``ort@B``: its time over the dense network's in ONNX Runtime, on the runtime where the point
    is fastest (a method that runs only in eager PyTorch is compared with the dense network in
    ONNX Runtime timed in the same rounds). ``torch@B``: in eager PyTorch, over its own full
    network there (points not run in PyTorch have none)."""
    if axis == "macs":
        return point.macs / dense_macs, ""
    runtime, batch = axis.split("@")
    found = []
    for lat in point.latency:
        if lat.batch != int(batch):
            continue
        if runtime == "torch":
            if lat.runtime == "torch":
                found.append((lat.ratio, lat.runtime))
        elif lat.runtime == "onnxruntime":
            found.append((lat.ratio, lat.runtime))
        elif "onnxruntime" in lat.versus:
            found.append((lat.versus["onnxruntime"], lat.runtime))
    return min(found) if found else (None, "")


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other beats in both cost (lower) and accuracy (higher), by cost."""
    front, best = [], -1.0
    for c, a in sorted(points, key=lambda t: (t[0], -t[1])):
        if a > best:
            front.append((c, a))
            best = a
    return front


def budget_table(rows: Sequence[Row], dense_macs: float) -> dict:
    """The best accuracy under each budget on each table axis, and the row that reaches it (the
    dense network itself, the reference, never competes)."""
    out: dict = {}
    for axis in TABLE_AXES:
        out[axis] = {}
        for budget in BUDGETS:
            best = None
            for row in rows:
                if row.reference:
                    continue
                for p in row.curve.points:
                    c, runtime = cost(p, axis, dense_macs)
                    if c is not None and c <= budget and (best is None or p.accuracy > best["accuracy"]):
                        point = p.label if len(row.curve.points) > 1 else ""  # a one-point row: its label says it
                        best = {"method": row.label, "point": point, "accuracy": p.accuracy, "cost": c,
                                "runtime": runtime, "saving": p.saving}
            out[axis][f"{budget:g}"] = best
    return out


def machine() -> dict:
    """The machine and the versions the report was measured with."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"python": platform.python_version()}
    for package in ("dynscale", "torch", "onnxruntime", "onnx", "numpy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return {"cpu": cpu, "cores": os.cpu_count(), "system": platform.platform(), "versions": versions}


def plot_axis(rows: Sequence[Row], axis: str, title: str, dense_macs: float, path: Path) -> bool:
    """Accuracy against one cost axis, every row a line, the Pareto front dashed; False (and
    nothing written) where no point has that cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11.0, 5.4))
    everything = []
    markers = "osD^v<>pP*Xh"
    colors = plt.get_cmap("tab20").colors
    for i, row in enumerate(rows):
        pairs = sorted((c, 100 * p.accuracy) for p in row.curve.points
                       if (c := cost(p, axis, dense_macs)[0]) is not None)
        if not pairs:
            continue
        everything += pairs
        ax.plot([c for c, _ in pairs], [a for _, a in pairs], marker=markers[i % len(markers)],
                linestyle=":" if row.stacked else "-", color=colors[i % len(colors)],
                label=row.label + (" (stacked)" if row.stacked else ""))
    if not everything:
        plt.close(fig)
        return False
    front = pareto(everything)
    ax.plot([c for c, _ in front], [a for _, a in front], linestyle="--", color="black", linewidth=2.5, alpha=0.45,
            label="Pareto front", drawstyle="steps-post")
    ax.axvline(1.0, color="grey", linewidth=0.8)
    ax.set_xscale("log")
    reference = "the dense network" if axis.startswith(("macs", "ort")) else "the full network"
    ax.set_xlabel(f"{title} (ratio, log scale; 1 = {reference})")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Accuracy vs {title}")
    low = min(a for _, a in everything)
    ax.set_ylim(max(0.0, low - 2), min(100.0, max(a for _, a in everything) + 2))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
    return True


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def point_rows(rows: Sequence[Row], dense_macs: float) -> tuple[list[str], list[list[str]]]:
    """Every point: method, setting, accuracy, MACs, BitOps, wall-clock ratios, how its saving
    is known."""
    header = ["method", "setting", "accuracy %", "MACs", "MAC ratio", "BitOps ratio",
              *[f"{a} ratio" for a, _ in AXES[1:]], "ms per batch of 1 / 64", "saving"]
    table = []
    for row in rows:
        for p in row.curve.points:
            ms = " · ".join(f"{'ORT' if rt == 'onnxruntime' else rt} " + " / ".join(
                f"{lat.ms:.3g}" for lat in sorted(p.latency, key=lambda lat: lat.batch) if lat.runtime == rt)
                for rt in dict.fromkeys(lat.runtime for lat in p.latency))
            table.append([row.label + (" (stacked)" if row.stacked else ""), p.label or json.dumps(p.knobs),
                          f"{100 * p.accuracy:.2f}", f"{p.macs / 1e6:.3g}M", _fmt(p.macs / dense_macs, 3),
                          _fmt(p.bitops_ratio, 3), *[_fmt(cost(p, a, dense_macs)[0]) for a, _ in AXES[1:]],
                          ms or "not timed", p.saving if p.executed else "counted (simulated)"])
    return header, table


def method_rows(rows: Sequence[Row]) -> tuple[list[str], list[list[str]]]:
    """One line per row: its points, runtimes timed, and whether its saving is measured."""
    header = ["method", "points", "accuracy % (range)", "timed on", "saving", "BitOps"]
    table = []
    for row in rows:
        points = row.curve.points
        if not points:
            continue
        runtimes = sorted({lat.runtime for p in points for lat in p.latency})
        savings = sorted({p.saving if p.executed else "counted (simulated)" for p in points})
        accuracies = [100 * p.accuracy for p in points]
        table.append([row.label + (" (stacked)" if row.stacked else ""), str(len(points)),
                      f"{min(accuracies):.2f}–{max(accuracies):.2f}", ", ".join(runtimes) or "not timed",
                      " / ".join(savings), "counted" if any(p.bitops_ratio is not None for p in points) else "—"])
    return header, table


def budget_rows(budgets: dict) -> tuple[list[str], list[list[str]]]:
    header = ["cost axis", *[f"≤ {int(100 * b)}% of the dense network" for b in BUDGETS]]
    table = []
    for axis in TABLE_AXES:
        title = dict(AXES)[axis]
        cells = []
        for b in BUDGETS:
            best = budgets[axis][f"{b:g}"]
            if best is None:
                cells.append("nothing reaches it")
                continue
            where = f"{best['cost']:.2f}" + (f", {best['runtime']}" if best["runtime"] else "")
            cells.append(f"{100 * best['accuracy']:.2f}% — {' '.join(filter(None, [best['method'], best['point']]))} "
                         f"({where})")
        table.append([title, *cells])
    return header, table


def html_table(header: list[str], rows: list[list[str]], css: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


NOTES = [
    "MAC ratio: counted multiply-accumulates per example against the dense network's (input-dependent methods: "
    "their mean over the test split).",
    "ONNX Runtime ratios: the point's wall-clock over the dense network's in ONNX Runtime, timed in the same "
    "interleaved rounds (median of rounds), on the runtime where the point is fastest; methods that run only in "
    "eager PyTorch are compared with the dense network in ONNX Runtime all the same: it is what a user would ship "
    "instead.",
    "PyTorch ratios: against the method's own full network in eager PyTorch (the same architecture). Each "
    "method's points are timed interleaved with its own full network, which has the dense network's architecture "
    "(and exports to the same ONNX graph).",
    "saving: measured where the timed code executes what is counted; counted where it is only simulated or not "
    "timed. BitOps are counted (int8: (8/32)² of a float32 multiply-accumulate).",
]


def write_report(out: Path, rows: Sequence[Row], dense_macs: float, meta: dict, budgets: dict,
                 force: bool) -> Path:
    """Writes the report directory whole: HTML (figures embedded), Markdown with the PNGs, JSON."""
    title = meta["title"]
    figures: list[tuple[str, str]] = []

    def fill(tmp: Path) -> None:
        for axis, axis_title in AXES:
            name = f"accuracy-vs-{axis.replace('@', '-b')}.png"
            if plot_axis(rows, axis, axis_title, dense_macs, tmp / name):
                figures.append((name, axis_title))
        methods = method_rows(rows)
        points = point_rows(rows, dense_macs)
        table = budget_rows(budgets)
        commands = [r["command"] for r in meta["runs"]]
        versions = ", ".join(f"{k} {v}" for k, v in meta["machine"]["versions"].items())
        where = f"{meta['machine']['cpu']} ({meta['machine']['cores']} cores), {meta['machine']['system']}"
        timing = meta["timing"]
        timing_line = (f"batch {', '.join(map(str, timing['batch_sizes']))}; {timing['threads']} thread(s); "
                       f"{timing['rounds']} interleaved rounds; {timing['examples']} test examples per timed call")
        rendered = f" ({meta['rendered']})" if meta.get("rendered") else ""
        md = [f"# {title}\n", f"Made by `{meta['command']}` on {meta['date']}{rendered}.\n",
              f"Machine: {where}. Versions: {versions}. Timing: {timing_line}.\n",
              f"Backbone: `{' '.join(meta['backbone'])}`; data: {meta['data']} ({meta['test_examples']} test "
              "examples).\n",
              "## Best accuracy under a budget\n", render_table(*table, markdown=True), "",
              "## Figures\n", *[f"![{t}]({n})\n" for n, t in figures],
              "## Methods\n", render_table(*methods, markdown=True), "",
              "## Every operating point\n", render_table(*points, markdown=True), "",
              "## How to read it\n", *[f"- {n}" for n in NOTES], "",
              "## Commands\n", "```", meta["command"], *commands, "```", ""]
        (tmp / "report.md").write_text("\n".join(md))
        images = "".join(
            f'<figure><img alt="{html.escape(t)}" src="data:image/png;base64,'
            f'{base64.b64encode((tmp / n).read_bytes()).decode()}"><figcaption>{html.escape(t)}</figcaption></figure>'
            for n, t in figures)
        page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1400px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }}
th, td {{ border: 1px solid #bbb; padding: 0.25em 0.5em; text-align: left; }}
th {{ background: #eee; }}
figure {{ display: inline-block; margin: 0.5em; }}
img {{ max-width: 100%; width: 900px; }}
pre {{ background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 0.8em; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Made by <code>{html.escape(meta['command'])}</code> on {html.escape(meta['date'])}{html.escape(rendered)}.</p>
<p>Machine: {html.escape(where)}. Versions: {html.escape(versions)}. Timing: {html.escape(timing_line)}.</p>
<p>Backbone: <code>{html.escape(' '.join(meta['backbone']))}</code>; data: {html.escape(meta['data'])}
({meta['test_examples']} test examples).</p>
<h2>Best accuracy under a budget</h2>
{html_table(*table, css="budgets")}
<h2>Figures</h2>
{images}
<h2>Methods</h2>
{html_table(*methods, css="methods")}
<h2>Every operating point</h2>
{html_table(*points, css="points")}
<h2>How to read it</h2>
<ul>{''.join(f'<li>{html.escape(n)}</li>' for n in NOTES)}</ul>
<h2>Commands</h2>
<pre>{html.escape(chr(10).join([meta['command'], *commands]))}</pre>
</body></html>
"""
        (tmp / "report.html").write_text(page)
        doc = curves_to_json([r.curve for r in rows], **{**meta, "budgets": budgets, "dense_macs": dense_macs,
                                                        "rows": [{"label": r.label, "stacked": r.stacked,
                                                                  "runs": r.runs} for r in rows]})
        (tmp / "report.json").write_text(dumps_json(doc))

    return atomic_directory(out, fill, replace=force)


def report(data: str, out: str | Path, quick: bool = False, cache: str | Path | None = None,
           force: bool = False, threads: int = 1, progress: bool | None = None, plan: dict | None = None,
           command: str = "dynscale report", jobs: int = 1) -> dict:
    """Trains (or reuses) every method's runs, measures them all, and writes the report.

    Args:
        data: the dataset's name (every run's command reads it).
        out: the report directory (written whole; an existing one only with ``force``).
        quick: the few-minute plan (mode ``quick``) instead of the full one.
        cache: where the runs are trained and kept (default ``runs/report-DATA-MODE``).
        force: replace ``out``, and remake cached runs whose command changed.
        threads: threads of every training and of the timing (PyTorch and ONNX Runtime).
        progress: show progress bars; None shows them only on a terminal.
        plan: the plan (default ``experiments/report.yaml``).
        command: the command line, as the report states it.
        jobs: runs trained at a time (each with ``threads`` threads); the measuring runs alone.

    Returns:
        The report's settings, machine, runs and times (its JSON's fields but the curves), and
        ``budgets``.

    Raises:
        DynscaleError: before any work, for an ``out`` that cannot be written; for a run that
            fails, naming it.
    """
    plan = plan or load_report_plan()
    mode = "quick" if quick else "full"
    if mode not in plan["modes"]:
        raise DynscaleError(f"the report plan has no {mode!r} mode (it has {', '.join(plan['modes'])})")
    cache = check_directory(Path(cache) if cache else Path("runs") / f"report-{data}-{mode}", "--cache")
    out = check_output(out, force, inputs=[cache], what=("a report", is_report))
    dataset = load_named(data)  # a failure names --data
    settings = plan["modes"][mode]
    steps = expand(plan, mode, data, cache, threads)
    cache.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    runs = make_runs(steps, force, progress, jobs)
    trained = time.perf_counter() - started
    if settings.get("test_limit"):
        limit = settings["test_limit"]
        dataset = dataclasses.replace(dataset, test_x=dataset.test_x[:limit], test_y=dataset.test_y[:limit])
    timing = TimingConfig(batch_sizes=list(BATCHES), threads=threads, rounds=settings.get("rounds", 3),
                          min_run_time=settings.get("min_run_time", 0.3), examples=TIMED_EXAMPLES,
                          runtimes=["torch", "onnxruntime"])
    torch.set_num_threads(threads)
    rows, dense_macs = measure(steps, dataset, timing, plan.get("widths", [0.25, 0.5, 0.75, 1.0]), progress)
    budgets = budget_table(rows, dense_macs)
    meta = {"title": f"Every method side by side: {data} ({mode})", "command": command, "mode": mode, "data": data,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
            "backbone": [str(a) for a in settings["backbone"]], "test_examples": len(dataset.test_y),
            "timing": dataclasses.asdict(timing), "runs": runs,
            "seconds": {"runs": round(trained, 1), "total": round(time.perf_counter() - started, 1)}}
    write_report(out, rows, dense_macs, meta, budgets, force)
    return {**meta, "budgets": budgets}


def print_budgets(meta: dict, out: Path, echo: Callable[[str], None] = print) -> None:
    """Prints where the report went and its budget table (``meta``: what :func:`report` returns)."""
    header, rows = budget_rows(meta["budgets"])
    echo(render_table(header, rows, markdown=True))
    echo(f"\nwrote {out}/report.html, report.md (with its PNGs) and report.json "
         f"({meta['seconds']['total']:.0f} s)")
