"""Export a width as a plain dense model: ordinary Conv2d / Linear / BatchNorm, profile folded
into the weights, the calibrated batch-norm statistics of that width. Written as ONNX or as
safetensors plus JSON (no pickle)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .checkpoint import Run, atomic_write, build_model, load_run, load_state_checked
from .errors import CheckpointError, DynscaleError
from .layers import (
    IncompleteConv2d,
    IncompleteLinear,
    Sign,
    WidthScaled,
    check_width,
    set_width,
)
from .layers.batchnorm import _IncompleteBatchNorm
from .models.common import input_shape
from .multiprofile import MultiProfileModel

DENSE_FORMAT = "dynscale-dense"
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


def _dense_batchnorm(bn: _IncompleteBatchNorm) -> nn.Module:
    c = bn.seen_channels
    cls = nn.BatchNorm2d if isinstance(bn, nn.BatchNorm2d) else nn.BatchNorm1d
    out = cls(c, eps=bn.eps, momentum=bn.momentum, affine=bn.affine)
    mean, var = bn.statistics(c)
    out.running_mean.copy_(mean)
    out.running_var.copy_(var)
    if bn.affine:
        out.weight.data.copy_(bn.weight[:c])
        out.bias.data.copy_(bn.bias[:c])
    return out


@torch.no_grad()
def dense(model: nn.Module, width: float) -> nn.Module:
    """Returns the model at ``width`` as a plain dense network (the model is not changed).

    Incomplete convolutions and linear layers become ``nn.Conv2d``/``nn.Linear`` holding the
    sliced weights with the profile folded in (binary layers: sign(W)·γ, preceded by a sign of
    the input); width-aware batch-norm becomes ``nn.BatchNorm1d/2d`` with that width's
    calibrated statistics (or the sliced running statistics if uncalibrated).

    Args:
        model: a model with incomplete layers (multiple-profile models export the profile
            that the width selects).
        width: the width to export, in (0, 1].

    Returns:
        A new model in eval mode, with the same outputs as ``model`` at ``width``.
    """
    width = check_width(width)
    if isinstance(model, MultiProfileModel):
        model = model.members[model.profile_index(width)]
    out = copy.deepcopy(model).eval()
    set_width(out, width)
    out(example_input(out))  # records how many channels each batch-norm sees at this width
    converters = {IncompleteConv2d: _dense_conv, IncompleteLinear: _dense_linear,
                  _IncompleteBatchNorm: _dense_batchnorm}
    for name, module in list(out.named_modules()):
        for cls, convert in converters.items():
            if isinstance(module, cls):
                parent, _, attr = name.rpartition(".")
                setattr(out.get_submodule(parent) if parent else out, attr, convert(module))
                break
    leftover = [type(m).__name__ for m in out.modules() if isinstance(m, WidthScaled)]
    if leftover:
        raise DynscaleError(f"cannot export width-dependent modules {sorted(set(leftover))}")
    return out.eval()


def export_onnx(model: nn.Module, path: str | Path, opset: int = 17) -> Path:
    """Writes a dense model as ONNX with a dynamic batch dimension (input ``input``, output ``logits``)."""
    example = example_input(model, batch=2)

    def write(tmp: Path) -> None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
            torch.onnx.export(model, (example,), str(tmp), dynamo=False, opset_version=opset,
                              input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})

    path = Path(path)
    atomic_write(path, write)
    return path


def export_run(run_dir: str | Path, width: float, fmt: str = "onnx", out: str | Path | None = None) -> Path:
    """Exports a run at ``width`` as ONNX (a ``.onnx`` file) or safetensors (a directory with
    ``model.safetensors`` and ``config.json``).

    Returns:
        The written path.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose {' or '.join(EXPORT_FORMATS)}")
    width = check_width(width)
    run = load_run(run_dir)
    model = dense(run.model, width)
    suffix = ".onnx" if fmt == "onnx" else ""
    out = Path(out) if out else Path(run_dir) / f"export-w{width:g}{suffix}"
    if fmt == "onnx":
        return export_onnx(model, out)
    return save_dense(out, model, run, width)


def save_dense(directory: Path, model: nn.Module, run: Run, width: float) -> Path:
    """Writes a dense model as ``model.safetensors`` plus ``config.json`` describing how to rebuild it."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    config = {"format": DENSE_FORMAT, "model": run.config["model"], "width": width,
              "source_run": str(run.path), "data": run.data}
    atomic_write(directory / "model.safetensors", lambda p: save_file(state, str(p)))
    atomic_write(directory / "config.json", lambda p: p.write_text(json.dumps(config, indent=2) + "\n"))
    return directory


def load_dense(directory: str | Path) -> nn.Module:
    """Loads a model written by ``export_run(..., fmt="safetensors")``.

    Raises:
        CheckpointError: if the directory is missing, foreign or inconsistent.
    """
    directory = Path(directory)
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{directory} is not a dense export: {e}") from None
    if config.get("format") != DENSE_FORMAT:
        raise CheckpointError(f"{directory}/config.json is not a dynscale dense export")
    entry = config["model"]
    skeleton = build_model(entry["name"], dict(entry["config"]), entry.get("profiles"))
    model = dense(skeleton, config["width"])
    try:
        state = load_file(str(directory / "model.safetensors"))
    except Exception as e:
        raise CheckpointError(f"{directory}/model.safetensors is truncated or not safetensors ({e})") from None
    load_state_checked(model, state, str(directory / "model.safetensors"))
    return model.eval()
