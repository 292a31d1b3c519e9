"""A trainer's state on disk, for resume: tensors in ``state.safetensors``, everything else in
``state.json``; nothing is pickled. The directory is written whole or not at all."""

from __future__ import annotations

import collections
import contextlib
import json
import math
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError, DynscaleError
from ..files import atomic_directory, dumps_json

STATE_FORMAT = "dynscale-trainer-state"
STATE_VERSION = 1
TENSORS, META = "state.safetensors", "state.json"


def encode(value: object, tensors: dict[str, torch.Tensor], path: str = "s") -> object:
    """A JSON-able tree of ``value``: tensors go into ``tensors`` (by path) and leave a
    reference; dict keys keep their types (an optimizer's state is keyed by integers)."""
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().contiguous().clone()
        return {"__tensor__": path}
    if isinstance(value, collections.Counter):
        return {"__counter__": [[k, v] for k, v in value.items()]}
    if isinstance(value, dict):
        return {"__dict__": [[k, encode(v, tensors, f"{path}.{i}")] for i, (k, v) in enumerate(value.items())]}
    if isinstance(value, (list, tuple)):
        items = [encode(v, tensors, f"{path}.{i}") for i, v in enumerate(value)]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(value)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a trainer state (at {path})")


def decode(value: object, tensors: dict[str, torch.Tensor]) -> object:
    """The inverse of :func:`encode`."""
    if isinstance(value, list):
        return [decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__counter__" in value:
        return collections.Counter({k: v for k, v in value["__counter__"]})
    if "__dict__" in value:
        return {k: decode(v, tensors) for k, v in value["__dict__"]}
    if "__tuple__" in value:
        return tuple(decode(v, tensors) for v in value["__tuple__"])
    if "__float__" in value:
        return float(value["__float__"])
    raise ValueError(f"unknown entry {sorted(value)} in a trainer state")


def save_state(directory: str | Path, state: dict, meta: dict) -> Path:
    """Writes a trainer's :meth:`~dynscale.train.Trainer.state_dict` and what it trains
    (``meta``, to check a resume against) into ``directory``, atomically."""
    tensors: dict[str, torch.Tensor] = {}
    doc = {"format": STATE_FORMAT, "version": STATE_VERSION, "meta": meta, "state": encode(state, tensors)}
    text = dumps_json(doc)

    def fill(tmp: Path) -> None:
        save_file(tensors, str(tmp / TENSORS))
        (tmp / META).write_text(text)

    return atomic_directory(Path(directory), fill)


def load_state(directory: str | Path) -> tuple[dict, dict]:
    """Reads :func:`save_state`'s directory.

    Returns:
        The trainer state and its meta.

    Raises:
        CheckpointError: if the directory is missing or damaged.
    """
    directory = Path(directory)
    try:
        doc = json.loads((directory / META).read_text())
        tensors = load_file(str(directory / TENSORS))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read the training state in {directory} ({e}); start again without "
                              "--resume (with --force)") from None
    except Exception as e:  # safetensors raises its own errors for a damaged file
        raise CheckpointError(f"the training state in {directory} is damaged ({e}); start again without "
                              "--resume (with --force)") from None
    if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT or doc.get("version") != STATE_VERSION:
        raise CheckpointError(f"{directory / META} is not a dynscale training state of version {STATE_VERSION}")
    return decode(doc["state"], tensors), doc["meta"]


def state_directory(run_dir: str | Path) -> Path:
    """Where an unfinished training of ``run_dir`` keeps its state: ``RUN.resume`` beside it."""
    run_dir = Path(run_dir)
    return run_dir.parent / f"{run_dir.name}.resume"


def _differences(saved: object, wanted: object, path: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(wanted, dict):
        return [d for key in sorted(set(saved) | set(wanted), key=str)
                for d in _differences(saved.get(key), wanted.get(key), f"{path}.{key}" if path else str(key))]
    return [] if saved == wanted else [f"{path or 'settings'}: {saved!r} then, {wanted!r} now"]


@contextlib.contextmanager
def stop_on_signals(trainer) -> Iterator[None]:
    """While training, SIGINT and SIGTERM ask the trainer to save its state and stop after the
    current step; a second SIGINT stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return

    def handler(signum: int, frame) -> None:
        if trainer.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        trainer.request_stop()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def fit_resumable(trainer, state_dir: str | Path, meta: dict, resume: bool = False,
                  checkpoint_every: int = 500) -> dict:
    """Trains with checkpoints: the trainer's state is saved atomically in ``state_dir`` every
    ``checkpoint_every`` steps and when SIGINT or SIGTERM stops it; with ``resume`` it first
    continues from the state saved there.

    Args:
        trainer: the trainer.
        state_dir: where the state lives (``state_directory(run_dir)``).
        meta: what is trained (model, data, settings); a resume must match it.
        resume: continue from the saved state.
        checkpoint_every: steps between checkpoints.

    Returns:
        The trainer's final metrics. The state directory is left for the caller to remove once
        the finished run is written.

    Raises:
        DynscaleError: if ``resume`` finds no state, or one saved with other settings.
        TrainingInterrupted: after saving, when a signal stopped training.
    """
    state_dir = Path(state_dir)
    meta = json.loads(dumps_json(meta))  # as it reads back
    if resume:
        if not state_dir.exists():
            raise DynscaleError(f"there is no training state to resume at {state_dir}; drop --resume")
        state, saved = load_state(state_dir)
        changed = _differences(saved, meta)
        if changed:
            raise DynscaleError(f"the training state in {state_dir} was saved with other settings "
                                f"({'; '.join(changed[:3])}); rerun the same command with --resume, or start "
                                "again with --force")
        trainer.load_state_dict(state)
    trainer.checkpoint_every = checkpoint_every
    trainer.on_checkpoint = lambda t: save_state(state_dir, t.state_dict(), meta)
    trainer.state_location = str(state_dir)
    with stop_on_signals(trainer):
        return trainer.fit()


def is_state_directory(path: str | Path) -> bool:
    """Whether ``path`` is a training state :func:`save_state` wrote: a real directory holding
    only ``state.json`` (with the dynscale marker) and ``state.safetensors``."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return False
    try:
        names = {p.name for p in path.iterdir()}
        doc = json.loads((path / META).read_text()) if META in names else None
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return names <= {META, TENSORS} and isinstance(doc, dict) and doc.get("format") == STATE_FORMAT


def _not_a_state(state_dir: Path) -> DynscaleError:
    return DynscaleError(f"{state_dir} is not a training state written by dynscale, but dynscale keeps an unfinished "
                         "training's state at that path; move it away (nothing of it is deleted), or choose another "
                         "--out")


def prepare_state(state_dir: str | Path, force: bool = False, resume: bool = False) -> Path:
    """Checks, before any work, what an unfinished earlier training left in ``state_dir``.

    Without ``resume``, an existing state is refused (it would be lost) unless ``force``,
    which removes it; ``resume`` needs one. Anything at ``state_dir`` that is not a training
    state dynscale wrote is refused, and never removed, even with ``force``.

    Raises:
        DynscaleError: naming the choice the user has.
    """
    state_dir = Path(state_dir)
    if resume:
        if not (state_dir / META).is_file():
            raise DynscaleError(f"there is no training state to resume at {state_dir}; drop --resume")
        if not is_state_directory(state_dir):
            raise _not_a_state(state_dir)
        return state_dir
    if state_dir.exists() or state_dir.is_symlink():
        if not is_state_directory(state_dir):
            raise _not_a_state(state_dir)
        if not force:
            raise DynscaleError(f"an unfinished training left its state in {state_dir}; continue it with --resume, "
                                "or start again with --force (which discards it)")
        shutil.rmtree(state_dir)
    return state_dir

