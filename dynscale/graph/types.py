"""What the graph understands about a module: its kind, decided on its exact type.

A subclass counts as its base only when it keeps the base's ``forward``: one that overrides it
computes something the graph cannot know (timm's ``Conv2dSame`` pads inside ``forward``).
"""

from __future__ import annotations

from torch import nn

from ..layers import (
    BinaryConv2d,
    BinaryLinear,
    IncompleteBatchNorm1d,
    IncompleteBatchNorm2d,
    IncompleteConv2d,
    IncompleteLinear,
)


class GraphError(ValueError):
    """An operation or module the graph cannot handle, named with its place in the model."""


# The layer types the graph gives a structure to, most specific first.
CONV = (BinaryConv2d, IncompleteConv2d, nn.Conv2d)
LINEAR = (BinaryLinear, IncompleteLinear, nn.Linear)
BATCHNORM = (IncompleteBatchNorm2d, IncompleteBatchNorm1d, nn.BatchNorm2d, nn.BatchNorm1d)
STRUCTURED = CONV + LINEAR + BATCHNORM


def base_type(module: nn.Module) -> type | None:
    """The structured type ``module`` behaves as (its own, or a base whose forward it keeps);
    None when it is none of them."""
    for cls in STRUCTURED:
        if isinstance(module, cls) and type(module).forward is cls.forward:
            return cls
    return None


def overrides_forward(module: nn.Module) -> type | None:
    """The structured base whose ``forward`` ``module`` overrides, or None."""
    if base_type(module) is not None:
        return None
    for cls in STRUCTURED:
        if isinstance(module, cls):
            return cls
    return None


def is_conv(module: nn.Module) -> bool:
    return base_type(module) in CONV


def is_linear(module: nn.Module) -> bool:
    return base_type(module) in LINEAR


def is_layer(module: nn.Module) -> bool:
    """A Conv2d or Linear (plain, incomplete or binary) the graph understands."""
    return base_type(module) in CONV + LINEAR


def is_batchnorm(module: nn.Module) -> bool:
    return base_type(module) in BATCHNORM
