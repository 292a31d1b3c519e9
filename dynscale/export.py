"""Export a width as a plain dense model: ordinary Conv2d / Linear / BatchNorm, profile folded
into the weights, the calibrated batch-norm statistics of that width. Written as ONNX or as a
run directory of kind ``dense`` (safetensors plus JSON, no pickle)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .device import model_device, place, to_device
from .errors import CheckpointError, DynscaleError
from .eval.runtime import onnx_bytes
from .files import atomic_write
from .layers import (
    IncompleteBatchNormBase,
    IncompleteConv2d,
    IncompleteLinear,
    Sign,
    WidthScaled,
    check_width,
    set_width,
)
from .models.common import input_shape, replace_module
from .models.multiprofile import MultiProfileModel
from .runs import (
    WIDTH,
    ModelSpec,
    RunConfig,
    RunKind,
    check_file_output,
    check_output,
    is_run_directory,
    open_run,
    register_kind,
    save_run,
)
from .schema import Num, setting

EXPORT_FORMATS = ("onnx", "safetensors")


def example_input(model: nn.Module, batch: int = 1) -> torch.Tensor:
    """A zero input of the shape the model's config declares, ``(batch, C, H, W)``."""
    return torch.zeros(batch, *input_shape(model))


def _dense_conv(layer: IncompleteConv2d) -> nn.Module:
    w, b, groups = layer.dense_weights()
    conv = nn.Conv2d(w.shape[1] * groups, w.shape[0], layer.kernel_size, stride=layer.stride,
                     padding=layer.padding, dilation=layer.dilation, groups=groups, bias=b is not None)
    conv.weight.data.copy_(w)
    if b is not None:
        conv.bias.data.copy_(b)
    return nn.Sequential(Sign(), conv) if getattr(layer, "binarize_input", False) else conv


def _dense_linear(layer: IncompleteLinear) -> nn.Module:
    w, b = layer.dense_weights()
    linear = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    linear.weight.data.copy_(w)
    if b is not None:
        linear.bias.data.copy_(b)
    return nn.Sequential(Sign(), linear) if getattr(layer, "binarize_input", False) else linear


def _dense_batchnorm(bn: IncompleteBatchNormBase) -> nn.Module:
    c = bn.seen_channels
    cls = nn.BatchNorm2d if isinstance(bn, nn.BatchNorm2d) else nn.BatchNorm1d
    out = cls(c, eps=bn.eps, momentum=bn.momentum, affine=bn.affine)
    mean, var = bn.statistics(c)
    out.running_mean.copy_(mean)
    out.running_var.copy_(var)
    if bn.affine:
        weight, bias = bn.affine_parameters(c)  # the kept channels: a prefix, or a converted model's plan
        out.weight.data.copy_(weight)
        out.bias.data.copy_(bias)
    return out


@torch.no_grad()
def dense(model: nn.Module, width: float, example: torch.Tensor | None = None) -> nn.Module:
    """Returns the model at ``width`` as a plain dense network (the model is not changed).

    Incomplete convolutions and linear layers become ``nn.Conv2d``/``nn.Linear`` holding the
    sliced weights with the profile folded in (binary layers: sign(W)·γ, preceded by a sign of
    the input); width-aware batch-norm becomes ``nn.BatchNorm1d/2d`` with that width's
    calibrated statistics (or the sliced running statistics if uncalibrated).

    Args:
        model: a model with incomplete layers (multiple-profile models export the profile
            that the width selects).
        width: the width to export, in (0, 1].
        example: an input batch (default: zeros of the shape the model's config declares); it
            runs once, to see how many channels each batch-norm gets at this width.

    Returns:
        A new model in eval mode on the model's device, with the same outputs as ``model`` at
        ``width``; its ``dense_width`` attribute records the width.
    """
    width = check_width(width)
    if isinstance(model, MultiProfileModel):
        model = model.members[model.profile_index(width)]
    device = model_device(model)
    out = copy.deepcopy(model).eval()
    set_width(out, width)
    # the channels each batch-norm sees at this width
    out(to_device(example_input(out) if example is None else example, device))
    converters = {IncompleteConv2d: _dense_conv, IncompleteLinear: _dense_linear,
                  IncompleteBatchNormBase: _dense_batchnorm}
    for name, module in list(out.named_modules()):
        for cls, convert in converters.items():
            if isinstance(module, cls):
                replace_module(out, name, convert(module))
                break
    leftover = [type(m).__name__ for m in out.modules() if isinstance(m, WidthScaled)]
    if leftover:
        raise DynscaleError(f"cannot export width-dependent modules {sorted(set(leftover))}")
    out.dense_width = width
    return place(out, device).eval()  # the converted layers were built on the CPU


def plain_network(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """A copy of ``model`` as a plain network in eval mode, what a user would export and ship:
    width-scaled models at width 1 (:func:`dense`), others copied as they are."""
    if any(isinstance(m, WidthScaled) for m in model.modules()):
        return dense(model, 1.0, example[:1])
    return copy.deepcopy(model).eval()


def export_onnx(model: nn.Module, path: str | Path, opset: int = 17, example: torch.Tensor | None = None) -> Path:
    """Writes a dense model as ONNX with a dynamic batch dimension (input ``input``, output ``logits``).

    Args:
        example: an input batch of two or more (default: zeros of the config's input shape).
    """
    data = onnx_bytes(model, example_input(model, batch=2) if example is None else example, opset)
    path = Path(path)
    atomic_write(path, lambda p: p.write_bytes(data))
    return path


def default_export_path(run_dir: str | Path, width: float, fmt: str) -> Path:
    """Beside the run, never inside it: ``RUN-w0.5.onnx`` or ``RUN-w0.5/``."""
    run_dir = Path(run_dir)
    return run_dir.parent / f"{run_dir.name}-w{width:g}{'.onnx' if fmt == 'onnx' else ''}"


def check_export_output(out: str | Path, fmt: str, force: bool = False, inputs: Sequence[str | Path] = ()) -> Path:
    """Checks an export's destination before any work: never a run directory or inside one,
    never one of ``inputs``; an existing export is replaced only with ``force``.

    Raises:
        DynscaleError: naming what to do.
    """
    out = Path(out)
    if fmt == "onnx":
        return check_file_output(out, "--out", force, inputs)
    if is_run_directory(out) and RunConfig.read(out).kind != DENSE:
        raise DynscaleError(f"--out {out} is a run directory; an export never writes into a run, choose another "
                            "--out")
    return check_output(out, force, inputs=inputs)


def export_run(run_dir: str | Path, width: float, fmt: str = "onnx", out: str | Path | None = None,
               force: bool = False) -> Path:
    """Exports a run at ``width`` as ONNX (a ``.onnx`` file) or safetensors (a run directory of
    kind ``dense``, loaded by :func:`load_dense`), beside the run unless ``out`` says otherwise.

    Returns:
        The written path.

    Raises:
        DynscaleError: before any work, if ``out`` is or lies in a run directory, or exists
            (without ``force``).
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose {' or '.join(EXPORT_FORMATS)}")
    width = check_width(width)
    out = check_export_output(out if out else default_export_path(run_dir, width, fmt), fmt, force, [run_dir])
    run = open_run(run_dir, (WIDTH,), what="export")
    model = dense(run.model, width)
    if fmt == "onnx":
        return export_onnx(model, out)
    return save_run(out, model, run.data, kind="dense", provenance={"source_run": str(run.path)})


def load_dense(directory: str | Path) -> nn.Module:
    """Loads a model written by ``export_run(..., fmt="safetensors")``.

    Raises:
        CheckpointError: if the directory is missing, foreign or inconsistent.
    """
    try:
        run = open_run(directory, (DENSE,), what="load_dense")
    except CheckpointError as e:
        raise CheckpointError(f"{directory} is not a dense export: {e}") from None
    return run.model


def _dense_build(config: RunConfig) -> nn.Module:
    return dense(config.model.build(), float(config.section["width"]))


def _dense_describe(model: nn.Module) -> tuple[ModelSpec, dict]:
    if not hasattr(model, "dense_width"):
        raise ValueError("only a model made by dynscale.export.dense is saved as a dense export")
    return ModelSpec.of(model), {"width": model.dense_width}


DENSE = "dense"


@dataclass
class DenseSection:
    """The ``section`` of a dense export's config."""

    width: float = setting(check=Num(0.0, 1.0, low_open=True), help="the width exported")


register_kind(RunKind(DENSE, type(None), _dense_describe, _dense_build,
                      lambda config: [("width", f"{config.section['width']:g} (a dense export)")],
                      noun="a dense export", made_by="`dynscale export --format safetensors`", section=DenseSection))
