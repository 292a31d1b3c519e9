"""Effort knob settings per layer (SPEC §2), validated, and their JSON form."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

KNOBS = ("spet", "sdss", "sfma")


def _finite_non_negative(value: float, what: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {value}")
    return value


@dataclass(frozen=True)
class SPET:
    """Saturation prediction and early termination (neuron level), for layers followed by ReLU.

    The partial sum over the first ``fraction`` of the input channels (ordered offline by
    significance) is computed; where a neuron's is below ``threshold``, its output is 0 and
    the rest of its sum is skipped.
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
        return self.fraction < 1 or self.threshold > 0


@dataclass(frozen=True)
class SDSS:
    """Significance-driven selective sampling (feature level).

    Each output map is computed exactly on a ``stride``-spaced grid; a neuron whose surrounding
    grid values in its map are all below ``insignificant`` (after ReLU), or all within
    ``spread`` of each other, is filled by bilinear interpolation, and computed exactly otherwise.
    ``stride=1`` or both thresholds 0 does nothing.
    """

    stride: int = 1
    insignificant: float = 0.0
    spread: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.stride, bool) or int(self.stride) != self.stride or self.stride not in (1, 2):
            raise ValueError(f"SDSS stride must be 1 or 2, got {self.stride}")
        object.__setattr__(self, "stride", int(self.stride))
        object.__setattr__(self, "insignificant", _finite_non_negative(self.insignificant, "SDSS threshold"))
        object.__setattr__(self, "spread", _finite_non_negative(self.spread, "SDSS spread threshold"))

    @property
    def active(self) -> bool:
        return self.stride > 1 and (self.insignificant > 0 or self.spread > 0)


@dataclass(frozen=True)
class SFMA:
    """Similarity-based feature-map approximation (layer level).

    Where an input channel's values under a convolution window are nearly uniform (variance
    below ``threshold``), that channel's k×k dot product is replaced by mean(x) · Σw, one
    product per neuron. ``threshold=0`` does nothing.
    """

    threshold: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "threshold", _finite_non_negative(self.threshold, "SFMA threshold"))

    @property
    def active(self) -> bool:
        return self.threshold > 0


@dataclass(frozen=True)
class LayerEffort:
    """The three knobs of one layer."""

    spet: SPET = field(default_factory=SPET)
    sdss: SDSS = field(default_factory=SDSS)
    sfma: SFMA = field(default_factory=SFMA)

    @property
    def active(self) -> bool:
        return self.spet.active or self.sdss.active or self.sfma.active

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
            raise ValueError(f"{where}: {e}") from None


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
