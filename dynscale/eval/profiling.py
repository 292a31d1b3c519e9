"""Where an operating point's time goes: named spans that methods put around their decisions,
gathers and kernels, and a profile of one point that sums them.

A span costs nothing unless :func:`profiling` is on (a timing run never pays for it); under
:func:`profiling` each span is a ``torch.profiler.record_function`` range, so PyTorch's own
operators nest inside it. Spans are named ``"<method>.<part>"`` with part one of
:data:`PARTS` (``effort.decide``, ``dfs.gate``, ``effort.kernel``…), which is what the profile
groups by.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from torch.profiler import record_function

from ..device import clock

PARTS = ("decide", "gate", "gather", "kernel", "scatter", "quantize", "other")
_active = False


def span(name: str) -> contextlib.AbstractContextManager:
    """A profiler range ``name`` while :func:`profiling` is on; otherwise nothing at all.

    Args:
        name: ``"<method>.<part>"``, the part one of :data:`PARTS` (``"effort.gather"``).
    """
    return record_function(name) if _active else contextlib.nullcontext()


@contextlib.contextmanager
def profiling() -> Iterator[None]:
    """Turns the spans on inside the block (for ``torch.profiler``)."""
    global _active
    previous, _active = _active, True
    try:
        yield
    finally:
        _active = previous


@dataclass
class Profile:
    """Where one operating point's time went, at one batch size.

    Attributes:
        label: what was profiled.
        batch: the batch size.
        ms_per_batch: wall-clock per batch while profiled (the profiler's own cost included).
        parts: share of that time per span name (``"effort.kernel"``…); ``"operators outside
            spans"`` for PyTorch operators no span holds, ``"Python between operators"`` for
            the rest (interpreter and dispatch).
        operators: the operators of most self time, with their share and calls per batch.
    """

    label: str
    batch: int
    ms_per_batch: float
    parts: dict[str, float] = field(default_factory=dict)
    operators: list[tuple[str, float, float]] = field(default_factory=list)


def _is_span(name: str) -> bool:
    method, _, part = name.partition(".")
    return bool(method) and part in PARTS


def profile_point(forward: Callable[[object], object], batches: Sequence[object], label: str = "",
                  warmup: int = 2, top: int = 8) -> Profile:
    """Profiles ``forward`` over ``batches`` with the spans on.

    Args:
        forward: runs one batch (an operating point's runner).
        batches: the inputs, all of one batch size (real test examples).
        label: what is profiled, for the report.
        warmup: passes over the first batch before profiling.
        top: operators to list.

    Returns:
        The :class:`Profile`; each span's time is inclusive (the operators inside it count
        towards it), and a span inside another span counts towards the outer one only. On a
        GPU the wall-clock waits for the queued kernels; the parts are the CPU's (launches).
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    first = batches[0]
    now = clock(first.device if isinstance(first, torch.Tensor) else torch.device("cpu"))
    with torch.no_grad():
        for _ in range(warmup):
            forward(first)
        with profiling(), profile(activities=[ProfilerActivity.CPU]) as prof:
            start = now()
            for batch in batches:
                forward(batch)
            elapsed = now() - start
    total_us = elapsed * 1e6
    events = prof.events()
    parts: dict[str, float] = {}
    operators_us = 0.0
    for event in events:
        parent, inside = event.cpu_parent, False
        while parent is not None and not inside:
            inside, parent = _is_span(parent.name), parent.cpu_parent
        if inside:
            continue
        if _is_span(event.name):
            parts[event.name] = parts.get(event.name, 0.0) + event.cpu_time_total
        elif event.cpu_parent is None:
            operators_us += event.cpu_time_total
    shares = {name: us / total_us for name, us in sorted(parts.items(), key=lambda kv: -kv[1])}
    shares["operators outside spans"] = operators_us / total_us
    shares["Python between operators"] = max(0.0, 1.0 - sum(shares.values()))
    averages = [e for e in prof.key_averages() if not _is_span(e.key)]
    self_total = sum(e.self_cpu_time_total for e in averages) or 1.0
    operators = [(e.key, e.self_cpu_time_total / self_total, e.count / len(batches))
                 for e in sorted(averages, key=lambda e: -e.self_cpu_time_total)[:top]]
    batch = len(batches[0]) if hasattr(batches[0], "__len__") else 1
    return Profile(label, batch, elapsed * 1e3 / len(batches), shares, operators)


def profiles_markdown(profiles: Sequence[Profile]) -> str:
    """The profiles as Markdown: per profile, the time per batch, the share of each part, and
    the operators of most self time."""
    lines = []
    for p in profiles:
        lines += [f"### {p.label}, batch {p.batch}: {p.ms_per_batch:.3f} ms per batch (profiled)", "",
                  "| part | share of the time |", "|---|---|"]
        lines += [f"| `{name}` | {100 * share:.1f}% |" for name, share in p.parts.items()]
        lines += ["", "| operator | share of operator self time | calls per batch |", "|---|---|---|"]
        lines += [f"| `{name}` | {100 * share:.1f}% | {calls:.1f} |" for name, share, calls in p.operators]
        lines.append("")
    return "\n".join(lines)
