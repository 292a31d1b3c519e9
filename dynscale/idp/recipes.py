"""IDP's training recipes (SPEC §1): the profile applied at full width (the authors' MLP
recipe) or random per-layer cuts (their convolutional recipe), and multiple profiles trained
incrementally."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Dataset
from ..eval import accuracy
from ..layers import (
    PROFILE_GRADIENTS,
    check_width,
    incomplete_layers,
    set_profile_gradient,
    set_width,
    width_scaled,
)
from ..models.multiprofile import MultiProfileModel, check_profile_ranges
from ..schema import ListOf, Num, Str, setting
from ..train import Recipe, register_recipe

CUTS = ("full", "random")


def draw_cut(generator: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    """The authors' random cut: p = 1 − d, d ~ Exponential(scale 0.1), redrawn until d < 1.

    With a profile range (low, high] (multiple profiles) p is mapped to low + (high − low)·p.

    Args:
        generator: the random source (seeded for reproducible training).
        low, high: the range of widths to draw from.

    Returns:
        A width in (low, high].
    """
    while True:
        d = torch.empty(1).exponential_(10.0, generator=generator).item()  # rate 10 = scale 0.1
        if d < 1.0:
            return low + (high - low) * (1.0 - d)


def apply_random_cuts(model: nn.Module, generator: torch.Generator, low: float = 0.0, high: float = 1.0) -> None:
    """Draws a fresh input width for every incomplete layer whose input is cut.

    Every layer computes all its outputs (out width 1) so that each next layer can take its
    own draw of the prefix; this is how the authors' masked implementation behaves.
    """
    for m in width_scaled(model):
        m.in_width, m.out_width = 1.0, 1.0
    for layer in incomplete_layers(model):
        if layer.cut_input:
            layer.in_width = draw_cut(generator, low, high)


@dataclass
class WidthRecipe(Recipe):
    """What the width recipes share: training at the top of a width range with a profile
    gradient mode, and the test accuracy there at the end."""

    profile_gradient: str = setting("chain", "straight-through: the authors' weight gradient without the profile",
                                    Str(PROFILE_GRADIENTS))

    def __post_init__(self) -> None:
        if self.profile_gradient not in PROFILE_GRADIENTS:
            raise ValueError(f"unknown profile gradient {self.profile_gradient!r}; "
                             f"choose {' or '.join(PROFILE_GRADIENTS)}")

    def width_range(self, phase: int) -> tuple[float, float]:
        return (0.0, 1.0)

    def begin(self, model: nn.Module, phase: int) -> None:
        module = self.trainable(model, phase)
        set_profile_gradient(module, self.profile_gradient)
        set_width(module, self.width_range(phase)[1])

    def end(self, model: nn.Module, phase: int) -> None:
        module = self.trainable(model, phase)
        set_width(module, self.width_range(phase)[1])
        set_profile_gradient(module, "chain")

    def evaluate(self, model: nn.Module, data: Dataset, phase: int) -> dict:
        return {"test_accuracy": accuracy(self.trainable(model, phase), data.test_x, data.test_y)}


@register_recipe
@dataclass
class IDP(WidthRecipe):
    """IDP training: ``cut="full"`` trains at the top width with the profile applied (the
    authors' MLP recipe); ``cut="random"`` draws every incomplete layer's width each step (their
    convolutional recipe)."""

    name = "idp"
    cut: str = setting("full", "full: train at full width (MLP recipe); random: per-layer random cuts (conv recipe)",
                       Str(CUTS))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cut not in CUTS:
            raise ValueError(f"unknown cut {self.cut!r}; choose one of {', '.join(CUTS)}")

    def losses(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, rng: torch.Generator,
               phase: int) -> Iterator[torch.Tensor]:
        if self.cut == "random":
            apply_random_cuts(model, rng, *self.width_range(phase))
        yield F.cross_entropy(model(x), y)


@contextlib.contextmanager
def freeze_blocks(model: MultiProfileModel, index: int) -> Iterator:
    """Masks the gradient of earlier profiles' weight blocks and yields a function that
    restores their values (call it after every optimizer step: weight decay and momentum
    would otherwise move them)."""
    hooks, snapshots = [], []
    for name, (k_out, k_in) in model.frozen_blocks(index).items():
        layer = model.members[0].get_submodule(name)
        grouped = getattr(layer, "groups", 1) > 1
        block = (slice(0, k_out),) if grouped else (slice(0, k_out), slice(0, k_in))
        mask = torch.ones_like(layer.weight)
        mask[block] = 0
        hooks.append(layer.weight.register_hook(lambda g, m=mask: g * m))
        snapshots.append((layer.weight, block, layer.weight.detach()[block].clone()))
        if layer.bias is not None:
            bias_mask = torch.ones_like(layer.bias)
            bias_mask[:k_out] = 0
            hooks.append(layer.bias.register_hook(lambda g, m=bias_mask: g * m))
            snapshots.append((layer.bias, (slice(0, k_out),), layer.bias.detach()[:k_out].clone()))

    @torch.no_grad()
    def restore() -> None:
        for tensor, block, value in snapshots:
            tensor[block] = value

    try:
        yield restore
    finally:
        for hook in hooks:
            hook.remove()


@register_recipe
@dataclass
class MultiProfile(IDP):
    """Multiple profiles, trained one after another (SPEC §1): profile i trains on its width
    range (random cuts are mapped into it) while every earlier profile's block of each shared
    layer has its gradient masked and its values restored after each step, so earlier
    profiles' outputs stay bit-identical."""

    name = "multi-profile"
    profiles: list[tuple[float, float]] = setting(
        factory=lambda: [(0.0, 0.3), (0.3, 1.0)], help="the profiles' width ranges, trained one after another",
        check=ListOf(ListOf(Num(0.0, 1.0), length=2), min_len=1))

    def __post_init__(self) -> None:
        super().__post_init__()
        self.profiles = [tuple(float(v) for v in r) for r in self.profiles]
        check_profile_ranges(self.profiles)
        self._frozen: contextlib.ExitStack | None = None
        self._restore = None

    def members(self) -> tuple[list[tuple[float, float]], bool]:
        return self.profiles, True

    def phases(self, model: nn.Module) -> list[str]:
        return [f"profile {i + 1} ({lo:g}-{hi:g})" for i, (lo, hi) in enumerate(model.ranges)]

    def width_range(self, phase: int) -> tuple[float, float]:
        return self.members()[0][phase]

    def trainable(self, model: nn.Module, phase: int) -> nn.Module:
        return model.members[phase]

    def begin(self, model: nn.Module, phase: int) -> None:
        self._frozen = contextlib.ExitStack()
        self._restore = self._frozen.enter_context(freeze_blocks(model, phase))
        super().begin(model, phase)

    def after_step(self, model: nn.Module, phase: int) -> None:
        self._restore()

    def end(self, model: nn.Module, phase: int) -> None:
        super().end(model, phase)
        self._frozen.close()

    def evaluate(self, model: nn.Module, data: Dataset, phase: int) -> dict:
        return {"range": list(self.width_range(phase)), **super().evaluate(model, data, phase)}

    def to_dict(self) -> dict:
        return {"name": self.name, "cut": self.cut, "profile_gradient": self.profile_gradient,
                "profiles": [list(r) for r in self.profiles]}


def member_ranges(widths: list[float]) -> list[tuple[float, float]]:
    """The width range each member of a family serves: (previous width, its width]."""
    widths = sorted(check_width(w) for w in widths)
    return list(zip([0.0, *widths[:-1]], widths, strict=True))
