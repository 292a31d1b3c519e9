"""Early-exit and cascade runs: their run kinds, and training an early-exit run."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from ..data import Dataset, load_dataset
from ..errors import CheckpointError, DynscaleError
from ..evaluation import check_compatible
from ..models import get_model
from ..runs import ModelSpec, RunConfig, RunKind, check_output, load_run, register_kind, save_run
from ..train import (
    TrainConfig,
    Trainer,
    fit_resumable,
    prepare_state,
    seed_everything,
    sized_for,
    state_directory,
)
from .cascade import Cascade
from .exits import EarlyExitNet
from .recipes import EarlyExits, FrozenExits, parse_exit_weights


def default_holdout(data: Dataset) -> int:
    """10% of the training examples."""
    return max(1, len(data.train_y) // 10)


def train_early_exit_run(out: str | Path, model_name: str, data: Dataset | str, config: TrainConfig,
                         exits: Sequence[str], exit_weights: Sequence[float] | None = None,
                         model_options: dict | None = None, backbone_run: str | Path | None = None,
                         progress: bool | None = None, force: bool = False, resume: bool = False,
                         checkpoint_every: int = 500) -> Path:
    """Builds a backbone with exits, trains it, and writes a run directory (resumably, as
    :func:`dynscale.idp.train_run` does).

    Args:
        out: the run directory to write.
        model_name: a registered model (ignored with ``backbone_run``).
        data: a dataset or its name.
        config: training settings; ``config.holdout`` examples are kept out of training for
            fitting the policies (10% of the training split if 0). The caller's config is
            not changed.
        exits: stage names to put exits after.
        exit_weights: loss weight per exit and the final output.
        model_options: model config fields; input shape and classes come from the data.
        backbone_run: a trained run (``dynscale train --holdout N``) whose network becomes a
            frozen backbone; only the exits are trained.
        progress: show a progress bar; None shows it only on a terminal.
        force: replace an existing run at ``out`` (and discard an unfinished training's state).
        resume: continue the unfinished training saved in ``OUT.resume``.
        checkpoint_every: optimizer steps between saved states.

    Returns:
        The run directory.

    Raises:
        DynscaleError: if the pretrained backbone saw the held-out examples, or does not fit
            the data, or ``out`` cannot be written (all before any training).
    """
    out = check_output(out, force, inputs=[backbone_run])
    state_dir = prepare_state(state_directory(out), force, resume)
    dataset = load_dataset(data) if isinstance(data, str) else data
    config = dataclasses.replace(config, holdout=config.holdout or default_holdout(dataset))
    seed_everything(config.seed)
    if backbone_run is not None:
        run = load_run(backbone_run)
        if run.kind != "width":
            raise DynscaleError(f"{backbone_run} is a {run.kind} run; a backbone is a network trained with "
                                "`dynscale train`")
        check_compatible(run.config.model_config, dataset, str(backbone_run))
        seen = run.config.holdout
        if seen != config.holdout:
            raise DynscaleError(
                f"{backbone_run} held out {seen} training examples but this run holds out {config.holdout}, so "
                "the backbone has seen examples the policies are fitted on; retrain it with "
                f"`dynscale train --holdout {config.holdout}` or pass --holdout {seen}"
                if seen else
                f"{backbone_run} was trained on every training example, so the policies would be fitted on "
                f"examples it has seen; retrain it with `dynscale train --holdout {config.holdout} ...`")
        backbone = run.model
    else:
        backbone = get_model(model_name, **sized_for(dataset, model_options))
    net = EarlyExitNet(backbone, exits)
    weights = parse_exit_weights(exit_weights, len(net.node_names))
    recipe = FrozenExits(weights) if backbone_run is not None else EarlyExits(weights)
    provenance = {"backbone_run": str(backbone_run)} if backbone_run is not None else {}
    meta = {"kind": "early-exit", "model": ModelSpec.of(backbone).to_json(), "exits": net.exit_names,
            "data": dataset.name, "training": config.to_dict(), "recipe": recipe.to_dict(), "provenance": provenance}
    metrics = fit_resumable(Trainer(net, dataset, config, recipe, progress), state_dir, meta, resume, checkpoint_every)
    run = save_run(out, net, dataset.name, training=config, recipe=recipe, metrics=metrics, provenance=provenance)
    shutil.rmtree(state_dir, ignore_errors=True)
    return run


def load_early_exit(directory: str | Path) -> tuple[EarlyExitNet, RunConfig]:
    """Loads an early-exit run (from :func:`train_early_exit_run`).

    Returns:
        The network in eval mode, and the run's config.

    Raises:
        CheckpointError: if the directory is not an early-exit run, or is corrupt.
    """
    run = load_run(directory)
    if run.kind != "early-exit":
        raise CheckpointError(f"{directory} is not an early-exit run; make one with `dynscale adaptive train`")
    return run.model, run.config


def _early_exit_describe(net: nn.Module) -> tuple[ModelSpec, dict]:
    return ModelSpec.of(net.backbone), {"exits": list(net.exit_names)}


def _early_exit_summary(config: RunConfig) -> list[tuple[str, str]]:
    backbone = config.provenance.get("backbone_run")
    return [("exits", f"{', '.join(config.section['exits'])} (then the final output)"),
            ("backbone", f"frozen, from {backbone}" if backbone else "trained jointly"),
            ("holdout", f"{config.holdout} training examples held out for the policies")]


def _cascade_describe(cascade: nn.Module) -> tuple[None, dict]:
    return None, {"members": [ModelSpec.of(n).to_json() for n in cascade.networks], "names": list(cascade.names),
                  "edges": [list(e) for e in cascade.edges]}


def _cascade_build(config: RunConfig) -> nn.Module:
    members = [ModelSpec.from_json(m).build() for m in config.section["members"]]
    return Cascade(members, [tuple(e) for e in config.section["edges"]], config.section["names"])


def _cascade_summary(config: RunConfig) -> list[tuple[str, str]]:
    names, members = config.section["names"], config.section["members"]
    return [("networks", ", ".join(f"{n} ({m['name']})" for n, m in zip(names, members, strict=True))),
            ("edges", ", ".join(f"{a}-{b}" for a, b in config.section["edges"])),
            ("holdout", f"{config.holdout} training examples held out for the policies")]


register_kind(RunKind("early-exit", EarlyExitNet, _early_exit_describe,
                      lambda config: EarlyExitNet(config.model.build(), config.section["exits"]), _early_exit_summary))
register_kind(RunKind("cascade", Cascade, _cascade_describe, _cascade_build, _cascade_summary))
