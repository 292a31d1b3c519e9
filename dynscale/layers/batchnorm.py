"""Batch-norm that follows an incomplete layer: sliced with it, with statistics per width.

A network trained with one set of running statistics is wrong at other widths (the authors hid
this by evaluating in training mode). :func:`dynscale.calibrate_bn` measures the statistics at
each width on training data and stores them here; at a calibrated width they replace the
running statistics.

Switchable batch-norm (slimmable networks, Yu et al. 2019) adds a private scale and shift per
width of a fixed set (:meth:`make_switchable`); at those widths they replace the shared ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .plan import ChannelPlan
from .width import WidthScaled


def width_key(p: float) -> str:
    """The buffer-name key of a width, to 1e-4: ``0.25 -> "02500"``."""
    return f"{round(p * 10000):05d}"


class _IncompleteBatchNorm(WidthScaled):
    """Shared logic of the 1-D and 2-D variants; mixed into ``nn.BatchNormXd``."""

    # ``convert`` sets an index plan where the kept channels are not a prefix.
    plan: ChannelPlan | None = None

    def _init_widths(self) -> None:
        self.in_width = 1.0
        self.out_width = 1.0
        self.seen_channels = self.num_features

    def kept_index(self, c: int) -> torch.Tensor | None:
        """The positions of the ``c`` channels seen at the current width, or None for a prefix."""
        if self.plan is None or c == self.num_features:
            return None
        index = self.plan.indices(self.in_width)
        if len(index) != c:
            raise ValueError(f"{type(self).__name__} at width {self.in_width} expects {len(index)} channels, got {c}")
        return index

    def running_statistics(self, c: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The running (mean, var) of the ``c`` channels seen at the current width."""
        index = self.kept_index(c)
        if index is None:
            return self.running_mean[:c], self.running_var[:c]
        return self.running_mean[index], self.running_var[index]

    def affine_parameters(self, c: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(weight, bias) of the ``c`` channels seen at the current width: the width's private
        ones where the layer is switchable at it, else the shared ones."""
        weight, bias = self.weight, self.bias
        key = width_key(self.in_width)
        if weight is not None and hasattr(self, f"switch_weight_{key}"):
            weight, bias = getattr(self, f"switch_weight_{key}"), getattr(self, f"switch_bias_{key}")
        index = self.kept_index(c)
        if index is None:
            return (None if weight is None else weight[:c]), (None if bias is None else bias[:c])
        return (None if weight is None else weight[index]), (None if bias is None else bias[index])

    def make_switchable(self, widths: list[float]) -> None:
        """Gives each of ``widths`` a private scale and shift (parameters, copied from the shared
        ones); the shared ones then serve the other widths only. Does nothing without affine."""
        if self.weight is None:
            return
        for p in widths:
            key = width_key(p)
            if not hasattr(self, f"switch_weight_{key}"):
                self.register_parameter(f"switch_weight_{key}", nn.Parameter(self.weight.detach().clone()))
                self.register_parameter(f"switch_bias_{key}", nn.Parameter(self.bias.detach().clone()))

    def switchable_widths(self) -> list[float]:
        """The widths with a private scale and shift, ascending."""
        return sorted(int(name[len("switch_weight_"):]) / 10000 for name, _ in self.named_parameters(recurse=False)
                      if name.startswith("switch_weight_"))

    def calibrated_widths(self) -> list[float]:
        """The widths with stored statistics, ascending."""
        keys = [name[len("calib_mean_"):] for name, _ in self.named_buffers(recurse=False)
                if name.startswith("calib_mean_")]
        return sorted(int(k) / 10000 for k in keys)

    def store_statistics(self, p: float, mean: torch.Tensor, var: torch.Tensor) -> None:
        """Stores the statistics of width ``p`` (as buffers, so they are saved with the model)."""
        key = width_key(p)
        self.register_buffer(f"calib_mean_{key}", mean.detach().clone())
        self.register_buffer(f"calib_var_{key}", var.detach().clone())

    def prepare_loaded_buffer(self, name: str, tensor: torch.Tensor) -> None:
        """Creates the buffer ``name`` of a saved state before it is loaded: per-width statistics
        appear on calibration, so a freshly built layer lacks them (the loader's public hook)."""
        if name.startswith(("calib_mean_", "calib_var_")):
            self.register_buffer(name, torch.zeros_like(tensor))
        elif name.startswith(("switch_weight_", "switch_bias_")) and not hasattr(self, name):
            self.register_parameter(name, nn.Parameter(torch.zeros_like(tensor)))

    def clear_statistics(self) -> None:
        """Removes every stored per-width statistic."""
        for name in [n for n, _ in self.named_buffers(recurse=False) if n.startswith("calib_")]:
            delattr(self, name)

    def statistics(self, c: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The (mean, var) used in evaluation for ``c`` channels at the current width."""
        key = width_key(self.in_width)
        mean = getattr(self, f"calib_mean_{key}", None)
        if mean is not None and mean.shape[0] == c:
            return mean, getattr(self, f"calib_var_{key}")
        return self.running_statistics(c)

    def active_parameters(self) -> int:
        """Parameters used for the channels seen in the last forward pass."""
        return 2 * self.seen_channels if self.affine else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, c, ...) with c ≤ num_features
        self._check_input_dim(x)
        c = x.shape[1]
        self.seen_channels = c
        index = self.kept_index(c)
        if index is not None:
            return self._planned_forward(x, index)
        weight, bias = self.affine_parameters(c)
        if self.training:
            if self.track_running_stats and self.num_batches_tracked is not None:
                self.num_batches_tracked.add_(1)
            momentum = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                        else self.momentum)
            # Slices of the running buffers are views: F.batch_norm updates them in place.
            mean = self.running_mean[:c] if self.track_running_stats else None
            var = self.running_var[:c] if self.track_running_stats else None
            return F.batch_norm(x, mean, var, weight, bias, True, momentum, self.eps)
        mean, var = self.statistics(c)
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)

    def _planned_forward(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        weight, bias = self.affine_parameters(len(index))
        if not self.training:
            mean, var = self.statistics(len(index))
            return F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        if not self.track_running_stats:
            return F.batch_norm(x, None, None, weight, bias, True, momentum, self.eps)
        # Gathered statistics are copies: update them, then write them back in place.
        mean, var = self.running_mean[index], self.running_var[index]
        out = F.batch_norm(x, mean, var, weight, bias, True, momentum, self.eps)
        with torch.no_grad():
            self.running_mean[index] = mean
            self.running_var[index] = var
        return out


class IncompleteBatchNorm2d(nn.BatchNorm2d, _IncompleteBatchNorm):
    """``nn.BatchNorm2d`` that normalizes however many channels the layer before kept."""

    def __init__(self, num_features: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self._init_widths()

    forward = _IncompleteBatchNorm.forward


class IncompleteBatchNorm1d(nn.BatchNorm1d, _IncompleteBatchNorm):
    """``nn.BatchNorm1d`` that normalizes however many features the layer before kept."""

    def __init__(self, num_features: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self._init_widths()

    forward = _IncompleteBatchNorm.forward


# The public name of the shared base (``isinstance`` checks outside the layers use this one).
IncompleteBatchNormBase = _IncompleteBatchNorm


def incomplete_batchnorms(model: nn.Module) -> list[_IncompleteBatchNorm]:
    """Returns the width-aware batch-norm layers of a model in module order."""
    return [m for m in model.modules() if isinstance(m, _IncompleteBatchNorm)]


def calibrated_widths(model: nn.Module) -> list[float]:
    """The widths for which the model's width-aware batch-norms store statistics."""
    found: set[float] = set()
    for bn in incomplete_batchnorms(model):
        found.update(bn.calibrated_widths())
    return sorted(found)


def switchable_widths(model: nn.Module) -> list[float]:
    """The widths at which the model's width-aware batch-norms have a private scale and shift."""
    found: set[float] = set()
    for bn in incomplete_batchnorms(model):
        found.update(bn.switchable_widths())
    return sorted(found)
