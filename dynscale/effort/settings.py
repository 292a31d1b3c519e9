"""Effort knob settings per layer (SPEC §2), validated, and their JSON form."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

KNOBS = ("spet", "sdss", "sfma")
MAX_STRIDE = 4  # SDSS: a coarser grid interpolates across more than the 3×3 windows it stands for
MAX_TILE = 8


def _finite_non_negative(value: float, what: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {value}")
    return value


@dataclass(frozen=True)
class SPET:
    """Saturation prediction and early termination, for layers followed by ReLU, at the
    granularity of whole filters (a convolution) or neurons (a linear layer).

    The partial sum over the first ``fraction`` of the input channels (ordered offline by
    significance) is computed for every filter; a filter whose partial map stays below
    ``threshold`` everywhere is predicted zero for that example (its output map is 0), and the
    rest of the sum is computed only for the others.
    With ``fraction=1`` the whole sum is the partial sum: nothing is skipped and the threshold
    is not applied (``fraction=1, threshold=0`` is ReLU itself).
    """

    fraction: float = 1.0
    threshold: float = 0.0

    def __post_init__(self) -> None:
        fraction = float(self.fraction)
        if not (math.isfinite(fraction) and 0 < fraction <= 1):
            raise ValueError(f"SPET fraction must be in (0, 1], got {fraction}")
        object.__setattr__(self, "fraction", fraction)
        object.__setattr__(self, "threshold", _finite_non_negative(self.threshold, "SPET threshold"))

    @property
    def active(self) -> bool:
        return self.fraction < 1


@dataclass(frozen=True)
class SDSS:
    """Significance-driven selective sampling, as perforation: the output is computed exactly
    on a ``stride``-spaced grid of positions (one dense strided convolution); an output
    position between grid positions is filled by bilinear interpolation when the four grid
    positions around it are, over every output channel, all below ``insignificant`` in
    magnitude or all within ``spread`` of each other (per channel), and computed exactly
    otherwise. ``stride=1`` or both thresholds 0 does nothing.
    """

    stride: int = 2
    insignificant: float = 0.0
    spread: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.stride, bool) or int(self.stride) != self.stride or not 1 <= self.stride <= MAX_STRIDE:
            raise ValueError(f"SDSS stride must be a whole number from 1 to {MAX_STRIDE}, got {self.stride}")
        object.__setattr__(self, "stride", int(self.stride))
        object.__setattr__(self, "insignificant", _finite_non_negative(self.insignificant, "SDSS threshold"))
        object.__setattr__(self, "spread", _finite_non_negative(self.spread, "SDSS spread threshold"))

    @property
    def active(self) -> bool:
        return self.stride > 1 and (self.insignificant > 0 or self.spread > 0)


@dataclass(frozen=True)
class SFMA:
    """Similarity-based feature-map approximation on uniform tiles: the output is cut into
    ``tile``×``tile`` tiles; where a tile's input region is uniform enough that reading every
    window as its mean changes no output of the tile by more than ``threshold`` (a bound from
    the region's per-channel spread and the filters' norms), the whole tile gets
    mean(x)·Σw, one product per input channel and filter; other tiles are computed exactly.
    ``threshold=0`` does nothing.
    """

    threshold: float = 0.0
    tile: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "threshold", _finite_non_negative(self.threshold, "SFMA threshold"))
        if isinstance(self.tile, bool) or int(self.tile) != self.tile or not 2 <= self.tile <= MAX_TILE:
            raise ValueError(f"SFMA tile must be a whole number from 2 to {MAX_TILE}, got {self.tile}")
        object.__setattr__(self, "tile", int(self.tile))

    @property
    def active(self) -> bool:
        return self.threshold > 0


@dataclass(frozen=True)
class LayerEffort:
    """The knobs of one layer, of which one at most may act: each runs the layer's whole
    computation its own way (a perforated grid, tiles, a split over the input channels), and
    they do not compose on one layer.

    Raises:
        ValueError: when more than one knob acts.
    """

    spet: SPET = field(default_factory=SPET)
    sdss: SDSS = field(default_factory=SDSS)
    sfma: SFMA = field(default_factory=SFMA)

    def __post_init__(self) -> None:
        acting = [k for k in KNOBS if getattr(self, k).active]
        if len(acting) > 1:
            raise ValueError(f"sets {' and '.join(acting)}, but a layer takes one knob at a time (settings tuned "
                             "before dynscale ran the knobs on dense kernels: tune them again with "
                             "`dynscale effort tune`)")

    @property
    def active(self) -> bool:
        return self.knob is not None

    @property
    def knob(self) -> str | None:
        """The knob that acts, if one does."""
        return next((k for k in KNOBS if getattr(self, k).active), None)

    def to_json(self) -> dict:
        return {k: asdict(getattr(self, k)) for k in KNOBS if getattr(self, k).active}

    @classmethod
    def from_json(cls, doc: dict, where: str = "a layer") -> LayerEffort:
        if not isinstance(doc, dict):
            raise ValueError(f"the settings of {where} must be an object, got {doc!r}")
        unknown = sorted(set(doc) - set(KNOBS))
        if unknown:
            raise ValueError(f"{where} has unknown knob {', '.join(unknown)}; the knobs are {', '.join(KNOBS)}")
        try:
            return cls(SPET(**doc.get("spet", {})), SDSS(**doc.get("sdss", {})), SFMA(**doc.get("sfma", {})))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where} {e}" if str(e).startswith("sets ") else f"{where}: {e}") from None


@dataclass(frozen=True)
class EffortSettings:
    """Knob settings by layer name (``EffortNet.layer_names``); a layer not named is dense."""

    layers: dict[str, LayerEffort] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {name: layer.to_json() for name, layer in self.layers.items() if layer.to_json()}

    @classmethod
    def from_json(cls, doc: dict) -> EffortSettings:
        if not isinstance(doc, dict):
            raise ValueError(f"effort settings must map layer names to knobs, got {doc!r}")
        return cls({name: LayerEffort.from_json(layer, f"layer {name!r}") for name, layer in doc.items()})

    def only(self, knobs: set[str]) -> EffortSettings:
        """The same settings with only ``knobs`` kept."""
        return EffortSettings({name: LayerEffort(**{k: getattr(layer, k) if k in knobs else type(getattr(layer, k))()
                                                   for k in KNOBS})
                               for name, layer in self.layers.items()})


def parse_knobs(text: str) -> list[str]:
    """``"spet,sdss"`` → the knob names, checked.

    Raises:
        ValueError: for an empty list or an unknown knob.
    """
    names = [t.strip() for t in text.split(",")]
    if not text.strip() or not all(names):
        raise ValueError(f"give knobs like spet,sdss,sfma, got {text!r}")
    unknown = [n for n in names if n not in KNOBS]
    if unknown:
        raise ValueError(f"unknown knob {unknown[0]!r}; the knobs are {', '.join(KNOBS)}")
    return list(dict.fromkeys(names))
