"""Run kinds: how each kind of run describes its model in a ``RunConfig`` and rebuilds it.

The base kind, ``width``, is a registered network (or several members of one: multiple profiles,
an independent family). Methods register their own kinds (``early-exit``, ``cascade``,
``dense``…) when ``dynscale`` is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..errors import CheckpointError
from .config import ModelSpec, RunConfig


@dataclass(frozen=True)
class RunKind:
    """A kind of run.

    Attributes:
        name: stored as ``RunConfig.kind``.
        model_type: models of this kind (the most recently registered matching kind wins, so
            a specific kind overrides the generic ``width`` kind).
        describe: ``model -> (ModelSpec or None, section)``: what the config records.
        build: ``config -> model``: the untrained skeleton that the weights are loaded into.
        summary: ``config -> [(label, text)]``: extra lines for ``dynscale info``.
    """

    name: str
    model_type: type
    describe: Callable[[nn.Module], tuple[ModelSpec | None, dict]]
    build: Callable[[RunConfig], nn.Module]
    summary: Callable[[RunConfig], list[tuple[str, str]]] | None = None


_KINDS: dict[str, RunKind] = {}


def register_kind(kind: RunKind) -> RunKind:
    """Registers a run kind (a name may be registered once)."""
    if kind.name in _KINDS:
        raise ValueError(f"run kind {kind.name!r} is already registered")
    _KINDS[kind.name] = kind
    return kind


def list_kinds() -> list[str]:
    """The registered run kinds."""
    return sorted(_KINDS)


def get_kind(name: str) -> RunKind:
    """The registered kind ``name``.

    Raises:
        CheckpointError: for an unknown kind.
    """
    if name not in _KINDS:
        raise CheckpointError(f"unknown run kind {name!r}; this dynscale knows {', '.join(list_kinds())}")
    return _KINDS[name]


def kind_of(model: nn.Module) -> RunKind:
    """The kind a model is saved as: the most recently registered kind whose type it has."""
    for kind in reversed(list(_KINDS.values())):
        if isinstance(model, kind.model_type):
            return kind
    raise ValueError(f"no run kind saves a {type(model).__name__}")


def create_model(config: RunConfig) -> nn.Module:
    """Builds the (untrained) model a run config describes, for every kind of run.

    Raises:
        CheckpointError: if the config does not describe a buildable model.
    """
    kind = get_kind(config.kind)
    try:
        return kind.build(config)
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"cannot build the model: {e}") from None


def _width_build(config: RunConfig) -> nn.Module:
    if config.model is None:
        raise ValueError("the config names no model")
    return config.model.build()


register_kind(RunKind("width", nn.Module, lambda model: (ModelSpec.of(model), {}), _width_build))
