"""Standard training augmentation as batched tensor operations (no torchvision): a random crop
with zero padding and a horizontal flip, per example, drawn from the training loader's
generator (so a run is reproducible by its seed, and a resumed run draws what it would have)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augment:
    """What the training loader does to each batch.

    Attributes:
        padding: zero padding on each side before a random crop back to the image's size
            (0: no crop).
        flip: flip each image horizontally with probability 0.5.
        fill: the padding's value per channel (a normalised dataset pads with the value a raw
            0 pixel takes); None: 0.
    """

    padding: int = 4
    flip: bool = True
    fill: tuple[float, ...] | None = None

    def __call__(self, x: torch.Tensor, generator: torch.Generator,
                 share: tuple[int, int, int] | None = None) -> torch.Tensor:  # (B, C, H, W)
        """Augments ``x``; with ``share = (rank, processes, total)`` ``x`` holds the examples
        ``rank::processes`` of a global batch of ``total``, and gets their draws from the whole
        batch's (so the augmentation does not depend on the process count)."""
        b, _, h, w = x.shape
        n, pick = (share[2], slice(share[0], None, share[1])) if share else (b, slice(None))
        if self.padding:
            p = self.padding
            padded = F.pad(x, (p, p, p, p))  # (B, C, H + 2p, W + 2p)
            if self.fill is not None:
                border = torch.ones_like(padded[:1, :1]).bool()  # (1, 1, H + 2p, W + 2p)
                border[..., p:p + h, p:p + w] = False
                fill = torch.tensor(self.fill, dtype=x.dtype)[None, :, None, None]
                padded = torch.where(border, fill, padded)
            dy = torch.randint(0, 2 * p + 1, (n,), generator=generator)[pick]
            dx = torch.randint(0, 2 * p + 1, (n,), generator=generator)[pick]
            rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # (B, 1, H, 1)
            cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # (B, 1, 1, W)
            batch = torch.arange(b)[:, None, None, None]
            channel = torch.arange(x.shape[1])[None, :, None, None]
            x = padded[batch, channel, rows, cols]  # (B, C, H, W)
        if self.flip:
            flipped = torch.rand(n, generator=generator)[pick] < 0.5
            x = torch.where(flipped[:, None, None, None], x.flip(3), x)
        return x


class AugmentedLoader:
    """A training loader whose batches pass through ``augment`` (same length and order).

    Each batch draws one seed from ``generator`` and augments with a generator of that seed: the
    shared generator advances by one draw per batch whatever the batch's size. Where each
    process holds a share of every batch (``batches``: a ``ShardedBatchSampler``), each takes
    its examples' part of the whole batch's draws, so one process and N draw alike.
    """

    def __init__(self, loader, augment: Augment, generator: torch.Generator, batches=None) -> None:
        self.loader, self.augment, self.generator, self.batches = loader, augment, generator, batches

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
            share = self.batches.last_share if self.batches is not None else None  # of the batch just read
            yield self.augment(x, torch.Generator().manual_seed(seed), share), y
