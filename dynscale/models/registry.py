"""The model registry: ``@register_model``, ``get_model(name, **cfg)``, ``list_models()``."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Registers a builder ``fn(config: SomeConfig) -> nn.Module`` under its function name.

    Underscores in the name become hyphens; the config dataclass is read from the type hint.
    """
    name = fn.__name__.replace("_", "-")
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def list_models() -> list[str]:
    """Returns the registered model names, sorted."""
    return sorted(_MODELS)


def get_model(name: str, **cfg) -> nn.Module:
    """Builds a registered model.

    Args:
        name: a name from :func:`list_models`.
        **cfg: fields of the model's config dataclass.

    Returns:
        The model, with its config dataclass as ``model.config``.

    Raises:
        ValueError: for an unknown name or an unknown config field.
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(list_models())}")
    builder = _MODELS[name]
    config_cls = typing.get_type_hints(builder)["config"]
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(cfg) - fields)
    if unknown:
        raise ValueError(
            f"model {name!r} has no option {', '.join(unknown)}; its options are "
            f"{', '.join(sorted(fields))}"
        )
    return builder(config_cls(**cfg))
