"""Files of a run directory: safetensors weights (never pickle), and loading a
state dict only after every name and shape has been checked."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import CheckpointError

WEIGHTS = "model.safetensors"


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


def write_weights(path: Path, model: nn.Module, metadata: dict[str, str] | None = None) -> None:
    """Writes the model's (unique) tensors as safetensors."""
    state = {k: v.detach().contiguous() for k, v in unique_state_dict(model).items()}
    save_file(state, str(path), metadata=metadata)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Reads a safetensors file.

    Raises:
        CheckpointError: if it is missing or not a safetensors file.
    """
    if not path.is_file():
        raise CheckpointError(f"{path.parent} has no {path.name}")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise CheckpointError(f"{path} is truncated or not a safetensors file ({e}); retrain or restore it") from None


def add_loaded_buffers(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Lets each module create the buffers of ``state`` it keeps but a fresh model lacks (its
    ``prepare_loaded_buffer(name, tensor)`` hook, e.g. per-width batch-norm statistics)."""
    for name, tensor in state.items():
        owner, _, leaf = name.rpartition(".")
        try:
            module = model.get_submodule(owner)
        except AttributeError:
            continue  # reported as unexpected by the check
        hook = getattr(module, "prepare_loaded_buffer", None)
        if callable(hook) and leaf not in dict(module.named_buffers(recurse=False)):
            hook(leaf, tensor)


def load_state_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str,
                       check_profile: bool = True) -> None:
    """Loads ``state`` into ``model`` after checking names and shapes match exactly.

    Args:
        check_profile: the profile buffers must equal the model's (False where the config says
            the profile is custom, so its coefficients come from the weights).

    Raises:
        CheckpointError: naming the first missing, unexpected or mis-shaped tensor.
    """
    add_loaded_buffers(model, state)
    expected = unique_state_dict(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not match its config: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    for name, tensor in expected.items():
        got = state[name]
        if got.shape != tensor.shape:
            raise CheckpointError(
                f"{source}: tensor {name} has shape {tuple(got.shape)}, "
                f"the config's model needs {tuple(tensor.shape)}"
            )
        if got.dtype != tensor.dtype:
            raise CheckpointError(f"{source}: tensor {name} is {got.dtype}, the config's model needs {tensor.dtype}; "
                                  "these weights were not written by dynscale for this config")
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise CheckpointError(f"{source}: tensor {name} holds NaN or infinite values; the run is damaged, "
                                  "retrain it")
        if check_profile and name.split(".")[-1] == "profile" and not torch.equal(got, tensor):
            raise CheckpointError(f"{source}: the profile in {name} is not the config's profile; the weights and "
                                  "config.json come from different runs")
    # Aliases of shared tensors are filled through their first name.
    model.load_state_dict(state, strict=False)
