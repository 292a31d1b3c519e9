"""The model registry: ``@register_model``, ``get_model(name, **cfg)``, ``list_models()``, and
each model's metadata (``model_info(name)``)."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..profiles import make_profile

INPUT_KINDS = ("image",)
MAX_COUNT = 65536  # the largest size (channels, units, classes, pixels) a model option may ask for
MAX_SCALE = 64.0  # the largest channel multiplier


@dataclass(frozen=True)
class ModelInfo:
    """A registered model family and what the rest of dynscale needs to know about it.

    Attributes:
        name: the registry name.
        builder: ``builder(config) -> nn.Module``.
        config_cls: the builder's config dataclass.
        model_cls: the class the builder returns.
        input_kind: what the model reads; ``"image"`` is a ``(C, H, W)`` tensor.
        scales_width: whether ``set_width`` scales its cost (it has incomplete layers).
        convolutional: whether it is a convolutional network (IDP's authors trained those with
            random cuts, and the MLP at full width).
        description: one line, from the builder's docstring.
        listed: whether :func:`list_models` lists it (a family built only from options that
            name the user's code, such as ``converted``, is not).
    """

    name: str
    builder: Callable[..., nn.Module]
    config_cls: type
    model_cls: type
    input_kind: str = "image"
    scales_width: bool = True
    convolutional: bool = True
    description: str = ""
    listed: bool = True

    def options(self) -> list[str]:
        """The config fields ``get_model`` accepts."""
        return sorted(f.name for f in dataclasses.fields(self.config_cls))

    def stages(self, **cfg) -> list[str]:
        """The names of the model's stages (``model.stages()``) for this config; the last is
        the network's own output, every other one can take an early exit."""
        with torch.device("meta"):  # no memory is allocated for the weights
            model = get_model(self.name, **cfg)
        return [name for name, _ in model.stages()]

    def exit_points(self, **cfg) -> list[str]:
        """The stages an early exit can follow (all but the last)."""
        return self.stages(**cfg)[:-1]


_MODELS: dict[str, ModelInfo] = {}


def register_model(fn: Callable[..., nn.Module] | None = None, *, input_kind: str = "image",
                   scales_width: bool = True, convolutional: bool = True, listed: bool = True):
    """Registers a builder ``fn(config: SomeConfig) -> SomeModel`` under its function name.

    Usable bare (``@register_model``) or with metadata (``@register_model(convolutional=False)``).
    Underscores in the name become hyphens; the config dataclass and the model class are read
    from the type hints.
    """
    if input_kind not in INPUT_KINDS:
        raise ValueError(f"unknown input kind {input_kind!r}; choose one of {', '.join(INPUT_KINDS)}")

    def register(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__.replace("_", "-")
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        hints = typing.get_type_hints(builder)
        if "config" not in hints or not dataclasses.is_dataclass(hints["config"]):
            raise TypeError(f"the builder of {name!r} must take `config: SomeDataclass`")
        doc = (builder.__doc__ or "").strip().splitlines()
        _MODELS[name] = ModelInfo(name, builder, hints["config"], hints.get("return", nn.Module), input_kind,
                                  scales_width, convolutional, doc[0] if doc else "", listed)
        return builder

    return register(fn) if fn is not None else register


def list_models(hidden: bool = False) -> list[str]:
    """Returns the registered model names, sorted (with ``hidden``, also the unlisted ones)."""
    return sorted(name for name, info in _MODELS.items() if info.listed or hidden)


def model_info(name: str) -> ModelInfo:
    """The metadata of a registered model.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(list_models(hidden=True))}")
    return _MODELS[name]


def model_name(model: nn.Module) -> str:
    """The registry name of a model built by :func:`get_model` or by a registered class.

    Raises:
        ValueError: if the model's class is not registered.
    """
    name = getattr(model, "model_name", None)
    if name in _MODELS:
        return name
    for info in _MODELS.values():
        if type(model) is info.model_cls:
            return info.name
    raise ValueError(f"{type(model).__name__} is not a registered model; register its builder with "
                     "@register_model to save it as a run")


def _check_value(name: str, key: str, hint: object, value: object) -> object:
    """One config value against its type hint; every count is a positive integer."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)

    def bad(expected: str) -> ValueError:
        return ValueError(f"model {name!r} option {key} takes {expected}, got {value!r}")

    def count(v: object) -> bool:
        return not isinstance(v, bool) and isinstance(v, int) and 1 <= v <= MAX_COUNT

    if hint is int:
        if not count(value):
            raise bad(f"a whole number from 1 to {MAX_COUNT}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_SCALE:
            raise bad(f"a number > 0 and <= {MAX_SCALE:g}")
        return float(value)
    if origin is list and args == (int,):
        if not isinstance(value, list) or not value or not all(count(v) for v in value):
            raise bad(f"a non-empty list of whole numbers from 1 to {MAX_COUNT}, e.g. [100,100]")
        return value
    if key == "profile":
        if not isinstance(value, (str, list, tuple)) and value is not None and not callable(value):
            raise bad("a profile name or a list of coefficients")
        if isinstance(value, (str, list, tuple)):
            try:
                make_profile(value, 4)  # names and coefficient lists are checked once here
            except (TypeError, ValueError) as e:
                raise ValueError(f"model {name!r} option profile: {e}") from None
        return value
    return value


def check_options(name: str, options: dict) -> dict:
    """Checks model options by name, type and range, before anything is built.

    Returns:
        The options, numbers converted to their field's type.

    Raises:
        ValueError: naming the model, the option and what it takes.
    """
    info = model_info(name)
    unknown = sorted(set(options) - set(info.options()))
    if unknown:
        raise ValueError(f"model {name!r} has no option {', '.join(unknown)}; its options are "
                         f"{', '.join(info.options())}")
    hints = typing.get_type_hints(info.config_cls)
    return {key: _check_value(name, key, hints.get(key), value) for key, value in options.items()}


def get_model(name: str, **cfg) -> nn.Module:
    """Builds a registered model.

    Args:
        name: a name from :func:`list_models`.
        **cfg: fields of the model's config dataclass.

    Returns:
        The model, with its config dataclass as ``model.config`` and its name as
        ``model.model_name``.

    Raises:
        ValueError: for an unknown name or an unknown config field.
    """
    info = model_info(name)
    model = info.builder(info.config_cls(**check_options(name, cfg)))
    model.model_name = name
    return model
