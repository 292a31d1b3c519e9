"""Universally slimmable training (SPEC §5) and the independently trained family it must beat."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..idp.recipes import MultiProfile, WidthRecipe, member_ranges
from ..layers import check_width, incomplete_batchnorms, set_width
from ..runs import register_v1_migration
from ..schema import Int, ListOf, Num, Str, setting
from ..train import register_recipe

US_CALIBRATION = (0.25, 0.5, 0.75, 1.0)


SAMPLINGS = ("uniform", "macs")
BATCHNORMS = ("shared", "switchable")


@register_recipe
@dataclass
class Sandwich(WidthRecipe):
    """The universally slimmable recipe: each step runs the largest width, the smallest
    (``min_width``) and ``sandwich − 2`` random widths, accumulating their gradients.

    The largest width learns from the labels; narrower widths learn from its detached softmax
    (in-place distillation), or from the labels with ``distill=False``. The losses are averaged
    over the widths, so a learning rate means the same as for one network (summing them made
    VGG-16 steps about 4× too large).

    Ablation options (``docs/RESULTS.md``, "Closing the gap"): the distillation's weight and
    temperature, how the random widths are drawn, label smoothing on the largest width only
    (BigNAS), and input-resolution mixing for the narrower widths (MutualNet).
    """

    name = "us"
    sandwich: int = setting(4, "widths per step (the largest, the smallest, and random ones)", Int(2))
    min_width: float = setting(0.25, "the smallest width trained", Num(0.0, 1.0, low_open=True))
    distill: bool = setting(True, "narrower widths learn from the largest's softmax (off: from the labels only)")
    # Half distillation, half labels: the best worst-case gap to the independent family over both
    # networks of the ablation (3 seeds: VGG-16 -0.60, the MLP -0.69 points; full distillation,
    # the US-Nets paper's: -1.01 and -1.45), docs/RESULTS.md, "Closing the gap".
    distill_weight: float = setting(0.5, "narrower widths' loss: this share of distillation, the rest from the labels",
                                    Num(0.0, 1.0))
    temperature: float = setting(1.0, "softmax temperature of the in-place distillation (its loss scaled by T²)",
                                 Num(0.0, low_open=True))
    # By MACs: as good on the MLP; on VGG-16 over 3 seeds better at every width with full
    # distillation, and with half distillation the better worst width (docs/RESULTS.md, "Closing
    # the gap"); uniform in width is the US-Nets paper's.
    sampling: str = setting("macs", "random widths drawn uniform in MACs (width²: the wide ones more often), or "
                            "uniform in width", Str(SAMPLINGS))
    label_smoothing: float = setting(0.0, "label smoothing of the largest width's loss only (BigNAS)",
                                     Num(0.0, 1.0, high_open=True))
    resolutions: list[int] = setting(factory=list, help="narrower widths see the input resized to one of these sizes, "
                                     "drawn per width (MutualNet; needs global pooling)", check=ListOf(Int(4)))
    batchnorm: str = setting("shared", "shared: one BN scale and shift, statistics measured per width after training "
                             "(US-Nets); switchable: a private scale and shift per width of 0.25, 0.5, 0.75, 1 and "
                             "min_width, which are then the only widths trained (slimmable networks)",
                             Str(BATCHNORMS))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sandwich < 2:
            raise ValueError(f"the sandwich rule needs at least 2 widths, got {self.sandwich}")
        check_width(self.min_width)
        if not 0.0 <= self.distill_weight <= 1.0:
            raise ValueError(f"the distillation weight is a share in [0, 1], got {self.distill_weight}")
        if not self.temperature > 0:
            raise ValueError(f"the distillation temperature must be > 0, got {self.temperature}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"random widths are drawn {' or '.join(SAMPLINGS)}, not {self.sampling!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label smoothing is in [0, 1), got {self.label_smoothing}")
        self.resolutions = [int(r) for r in self.resolutions]
        if self.batchnorm not in BATCHNORMS:
            raise ValueError(f"batchnorm is {' or '.join(BATCHNORMS)}, not {self.batchnorm!r}")
        # Under DDP only a step's last backward pass all-reduces, and it runs one width: the other
        # widths' private batch-norm has no gradient in it, so DDP has to look for unused ones.
        self.unused_parameters = self.batchnorm == "switchable"

    def check(self, model: nn.Module) -> None:
        if self.batchnorm == "switchable" and not incomplete_batchnorms(model):
            raise ValueError("switchable batch-norm (batchnorm switchable) needs a model with batch-norm (vgg16, "
                             "mobilenet, resnet); this one has none")
        if self.resolutions and not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in model.modules()):
            raise ValueError("input-resolution mixing (resolutions) needs a model with global pooling, which takes any "
                             "input size (vgg16, mobilenet, resnet); this one takes one size only")

    def prepare(self, model: nn.Module) -> None:
        if self.batchnorm != "switchable":
            return
        norms = incomplete_batchnorms(model)
        for bn in norms:
            bn.make_switchable(self.switch_widths())
            # The shared scale and shift then serve untrained widths only: frozen, so that a
            # step leaves no trainable parameter without a gradient.
            for shared in (bn.weight, bn.bias):
                if shared is not None:
                    shared.requires_grad_(False)

    def switch_widths(self) -> list[float]:
        """The widths with a private batch-norm (``batchnorm="switchable"``): ``min_width`` and
        the calibration widths above it."""
        return sorted({self.min_width, *(w for w in US_CALIBRATION if w >= self.min_width)})

    def passes(self, phase: int) -> int:
        return self.sandwich  # one backward per width: the largest, the smallest, the random ones

    def _draw(self, low: float, high: float, rng: torch.Generator) -> float:
        u = torch.rand(1, generator=rng).item()
        if self.sampling == "macs":  # uniform in width², about the MACs: the wider half drawn more often
            return math.sqrt(low**2 + (high**2 - low**2) * u)
        return low + (high - low) * u

    def _resized(self, x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        if not self.resolutions or x.dim() != 4:
            return x
        size = self.resolutions[int(torch.randint(len(self.resolutions), (1,), generator=rng))]
        if size == x.shape[-1]:
            return x
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)

    def _student_loss(self, student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not self.distill or self.distill_weight == 0:
            return F.cross_entropy(student, y)
        t = self.temperature
        kd = -(teacher * F.log_softmax(student / t if t != 1 else student, dim=1)).sum(dim=1).mean()
        kd = kd * t * t if t != 1 else kd
        if self.distill_weight == 1:
            return kd
        return self.distill_weight * kd + (1 - self.distill_weight) * F.cross_entropy(student, y)

    def losses(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, rng: torch.Generator,
               phase: int) -> Iterator[torch.Tensor]:
        low, high = self.width_range(phase)
        low = max(low, self.min_width)
        if self.batchnorm == "switchable":  # the private widths only: the random ones drawn among them
            inner = [w for w in self.switch_widths() if low < w < high]
            draws = torch.randperm(len(inner), generator=rng).tolist() if inner else []
            picks = [inner[draws[i % len(draws)]] for i in range(self.sandwich - 2)] if inner else []
            widths = [high, low] + (picks or [self._draw(low, high, rng) for _ in range(self.sandwich - 2)])
        else:
            widths = [high, low] + [self._draw(low, high, rng) for _ in range(self.sandwich - 2)]
        scale = 1.0 / len(widths)
        set_width(model, high)
        logits = model(x)  # (B, classes)
        t = self.temperature
        teacher = (logits.detach() / t if t != 1 else logits.detach()).softmax(dim=1)
        yield F.cross_entropy(logits, y, label_smoothing=self.label_smoothing) * scale
        for w in widths[1:]:
            set_width(model, w)
            yield self._student_loss(model(self._resized(x, rng)), teacher, y) * scale
        set_width(model, high)

    def calibration_widths(self, model: nn.Module) -> list[float] | None:
        # One set of running statistics is wrong at every other width: US needs them per width.
        return self.switch_widths() if incomplete_batchnorms(model) else None


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
