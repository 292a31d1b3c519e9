"""Inputs a command reads, which no output may replace: where one path lies relative to
another, and the runs this process loaded and still uses."""

from __future__ import annotations

import gc
import os
import weakref
from collections.abc import Iterable
from pathlib import Path

from ..errors import DynscaleError


def overlap(path: str | Path, other: str | Path) -> str | None:
    """How ``path`` lies relative to ``other``, comparing real paths (symlinks and ``..``
    resolved; hard links and bind mounts of an existing path count as the same).

    Returns:
        ``"is"``, ``"lies inside"``, ``"holds"``, or None when neither holds the other.
    """
    a, b = os.path.realpath(path), os.path.realpath(other)
    if a == b or _same_file(a, b):
        return "is"
    if os.path.commonpath([a, b]) == b:
        return "lies inside"
    if os.path.commonpath([a, b]) == a:
        return "holds"
    return None


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


# --- inputs this process has open -----------------------------------------------------------

# Real path -> the live objects (models) read from it. An entry lasts as long as one of them:
# a run whose model is still in use is an input of the command using it, which atomic_directory
# and atomic_write never replace, whatever the checks before them missed.
_OPEN_INPUTS: dict[str, weakref.WeakSet] = {}


def note_input(path: str | Path, holder: object) -> None:
    """Records that ``holder`` (a loaded model) was read from ``path``: while it lives,
    :func:`atomic_directory` and :func:`atomic_write` refuse to replace ``path``, anything in
    it, or a directory holding it."""
    _OPEN_INPUTS.setdefault(os.path.realpath(path), weakref.WeakSet()).add(holder)


def _open_input_overlapping(path: Path) -> tuple[str, str] | None:
    for source, holders in list(_OPEN_INPUTS.items()):
        how = overlap(path, source) if len(holders) else None
        if how:
            return how, source
    return None


def check_not_open_input(path: str | Path) -> None:
    """The last line of defence: refuses to write ``path`` if it is, holds or lies inside a
    directory that a model still in use was loaded from.

    Raises:
        DynscaleError: naming both.
    """
    path = Path(path)
    found = _open_input_overlapping(path)
    if found is not None:
        gc.collect()  # models no longer used but kept by a reference cycle do not count
        found = _open_input_overlapping(path)
    for source in [s for s, holders in _OPEN_INPUTS.items() if not len(holders)]:
        del _OPEN_INPUTS[source]
    if found is not None:
        how, source = found
        raise DynscaleError(f"refusing to write {path}: it {how} {source}, which this command read and still "
                            "uses; an output never replaces one of the command's inputs, even with --force; "
                            "choose another output")


def check_not_input(path: str | Path, inputs: Iterable[str | Path], option: str) -> None:
    """Refuses an output that is one of a command's inputs, lies inside one, or holds one.

    Raises:
        DynscaleError: naming the option, both paths, and the fix.
    """
    for source in inputs:
        if source is None or not str(source).strip():
            continue
        how = overlap(path, source)
        if how is not None:
            what = {"is": "is the input", "lies inside": "lies inside the input", "holds": "holds the input"}[how]
            raise DynscaleError(f"{option} {path} {what} {source}; an output never replaces one of the command's "
                                f"inputs, even with --force; choose another {option}")
