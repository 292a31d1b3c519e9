"""Early-exit run directories: the usual ``model.safetensors`` + ``config.json``, with
``"kind": "early-exit"``, the exits, and the held-out split the policies are fitted on."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..checkpoint import (
    CONFIG,
    WEIGHTS,
    build_run_model,
    load_run,
    load_state_checked,
    read_config,
    read_weights,
    save_run,
)
from ..data import Dataset, load_dataset
from ..errors import CheckpointError, DynscaleError
from ..sweep import check_compatible
from ..training import TrainConfig, seed_everything, sized_for
from .exits import EarlyExitNet, train_early_exit

KIND = "early-exit"


def default_holdout(data: Dataset) -> int:
    """10% of the training examples."""
    return max(1, len(data.train_y) // 10)


def train_early_exit_run(out: str | Path, model_name: str, data: Dataset | str, config: TrainConfig,
                         exits: Sequence[str], exit_weights: Sequence[float] | None = None,
                         model_options: dict | None = None, backbone_run: str | Path | None = None,
                         progress: bool | None = None) -> Path:
    """Builds a backbone with exits, trains it, and writes a run directory.

    Args:
        out: the run directory to write.
        model_name: a registered model (ignored with ``backbone_run``).
        data: a dataset or its name.
        config: training settings; ``config.holdout`` examples are kept out of training for
            fitting the policies (10% of the training split if 0).
        exits: stage names to put exits after.
        exit_weights: loss weight per exit and the final output (joint training).
        model_options: model config fields; input shape and classes come from the data.
        backbone_run: a trained run (``dynscale train --holdout N``) whose network becomes a
            frozen backbone; only the exits are trained.
        progress: show a progress bar; None shows it only on a terminal.

    Returns:
        The run directory.

    Raises:
        DynscaleError: if the pretrained backbone saw the held-out examples, or does not fit
            the data.
    """
    dataset = load_dataset(data) if isinstance(data, str) else data
    if not config.holdout:
        config.holdout = default_holdout(dataset)
    seed_everything(config.seed)
    if backbone_run is not None:
        run = load_run(backbone_run)
        check_compatible(run.config["model"]["config"], dataset, str(backbone_run))
        seen = run.config.get("training", {}).get("holdout", 0)
        if seen != config.holdout:
            raise DynscaleError(
                f"{backbone_run} held out {seen} training examples but this run holds out {config.holdout}, so "
                "the backbone has seen examples the policies are fitted on; retrain it with "
                f"`dynscale train --holdout {config.holdout}` or pass --holdout {seen}"
                if seen else
                f"{backbone_run} was trained on every training example, so the policies would be fitted on "
                f"examples it has seen; retrain it with `dynscale train --holdout {config.holdout} ...`")
        backbone, model_name = run.model, run.model_name
    else:
        from ..models import get_model

        backbone = get_model(model_name, **sized_for(dataset, model_options))
    net = EarlyExitNet(backbone, exits)
    metrics = train_early_exit(net, dataset, config, exit_weights, freeze_backbone=backbone_run is not None,
                               progress=progress)
    extra = {"kind": KIND, "exits": net.exit_names,
             "exit_weights": list(exit_weights) if exit_weights is not None else None,
             "backbone_run": str(backbone_run) if backbone_run is not None else None}
    return save_run(out, net, model_name, dataset.name, training=config.to_dict(), metrics=metrics, extra=extra)


def load_early_exit(directory: str | Path) -> tuple[EarlyExitNet, dict]:
    """Loads an early-exit run (from :func:`train_early_exit_run`).

    Returns:
        The network in eval mode, and the run's config.

    Raises:
        CheckpointError: if the directory is not an early-exit run, or is corrupt.
    """
    directory = Path(directory)
    config = read_config(directory)
    if config.get("kind") != KIND:
        raise CheckpointError(f"{directory} is not an early-exit run; make one with `dynscale adaptive train`")
    try:
        net = EarlyExitNet(build_run_model(directory, config), config["exits"])
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{directory / CONFIG}: cannot build the network: {e}") from None
    load_state_checked(net, read_weights(directory), str(directory / WEIGHTS))
    return net.eval(), config
