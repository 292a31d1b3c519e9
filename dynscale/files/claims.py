"""Outputs a command is writing, claimed with a lock so that two writers to one output cannot
both win: ``.NAME.lock`` beside the output, locked with ``flock`` (which the system releases when
a process dies, so a stale lock file never blocks) and removed once the output is in place."""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DynscaleError

try:
    import fcntl
except ImportError:  # Windows: outputs are not locked there, the no-replace rename still holds
    fcntl = None


@dataclass
class _Claim:
    lock: Path
    fd: int | None
    replace: bool
    option: str | None
    made: list[Path] = field(default_factory=list)  # parent directories the claim created


_CLAIMS: dict[str, _Claim] = {}


def _key(path: str | Path) -> str:
    path = Path(os.path.abspath(path))
    return os.path.join(os.path.realpath(path.parent), path.name)


def lock_path(path: str | Path) -> Path:
    """The lock file of an output: ``.NAME.lock`` beside it."""
    path = Path(os.path.abspath(path))
    return path.parent / f".{path.name}.lock"


def claim_output(path: str | Path, replace: bool = True, option: str | None = "--out") -> None:
    """Claims an output for this process before any work: an exclusive, non-blocking lock on
    ``.NAME.lock`` beside it (the file holds this process's id), held until
    :func:`atomic_directory` or :func:`atomic_write` has put the output in place, or
    :func:`release_output`, or the process ends. Claiming again in this process is allowed.

    Args:
        path: the output (a directory or a file).
        replace: whether the final rename may replace something at ``path``; without it, the
            rename fails if something appeared there meanwhile.
        option: the command-line option naming the output, for the messages.

    Raises:
        DynscaleError: if another process holds the claim ("another dynscale command is
            writing ..."), or the lock file cannot be created.
    """
    key = _key(path)
    held = _CLAIMS.get(key)
    if held is not None:
        held.replace, held.option = replace, option
        return
    path = Path(os.path.abspath(path))
    made = [p for p in reversed(path.parents) if not p.exists()]
    lock = lock_path(path)
    fix = f"wait for it or choose another {option}" if option else "wait for it, then try again"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = None if fcntl is None else _lock(lock)
    except _Busy as e:
        _remove_empty(made)
        pid = f" (pid {e.pid})" if e.pid else ""
        raise DynscaleError(f"another dynscale command is writing {path}{pid}; {fix}") from None
    except OSError as e:
        _remove_empty(made)
        raise DynscaleError(f"{option or 'output'} {path}: cannot create its lock file {lock} ({e.strerror}); "
                            f"choose another {option or 'output'}") from None
    _CLAIMS[key] = _Claim(lock, fd, replace, option, made)


class _Busy(Exception):
    def __init__(self, pid: str) -> None:
        super().__init__(pid)
        self.pid = pid


def _lock(lock: Path) -> int:
    """An open descriptor of ``lock`` holding its exclusive lock, with this process's id in it.

    Raises:
        _Busy: held by another process (its ``pid`` the holder's process id, if written yet).
    """
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise _Busy(holder if holder.isdigit() else "") from None
        except BaseException:
            os.close(fd)
            raise
        try:  # a holder that finished removed the file between our open and lock: lock the new one
            current = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            current = False
        if current:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)


def _remove_empty(directories: list[Path]) -> None:
    for directory in reversed(directories):
        try:
            directory.rmdir()
        except OSError:
            return


def release_output(path: str | Path) -> None:
    """Ends this process's claim on an output: its lock file is removed (and the parent
    directories the claim created, where they stayed empty)."""
    claim = _CLAIMS.pop(_key(path), None)
    if claim is None:
        return
    if claim.fd is not None:
        claim.lock.unlink(missing_ok=True)  # while still locked, so no one locks a removed file
        os.close(claim.fd)
    _remove_empty(claim.made)


def release_outputs() -> None:
    """Ends every claim of this process (a command ended without writing its outputs)."""
    for key in list(_CLAIMS):
        release_output(key)


atexit.register(release_outputs)


def claimed(path: str | Path) -> _Claim | None:
    """This process's claim on ``path``, if any."""
    return _CLAIMS.get(_key(path))
