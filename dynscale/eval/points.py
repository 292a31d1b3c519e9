"""Operating points and curves: what every method's evaluation yields, and their JSON form."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DynscaleError

SCHEMA = "dynscale-curves"
SCHEMA_VERSION = 1


@dataclass
class Latency:
    """Measured wall-clock time of one operating point on one runtime at one batch size.

    ``ms`` and ``ms_iqr`` are the median and interquartile range over the interleaved rounds
    of the time per batch; ``ratio`` is the median over rounds of this point's time divided by
    the reference point's time on the same runtime in the same round. ``versus`` holds the
    same ratio against the reference on each other runtime timed (a network in eager PyTorch
    against the dense network in ONNX Runtime, say), also round by round. ``device`` is where
    it ran (``cpu``, ``cuda:0``; reports written before devices were recorded timed on the CPU).
    """

    runtime: str
    batch: int
    ms: float
    ms_iqr: float
    us_per_example: float
    ratio: float
    ratio_iqr: float
    versus: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"

    @property
    def key(self) -> str:
        return f"{self.runtime}@{self.batch}"


@dataclass
class OperatingPoint:
    """One setting of a method's knobs and what it costs and achieves on the test split.

    Attributes:
        method: the method (``idp``, ``us``, ``early-exit``…).
        knobs: the knob settings, e.g. ``{"width": 0.5}`` or ``{"lambda": 0.01}``.
        accuracy: top-1 accuracy in [0, 1].
        macs: mean multiply-accumulates per example (counted).
        macs_ratio: ``macs`` relative to the reference (the full network).
        params: parameters the setting uses.
        bitops_ratio: bit-operations relative to the full-precision reference, where the
            method changes precision (counted).
        latency: measured wall-clock per runtime and batch size.
        label: a short name of the setting (``"0.5"``, ``"λ=0.01"``).
        extra: method-specific results (where examples exit, bytes sent, policies).
        executed: whether the timed code really does the work the counted costs say (False
            where a saving is only simulated, e.g. fake-quantized bit-widths that run as
            float32: such a point's saving is counted, never measured).
    """

    method: str
    knobs: dict[str, Any]
    accuracy: float
    macs: float
    macs_ratio: float
    params: int
    bitops_ratio: float | None = None
    latency: list[Latency] = field(default_factory=list)
    label: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    executed: bool = True

    @property
    def savings(self) -> dict[str, str]:
        """How each saving is known: ``counted`` (operations tallied) or ``measured``
        (wall-clock timed on a runtime)."""
        found = {"macs": "counted"}
        if self.bitops_ratio is not None:
            found["bitops"] = "counted"
        if self.latency:
            found["latency"] = "measured"
        return found

    @property
    def saving(self) -> str:
        """``measured`` where the point was timed on code that executes its saving, else
        ``counted`` (not timed, or its saving only simulated)."""
        return "measured" if self.latency and self.executed else "counted"

    @property
    def measured(self) -> bool:
        """Whether this point's saving was measured in wall-clock time, not only counted."""
        return bool(self.latency)

    def latency_at(self, runtime: str, batch: int) -> Latency | None:
        """The measurement on ``runtime`` at ``batch``, or None."""
        return next((lat for lat in self.latency if lat.runtime == runtime and lat.batch == batch), None)

    def to_json(self) -> dict:
        doc = asdict(self)
        doc["savings"] = self.savings
        doc["saving"] = self.saving
        if doc["bitops_ratio"] is None:
            del doc["bitops_ratio"]
        return doc

    @classmethod
    def from_json(cls, doc: dict) -> OperatingPoint:
        doc = {k: v for k, v in doc.items() if k not in ("savings", "saving")}  # derived
        doc["latency"] = [Latency(**lat) for lat in doc.get("latency", [])]
        return cls(**doc)


@dataclass
class Curve:
    """A method's operating points on one run (or cascade), in the order measured.

    Attributes:
        label: the legend and table label.
        points: the operating points.
        run: the run directory (or cascade name) it was measured on.
        data: the dataset of the test split.
        curve: which curve of that run (``"profile 1 (0-0.3)"``, ``"envelope"``,
            ``"learned policy"``); None when a run has one.
    """

    label: str
    points: list[OperatingPoint] = field(default_factory=list)
    run: str | None = None
    data: str | None = None
    curve: str | None = None

    def to_json(self) -> dict:
        return {"label": self.label, "run": self.run, "data": self.data, "curve": self.curve,
                "points": [p.to_json() for p in self.points]}

    @classmethod
    def from_json(cls, doc: dict) -> Curve:
        return cls(doc["label"], [OperatingPoint.from_json(p) for p in doc["points"]], doc.get("run"),
                   doc.get("data"), doc.get("curve"))


def curves_to_json(curves: list[Curve], **meta) -> dict:
    """The JSON document of a report: ``{"schema", "schema_version", **meta, "curves"}``."""
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **meta, "curves": [c.to_json() for c in curves]}


def curves_from_json(doc: object, source: str = "the document") -> list[Curve]:
    """Reads curves back from :func:`curves_to_json`'s output.

    Raises:
        DynscaleError: if the document is not a dynscale report of a readable version.
    """
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise DynscaleError(f"{source} is not a report written by dynscale (`sweep --json`, `bench --json`, "
                            "`adaptive sweep --json`…); write one with --json")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise DynscaleError(f"{source} has report schema version {doc.get('schema_version')}; this dynscale "
                            f"reads {SCHEMA_VERSION}: rerun the command that wrote it")
    try:
        return [Curve.from_json(c) for c in doc["curves"]]
    except (KeyError, TypeError) as e:
        raise DynscaleError(f"{source} is a damaged dynscale report ({type(e).__name__}: {e}); rerun the "
                            "command that wrote it") from None


def read_curves(path: str | Path) -> list[Curve]:
    """Reads a report JSON file.

    Raises:
        DynscaleError: if the file cannot be read or is not a dynscale report.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DynscaleError(f"cannot read {path} as a dynscale report ({e}); write one with --json") from None
    return curves_from_json(doc, str(path))
