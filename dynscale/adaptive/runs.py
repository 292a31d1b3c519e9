"""Early-exit and cascade runs: their run kinds, and training an early-exit run."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..data import Dataset
from ..device import Execution
from ..errors import DynscaleError
from ..models import get_model
from ..runs import WIDTH, ModelSpec, RunConfig, RunKind, open_run, register_kind, register_v1_migration
from ..schema import Anything, Int, ListOf, MapOf, Record, Str, setting
from ..train import TrainConfig, Training, sized_for, train_and_save
from .cascade import Cascade
from .exits import EarlyExitNet
from .recipes import EarlyExits, FrozenExits, parse_exit_weights


def default_holdout(data: Dataset) -> int:
    """10% of the training examples."""
    return max(1, len(data.train_y) // 10)


def train_early_exit_run(out: str | Path, model_name: str, data: Dataset | str, config: TrainConfig,
                         exits: Sequence[str], exit_weights: Sequence[float] | None = None,
                         model_options: dict | None = None, backbone_run: str | Path | None = None,
                         progress: bool | None = None, force: bool = False, resume: bool = False,
                         checkpoint_every: int = 500, execution: Execution | None = None) -> Path:
    """Builds a backbone with exits, trains it, and writes a run directory (resumably:
    :func:`dynscale.train.train_and_save`).

    Args:
        out: the run directory to write.
        model_name: a registered model (ignored with ``backbone_run``).
        data: a dataset or its name.
        config: training settings; ``config.holdout`` examples are kept out of training for
            fitting the policies (10% of the training split if 0). The caller's config is
            not changed.
        exits: stage names to put exits after.
        exit_weights: loss weight per exit and the final output.
        model_options: model config fields; input shape and classes come from the data.
        backbone_run: a trained run (``dynscale train --holdout N``) whose network becomes a
            frozen backbone; only the exits are trained.
        progress: show a progress bar; None shows it only on a terminal.
        force: replace an existing run at ``out`` (and discard an unfinished training's state).
        resume: continue the unfinished training saved in ``OUT.resume``.
        checkpoint_every: optimizer steps between saved states.
        execution: device, mixed precision and memory format (``dynscale.device.Execution``).

    Returns:
        The run directory.

    Raises:
        DynscaleError: if the pretrained backbone saw the held-out examples, or does not fit
            the data, or ``out`` cannot be written (all before any training).
    """
    def build(dataset: Dataset) -> Training:
        settings = dataclasses.replace(config, holdout=config.holdout or default_holdout(dataset))
        if backbone_run is not None:
            run = open_run(backbone_run, (WIDTH,), dataset, own_data=True, what="--backbone")
            check_backbone_holdout(run.config, settings.holdout, backbone_run)
            backbone = run.model
        else:
            backbone = get_model(model_name, **sized_for(dataset, model_options))
        net = EarlyExitNet(backbone, exits)
        weights = parse_exit_weights(exit_weights, len(net.node_names))
        recipe = FrozenExits(weights) if backbone_run is not None else EarlyExits(weights)
        provenance = {"backbone_run": str(backbone_run)} if backbone_run is not None else {}
        return Training(net, recipe, settings, provenance)

    return train_and_save(out, data, config, build, progress, force, resume, checkpoint_every,
                          inputs=[backbone_run] if backbone_run is not None else [], execution=execution)


def check_backbone_holdout(backbone: RunConfig, holdout: int, name: str | Path) -> None:
    """A pretrained backbone never saw the examples the policies are fitted on.

    Raises:
        DynscaleError: naming the fix.
    """
    seen = backbone.holdout
    if seen != holdout:
        raise DynscaleError(
            f"{name} held out {seen} training examples but this run holds out {holdout}, so the backbone has seen "
            f"examples the policies are fitted on; retrain it with `dynscale train --holdout {holdout}` or pass "
            f"--holdout {seen}" if seen else
            f"{name} was trained on every training example, so the policies would be fitted on examples it has "
            f"seen; retrain it with `dynscale train --holdout {holdout} ...`")


def load_early_exit(directory: str | Path) -> tuple[EarlyExitNet, RunConfig]:
    """Loads an early-exit run (from :func:`train_early_exit_run`).

    Returns:
        The network in eval mode, and the run's config.

    Raises:
        CheckpointError: if the directory is not an early-exit run, or is corrupt.
    """
    run = open_run(directory, (EARLY_EXIT,))
    return run.model, run.config


def _early_exit_describe(net: nn.Module) -> tuple[ModelSpec, dict]:
    return ModelSpec.of(net.backbone), {"exits": list(net.exit_names)}


def _early_exit_summary(config: RunConfig) -> list[tuple[str, str]]:
    backbone = config.provenance.get("backbone_run")
    return [("exits", f"{', '.join(config.section['exits'])} (then the final output)"),
            ("backbone", f"frozen, from {backbone}" if backbone else "trained jointly"),
            ("holdout", f"{config.holdout} training examples held out for the policies")]


def _cascade_describe(cascade: nn.Module) -> tuple[None, dict]:
    return None, {"members": [ModelSpec.of(n).to_json() for n in cascade.networks], "names": list(cascade.names),
                  "edges": [list(e) for e in cascade.edges]}


def _cascade_build(config: RunConfig) -> nn.Module:
    members = [ModelSpec.from_json(m).build() for m in config.section["members"]]
    return Cascade(members, [tuple(e) for e in config.section["edges"]], config.section["names"])


def _cascade_summary(config: RunConfig) -> list[tuple[str, str]]:
    names, members = config.section["names"], config.section["members"]
    return [("networks", ", ".join(f"{n} ({m['name']})" for n, m in zip(names, members, strict=True))),
            ("edges", ", ".join(f"{a}-{b}" for a, b in config.section["edges"])),
            ("holdout", f"{config.holdout} training examples held out for the policies")]


EARLY_EXIT, CASCADE = "early-exit", "cascade"


@dataclass
class EarlyExitSection:
    """The ``section`` of an early-exit run's config."""

    exits: list[str] = setting(check=ListOf(Str(), min_len=1, unique=True), help="the stages exits follow")


@dataclass
class MemberSpec:
    """A cascade member's model spec."""

    name: str = setting(check=Str(), help="the registered model")
    config: dict = setting(check=MapOf(Anything()), help="its config")


@dataclass
class CascadeSection:
    """The ``section`` of a cascade's config."""

    members: list[dict] = setting(check=ListOf(Record(MemberSpec), min_len=2),
                                  help="each network's model spec, cheapest first")
    names: list[str] = setting(check=ListOf(Str(), min_len=2, unique=True), help="each network's label")
    edges: list[list[int]] = setting(check=ListOf(ListOf(Int(0), length=2), min_len=1),
                                     help="FROM-TO network indices")


def _check_cascade(config: RunConfig) -> None:
    members, names, edges = config.section["members"], config.section["names"], config.section["edges"]
    if len(names) != len(members):
        raise ValueError(f"section.names lists {len(names)} names for {len(members)} members")
    for i, (a, b) in enumerate(edges):
        if not a < b < len(members):
            raise ValueError(f"section.edges[{i}] is {a}-{b}; an edge goes from a network to a later one of the "
                             f"{len(members)}")


def _check_early_exit(config: RunConfig) -> None:
    weights = config.recipe.get("exit_weights")
    if weights is not None and len(weights) != len(config.section["exits"]) + 1:
        raise ValueError(f"recipe.exit_weights has {len(weights)} weights for {len(config.section['exits'])} exits "
                         "and the final output")


register_kind(RunKind(EARLY_EXIT, EarlyExitNet, _early_exit_describe,
                      lambda config: EarlyExitNet(config.model.build(), config.section["exits"]), _early_exit_summary,
                      noun="an early-exit run", made_by="`dynscale adaptive train`",
                      used_by="`dynscale adaptive sweep`", section=EarlyExitSection, check=_check_early_exit))
register_kind(RunKind(CASCADE, Cascade, _cascade_describe, _cascade_build, _cascade_summary, noun="a cascade",
                      made_by="`dynscale adaptive cascade --save`", used_by="`dynscale adaptive sweep`",
                      section=CascadeSection, check=_check_cascade, needs_model=False,
                      networks=lambda config: list(config.section["members"])))


@register_v1_migration
def _migrate_v1(doc: dict, training: dict) -> tuple[dict, dict] | None:
    """A version-1 early-exit run."""
    if doc.get("kind") != EARLY_EXIT:
        return None
    return ({"name": "frozen-exits" if doc.get("backbone_run") else "early-exit",
             "exit_weights": doc.get("exit_weights")}, {"exits": doc.get("exits") or []})
