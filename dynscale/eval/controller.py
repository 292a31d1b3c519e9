"""Budget controller: the most accurate operating point that fits a MAC, BitOps or latency
budget, from a measured curve (of any method)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import DynscaleError
from .points import Curve, OperatingPoint, read_curves


def describe_knobs(point: OperatingPoint) -> str:
    """``"width 0.5"``, ``"early-exit λ=0.05"``: what to set to get this point."""
    if list(point.knobs) == ["width"]:
        return f"width {point.knobs['width']:g}"
    return f"{point.method} {point.label}".strip()


class Controller:
    """Chooses operating points from measured curves.

    Args:
        points: the candidate operating points (one run's curves, all methods alike).
        label: what they are, for messages.
    """

    def __init__(self, points: Sequence[OperatingPoint], label: str = "sweep") -> None:
        if not points:
            raise ValueError(f"{label} has no operating points to choose from")
        self.points = list(points)
        self.label = label

    @classmethod
    def from_curves(cls, curves: Sequence[Curve], run: str | None = None, label: str = "sweep") -> Controller:
        """A controller over one run's points (every curve of it: the profiles of a
        multiple-profile run, or the policies of an adaptive one).

        Args:
            curves: curves of one or several runs.
            run: which run, by path or directory name, when there are several.

        Raises:
            DynscaleError: if ``run`` is missing or the curves hold several runs and none is named.
        """
        if run is not None:
            curves = [c for c in curves if c.run == run or Path(c.run or "").name == Path(run).name]
            if not curves:
                raise DynscaleError(f"{label} has no run {run!r}")
        runs = sorted({c.run or c.label for c in curves})
        if len(runs) > 1:
            raise DynscaleError(f"{label} holds several runs ({', '.join(runs)}); name one")
        return cls([p for c in curves for p in c.points], label)

    @classmethod
    def from_file(cls, path: str | Path, run: str | None = None) -> Controller:
        """A controller over a report JSON (``dynscale sweep --json`` or any other --json)."""
        return cls.from_curves(read_curves(path), run, str(path))

    def pick(self, macs_ratio: float | None = None, latency_ms: float | None = None, batch: int = 1,
             runtime: str = "torch", bitops_ratio: float | None = None) -> OperatingPoint:
        """The most accurate point whose cost fits the budget (the cheaper one on a tie).

        Args:
            macs_ratio: budget as a fraction of the full network's MACs.
            latency_ms: budget in milliseconds per batch of ``batch`` on ``runtime``.
            batch: the batch size the latency budget refers to.
            runtime: the runtime the latency budget refers to.
            bitops_ratio: budget as a fraction of the full-precision BitOps.

        Raises:
            ValueError: unless exactly one budget is given; if the points have no latency at
                ``batch`` on ``runtime``; or if nothing fits, naming the smallest cost available.
        """
        budgets = [b for b in (macs_ratio, latency_ms, bitops_ratio) if b is not None]
        if len(budgets) != 1:
            raise ValueError("give exactly one budget: a MAC ratio, a BitOps ratio or a latency in ms")
        cost: Callable[[OperatingPoint], float]
        if latency_ms is not None:
            if any(p.latency_at(runtime, batch) is None for p in self.points):
                raise ValueError(f"{self.label} has no latency at batch {batch} on {runtime}; measure it with "
                                 f"--latency --batch {batch} --runtime {runtime}")
            cost, unit = (lambda p: p.latency_at(runtime, batch).ms), f"ms at batch {batch} on {runtime}"
        elif bitops_ratio is not None:
            if any(p.bitops_ratio is None for p in self.points):
                raise ValueError(f"{self.label} counts no BitOps; give a MAC ratio or a latency budget")
            cost, unit = (lambda p: p.bitops_ratio), "of the full-precision BitOps"
        else:
            cost, unit = (lambda p: p.macs_ratio), "of the full network's MACs"
        budget = budgets[0]
        if not budget > 0:
            raise ValueError(f"the budget must be > 0, got {budget}")
        fitting = [p for p in self.points if cost(p) <= budget]
        if not fitting:
            cheapest = min(self.points, key=cost)
            raise ValueError(f"nothing fits a budget of {budget:g} {unit}; the smallest cost available is "
                             f"{cost(cheapest):.4g} {unit} ({describe_knobs(cheapest)})")
        return max(fitting, key=lambda p: (p.accuracy, -cost(p)))
