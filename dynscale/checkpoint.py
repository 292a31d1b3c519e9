"""Run directories: ``model.safetensors`` plus ``config.json``, written atomically, no pickle."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import CheckpointError
from .models import get_model
from .profiles import profile_to_config

FORMAT = "dynscale-run"
VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


@dataclass
class Run:
    """A loaded run: its directory, model (in eval mode, at full width) and config."""

    path: Path
    model: nn.Module
    config: dict

    @property
    def model_name(self) -> str:
        return self.config["model"]["name"]

    @property
    def data(self) -> str:
        return self.config["data"]

    @property
    def profile(self) -> str | list[float]:
        return self.config["model"]["config"].get("profile", "all-one")

    @property
    def profile_ranges(self) -> list[tuple[float, float]] | None:
        ranges = self.config["model"].get("profiles")
        return [tuple(r) for r in ranges] if ranges else None


def atomic_write(path: Path, write) -> None:
    """Calls ``write(tmp_path)`` then renames the temporary file onto ``path``.

    A crash or error mid-write leaves any earlier ``path`` untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def model_config_dict(model: nn.Module) -> dict:
    """The JSON form of ``model.config`` (a callable profile becomes ``"custom"``)."""
    cfg = dataclasses.asdict(model.config)
    if "profile" in cfg:
        cfg["profile"] = profile_to_config(model.config.profile)
    return cfg


def save_run(directory: str | Path, model: nn.Module, model_name: str, data: str,
             training: dict | None = None, metrics: dict | None = None,
             extra: dict | None = None) -> Path:
    """Writes a run directory.

    Args:
        directory: where to write (created if needed).
        model: the trained model; it must have a dataclass ``config``.
        model_name: its registry name.
        data: the dataset name it was trained on.
        training: training settings.
        metrics: final metrics.
        extra: further JSON-serialisable fields to keep in ``config.json``.

    Returns:
        The directory.
    """
    directory = Path(directory)
    from .calibration import calibrated_widths
    from .multiprofile import MultiProfileModel

    model_entry = {"name": model_name, "config": model_config_dict(model)}
    if isinstance(model, MultiProfileModel):
        model_entry["profiles"] = [list(r) for r in model.ranges]
        model_entry["shared"] = model.shared
    config = {
        "format": FORMAT,
        "version": VERSION,
        "model": model_entry,
        "calibrated_widths": calibrated_widths(model),
        "profile": profile_to_config(getattr(model.config, "profile", None)),
        "data": data,
        "training": training or {},
        "metrics": metrics or {},
        **(extra or {}),
    }
    state = {k: v.detach().contiguous() for k, v in unique_state_dict(model).items()}
    atomic_write(directory / WEIGHTS, lambda p: save_file(state, str(p), metadata={"format": FORMAT}))
    atomic_write(directory / CONFIG,
                 lambda p: p.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n"))
    return directory


def read_config(directory: str | Path) -> dict:
    """Reads and checks a run's ``config.json``.

    Raises:
        CheckpointError: if the directory or file is missing, or it is not a dynscale run.
    """
    directory = Path(directory)
    path = directory / CONFIG
    if not directory.is_dir():
        raise CheckpointError(f"no run directory at {directory}; create one with `dynscale train --out {directory}`")
    if not path.is_file():
        raise CheckpointError(f"{directory} has no {CONFIG}; it is not a dynscale run directory")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); the run is corrupt, retrain it") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a dynscale run config (no \"format\": \"{FORMAT}\")")
    if config.get("version") != VERSION:
        raise CheckpointError(f"{path} has format version {config.get('version')}; this dynscale reads {VERSION}")
    if not isinstance(config.get("model"), dict) or "name" not in config["model"]:
        raise CheckpointError(f"{path} does not name its model")
    return config


def load_run(directory: str | Path) -> Run:
    """Loads a run directory, validating the config, tensor names and shapes.

    Args:
        directory: a directory written by :func:`save_run`.

    Returns:
        The run with its model in eval mode.

    Raises:
        CheckpointError: if anything is missing, truncated, foreign or inconsistent.
    """
    directory = Path(directory)
    config = read_config(directory)
    if config.get("kind", "width") != "width":
        raise CheckpointError(f"{directory} is an {config['kind']} run; load it with "
                              "dynscale.adaptive.load_early_exit or use `dynscale adaptive sweep`")
    model = build_run_model(directory, config)
    load_state_checked(model, read_weights(directory), str(directory / WEIGHTS))
    model.eval()
    return Run(directory, model, config)


def build_run_model(directory: Path, config: dict) -> nn.Module:
    """Builds (untrained) the model a run's config describes.

    Raises:
        CheckpointError: if the config does not describe a buildable model.
    """
    model_cfg = dict(config["model"].get("config", {}))
    if model_cfg.get("profile") == "custom":  # the coefficients are restored from the weights
        model_cfg["profile"] = None
    try:
        return build_model(config["model"]["name"], model_cfg, config["model"].get("profiles"),
                           shared=config["model"].get("shared", True))
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{directory / CONFIG}: cannot build the model: {e}") from None


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """Reads a run's ``model.safetensors``.

    Raises:
        CheckpointError: if it is missing or not a safetensors file.
    """
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{directory} has no {WEIGHTS}")
    try:
        return load_file(str(weights))
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise CheckpointError(
            f"{weights} is truncated or not a safetensors file ({e}); retrain or restore it"
        ) from None


def build_model(name: str, model_cfg: dict, profile_ranges: list | None = None,
                shared: bool = True) -> nn.Module:
    """Builds a registered model, or a multiple-member model when ranges are given (members
    share their middle layers for multiple profiles; not for an independent family)."""
    if profile_ranges:
        from .multiprofile import build_multi_profile

        return build_multi_profile(name, [tuple(r) for r in profile_ranges], shared=shared, **model_cfg)
    return get_model(name, **model_cfg)


def unique_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each shared tensor once, under its first name (safetensors stores
    no aliases; multiple-profile members share their middle layers)."""
    seen: set[tuple[int, tuple[int, ...]]] = set()
    state = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tuple(tensor.shape)) if tensor.numel() else (id(tensor), ())
        if key not in seen:
            seen.add(key)
            state[name] = tensor
    return state


def add_calibration_buffers(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Creates the per-width batch-norm buffers named in ``state`` so it can be loaded."""
    from .layers.batchnorm import _IncompleteBatchNorm

    for name, tensor in state.items():
        owner, _, leaf = name.rpartition(".")
        if leaf.startswith(("calib_mean_", "calib_var_")):
            try:
                module = model.get_submodule(owner)
            except AttributeError:
                continue  # reported as unexpected by the check
            if isinstance(module, _IncompleteBatchNorm):
                module.register_buffer(leaf, torch.zeros_like(tensor))


def load_state_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Loads ``state`` into ``model`` after checking names and shapes match exactly.

    Raises:
        CheckpointError: naming the first missing, unexpected or mis-shaped tensor.
    """
    add_calibration_buffers(model, state)
    expected = unique_state_dict(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not match its config: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    for name, tensor in expected.items():
        if state[name].shape != tensor.shape:
            raise CheckpointError(
                f"{source}: tensor {name} has shape {tuple(state[name].shape)}, "
                f"the config's model needs {tuple(tensor.shape)}"
            )
    # Aliases of shared tensors are filled through their first name.
    model.load_state_dict(state, strict=False)
