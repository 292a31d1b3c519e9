"""``RunConfig``: the typed contents of a run's ``config.json``, and the only code that reads or
writes that file.

Schema version 2 (this release) holds the run's kind, its model, data, training settings and
recipe, metrics, calibrated widths, a per-kind section and its provenance. Version 1 run
directories (dynscale 0.1) are read and migrated on load.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from ..errors import CheckpointError
from ..files import atomic_write, dumps_json
from ..models import MultiProfileModel, build_multi_profile, get_model, model_name
from ..profiles import profile_to_config

FORMAT = "dynscale-run"
DENSE_FORMAT_V1 = "dynscale-dense"  # dense exports of dynscale 0.1, read as runs of kind "dense"
SCHEMA_VERSION = 2
CONFIG = "config.json"
# The training settings every recipe shares (``dynscale.train.TrainConfig``'s fields).
COMMON_TRAINING = ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule", "seed",
                   "train_limit", "holdout")


@dataclass
class ModelSpec:
    """How to rebuild a network: its registered name and config, and for a model of several
    members (multiple profiles, an independent family) their width ranges."""

    name: str
    config: dict
    profiles: list[list[float]] | None = None
    shared: bool = True

    @classmethod
    def of(cls, model: nn.Module) -> ModelSpec:
        """The spec of a registered model or of a :class:`MultiProfileModel` of them."""
        members = model.members[0] if isinstance(model, MultiProfileModel) else model
        config = dataclasses.asdict(members.config)
        if "profile" in config:  # a callable profile is restored from the weights
            config["profile"] = profile_to_config(members.config.profile)
        if isinstance(model, MultiProfileModel):
            return cls(model_name(members), config, [list(r) for r in model.ranges], model.shared)
        return cls(model_name(model), config)

    @classmethod
    def from_json(cls, doc: dict) -> ModelSpec:
        if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
            raise ValueError("the model entry does not name its model")
        return cls(doc["name"], dict(doc.get("config") or {}), doc.get("profiles"), bool(doc.get("shared", True)))

    def to_json(self) -> dict:
        doc = {"name": self.name, "config": self.config}
        if self.profiles:
            doc.update(profiles=self.profiles, shared=self.shared)
        return doc

    def build(self) -> nn.Module:
        """Builds the (untrained) network.

        Raises:
            ValueError: if the name or config does not describe a registered model.
        """
        cfg = dict(self.config)
        custom = cfg.get("profile") == "custom"
        if custom:  # the coefficients are buffers: loading restores them
            cfg["profile"] = None
        if self.profiles:
            model = build_multi_profile(self.name, [tuple(r) for r in self.profiles], shared=self.shared, **cfg)
        else:
            model = get_model(self.name, **cfg)
        return model

    @property
    def custom_profile(self) -> bool:
        """The profile's coefficients are restored from the weights, not the config."""
        return self.config.get("profile") == "custom"


@dataclass
class RunConfig:
    """Everything a run directory records besides its weights.

    Attributes:
        kind: the run kind (``dynscale.runs.list_kinds()``), which says how to rebuild the model.
        model: the network (for an early-exit run, the backbone); None where the kind's section
            holds several (a cascade).
        data: the dataset it was trained on.
        training: the shared training settings (``TrainConfig`` fields).
        recipe: ``{"name": ..., **settings}`` of the training recipe.
        metrics: final metrics.
        calibrated_widths: widths with stored batch-norm statistics.
        section: the kind's own fields (early-exit: ``exits``; cascade: ``members``, ``edges``…).
        provenance: where the run came from (``reproduce``'s plan, a backbone run…).
        schema_version: the format version written.
    """

    kind: str
    model: ModelSpec | None
    data: str
    training: dict = field(default_factory=dict)
    recipe: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    calibrated_widths: list[float] = field(default_factory=list)
    section: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def model_name(self) -> str | None:
        return self.model.name if self.model else None

    @property
    def model_config(self) -> dict:
        return self.model.config if self.model else {}

    @property
    def profile(self) -> str | list[float] | None:
        return self.model.config.get("profile", "all-one") if self.model else None

    @property
    def profile_ranges(self) -> list[tuple[float, float]] | None:
        return [tuple(r) for r in self.model.profiles] if self.model and self.model.profiles else None

    @property
    def holdout(self) -> int:
        """Training examples the run kept out (``Dataset.split_holdout``)."""
        return int(self.training.get("holdout") or 0)

    def replace(self, **changes) -> RunConfig:
        """A deep copy with some fields changed."""
        return dataclasses.replace(copy.deepcopy(self), **changes)

    def to_json(self) -> dict:
        return {"format": FORMAT, "schema_version": self.schema_version, "kind": self.kind,
                "model": self.model.to_json() if self.model else None, "data": self.data,
                "training": self.training, "recipe": self.recipe, "metrics": self.metrics,
                "calibrated_widths": self.calibrated_widths, "section": self.section,
                "provenance": self.provenance}

    @classmethod
    def from_json(cls, doc: object, source: str = CONFIG) -> RunConfig:
        """Validates a parsed ``config.json`` (migrating version 1).

        Raises:
            CheckpointError: naming what is wrong.
        """
        if isinstance(doc, dict) and doc.get("format") == DENSE_FORMAT_V1:
            doc = _migrate_dense_v1(doc)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise CheckpointError(f"{source} is not a dynscale run config (no \"format\": \"{FORMAT}\")")
        version = doc.get("schema_version", doc.get("version"))
        if version == 1:
            doc = _migrate_v1(doc)
        elif version != SCHEMA_VERSION:
            raise CheckpointError(f"{source} has format version {version}; this dynscale reads 1 and "
                                  f"{SCHEMA_VERSION}, upgrade dynscale to read it")
        try:
            model = ModelSpec.from_json(doc["model"]) if doc.get("model") is not None else None
            config = cls(kind=str(doc["kind"]), model=model, data=str(doc["data"]),
                         training=dict(doc.get("training") or {}), recipe=dict(doc.get("recipe") or {}),
                         metrics=dict(doc.get("metrics") or {}),
                         calibrated_widths=[float(w) for w in doc.get("calibrated_widths") or []],
                         section=dict(doc.get("section") or {}), provenance=dict(doc.get("provenance") or {}))
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{source} is incomplete ({type(e).__name__}: {e}); the run is corrupt, "
                                  "retrain it") from None
        return config

    @classmethod
    def read(cls, directory: str | Path) -> RunConfig:
        """Reads and checks ``DIRECTORY/config.json``.

        Raises:
            CheckpointError: if the directory or file is missing, not JSON, or not a dynscale run.
        """
        directory = Path(directory)
        path = directory / CONFIG
        if not directory.is_dir():
            raise CheckpointError(f"no run directory at {directory}; create one with "
                                  f"`dynscale train --out {directory}`")
        if not path.is_file():
            raise CheckpointError(f"{directory} has no {CONFIG}; it is not a dynscale run directory")
        try:
            doc = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path} is not valid JSON ({e}); the run is corrupt, retrain it") from None
        return cls.from_json(doc, str(path))

    def write(self, directory: str | Path) -> Path:
        """Writes ``DIRECTORY/config.json`` atomically (strict JSON: a NaN is an error)."""
        text = dumps_json(self.to_json())
        path = Path(directory) / CONFIG
        atomic_write(path, lambda p: p.write_text(text))
        return path


# Version 1 kept every recipe's settings in ``training``: each method registers how to read its
# recipe and section from such a config (see :func:`register_v1_migration`).
V1Migration = Callable[[dict, dict], "tuple[dict, dict] | None"]
_V1_MIGRATIONS: list[V1Migration] = []


def register_v1_migration(migrate: V1Migration) -> V1Migration:
    """Registers how a method reads a version-1 config: ``migrate(doc, training)`` returns the
    ``(recipe, section)`` of a config that is one of its own, else None."""
    _V1_MIGRATIONS.append(migrate)
    return migrate


def _migrate_v1(doc: dict) -> dict:
    """Version 1 kept every recipe's settings in ``training`` and kind fields at the top level."""
    training = dict(doc.get("training") or {})
    model = doc.get("model") or {}
    kind = doc.get("kind", "width")
    recipe, section = next((found for migrate in _V1_MIGRATIONS if (found := migrate(doc, training))), ({}, {}))
    if not training:
        recipe = {}  # saved from the Python API without training settings
    provenance = {k: doc[k] for k in ("reproduce",) if k in doc}
    if doc.get("backbone_run"):
        provenance["backbone_run"] = doc["backbone_run"]
    return {"format": FORMAT, "schema_version": SCHEMA_VERSION, "kind": kind, "model": model, "data": doc.get("data"),
            "training": {k: training[k] for k in COMMON_TRAINING if k in training}, "recipe": recipe,
            "metrics": doc.get("metrics") or {}, "calibrated_widths": doc.get("calibrated_widths") or [],
            "section": section, "provenance": provenance}


def _migrate_dense_v1(doc: dict) -> dict:
    provenance = {"source_run": doc["source_run"]} if doc.get("source_run") else {}
    return {"format": FORMAT, "schema_version": SCHEMA_VERSION, "kind": "dense", "model": doc.get("model"),
            "data": doc.get("data"), "section": {"width": doc.get("width")}, "provenance": provenance}
