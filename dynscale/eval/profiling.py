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
from collections.abc import Iterator

from torch.profiler import record_function

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
