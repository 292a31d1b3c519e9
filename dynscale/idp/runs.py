"""Training a width run: build a registered model sized for the data (one network, or members
for several profiles or an independent family), train it with a width recipe, calibrate its
batch-norm per width, and write the run directory."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..data import Dataset, load_dataset
from ..evaluation import accuracy
from ..layers import incomplete_batchnorms, set_width
from ..models import build_multi_profile, get_model
from ..runs import ModelSpec, check_output, save_run
from ..train import (
    Recipe,
    TrainConfig,
    Trainer,
    fit_resumable,
    prepare_state,
    seed_everything,
    sized_for,
    state_directory,
)
from .calibration import calibrate_bn, calibration_loader
from .recipes import IDP


def build_width_model(model_name: str, options: dict, recipe: Recipe):
    """The model a width recipe trains: one network, or the members it asks for."""
    members = recipe.members()
    if members is None:
        return get_model(model_name, **options)
    ranges, shared = members
    return build_multi_profile(model_name, ranges, shared=shared, **options)


def train_run(out: str | Path, model_name: str, data: Dataset | str, config: TrainConfig,
              recipe: Recipe | None = None, model_options: dict | None = None, progress: bool | None = None,
              calibrate: list[float] | None = None, provenance: dict | None = None, force: bool = False,
              resume: bool = False, checkpoint_every: int = 500) -> Path:
    """Builds a registered model sized for the data, trains it, and writes a run directory.

    The trainer's state is saved in ``OUT.resume`` every ``checkpoint_every`` steps and when
    SIGINT or SIGTERM stops it; ``resume`` continues from there. The run directory appears
    only when training is finished, whole.

    Args:
        out: the run directory to write.
        model_name: a registered model name.
        data: a dataset or its name.
        config: shared training settings (its seed also seeds the model's initialisation).
        recipe: the width recipe (``IDP()`` by default; ``MultiProfile``, ``Sandwich``,
            ``Independent``).
        model_options: model config fields (e.g. ``profile``, ``width_mult``); the input
            channels, input size and class count come from the data.
        progress: show a progress bar; None shows it only on a terminal.
        calibrate: widths whose batch-norm statistics to measure after training (the
            recipe's own choice when None).
        provenance: where the run comes from, kept in its config.
        force: replace an existing run at ``out`` (and discard an unfinished training's state).
        resume: continue the unfinished training saved in ``OUT.resume``.
        checkpoint_every: optimizer steps between saved states.

    Returns:
        The run directory.

    Raises:
        DynscaleError: before any training, if ``out`` cannot be written or holds a run (without
            ``force``), or the data and options do not fit the model.
    """
    recipe = recipe if recipe is not None else IDP()
    out = check_output(out, force)
    state_dir = prepare_state(state_directory(out), force, resume)
    dataset = load_dataset(data) if isinstance(data, str) else data
    seed_everything(config.seed)
    model = build_width_model(model_name, sized_for(dataset, model_options), recipe)
    if calibrate and not incomplete_batchnorms(model):
        raise ValueError(f"model {model_name!r} has no batch-norm to calibrate; drop --calibrate")
    if calibrate is None:
        calibrate = recipe.calibration_widths(model)
    meta = {"kind": "width", "model": ModelSpec.of(model).to_json(), "data": dataset.name,
            "training": config.to_dict(), "recipe": recipe.to_dict(), "calibrate": calibrate}
    trainer = Trainer(model, dataset, config, recipe, progress)
    metrics = fit_resumable(trainer, state_dir, meta, resume, checkpoint_every)
    if calibrate:
        calibrate_bn(model, calibration_loader(dataset, config), calibrate, progress=progress)
        set_width(model, 1.0)
        metrics["test_accuracy"] = accuracy(model, dataset.test_x, dataset.test_y)
    run = save_run(out, model, dataset.name, training=config, recipe=recipe, metrics=metrics, provenance=provenance)
    shutil.rmtree(state_dir, ignore_errors=True)
    return run
