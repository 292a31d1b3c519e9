"""Pieces shared by the convolutional model families."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..profiles import ProfileSpec


def replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    """Puts ``new`` in place of ``root``'s submodule ``name`` (a dotted path)."""
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, new)


@dataclass
class ConvNetConfig:
    """Input shape, classes, channel scaling and profile of a convolutional network."""

    in_channels: int = 3
    input_size: int = 32
    num_classes: int = 10
    width_mult: float = 1.0
    profile: ProfileSpec = "linear"

    def __post_init__(self) -> None:
        if self.width_mult <= 0:
            raise ValueError(f"width_mult must be > 0, got {self.width_mult}")


def scaled(channels: int, width_mult: float) -> int:
    """A channel count scaled by ``width_mult`` (at least 1)."""
    return max(1, round(channels * width_mult))


def input_shape(model: nn.Module) -> tuple[int, ...]:
    """One example's shape ``(C, H, W)`` as the model's ``config`` declares it (its
    ``input_shape``, or its ``in_channels`` and square ``input_size``).

    Raises:
        ValueError: if the model has no such config.
    """
    cfg = getattr(model, "config", None)
    if cfg is not None and getattr(cfg, "input_shape", None):
        return tuple(cfg.input_shape)
    if cfg is None or not all(hasattr(cfg, f) for f in ("in_channels", "input_size")):
        raise ValueError(f"{type(model).__name__} has no config declaring its input shape; "
                         "give input_shape=(C, H, W)")
    return (cfg.in_channels, cfg.input_size, cfg.input_size)
