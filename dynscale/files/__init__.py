"""Writing files so that a crash never leaves half of one: atomic files and directories, and
strict JSON (a NaN is an error, never a result)."""

from __future__ import annotations

import ctypes
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Calls ``write(tmp_path)`` then renames the temporary file onto ``path``.

    A crash or error mid-write leaves any earlier ``path`` untouched. The file gets the
    permissions the umask gives a new file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swaps two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where
    the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def atomic_directory(directory: str | Path, fill: Callable[[Path], object]) -> Path:
    """Writes a whole directory: ``fill(tmp_dir)`` writes into a temporary sibling, which then
    replaces ``directory`` (and everything an earlier version held). The replacement is one
    atomic exchange where the system has it, so a crash leaves either version whole.

    Returns:
        ``directory``.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.", suffix=".tmp"))
    old = None
    try:
        fill(tmp)
        os.chmod(tmp, 0o777 & ~_umask())
        if directory.exists() and _exchange(tmp, directory):
            return directory  # tmp now holds the earlier version, removed below
        if directory.exists():
            old = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.", suffix=".old"))
            os.replace(directory, old / "previous")
        os.replace(tmp, directory)
    except BaseException:
        if old is not None and not directory.exists():
            os.replace(old / "previous", directory)  # put the earlier version back
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return directory


def dumps_json(doc: object) -> str:
    """Strict, indented JSON text (keys in order given).

    Raises:
        ValueError: naming where a NaN or infinity is, instead of writing a bare ``NaN``.
    """
    try:
        return json.dumps(doc, indent=2, allow_nan=False) + "\n"
    except ValueError:
        raise ValueError(f"refusing to write a non-finite number to JSON (at {_non_finite_path(doc)}); "
                         "a NaN is an error, never a result") from None


def write_json(path: str | Path, doc: object) -> Path:
    """Writes strict JSON atomically."""
    text = dumps_json(doc)
    atomic_write(Path(path), lambda p: p.write_text(text))
    return Path(path)


def _non_finite_path(doc: object, path: str = "") -> str:
    if isinstance(doc, float) and not math.isfinite(doc):
        return path or "the top level"
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, (list, tuple)) else []
    for key, value in items:
        found = _non_finite_path(value, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return ""
