"""The one skeleton of every training that writes a run: check the output, prepare the saved
state, load the data, seed, build what the method trains, fit resumably, finish, save, clean up.

A method gives :func:`train_and_save` a function that builds its :class:`Training` from the
data (its model, recipe, settings); the rest is the same for every method.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from ..data import Dataset, load_dataset
from ..errors import DynscaleError
from ..files import release_output
from ..runs import check_output, describe_run, write_run
from .config import TrainConfig, seed_everything
from .recipe import Recipe
from .state import fit_resumable, prepare_state, state_directory
from .trainer import Trainer


@dataclass
class Training:
    """What a method trains.

    Attributes:
        model: the model (its run kind is found from its type unless ``kind`` is given).
        recipe: the recipe.
        config: the shared training settings (a method may have filled in a default).
        provenance: where the run comes from (a backbone or start run), kept in its config.
        settings: more settings a resume must match (e.g. the widths to calibrate).
        finish: ``(model, dataset, metrics) -> metrics`` after fitting (e.g. calibration).
        kind: the run kind's name.
    """

    model: nn.Module
    recipe: Recipe
    config: TrainConfig
    provenance: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    finish: Callable[[nn.Module, Dataset, dict], dict] | None = None
    kind: str | None = None


def check_holdout(config: TrainConfig, data: Dataset) -> None:
    """The data is big enough for the held-out split asked for.

    Raises:
        DynscaleError: naming ``--holdout``.
    """
    if config.holdout and not 0 < config.holdout < len(data.train_y):
        raise DynscaleError(f"--holdout {config.holdout} must be below the {len(data.train_y)} training examples of "
                            f"{data.name}")


def train_and_save(out: str | Path, data: Dataset | str, config: TrainConfig, build: Callable[[Dataset], Training],
                   progress: bool | None = None, force: bool = False, resume: bool = False,
                   checkpoint_every: int = 500, inputs: Sequence[str | Path] = ()) -> Path:
    """Trains what ``build`` makes and writes the run directory whole.

    The trainer's state is saved in ``OUT.resume`` every ``checkpoint_every`` steps and when
    SIGINT or SIGTERM stops it; ``resume`` continues from there (with the same settings). The
    run directory appears only when training is finished.

    Args:
        out: the run directory to write.
        data: a dataset or its name.
        config: shared training settings; its seed is set before ``build`` runs.
        build: ``dataset -> Training``; it raises ``DynscaleError`` for inputs that do not fit.
        progress: show a progress bar; None shows it only on a terminal.
        force: replace an existing run at ``out`` (and discard an unfinished training's state).
        resume: continue the unfinished training saved in ``OUT.resume``.
        checkpoint_every: optimizer steps between saved states.
        inputs: what the training reads (a backbone run…), which ``out`` may never be.

    Returns:
        The run directory.

    Raises:
        DynscaleError: before any training, if ``out`` cannot be written or holds a run
            (without ``force``), or the data does not fit.
    """
    out = check_output(out, force, inputs=inputs)
    state_dir = prepare_state(state_directory(out), force, resume)
    dataset = load_dataset(data) if isinstance(data, str) else data
    check_holdout(config, dataset)
    seed_everything(config.seed)
    training = build(dataset)
    check_holdout(training.config, dataset)
    described = describe_run(training.model, dataset.name, training=training.config, recipe=training.recipe,
                             provenance=training.provenance, kind=training.kind)
    meta = {**described.to_json(), **training.settings}
    trainer = Trainer(training.model, dataset, training.config, training.recipe, progress)
    metrics = fit_resumable(trainer, state_dir, meta, resume, checkpoint_every)
    if training.finish is not None:
        metrics = training.finish(training.model, dataset, metrics)
    run = write_run(out, training.model, described.replace(metrics=metrics), keep_claim=True)
    shutil.rmtree(state_dir, ignore_errors=True)
    release_output(out)  # only now: the state is gone, so a next writer cannot lose its first checkpoint
    return run
