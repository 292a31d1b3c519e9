"""Multiple profiles (SPEC §1): one network covering width ranges, each with its own profile.

Every profile is a *member* network with its own first and last layer and its own batch-norm;
the middle incomplete layers are shared by all members (``shared=False`` keeps the members
wholly separate: an independently trained family). At inference the profile is chosen from the
requested width. Training them incrementally is the ``multi-profile`` recipe (``dynscale.idp``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from ..layers import IncompleteLayer, WidthScaled, check_width
from .common import replace_module
from .registry import get_model


def parse_profile_ranges(text: str) -> list[tuple[float, float]]:
    """Parses ``"0-0.3,0.3-1.0"`` into contiguous ranges covering (0, 1].

    Raises:
        ValueError: unless the ranges start at 0, end at 1, and each starts where the last ended.
    """
    ranges = []
    for part in text.split(","):
        low, sep, high = part.strip().partition("-")
        try:
            ranges.append((float(low), float(high)))
        except ValueError:
            raise ValueError(f"profile range {part.strip()!r} is not LOW-HIGH, e.g. 0-0.3") from None
        if not sep:
            raise ValueError(f"profile range {part.strip()!r} is not LOW-HIGH, e.g. 0-0.3")
    check_profile_ranges(ranges)
    return ranges


def check_profile_ranges(ranges: list[tuple[float, float]]) -> None:
    """Checks ranges are increasing, contiguous, and cover (0, 1]."""
    if not ranges:
        raise ValueError("give at least one profile range, e.g. 0-0.3,0.3-1.0")
    if ranges[0][0] != 0 or ranges[-1][1] != 1:
        raise ValueError(f"profile ranges must start at 0 and end at 1, got {ranges}")
    for (a, b), nxt in zip(ranges, ranges[1:] + [None], strict=True):
        if not a < b:
            raise ValueError(f"profile range {a}-{b} is empty; each range must be LOW < HIGH")
        if nxt is not None and nxt[0] != b:
            raise ValueError(f"profile ranges must be contiguous: {a}-{b} is followed by {nxt[0]}-{nxt[1]}")


class MultiProfileModel(WidthScaled):
    """Members sharing their middle incomplete layers; the width picks the member.

    Args:
        members: one network per profile, of the same architecture.
        ranges: the (low, high] width range of each profile, contiguous over (0, 1].
        shared: share the middle layers (multiple profiles); False keeps the members wholly
            separate (an independently trained family, one network per width).
    """

    def __init__(self, members: list[nn.Module], ranges: list[tuple[float, float]],
                 shared: bool = True) -> None:
        super().__init__()
        check_profile_ranges(ranges)
        if len(members) != len(ranges):
            raise ValueError(f"{len(members)} members for {len(ranges)} profile ranges")
        self.members = nn.ModuleList(members)
        self.ranges = [tuple(r) for r in ranges]
        self.config = members[0].config
        self.model_name = getattr(members[0], "model_name", None)
        self.forced_profile: int | None = None
        self.shared = shared
        names = [n for n, m in members[0].named_modules() if isinstance(m, IncompleteLayer)]
        self.shared_names = names[1:-1] if shared else []  # the first and last layer stay private
        for member in members[1:]:
            for name in self.shared_names:
                replace_module(member, name, members[0].get_submodule(name))

    def profile_index(self, p: float) -> int:
        """The profile whose range holds width ``p``."""
        p = check_width(p)
        return next(i for i, (_, high) in enumerate(self.ranges) if p <= high + 1e-9)

    @property
    def active_profile(self) -> int:
        return self.forced_profile if self.forced_profile is not None else self.profile_index(self.in_width)

    def active_member(self) -> nn.Module:
        """The member that runs at the current width (or the forced one)."""
        return self.members[self.active_profile]

    @contextlib.contextmanager
    def use_profile(self, index: int) -> Iterator[nn.Module]:
        """Forces profile ``index`` whatever the width, inside the block."""
        if not 0 <= index < len(self.ranges):
            raise ValueError(f"profile {index} does not exist; this model has {len(self.ranges)}")
        previous, self.forced_profile = self.forced_profile, index
        try:
            yield self
        finally:
            self.forced_profile = previous

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.active_member()(x)

    def frozen_blocks(self, index: int) -> dict[str, tuple[int, int]]:
        """For training profile ``index``: per shared layer, the (outputs, inputs) block that
        earlier profiles own, i.e. what that layer keeps at the previous profile's top width."""
        if index == 0:
            return {}
        top = self.ranges[index - 1][1]
        blocks = {}
        for name in self.shared_names:
            layer = self.members[0].get_submodule(name)
            saved = (layer.in_width, layer.out_width)
            layer.in_width = layer.out_width = top
            blocks[name] = layer.kept()
            layer.in_width, layer.out_width = saved
        return blocks


def build_multi_profile(model_name: str, ranges: list[tuple[float, float]], shared: bool = True,
                        **cfg) -> MultiProfileModel:
    """Builds a registered model once per range; with ``shared`` the middle layers are shared."""
    return MultiProfileModel([get_model(model_name, **cfg) for _ in ranges], ranges, shared=shared)
