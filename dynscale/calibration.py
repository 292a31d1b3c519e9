"""Per-width batch-norm statistics, measured on training data after training."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from .layers import check_width, incomplete_batchnorms, width


@torch.no_grad()
def calibrate_bn(model: nn.Module, loader: Iterable, widths: list[float],
                 max_batches: int | None = None, progress: bool | None = None) -> list[float]:
    """Measures batch-norm statistics at each width and stores them in the model.

    For each width the model runs over ``loader`` in training mode with a cumulative average
    (momentum None) from fresh statistics; the resulting mean and variance of every width-aware
    batch-norm are stored for that width. The model's own running statistics, weights and mode
    are left as they were.

    Args:
        model: a model with ``IncompleteBatchNorm`` layers.
        loader: batches ``(x, y)`` or ``x`` of training data.
        widths: widths to calibrate, each in (0, 1].
        max_batches: use at most this many batches per width.
        progress: show a progress bar; None shows it only on a terminal.

    Returns:
        The calibrated widths.

    Raises:
        ValueError: for a bad width or a model without width-aware batch-norm.
    """
    widths = [check_width(w) for w in widths]
    norms = incomplete_batchnorms(model)
    if not norms:
        raise ValueError("the model has no IncompleteBatchNorm layers: nothing to calibrate")
    saved = [(bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone(),
              bn.momentum) for bn in norms]
    was_training = model.training
    try:
        for w in tqdm(widths, desc="calibrate", unit="width",
                      disable=None if progress is None else not progress):
            for bn in norms:
                bn.reset_running_stats()
                bn.momentum = None
                bn.seen_channels = 0
            model.train()
            with width(model, w):
                for i, batch in enumerate(loader):
                    if max_batches is not None and i >= max_batches:
                        break
                    model(batch[0] if isinstance(batch, (tuple, list)) else batch)
                for bn in norms:
                    c = bn.seen_channels
                    if c:  # a batch-norm of another profile may not run at this width
                        bn.store_statistics(w, bn.running_mean[:c], bn.running_var[:c])
    finally:
        for bn, (mean, var, count, momentum) in zip(norms, saved, strict=True):
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            bn.num_batches_tracked.copy_(count)
            bn.momentum = momentum
        model.train(was_training)
    return widths


def calibrated_widths(model: nn.Module) -> list[float]:
    """The widths for which every batch-norm that ran has stored statistics."""
    found: set[float] = set()
    for bn in incomplete_batchnorms(model):
        found.update(bn.calibrated_widths())
    return sorted(found)


def calibrate_run(run_dir: str, widths: list[float], data: str | None = None,
                  batches: int = 20, progress: bool | None = None) -> list[float]:
    """Calibrates a run's batch-norm statistics at ``widths`` and saves them into the run.

    Args:
        run_dir: the run directory.
        widths: widths to calibrate.
        data: dataset to calibrate on (default: the run's own training data).
        batches: batches of 256 training examples per width.
        progress: show a progress bar; None shows it only on a terminal.

    Returns:
        All calibrated widths of the run after this call.
    """
    from .checkpoint import load_run, save_run
    from .data import load_dataset
    from .training import TrainConfig, calibration_loader

    run = load_run(run_dir)
    dataset = load_dataset(data or run.data)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in run.config.get("training", {}).items() if k in known})
    calibrate_bn(run.model, calibration_loader(dataset, config, batches), widths, progress=progress)
    extra = {k: v for k, v in run.config.items()
             if k not in ("format", "version", "model", "profile", "data", "training", "metrics",
                          "calibrated_widths")}
    save_run(run_dir, run.model, run.model_name, run.data, training=run.config.get("training"),
             metrics=run.config.get("metrics"), extra=extra)
    return calibrated_widths(run.model)
