"""Training a width run: build a registered model sized for the data (one network, or members
for several profiles or an independent family) or start from a trained width run, train it
with a width recipe, calibrate its batch-norm per width, and write the run directory."""

from __future__ import annotations

from pathlib import Path

from ..data import Dataset
from ..device import Execution
from ..errors import DynscaleError
from ..eval import accuracy
from ..layers import incomplete_batchnorms, set_width
from ..models import build_multi_profile, get_model
from ..runs import WIDTH, open_run, register_v1_migration
from ..train import Recipe, TrainConfig, Training, sized_for, train_and_save
from .calibration import calibrate_bn, calibration_loader
from .recipes import IDP


def build_width_model(model_name: str, options: dict, recipe: Recipe):
    """The model a width recipe trains: one network, or the members it asks for."""
    members = recipe.members()
    if members is None:
        return get_model(model_name, **options)
    ranges, shared = members
    return build_multi_profile(model_name, ranges, shared=shared, **options)


def train_run(out: str | Path, model_name: str | None, data: Dataset | str, config: TrainConfig,
              recipe: Recipe | None = None, model_options: dict | None = None, progress: bool | None = None,
              calibrate: list[float] | None = None, provenance: dict | None = None, force: bool = False,
              resume: bool = False, checkpoint_every: int = 500, start: str | Path | None = None,
              execution: Execution | None = None) -> Path:
    """Builds a registered model sized for the data (or takes a trained width run's model and
    weights, ``start``), trains it, and writes a run directory (resumably:
    :func:`dynscale.train.train_and_save`).

    Args:
        out: the run directory to write.
        model_name: a registered model name (None with ``start``).
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
        start: a width run (a converted model, a trained network) to fine-tune: its model and
            weights are the starting point.
        execution: device, mixed precision and memory format (``dynscale.device.Execution``).

    Returns:
        The run directory.

    Raises:
        DynscaleError: before any training, if ``out`` cannot be written or holds a run (without
            ``force``), or the data and options do not fit the model.
    """
    recipe = recipe if recipe is not None else IDP()

    def build(dataset: Dataset) -> Training:
        origin = dict(provenance or {})
        if start is not None:
            if recipe.members() is not None:
                raise DynscaleError(f"the {recipe.name} recipe trains several networks; a start run (--from) gives "
                                    "one, so train it with --recipe idp or us")
            if model_options:
                raise DynscaleError(f"with --from the model and its options are {start}'s; leave out --model, "
                                    "--profile, --width-mult and --set")
            model = open_run(start, (WIDTH,), dataset, what="--from").model
            if getattr(model, "ranges", None):
                raise DynscaleError(f"{start} holds several networks; --from takes a run of one network")
            origin["start_run"] = str(start)
        else:
            model = build_width_model(model_name, sized_for(dataset, model_options), recipe)
        widths = calibrate
        if widths and not incomplete_batchnorms(model):
            raise ValueError(f"model {model_name or start!s} has no batch-norm to calibrate; drop --calibrate")
        if widths is None:
            widths = recipe.calibration_widths(model)

        def finish(model, dataset: Dataset, metrics: dict) -> dict:
            if widths:
                calibrate_bn(model, calibration_loader(dataset, config), widths, progress=progress)
                set_width(model, 1.0)
                metrics["test_accuracy"] = accuracy(model, dataset.test_x, dataset.test_y)
            return metrics

        return Training(model, recipe, config, origin, {"calibrate": widths}, finish)

    return train_and_save(out, data, config, build, progress, force, resume, checkpoint_every,
                          inputs=[start] if start is not None else [], execution=execution)


@register_v1_migration
def _migrate_v1(doc: dict, training: dict) -> tuple[dict, dict] | None:
    """A version-1 IDP run (one profile, or several)."""
    if doc.get("kind", WIDTH) != WIDTH or training.get("recipe", "idp") != "idp":
        return None
    keep = {k: training[k] for k in ("cut", "profile_gradient") if k in training}
    profiles = (doc.get("model") or {}).get("profiles")
    return ({"name": "multi-profile", "profiles": profiles, **keep} if profiles else {"name": "idp", **keep}), {}
