"""Training a width run: build a registered model sized for the data (one network, or members
for several profiles or an independent family), train it with a width recipe, calibrate its
batch-norm per width, and write the run directory."""

from __future__ import annotations

from pathlib import Path

from ..data import Dataset, load_dataset
from ..evaluation import accuracy
from ..layers import incomplete_batchnorms, set_width
from ..models import build_multi_profile, get_model
from ..runs import save_run
from ..train import Recipe, TrainConfig, Trainer, seed_everything, sized_for
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
              calibrate: list[float] | None = None, provenance: dict | None = None) -> Path:
    """Builds a registered model sized for the data, trains it, and writes a run directory.

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

    Returns:
        The run directory.
    """
    recipe = recipe if recipe is not None else IDP()
    dataset = load_dataset(data) if isinstance(data, str) else data
    seed_everything(config.seed)
    model = build_width_model(model_name, sized_for(dataset, model_options), recipe)
    if calibrate and not incomplete_batchnorms(model):
        raise ValueError(f"model {model_name!r} has no batch-norm to calibrate; drop --calibrate")
    if calibrate is None:
        calibrate = recipe.calibration_widths(model)
    metrics = Trainer(model, dataset, config, recipe, progress).fit()
    if calibrate:
        calibrate_bn(model, calibration_loader(dataset, config), calibrate, progress=progress)
        set_width(model, 1.0)
        metrics["test_accuracy"] = accuracy(model, dataset.test_x, dataset.test_y)
    return save_run(out, model, dataset.name, training=config, recipe=recipe, metrics=metrics,
                    provenance=provenance)
