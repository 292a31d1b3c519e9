"""Budget controller: pick the most accurate width that fits a MAC or latency budget, from a
measured sweep."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import DynscaleError
from .sweep import SweepPoint, SweepResult


@dataclass
class Choice:
    """The width picked for a budget, and what the sweep measured there."""

    width: float
    accuracy: float
    macs_ratio: float
    latency_ms: float | None


class Controller:
    """Chooses operating points from one measured curve.

    Args:
        points: the curve's sweep points.
        label: what the curve is, for messages.
    """

    def __init__(self, points: list[SweepPoint], label: str = "sweep") -> None:
        if not points:
            raise ValueError(f"{label} has no points to choose from")
        self.points = sorted(points, key=lambda p: p.width)
        self.label = label

    @classmethod
    def from_sweep(cls, source: str | Path | SweepResult, run: str | None = None,
                   widths: list[float] | None = None, batch_sizes: list[int] | None = None) -> Controller:
        """Builds a controller from a sweep.

        Args:
            source: a sweep JSON file (``dynscale sweep --json``), a run directory (swept now,
                with latency), or a :class:`SweepResult`.
            run: which run of a JSON holding several (its ``run`` path or name); for a
                multiple-profile run its envelope is used.
            widths: widths to sweep when ``source`` is a run directory.
            batch_sizes: batch sizes to time when ``source`` is a run directory.

        Raises:
            DynscaleError: if the file is not a sweep, or ``run`` is missing or ambiguous.
        """
        if isinstance(source, SweepResult):
            return cls(source.points, source.label)
        path = Path(source)
        if path.is_dir():
            from .cost import LatencyConfig
            from .sweep import DEFAULT_WIDTHS, sweep_runs

            results = sweep_runs([str(path)], widths or DEFAULT_WIDTHS,
                                 latency=LatencyConfig(batch_sizes=batch_sizes or [1, 64]))
            return cls(_one_curve([_as_dict(r) for r in results], None, str(path)).points, str(path))
        try:
            doc = json.loads(path.read_text())
            runs = doc["runs"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise DynscaleError(f"{path} is not a sweep JSON written by `dynscale sweep --json` ({e})") from None
        result = _one_curve(runs, run, str(path))
        return cls(result.points, result.label)

    def pick(self, macs_ratio: float | None = None, latency_ms: float | None = None,
             batch: int = 1) -> Choice:
        """The most accurate width whose cost fits the budget (the cheaper one on a tie).

        Args:
            macs_ratio: budget as a fraction of the full-width MACs.
            latency_ms: budget in milliseconds per forward pass at ``batch``.
            batch: the batch size the latency budget refers to.

        Raises:
            ValueError: unless exactly one budget is given; if the sweep has no latency at
                ``batch``; or if no width fits, naming the smallest cost available.
        """
        if (macs_ratio is None) == (latency_ms is None):
            raise ValueError("give exactly one budget: a MAC ratio or a latency in ms")
        if latency_ms is not None:
            key = str(batch)
            if any(not p.latency_ms or key not in p.latency_ms for p in self.points):
                raise ValueError(f"{self.label} has no latency at batch {batch}; sweep with --latency --batch {batch}")
            cost, budget, unit = (lambda p: p.latency_ms[key]), latency_ms, f"ms at batch {batch}"
        else:
            cost, budget, unit = (lambda p: p.macs_ratio), macs_ratio, "of the full-width MACs"
        if not budget > 0:
            raise ValueError(f"the budget must be > 0, got {budget}")
        fitting = [p for p in self.points if cost(p) <= budget]
        if not fitting:
            cheapest = min(self.points, key=cost)
            raise ValueError(f"no width fits a budget of {budget:g} {unit}; the smallest cost available "
                             f"is {cost(cheapest):.4g} {unit} (width {cheapest.width:g})")
        best = max(fitting, key=lambda p: (p.accuracy, -cost(p)))
        latency = best.latency_ms.get(str(batch)) if best.latency_ms else None
        return Choice(best.width, best.accuracy, best.macs_ratio, latency)


def _as_dict(result: SweepResult) -> dict:
    from .sweep import to_json

    return to_json([result])["runs"][0]


def _one_curve(runs: list[dict], run: str | None, source: str) -> SweepResult:
    if run is not None:
        runs = [r for r in runs if r["run"] == run or Path(r["run"]).name == run]
        if not runs:
            raise DynscaleError(f"{source} has no run {run!r}")
    names = sorted({r["run"] for r in runs})
    if len(names) > 1:
        raise DynscaleError(f"{source} holds several runs ({', '.join(names)}); choose one")
    envelope = [r for r in runs if r.get("curve") == "envelope"]
    doc = envelope[0] if envelope else runs[0]
    points = [SweepPoint(**p) for p in doc["points"]]
    return SweepResult(doc["run"], doc["model"], doc["profile"], doc["data"], points, doc.get("curve"))
