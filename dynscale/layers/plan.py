"""Index plans: which channels of a layer's input or output a width keeps, when a prefix is not enough.

A network with concatenations (DenseNet, Inception) or a flatten into a linear layer keeps, at
width p, the first ``ceil(p·n)`` channels of each *segment* of a tensor: of each concatenated
part, of each group of ``H·W`` features. A plan holds, per position, its segment and its offset
in it; the segments' sizes and units (grouped convolutions keep whole units) say how many of
their channels each keeps.
"""

from __future__ import annotations

import torch

from .width import check_width, kept_channels


class ChannelPlan:
    """The kept positions of one channel axis as a function of the width.

    Args:
        segment: (N,) the segment of each position, or -1 for a position always kept.
        offset: (N,) its offset inside that segment.
        sizes: the size of each segment.
        units: the unit of each segment (channels are kept in whole units; a segment kept
            whole has its size as unit).
    """

    def __init__(self, segment: torch.Tensor, offset: torch.Tensor, sizes: list[int], units: list[int]) -> None:
        self.segment = segment.long()
        self.offset = offset.long()
        self.sizes = [int(s) for s in sizes]
        self.units = [int(u) for u in units]
        self._cache: dict[float, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.segment)

    def mask(self, p: float) -> torch.Tensor:
        """(N,) bool: the positions kept at width ``p``."""
        p = check_width(p)
        kept = torch.tensor([kept_channels(s, p, u) for s, u in zip(self.sizes, self.units, strict=True)] + [0],
                            dtype=torch.long)
        always = self.segment < 0
        return always | (self.offset < kept[self.segment.clamp(min=0)])

    def indices(self, p: float) -> torch.Tensor:
        """(k,) the kept positions at width ``p``, ascending."""
        if p not in self._cache:
            self._cache[p] = torch.nonzero(self.mask(p)).flatten()
        return self._cache[p]

    def count(self, p: float) -> int:
        """How many positions width ``p`` keeps."""
        return len(self.indices(p))

    def is_prefix(self) -> bool:
        """Whether the plan keeps a prefix at every width (one segment, in order, unit 1)."""
        n = len(self.segment)
        return (len(self.sizes) == 1 and self.sizes[0] == n and self.units[0] == 1
                and bool((self.segment == 0).all()) and bool((self.offset == torch.arange(n)).all()))

    def cuts(self) -> bool:
        """Whether some width keeps fewer than all positions."""
        return any(u < s for s, u in zip(self.sizes, self.units, strict=True)) and bool((self.segment >= 0).any())

    def __repr__(self) -> str:
        return f"ChannelPlan({len(self)} positions, {len(self.sizes)} segments)"
