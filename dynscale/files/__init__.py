"""Writing files so that a crash, a slip of ``--out`` or a second writer never loses one: atomic
files and directories, outputs claimed while a command writes them (:mod:`.claims`), inputs that
are never replaced (:mod:`.inputs`), and strict JSON (a NaN is an error, never a result)."""

from __future__ import annotations

import ctypes
import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..errors import DynscaleError
from .claims import claim_output, claimed, lock_path, release_output, release_outputs
from .inputs import check_not_input, check_not_open_input, note_input, overlap

__all__ = ["atomic_directory", "atomic_write", "check_not_input", "check_not_open_input", "claim_output",
           "dumps_json", "lock_path", "note_input", "overlap", "release_output", "release_outputs", "write_json"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], object], replace: bool | None = None) -> None:
    """Calls ``write(tmp_path)`` then renames the temporary file onto ``path``.

    A crash or error mid-write leaves any earlier ``path`` untouched. The file gets the
    permissions the umask gives a new file.

    Args:
        path: the file to write.
        write: writes the contents into the path it is given.
        replace: whether an existing file may be replaced; None: as the output's claim
            (:func:`claim_output`) says, else yes.

    Raises:
        DynscaleError: if ``path`` lies in an input this process still uses, or, without
            ``replace``, a file appeared there meanwhile.
    """
    path = Path(path)
    check_not_open_input(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace = _replace_allowed(path, replace)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600
        if replace:
            os.replace(tmp, path)
        else:
            try:
                _rename_noreplace(Path(tmp), path)
            except OSError as e:
                if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    raise _appeared(path, e) from None
                raise
    finally:
        Path(tmp).unlink(missing_ok=True)
        release_output(path)


def _renameat2(a: Path, b: Path, flags: int) -> int | None:
    """Linux ``renameat2``: 0, or the errno it failed with; None where the system has no such
    call (or the file system does not support ``flags``)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return None
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), flags) == 0:
        return 0
    error = ctypes.get_errno()
    return None if error in (errno.ENOSYS, errno.EINVAL) else error


def _exchange(a: Path, b: Path) -> bool:
    """Swaps two paths in one atomic step (``renameat2(RENAME_EXCHANGE)``); False where the
    system cannot."""
    return _renameat2(a, b, _RENAME_EXCHANGE) == 0


_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2


def _rename_noreplace(source: Path, target: Path) -> None:
    """Renames ``source`` to ``target`` in one atomic step that fails if ``target`` exists
    (an empty directory excepted, which a directory may take the place of).

    Raises:
        OSError: with ``errno.EEXIST`` or ``errno.ENOTEMPTY`` if ``target`` exists (or appeared
            meanwhile).
    """
    if source.is_dir() and not target.is_symlink() and target.is_dir():
        os.rename(source, target)  # atomic, and refused (ENOTEMPTY) unless target is still empty
        return
    result = _renameat2(source, target, _RENAME_NOREPLACE)
    if result == 0:
        return
    if result is not None:
        raise OSError(result, os.strerror(result), str(target))
    if source.is_dir():  # no renameat2: claim the name with an empty directory, then take its place
        os.mkdir(target)
        os.rename(source, target)
    else:
        os.link(source, target)  # fails if target exists
        os.unlink(source)


def _appeared(directory: Path, error: OSError) -> DynscaleError:
    claim = claimed(directory)
    option = claim.option if claim and claim.option else "--out"
    return DynscaleError(f"{directory} was written by another command while this one ran ({error.strerror}); it "
                         f"is kept as it is and this command's result was discarded; choose another {option}, or "
                         "pass --force to replace it")


def _replace_allowed(path: Path, replace: bool | None) -> bool:
    if replace is not None:
        return replace
    claim = claimed(path)
    return claim.replace if claim is not None else True


def atomic_directory(directory: str | Path, fill: Callable[[Path], object], replace: bool | None = None,
                     replaces_input: bool = False, keep_claim: bool = False) -> Path:
    """Writes a whole directory: ``fill(tmp_dir)`` writes into a temporary sibling, which then
    takes the place of ``directory``. An earlier version (and everything it held) is replaced
    in one atomic exchange where the system has it, so a crash leaves either version whole.

    Args:
        directory: the directory to write.
        fill: writes the directory's contents into the path it is given.
        replace: whether an existing ``directory`` may be replaced; None: as the output's claim
            (:func:`claim_output`) says, else yes. Without it the final rename fails if
            anything appeared at ``directory`` meanwhile.
        replaces_input: the caller replaces a directory it read on purpose (calibrate updates
            its own run); otherwise a directory a live loaded model came from is refused.
        keep_claim: keep the output's claim after writing (the caller releases it, once what
            belongs to the write, such as a training's saved state, is cleaned up).

    Returns:
        ``directory``.

    Raises:
        DynscaleError: if ``directory`` is (or holds, or lies in) an input this process opened,
            or, without ``replace``, something appeared there meanwhile.
    """
    directory = Path(directory)
    if not replaces_input:
        check_not_open_input(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    replace = _replace_allowed(directory, replace)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.", suffix=".tmp"))
    old = None
    try:
        fill(tmp)
        os.chmod(tmp, 0o777 & ~_umask())
        if not replace:
            try:
                _rename_noreplace(tmp, directory)
            except OSError as e:
                if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    raise _appeared(directory, e) from None
                raise
            return directory
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
        if not keep_claim:
            release_output(directory)
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
