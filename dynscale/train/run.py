"""The one skeleton of every training that writes a run: check the output, prepare the saved
state, load the data, seed, build what the method trains, fit resumably, finish, save, clean up.

A method gives :func:`train_and_save` a function that builds its :class:`Training` from the
data (its model, recipe, settings); the rest is the same for every method.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..data import Dataset, load_dataset
from ..device import Execution, amp_dtype, place, resolve_device
from ..errors import DynscaleError
from ..files import release_output
from ..parallel import World, main_first, on_main, setup
from ..runs import check_output, describe_run, write_run
from .config import TrainConfig, seed_everything
from .distributed import ExecutionRecord
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
                   checkpoint_every: int = 500, inputs: Sequence[str | Path] = (),
                   execution: Execution | None = None) -> Path:
    """Trains what ``build`` makes and writes the run directory whole.

    The trainer's state is saved in ``OUT.resume`` every ``checkpoint_every`` steps and when
    SIGINT or SIGTERM stops it; ``resume`` continues from there (with the same settings, on any
    device or process count). The run directory appears only when training is finished.

    Under ``torchrun`` every process runs this: rank 0 alone checks and claims ``out``,
    saves states and writes the run; ``config.batch_size`` is the global batch, shared out
    among the processes.

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
        execution: device, mixed precision and memory format (default: ``Execution()``, the
            GPU if there is one).

    Returns:
        The run directory.

    Raises:
        DynscaleError: before any training, if ``out`` cannot be written or holds a run
            (without ``force``), or the data does not fit.
    """
    execution = execution or Execution()
    device = resolve_device(execution.device)
    world = setup()
    out = check_output(out, force, inputs=inputs)  # under torchrun: rank 0 checks and claims, for all
    state_dir = state_directory(out)
    on_main(lambda: prepare_state(state_dir, force, resume))
    dataset = main_first(lambda: load_dataset(data)) if isinstance(data, str) else data  # rank 0 may download
    check_holdout(config, dataset)
    seed_everything(config.seed)
    training = build(dataset)
    check_holdout(training.config, dataset)
    training.recipe.check(training.model)
    training.recipe.prepare(training.model)
    described = describe_run(training.model, dataset.name, training=training.config, recipe=training.recipe,
                             provenance=training.provenance, kind=training.kind)
    meta = {**described.to_json(), **training.settings}
    trainer = Trainer(training.model, dataset, training.config, training.recipe, progress, execution=execution)
    metrics = fit_resumable(trainer, state_dir, meta, resume, checkpoint_every)
    if training.finish is not None:
        metrics = training.finish(training.model, dataset, metrics)
    place(training.model, torch.device("cpu"))  # a run's weights are CPU tensors in the standard layout
    record = execution_record(trainer, device, execution, world)
    described = described.replace(metrics=metrics, training={**described.training, "execution": record})

    def write() -> Path:
        run = write_run(out, training.model, described, keep_claim=True)
        shutil.rmtree(state_dir, ignore_errors=True)
        release_output(out)  # only now: the state is gone, so a next writer cannot lose its first checkpoint
        return run

    return on_main(write) or out


def execution_record(trainer: Trainer, device: torch.device, execution: Execution, world: World) -> dict:
    """How the run was trained (``training.execution`` in its config): device, mixed
    precision, memory format, process count, and the global and per-process batch."""
    batch = trainer.config.batch_size
    return asdict(ExecutionRecord(
        device=str(device), amp=str(amp_dtype(device)).removeprefix("torch.") if execution.amp else None,
        channels_last=execution.channels_last, world_size=world.size, backend=world.backend,
        global_batch=batch, process_batch=-(-batch // world.size)))
