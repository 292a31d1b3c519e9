"""Recipes: the pluggable part of training. The one :class:`~dynscale.train.Trainer` runs the
loop; a recipe says what one step's loss is (over one or several widths or exits), which
module it trains, in how many phases, and what to measure at the end.

Methods register their recipes with :func:`register_recipe` (``dynscale.idp``: ``idp``,
``multi-profile``; ``dynscale.slimmable``: ``us``, ``independent``; ``dynscale.adaptive``:
``early-exit``, ``frozen-exits``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import ClassVar

import torch
from torch import nn

from ..data import Dataset
from ..eval.metrics import accuracy
from ..registry import Registry
from ..schema import SchemaError, check_fields


class Recipe:
    """Base class of recipes; subclasses are dataclasses whose fields are their settings."""

    name: ClassVar[str] = ""
    # Whether a step may leave some trained parameters without a gradient; DDP then has to
    # look for them after every backward (``find_unused_parameters``), which costs a graph walk.
    unused_parameters: ClassVar[bool] = False

    def phases(self, model: nn.Module) -> list[str]:
        """Names of the phases trained one after another (each with a fresh optimizer)."""
        return ["train"]

    def phase_epochs(self, phase: int) -> int | None:
        """Epochs of ``phase`` (None: the ``TrainConfig``'s)."""
        return None

    def trainable(self, model: nn.Module, phase: int) -> nn.Module:
        """The module ``phase`` trains: the losses run on it (a multiple-profile phase trains
        one member)."""
        return model

    def parameters(self, model: nn.Module, phase: int) -> Iterator[nn.Parameter]:
        """The parameters the optimizer of ``phase`` steps (all of :meth:`trainable`'s)."""
        return self.trainable(model, phase).parameters()

    def begin(self, model: nn.Module, phase: int) -> None:
        """Prepares ``phase`` (widths, gradient modes, frozen parts)."""

    def end(self, model: nn.Module, phase: int) -> None:
        """Undoes what :meth:`begin` changed that must not outlive training."""

    def train_mode(self, model: nn.Module, phase: int) -> None:
        """Sets training/eval modes at the start of every epoch."""
        model.train()

    def losses(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, rng: torch.Generator,
               phase: int) -> Iterator[torch.Tensor]:
        """The losses of one step on a batch ``(x, y)``.

        The trainer back-propagates each yielded loss before the generator resumes, so a step
        over several widths keeps one graph alive at a time; their gradients add up.

        Args:
            model: the module that :meth:`trainable` returned.
            x, y: the batch ``(B, C, H, W)``, ``(B,)``.
            rng: the recipe's random source (random cuts, random widths), saved for resume.
            phase: the phase index.
        """
        raise NotImplementedError

    def check(self, model: nn.Module) -> None:
        """Refuses, before any training, a model this recipe cannot train (ValueError naming
        the setting and why)."""

    def prepare(self, model: nn.Module) -> None:
        """Adds to a freshly built model what this recipe trains beyond it (e.g. a private
        batch-norm per width), before training starts or resumes."""

    def passes(self, phase: int) -> int:
        """How many losses :meth:`losses` yields per step (backward passes): in several
        processes every backward but the last accumulates without all-reducing."""
        return 1

    def after_step(self, model: nn.Module, phase: int) -> None:
        """Runs after every optimizer step (e.g. restoring frozen weight blocks)."""

    def evaluate(self, model: nn.Module, data: Dataset, phase: int) -> dict:
        """Metrics at the end of ``phase``; the test accuracy by default."""
        return {"test_accuracy": accuracy(self.trainable(model, phase), data.test_x, data.test_y)}

    def members(self) -> tuple[list[tuple[float, float]], bool] | None:
        """Width ranges of the members to build, and whether they share layers; None for one
        network."""
        return None

    def calibration_widths(self, model: nn.Module) -> list[float] | None:
        """Widths whose batch-norm statistics to store after training when the user asks for
        none (the slimmable recipe needs them)."""
        return None

    def to_dict(self) -> dict:
        """``{"name": ..., **settings}``, as stored in a run's config."""
        return {"name": self.name, **(dataclasses.asdict(self) if dataclasses.is_dataclass(self) else {})}


_RECIPES: Registry[type[Recipe]] = Registry("recipe")


def register_recipe(cls: type[Recipe]) -> type[Recipe]:
    """Registers a recipe class under its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    return _RECIPES.register(cls.name, cls)


def list_recipes() -> list[str]:
    """The registered recipe names."""
    return sorted(_RECIPES.names())


def get_recipe(name: str, **settings) -> Recipe:
    """Builds a registered recipe.

    Raises:
        ValueError: for an unknown recipe or setting.
    """
    cls = recipe_class(name)
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    unknown = sorted(set(settings) - fields)
    if unknown:
        raise ValueError(f"recipe {name!r} has no setting {', '.join(unknown)}; its settings are "
                         f"{', '.join(sorted(fields)) or 'none'}")
    return cls(**settings)


def recipe_class(name: str) -> type[Recipe]:
    """The registered recipe class ``name``.

    Raises:
        ValueError: for an unknown recipe.
    """
    return _RECIPES.get(name)


def unregister_recipe(name: str) -> None:
    """Removes a registered recipe (a plugin's test undoing its registration)."""
    _RECIPES.unregister(name)


def check_recipe_dict(values: dict, where: str = "recipe") -> None:
    """Checks a recipe as a run's config records it: its name, each setting's type (the
    dataclass's fields) and range (the recipe's own checks, one setting at a time so the
    message names it), then all settings together.

    Raises:
        SchemaError: naming the setting.
    """
    if not isinstance(values, dict) or not isinstance(values.get("name"), str):
        raise SchemaError(f"{where}.name is missing")
    try:
        cls = recipe_class(values["name"])
    except ValueError as e:
        raise SchemaError(f"{where}.name: {e}") from None
    settings = {k: v for k, v in values.items() if k != "name"}
    check_fields(cls, settings, where, partial=True)
    known = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    for key in sorted(set(settings) - known):
        raise SchemaError(f"{where}.{key} is not a setting of the {cls.name} recipe")
    for key, value in settings.items():
        try:
            cls(**{key: value})
        except (ValueError, TypeError) as e:
            raise SchemaError(f"{where}.{key}: {e}") from None
    try:
        cls(**settings)
    except (ValueError, TypeError) as e:
        raise SchemaError(f"{where}: {e}") from None


def recipe_from_dict(values: dict) -> Recipe:
    """The recipe a run's config records (:meth:`Recipe.to_dict`)."""
    values = dict(values)
    return get_recipe(values.pop("name"), **values)
