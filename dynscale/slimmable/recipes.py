"""Universally slimmable training (SPEC §5) and the independently trained family it must beat."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..idp.recipes import MultiProfile, WidthRecipe, member_ranges
from ..layers import check_width, incomplete_batchnorms, set_width
from ..runs import register_v1_migration
from ..schema import Int, ListOf, Num, setting
from ..train import register_recipe

US_CALIBRATION = (0.25, 0.5, 0.75, 1.0)


@register_recipe
@dataclass
class Sandwich(WidthRecipe):
    """The universally slimmable recipe: each step runs the largest width, the smallest
    (``min_width``) and ``sandwich − 2`` random widths, accumulating their gradients.

    The largest width learns from the labels; narrower widths learn from its detached softmax
    (in-place distillation), or from the labels with ``distill=False``. The losses are averaged
    over the widths, so a learning rate means the same as for one network (summing them made
    VGG-16 steps about 4× too large).
    """

    name = "us"
    sandwich: int = setting(4, "widths per step (the largest, the smallest, and random ones)", Int(2))
    min_width: float = setting(0.25, "the smallest width trained", Num(0.0, 1.0, low_open=True))
    distill: bool = setting(True, "narrower widths learn from the largest's softmax (off: from the labels only)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sandwich < 2:
            raise ValueError(f"the sandwich rule needs at least 2 widths, got {self.sandwich}")
        check_width(self.min_width)

    def losses(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, rng: torch.Generator,
               phase: int) -> Iterator[torch.Tensor]:
        low, high = self.width_range(phase)
        low = max(low, self.min_width)
        widths = [high, low] + [low + (high - low) * torch.rand(1, generator=rng).item()
                                for _ in range(self.sandwich - 2)]
        scale = 1.0 / len(widths)
        set_width(model, high)
        logits = model(x)  # (B, classes)
        teacher = logits.detach().softmax(dim=1)
        yield F.cross_entropy(logits, y) * scale
        for w in widths[1:]:
            set_width(model, w)
            student = model(x)
            if self.distill:
                yield -(teacher * F.log_softmax(student, dim=1)).sum(dim=1).mean() * scale
            else:
                yield F.cross_entropy(student, y) * scale
        set_width(model, high)

    def passes(self, phase: int) -> int:
        return self.sandwich  # one backward per width: the largest, the smallest, the random ones

    def calibration_widths(self, model: nn.Module) -> list[float] | None:
        # One set of running statistics is wrong at every other width: US needs them per width.
        return sorted({self.min_width, *US_CALIBRATION}) if incomplete_batchnorms(model) else None


@register_recipe
@dataclass
class Independent(MultiProfile):
    """One separate network per width of ``widths``, each the same architecture cut to that
    width and trained at it: the family a single network has to beat."""

    name = "independent"
    widths: list[float] = setting(factory=lambda: [0.25, 0.5, 0.75, 1.0], help="the widths, including 1",
                                  check=ListOf(Num(0.0, 1.0, low_open=True), min_len=1))
    profiles: list[tuple[float, float]] = setting(factory=list, help="made from the widths",
                                                  check=ListOf(ListOf(Num(), length=2)))

    def __post_init__(self) -> None:
        self.widths = sorted(check_width(w) for w in self.widths)
        if not self.widths or self.widths[-1] != 1.0:
            raise ValueError(f"independent widths must include 1.0, got {self.widths}")
        self.profiles = member_ranges(self.widths)
        super().__post_init__()

    def members(self) -> tuple[list[tuple[float, float]], bool]:
        return self.profiles, False

    def phases(self, model: nn.Module) -> list[str]:
        return [f"width {hi:g}" for _, hi in model.ranges]

    def to_dict(self) -> dict:
        return {"name": self.name, "cut": self.cut, "profile_gradient": self.profile_gradient, "widths": self.widths}


@register_v1_migration
def _migrate_v1(doc: dict, training: dict) -> tuple[dict, dict] | None:
    """A version-1 universally slimmable run or independent family."""
    name = training.get("recipe")
    if name == "independent":
        return {"name": "independent", "widths": training.get("family_widths")}, {}
    if name == "us":
        return {"name": "us", **{k: training[k] for k in ("sandwich", "min_width", "distill") if k in training}}, {}
    return None
