"""The sweep and its report, shared by every method: accuracy and cost at a list of widths,
as a table, JSON and an accuracy-vs-MAC-ratio plot."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from torch import nn
from tqdm.auto import tqdm

from .checkpoint import atomic_write, load_run
from .cost import LatencyConfig, count_macs, measure_latency
from .data import Dataset, load_dataset
from .errors import DynscaleError
from .evaluation import accuracy
from .layers import check_width, width
from .multiprofile import MultiProfileModel

DEFAULT_WIDTHS = [0.1, 0.25, 0.5, 0.75, 1.0]


@dataclass
class SweepPoint:
    """One operating point: a width, its test accuracy and cost."""

    width: float
    accuracy: float
    macs: float  # per example
    macs_ratio: float  # macs / macs at full width
    latency_ms: dict[str, float] | None = None  # batch size -> median ms per forward pass
    bytes_sent: float | None = None  # device-to-cloud bytes per example (split models)


@dataclass
class SweepResult:
    """A run's curve."""

    run: str
    model: str
    profile: str | list[float]
    data: str
    points: list[SweepPoint] = field(default_factory=list)
    curve: str | None = None  # for multiple profiles: "profile 1 (0-0.3)", ..., "envelope"

    @property
    def label(self) -> str:
        name = Path(self.run).name
        profile = self.profile if isinstance(self.profile, str) else "custom"
        missing = [part for part in (self.model, profile) if part not in name]
        label = f"{name} ({', '.join(missing)})" if missing else name
        return f"{label} [{self.curve}]" if self.curve else label


def parse_widths(text: str) -> list[float]:
    """Parses ``"0.1,0.25,1.0"`` into validated widths.

    Raises:
        ValueError: for an empty list, a non-number, or a width outside (0, 1].
    """
    parts = [t.strip() for t in text.split(",") if t.strip()]
    if not parts:
        raise ValueError("give at least one width, e.g. --widths 0.25,0.5,1.0")
    return [check_width(p) for p in parts]


def sweep_model(model: nn.Module, data: Dataset, widths: list[float],
                latency: LatencyConfig | None = None, progress: bool | None = None
                ) -> list[SweepPoint]:
    """Evaluates ``model`` on the test split of ``data`` at each width.

    Args:
        model: a model with incomplete layers.
        data: the dataset.
        widths: fractions in (0, 1].
        latency: measure latency as configured, or None to skip.
        progress: show a progress bar; None shows it only on a terminal.

    Returns:
        One point per width, in the order given.
    """
    widths = [check_width(w) for w in widths]
    example = data.test_x[:1]  # (1, C, H, W)
    with width(model, 1.0):
        full_macs = count_macs(model, example)
    points = []
    for w in tqdm(widths, desc="sweep", unit="width", disable=None if progress is None else not progress):
        with width(model, w):
            macs = count_macs(model, example)
            lat = None
            if latency is not None:
                lat = {str(b): round(measure_latency(model, tuple(example.shape[1:]), b,
                                                     latency.threads, latency.min_run_time), 5)
                       for b in latency.batch_sizes}
            acc = accuracy(model, data.test_x, data.test_y)
            sent = model.bytes_sent(example) if hasattr(model, "bytes_sent") else None
        points.append(SweepPoint(w, acc, macs, macs / full_macs, lat, sent))
    return points


def sweep_runs(run_dirs: list[str], widths: list[float], data: str | Dataset | None = None,
               latency: LatencyConfig | None = None, progress: bool | None = None
               ) -> list[SweepResult]:
    """Loads and sweeps each run directory (each on its own dataset unless ``data``, a name or
    a loaded dataset, is given)."""
    datasets: dict[str, Dataset] = {data.name: data} if isinstance(data, Dataset) else {}
    results = []
    for run_dir in run_dirs:
        run = load_run(run_dir)
        name = data.name if isinstance(data, Dataset) else data or run.data
        if name not in datasets:
            datasets[name] = load_dataset(name)
        check_compatible(run.config["model"]["config"], datasets[name], str(run_dir))
        if isinstance(run.model, MultiProfileModel) and run.model.shared:
            results += sweep_profiles(run.model, datasets[name], widths, latency, progress,
                                      SweepResult(str(run_dir), run.model_name, run.profile, name))
            continue
        points = sweep_model(run.model, datasets[name], widths, latency, progress)
        results.append(SweepResult(str(run_dir), run.model_name, run.profile, name, points))
    return results


def sweep_profiles(model: MultiProfileModel, data: Dataset, widths: list[float],
                   latency: LatencyConfig | None, progress: bool | None,
                   template: SweepResult) -> list[SweepResult]:
    """One curve per profile (at the widths up to its range's top) and their envelope (the
    best profile at each width)."""
    curves = []
    for index, (low, high) in enumerate(model.ranges):
        inside = [w for w in widths if w <= high + 1e-9]
        with model.use_profile(index):
            points = sweep_model(model, data, inside, latency, progress)
        curves.append(replace(template, points=points, curve=f"profile {index + 1} ({low:g}-{high:g})"))
    envelope = []
    for w in widths:
        candidates = [p for c in curves for p in c.points if p.width == w]
        envelope.append(max(candidates, key=lambda p: p.accuracy))
    # MAC ratios are relative to each profile's own full width, which all profiles share.
    return curves + [replace(template, points=envelope, curve="envelope")]


def check_compatible(model_config: dict, data: Dataset, what: str) -> None:
    """Checks a model's input shape and class count against a dataset.

    Raises:
        DynscaleError: naming both shapes when they differ.
    """
    wanted = {"in_channels": data.in_channels, "input_size": data.input_size,
              "num_classes": data.num_classes}
    for key, value in wanted.items():
        if key in model_config and model_config[key] != value:
            raise DynscaleError(
                f"{what} has {key}={model_config[key]} but dataset {data.name} has {value}; "
                "evaluate it on data shaped like its training data"
            )


def to_json(results: list[SweepResult]) -> dict:
    """The JSON document of a sweep: ``{"runs": [{"run", "model", "profile", "data", "points"}]}``.

    Optional fields (a run's ``curve``, a point's ``bytes_sent``) appear only when set.
    """
    runs = []
    for r in results:
        doc = asdict(r)
        if doc["curve"] is None:
            del doc["curve"]
        for point in doc["points"]:
            if point["bytes_sent"] is None:
                del point["bytes_sent"]
        runs.append(doc)
    return {"runs": runs}


def write_json(results: list[SweepResult], path: str | Path, **extra) -> None:
    """Writes :func:`to_json` (plus ``extra`` top-level fields) atomically."""
    doc = {**to_json(results), **extra}
    atomic_write(Path(path), lambda p: p.write_text(json.dumps(doc, indent=2) + "\n"))


def format_table(results: list[SweepResult]) -> str:
    """Formats the curves side by side: one row per width, columns per run."""
    widths = sorted({p.width for r in results for p in r.points})
    batches = sorted({b for r in results for p in r.points for b in (p.latency_ms or {})}, key=int)
    sent = any(p.bytes_sent is not None for r in results for p in r.points)
    per_run = ["acc %", "MACs", "ratio", *(["bytes"] if sent else []), *(f"ms@{b}" for b in batches)]
    header1 = f"{'':>6} | " + " | ".join(f"{r.label:^{len(_cells(per_run))}}" for r in results)
    header2 = f"{'width':>6} | " + " | ".join(_cells(per_run) for _ in results)
    lines = [header1.rstrip(), header2, "-" * len(header2)]
    for w in widths:
        row = [f"{w:>6.3g}"]
        for r in results:
            point = next((p for p in r.points if p.width == w), None)
            if point is None:
                row.append(_cells(["-"] * len(per_run)))
                continue
            values = [f"{100 * point.accuracy:.2f}", human_count(point.macs), f"{point.macs_ratio:.3f}"]
            values += [f"{point.bytes_sent:.0f}" if point.bytes_sent is not None else "-"] if sent else []
            values += [f"{(point.latency_ms or {}).get(b, float('nan')):.4f}" for b in batches]
            row.append(_cells(values))
        lines.append(" | ".join(row))
    return "\n".join(lines)


def format_markdown(results: list[SweepResult]) -> str:
    """Formats the curves as a Markdown table: one row per width, accuracy (%) per run, the MAC
    ratio (one column when all runs share it), and the latency ratio to full width per batch
    size when latency was measured."""
    widths = sorted({p.width for r in results for p in r.points}, reverse=True)
    points = [{p.width: p for p in r.points} for r in results]
    shared = all(len({round(pts[w].macs_ratio, 6) for pts in points if w in pts}) == 1 for w in widths)
    header = ["width"] + (["MAC ratio"] if shared else [])
    for r in results:
        header += [f"{r.label} acc %"] + ([] if shared else [f"{r.label} MAC ratio"])
    batches = sorted({b for r in results for p in r.points for b in (p.latency_ms or {})}, key=int)
    sent = [i for i, r in enumerate(results) if any(p.bytes_sent is not None for p in r.points)]
    header += [f"{results[i].label} bytes sent" for i in sent]
    header += [f"{r.label} latency ratio @{b}" for r in results for b in batches]
    rows = []
    for w in widths:
        ref = next(pts[w] for pts in points if w in pts)
        row = [f"{w:g}"] + ([f"{ref.macs_ratio:.3f}"] if shared else [])
        for pts in points:
            p = pts.get(w)
            row += [f"{100 * p.accuracy:.2f}" if p else "–"]
            row += [] if shared else [f"{p.macs_ratio:.3f}" if p else "–"]
        for i in sent:
            p = points[i].get(w)
            row.append(f"{p.bytes_sent:.0f}" if p and p.bytes_sent is not None else "–")
        for pts in points:
            full = pts.get(1.0)
            for b in batches:
                p = pts.get(w)
                ok = p and full and p.latency_ms and full.latency_ms
                row.append(f"{p.latency_ms[b] / full.latency_ms[b]:.2f}" if ok else "–")
        rows.append(row)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _cells(values: list[str]) -> str:
    return " ".join(f"{v:>9}" for v in values)


def human_count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}"


def plot(results: list, path: str | Path, title: str = "Accuracy vs computation",
         xlabel: str = "MACs relative to full width") -> None:
    """Plots accuracy against MAC ratio, one line per curve, and saves a PNG atomically.

    Args:
        results: curves with a ``label``, a ``curve`` name and ``points`` that have
            ``macs_ratio`` and ``accuracy`` (sweep results, adaptive curves).
        path: the PNG to write.
        title: the plot's title.
        xlabel: the x axis label.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for r in results:
        xs = [p.macs_ratio for p in r.points]
        ys = [100 * p.accuracy for p in r.points]
        order = sorted(range(len(xs)), key=xs.__getitem__)
        style = {"linestyle": "--", "linewidth": 2.5, "color": "black", "alpha": 0.6} if r.curve == "envelope" else {}
        ax.plot([xs[i] for i in order], [ys[i] for i in order], marker="o", label=r.label, **style)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.set_xlim(0, max([1.02] + [1.02 * p.macs_ratio for r in results for p in r.points]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    atomic_write(Path(path), lambda p: fig.savefig(p, dpi=120, format="png"))
    plt.close(fig)
