"""Per-width batch-norm statistics, measured on training data after training."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from ..data import Dataset
from ..device import model_device, to_device
from ..errors import DynscaleError
from ..layers import calibrated_widths, check_width, incomplete_batchnorms, width
from ..parallel import all_reduce_sum, world
from ..progress import progress_bar
from ..runs import WIDTH, claim_output, open_run, write_run
from ..train import TrainConfig, training_subset


@torch.no_grad()
def calibrate_bn(model: nn.Module, loader: Iterable, widths: list[float],
                 max_batches: int | None = None, progress: bool | None = None) -> list[float]:
    """Measures batch-norm statistics at each width and stores them in the model.

    For each width the model runs over ``loader`` with its width-aware batch-norms in training
    mode (a cumulative average, momentum None, from fresh statistics) and every other module in
    eval mode (dropout off, any other batch-norm on its running statistics); the resulting mean
    and variance of every width-aware batch-norm are stored for that width. The model's own
    running statistics, weights and every module's mode are left as they were.

    Args:
        model: a model with ``IncompleteBatchNorm`` layers.
        loader: batches ``(x, y)`` or ``x`` of training data. Under ``torchrun`` each process
            runs every N-th batch and the statistics are all-reduced (:func:`merge_statistics`).
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
    modes = [(m, m.training) for m in model.modules()]
    processes, device = world(), model_device(model)
    try:
        for w in progress_bar(widths, progress, desc="calibrate", unit="width"):
            for bn in norms:
                bn.reset_running_stats()
                bn.momentum = None
                bn.seen_channels = 0
            model.eval()
            for bn in norms:
                bn.train()
            with width(model, w):
                for i, batch in enumerate(loader):
                    if max_batches is not None and i >= max_batches:
                        break
                    if i % processes.size == processes.rank:  # several processes: each its share of the batches
                        model(to_device(batch[0] if isinstance(batch, (tuple, list)) else batch, device))
                if processes.distributed:
                    merge_statistics(norms)
                for bn in norms:
                    c = bn.seen_channels
                    if c:  # a batch-norm of another profile may not run at this width
                        bn.store_statistics(w, *bn.running_statistics(c))
    finally:
        for bn, (mean, var, count, momentum) in zip(norms, saved, strict=True):
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            bn.num_batches_tracked.copy_(count)
            bn.momentum = momentum
        for m, mode in modes:
            m.train(mode)
    return widths


@torch.no_grad()
def merge_statistics(norms: list[nn.Module]) -> None:
    """Combines the processes' calibration statistics (each a cumulative average over its own
    batches) into the average over all their batches, in every process: the same statistics
    as one process running every batch."""
    for bn in norms:
        count = bn.num_batches_tracked.double().view(1)  # batches this process ran
        ran = (count > 0).double()
        shared = all_reduce_sum(torch.cat([bn.running_mean.double() * count, bn.running_var.double() * count,
                                           count, ran, ran * bn.seen_channels]))
        n = bn.num_features
        total, processes_ran = shared[2 * n], shared[2 * n + 1]
        if total > 0:
            bn.running_mean.copy_(shared[:n] / total)
            bn.running_var.copy_(shared[n:2 * n] / total)
            bn.num_batches_tracked.fill_(int(total))
            bn.seen_channels = int(shared[2 * n + 2] / processes_ran)


def calibration_loader(data: Dataset, config: TrainConfig, batches: int = 20):
    """Training batches for batch-norm calibration: the run's own training subset, in a fixed
    order, at most ``batches`` batches of 256."""
    subset = training_subset(data, config).limit(batches * 256, seed=config.seed)
    return subset.loader("train", 256)


def calibrate_run(run_dir: str | Path, widths: list[float], data: str | Dataset | None = None,
                  batches: int = 20, progress: bool | None = None) -> list[float]:
    """Calibrates a run's batch-norm statistics at ``widths`` and saves them into the run.

    Args:
        run_dir: the run directory.
        widths: widths to calibrate.
        data: dataset (or its name) to calibrate on (default: the run's own training data).
        batches: batches of 256 training examples per width.
        progress: show a progress bar; None shows it only on a terminal.

    Returns:
        All calibrated widths of the run after this call.
    """
    claim_output(run_dir, option=None)  # read, then rewritten: no other command may write it meanwhile
    run = open_run(run_dir, (WIDTH,), data, with_data=True, what="calibrate")
    widths = [check_width(w) for w in widths]
    if not incomplete_batchnorms(run.model):
        raise DynscaleError(f"{run_dir} ({run.model_name}) has no batch-norm layers, so there is nothing to "
                            "calibrate")
    if batches < 1:
        raise ValueError(f"calibration needs at least one batch (--batches), got {batches}")
    dataset = run.dataset
    config = TrainConfig.from_dict(run.config.training)
    calibrate_bn(run.model, calibration_loader(dataset, config, batches), widths, progress=progress)
    write_run(run_dir, run.model, run.config, in_place=True)
    return calibrated_widths(run.model)
