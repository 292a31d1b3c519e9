"""Run kinds: how each kind of run describes its model in a ``RunConfig``, rebuilds it, and
checks what its config holds.

The base kind, ``width``, is a registered network (or several members of one: multiple profiles,
an independent family). Methods register their own kinds (``early-exit``, ``cascade``,
``dense``…) when ``dynscale`` is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..errors import CheckpointError
from ..registry import Registry
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
        noun: how messages call a run of this kind ("an early-exit run").
        made_by: the command that makes one ("`dynscale adaptive train`").
        used_by: the command that evaluates one ("`dynscale adaptive sweep`").
        section: a dataclass whose fields are the schema of the config's ``section``
            (``dynscale.schema.check_fields``), checked on load.
        check: ``config -> None``: the checks across fields and sections (raises ``ValueError``
            naming the field), run on load after the schemas.
        networks: ``config -> [model spec dicts]``: the networks whose input shape and classes
            must fit the data (default: the config's one model).
        needs_model: the config must name its model.
    """

    name: str
    model_type: type
    describe: Callable[[nn.Module], tuple[ModelSpec | None, dict]]
    build: Callable[[RunConfig], nn.Module]
    summary: Callable[[RunConfig], list[tuple[str, str]]] | None = None
    noun: str = ""
    made_by: str = ""
    used_by: str = ""
    section: type | None = None
    check: Callable[[RunConfig], None] | None = None
    networks: Callable[[RunConfig], list[dict]] | None = None
    needs_model: bool = True

    @property
    def called(self) -> str:
        """The noun of messages: ``noun`` or "a NAME run"."""
        return self.noun or f"a {self.name} run"

    def model_specs(self, config: RunConfig) -> list[dict]:
        """The ``{"name", "config"}`` of each network the run holds."""
        if self.networks is not None:
            return self.networks(config)
        return [config.model.to_json()] if config.model else []


_KINDS: Registry[RunKind] = Registry("run kind", CheckpointError, "this dynscale knows")


def register_kind(kind: RunKind) -> RunKind:
    """Registers a run kind (a name may be registered once)."""
    return _KINDS.register(kind.name, kind)


def unregister_kind(name: str) -> None:
    """Removes a registered kind (a plugin's test undoing its registration)."""
    _KINDS.unregister(name)


def list_kinds() -> list[str]:
    """The registered run kinds."""
    return sorted(_KINDS.names())


def get_kind(name: str) -> RunKind:
    """The registered kind ``name`` (``CheckpointError`` for an unknown one)."""
    return _KINDS.get(name)


def kind_of(model: nn.Module) -> RunKind:
    """The kind a model is saved as: the most recently registered kind whose type it has."""
    for kind in reversed(list(_KINDS)):
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


WIDTH = "width"
register_kind(RunKind(WIDTH, nn.Module, lambda model: (ModelSpec.of(model), {}), _width_build,
                      noun="a width run", made_by="`dynscale train`", used_by="`dynscale sweep`"))
