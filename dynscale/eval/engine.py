"""The evaluation engine: a method hands over its knob settings as :class:`Candidate`\\ s; the
engine measures each on the test split, times them all with the one protocol, and returns
:class:`~dynscale.eval.points.Curve`\\ s of :class:`~dynscale.eval.points.OperatingPoint`\\ s."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..progress import progress_bar
from .points import Curve, OperatingPoint
from .timing import Runner, TimingConfig, time_points


@dataclass
class Measurement:
    """What a candidate achieves on the test split, and what it costs (counted).

    ``executed`` is False where the counted saving is only simulated by the code that runs
    (fake-quantized bit-widths computed in float32): see :attr:`OperatingPoint.executed`.
    """

    accuracy: float
    macs: float  # mean per example
    params: int
    bitops_ratio: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    executed: bool = True


@dataclass
class Candidate:
    """One knob setting of a method, ready to be measured and timed.

    Attributes:
        method: the method's name.
        knobs: the knob settings.
        label: a short name of the setting.
        measure: ``(x, y) -> Measurement`` on the test inputs and labels.
        runner: ``runtime -> Runner | None`` that computes one batch on that runtime (called
            only when timing, once per runtime); None where the point does not run on that
            runtime, which is then not timed there.
    """

    method: str
    knobs: dict[str, Any]
    label: str
    measure: Callable[[torch.Tensor, torch.Tensor], Measurement]
    runner: Callable[[str], Runner | None]


@dataclass
class CurveSpec:
    """Which curve a list of candidates forms."""

    label: str
    run: str | None = None
    data: str | None = None
    curve: str | None = None


def evaluate(curves: Sequence[tuple[CurveSpec, Sequence[Candidate]]], reference: Candidate,
             test: tuple[torch.Tensor, torch.Tensor], timing: TimingConfig | None = None,
             progress: bool | None = None) -> list[Curve]:
    """Measures every candidate and, with ``timing``, times them against the reference.

    Args:
        curves: the curves to measure, each with its candidates. A candidate object may appear
            in several curves; it is measured and timed once.
        reference: the full network: MAC ratios and time ratios are relative to it. It is
            timed in every round, on every runtime of ``timing``, whether or not it is one of
            the candidates.
        test: the test inputs and labels, left where they are (the CPU): each candidate's
            measurement takes batches to its model's device, and the timing puts each
            runner's batches on the runner's device beforehand.
        timing: how to time; None measures accuracy and counted costs only.
        progress: show progress bars; None shows them only on a terminal.

    Returns:
        One curve per entry of ``curves``, its points in the candidates' order.
    """
    x, y = test
    unique = list({id(c): c for _, cands in curves for c in cands}.values())
    reference_macs = reference.measure(x[:1], y[:1]).macs if all(c is not reference for c in unique) else None
    measured: dict[int, Measurement] = {}
    for candidate in progress_bar(unique, progress, desc="evaluate", unit="point"):
        measured[id(candidate)] = candidate.measure(x, y)
    if reference_macs is None:
        reference_macs = measured[id(reference)].macs
    latencies: dict[int, list] = {id(c): [] for c in unique}
    if timing is not None:
        ref_runners = {rt: reference.runner(rt) for rt in timing.runtimes}
        runners = [{rt: ref_runners[rt] if c is reference else c.runner(rt) for rt in timing.runtimes}
                   for c in unique]
        for candidate, result in zip(unique, time_points(runners, ref_runners, x, timing, progress), strict=True):
            latencies[id(candidate)] = result
    out = []
    for spec, cands in curves:
        points = []
        for c in cands:
            m = measured[id(c)]
            points.append(OperatingPoint(c.method, dict(c.knobs), m.accuracy, m.macs, m.macs / reference_macs,
                                         m.params, m.bitops_ratio, list(latencies[id(c)]), c.label, dict(m.extra),
                                         m.executed))
        out.append(Curve(spec.label, points, spec.run, spec.data, spec.curve))
    return out
