"""Typed run directories: ``config.json`` (a :class:`RunConfig`) and ``model.safetensors``,
written whole or not at all, loaded for every kind of run by :func:`load_run`."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from torch import nn

from ..errors import DynscaleError
from ..files import (
    atomic_directory,
    atomic_write,
    check_not_input,
    claim_output,
    dumps_json,
    release_output,
    release_outputs,
)
from ..layers import calibrated_widths
from ..parallel import on_main
from .config import CONFIG, FORMAT, SCHEMA_VERSION, ModelSpec, RunConfig, register_v1_migration
from .kinds import WIDTH, RunKind, create_model, get_kind, kind_of, list_kinds, register_kind, unregister_kind
from .open import Run, check_config, check_data, load_run, open_run, open_runs, register_config_check
from .store import WEIGHTS, write_weights

__all__ = ["CONFIG", "FORMAT", "SCHEMA_VERSION", "WEIGHTS", "WIDTH", "ModelSpec", "Run", "RunConfig", "RunKind",
           "atomic_directory", "atomic_write", "check_config", "check_data", "check_directory", "check_file_output",
           "check_output", "claim_output", "create_model", "describe_run", "enclosing_run", "get_kind",
           "is_run_directory", "kind_of", "list_kinds", "load_run", "open_run", "open_runs", "register_config_check",
           "register_kind", "register_v1_migration", "release_outputs", "save_run", "unregister_kind", "write_run"]


def describe_run(model: nn.Module, data: str, training: object = None, recipe: object = None,
                 metrics: dict | None = None, provenance: dict | None = None, kind: str | None = None) -> RunConfig:
    """The :class:`RunConfig` of a model, through its run kind.

    Args:
        model: the model (its kind is found from its type unless ``kind`` is given).
        data: the dataset it was trained on.
        training: the shared training settings (a ``TrainConfig`` or its dict).
        recipe: the recipe (an object with ``to_dict()``) or its dict.
        metrics: final metrics.
        provenance: where it came from.
        kind: the run kind's name.
    """
    run_kind = get_kind(kind) if kind else kind_of(model)
    spec, section = run_kind.describe(model)
    return RunConfig(kind=run_kind.name, model=spec, data=data, training=_as_dict(training),
                     recipe=_as_dict(recipe), metrics=dict(metrics or {}), section=section,
                     provenance=dict(provenance or {}))


def _as_dict(value: object) -> dict:
    if value is None:
        return {}
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return dict(value)


def write_run(directory: str | Path, model: nn.Module, config: RunConfig, in_place: bool = False,
              keep_claim: bool = False) -> Path:
    """Writes a run directory whole: weights and config go into a temporary sibling that then
    replaces ``directory`` in one rename, so a crash never leaves weights from one training with
    the config of another.

    Args:
        directory: the run directory.
        model: the model.
        config: its config.
        in_place: ``directory`` is the run the model was loaded from, updated on purpose (as
            calibrate does); otherwise writing over a run whose model is in use is refused.
        keep_claim: keep the claim on ``directory`` (see :func:`files.atomic_directory`).

    Returns:
        The directory.
    """
    config = config.replace(calibrated_widths=calibrated_widths(model))
    text = dumps_json(config.to_json())  # refused before anything is written if it holds a NaN

    def fill(tmp: Path) -> None:
        write_weights(tmp / WEIGHTS, model, metadata={"format": FORMAT})
        (tmp / CONFIG).write_text(text)

    return atomic_directory(Path(directory), fill, replaces_input=in_place, keep_claim=keep_claim)


def save_run(directory: str | Path, model: nn.Module, data: str, **fields) -> Path:
    """Describes a model (:func:`describe_run`, taking the same keyword fields) and writes it.

    Example: ``save_run("runs/mine", model, "digits")``.
    """
    return write_run(directory, model, describe_run(model, data, **fields))


def is_run_directory(path: str | Path) -> bool:
    """Whether ``path`` is a directory holding a dynscale run (or a dense export)."""
    config = Path(path) / CONFIG
    if not config.is_file():
        return False
    try:
        doc = json.loads(config.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(doc, dict) and doc.get("format") in (FORMAT, "dynscale-dense")


def enclosing_run(path: str | Path) -> Path | None:
    """The run directory ``path`` lies inside (not ``path`` itself), if any."""
    for parent in Path(path).absolute().parents:
        if is_run_directory(parent):
            return parent
    return None


def _check_parent(path: Path, option: str) -> None:
    existing = next((p for p in path.absolute().parents if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise DynscaleError(f"{option} {path}: {existing} is not a directory; choose another {option}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DynscaleError(f"{option} {path}: cannot write to {existing}; choose another {option}")
    inside = enclosing_run(path)
    if inside is not None:
        raise DynscaleError(f"{option} {path} is inside the run {inside}; a run directory holds only its run, "
                            f"choose a path outside it")


def _directory_given(path: str | Path, option: str) -> Path:
    """``path`` as a directory to write: not empty, not an existing file."""
    if not str(path).strip():
        raise DynscaleError(f"{option} is empty; give the directory to write")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DynscaleError(f"{option} {path} is a file, not a directory; choose another {option}")
    return path


def check_output(path: str | Path, force: bool = False, option: str = "--out",
                 inputs: Iterable[str | Path] = (), what: tuple[str, Callable[[Path], bool]] | None = None) -> Path:
    """Checks, before any work, that a run (or another output directory) may be written at
    ``path``, and claims it for this process until it is written.

    Refused: an empty path, a file, a path inside a run, an unwritable parent, one of
    ``inputs`` (or a path inside one, or holding one; even with ``force``), a path another
    process is writing, and a non-empty directory that is not a run. An existing run is
    replaced only with ``force``; without it, the final rename also fails if a run appears
    there while the command works.

    Args:
        path: the output directory.
        force: replace an existing run.
        option: the option naming it, for the messages.
        inputs: the runs, files and directories the command reads.
        what: for an output that is not a run (a deploy bundle): its noun and the test that
            a directory is one (the only non-empty directory ``force`` replaces).

    Returns:
        ``path``.

    Raises:
        DynscaleError: naming the option and what to do.
    """
    # Under torchrun rank 0 alone checks and claims the output, for every process.
    checked = on_main(lambda: _check_output(path, force, option, inputs, what))
    return checked if checked is not None else _directory_given(path, option)


def _check_output(path: str | Path, force: bool, option: str, inputs: Iterable[str | Path],
                  what: tuple[str, Callable[[Path], bool]] | None) -> Path:
    noun, is_ours = what if what is not None else ("a run", is_run_directory)
    path = _directory_given(path, option)
    check_not_input(path, inputs, option)
    _check_parent(path, option)
    claim_output(path, replace=force, option=option)  # before looking, so what is seen stays so
    try:
        if path.is_dir() and any(path.iterdir()):
            if not is_ours(path):
                raise DynscaleError(f"{option} {path} is a non-empty directory that is not "
                                    f"{noun.replace('a ', 'a dynscale ', 1)}; choose another {option}")
            if not force:
                raise DynscaleError(f"{option} {path} already holds {noun}; pass --force to replace it (nothing of "
                                    f"it is kept), or choose another {option}")
    except BaseException:
        release_output(path)
        raise
    return path


def check_directory(path: str | Path, option: str = "--out", inputs: Iterable[str | Path] = ()) -> Path:
    """Checks a directory that will hold several outputs (runs, reports): not empty, not a
    file, not a run or inside one, not one of ``inputs`` (nor inside or holding one), its
    parent writable. The outputs in it are claimed one by one as they are checked.

    Raises:
        DynscaleError: naming the option and what to do.
    """
    path = _directory_given(path, option)
    if is_run_directory(path):
        raise DynscaleError(f"{option} {path} is a run directory; choose another {option}")
    check_not_input(path, inputs, option)
    _check_parent(path, option)
    return path


def check_file_output(path: str | Path, option: str, force: bool | None = None,
                      inputs: Iterable[str | Path] = ()) -> Path:
    """Checks a file output (a report, an ONNX export) before any work, and claims it for this
    process until it is written: not a directory, not in a run directory, not one of
    ``inputs`` (nor inside one), not being written by another process, its parent writable;
    with ``force`` given, an existing file is replaced only when it is True (and without it,
    one that appears meanwhile is not replaced either).

    Raises:
        DynscaleError: naming the option and what to do.
    """
    if not str(path).strip():
        raise DynscaleError(f"{option} is empty; give the file to write")
    path = Path(path)
    if path.is_dir():
        raise DynscaleError(f"{option} {path} is a directory; give a file name")
    check_not_input(path, inputs, option)
    _check_parent(path, option)
    claim_output(path, replace=force is not False, option=option)
    if force is False and path.exists():
        release_output(path)
        raise DynscaleError(f"{option} {path} exists; pass --force to replace it, or choose another {option}")
    return path
