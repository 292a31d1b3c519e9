"""Fractional-skipping runs (kind ``dfs``) and training them (their operating points:
``dynscale.dfs.sweep``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import Dataset
from ..device import Execution
from ..errors import CheckpointError, DynscaleError
from ..models import get_model
from ..runs import WIDTH, ModelSpec, RunConfig, RunKind, open_run, register_kind
from ..schema import Int, ListOf, Optional, Str, setting
from ..train import TrainConfig, Training, sized_for, train_and_save
from .gates import GATES
from .model import FULL, DFSNet, check_choices, check_executable
from .quant import SCHEMES
from .recipes import FractionalSkipping


def train_dfs_run(out: str | Path, model_name: str, data: Dataset | str, config: TrainConfig,
                  recipe: FractionalSkipping, model_options: dict | None = None,
                  backbone_run: str | Path | None = None, progress: bool | None = None, force: bool = False,
                  resume: bool = False, checkpoint_every: int = 500,
                  execution: Execution | None = None) -> Path:
    """Builds a ResNet with fractional-skipping gates, trains it in the recipe's three phases
    (the pretrain phase left out when ``backbone_run`` gives a trained backbone), and writes
    a run directory (resumably: :func:`dynscale.train.train_and_save`).

    Raises:
        DynscaleError: before any training, for a backbone that is not a trained ResNet of the
            data, or an output that cannot be written.
    """
    def build(dataset: Dataset) -> Training:
        steps = recipe
        if backbone_run is not None:
            run = open_run(backbone_run, (WIDTH,), dataset, own_data=True, what="--backbone")
            if run.config.profile_ranges:
                raise DynscaleError(f"{backbone_run} is a run of several members; a backbone is a single network with "
                                    "residual blocks (a ResNet trained with `dynscale train --model resnet38`, say)")
            backbone, source = run.model, backbone_run
            steps = dataclasses.replace(recipe, pretrain=0)  # the backbone is pretrained
        else:
            backbone = get_model(model_name, **sized_for(dataset, {"profile": "all-one", **(model_options or {})}))
            source = model_name
        provenance = {"backbone_run": str(backbone_run)} if backbone_run is not None else {}
        return Training(gated(backbone, steps, source), steps, config, provenance)

    return train_and_save(out, data, config, build, progress, force, resume, checkpoint_every,
                          inputs=[backbone_run] if backbone_run is not None else [], execution=execution)


def gated(backbone: torch.nn.Module, recipe: FractionalSkipping, source: object) -> DFSNet:
    """The DFSNet the recipe trains on ``backbone`` (its choices, gate and quantization), its
    refusal naming ``source`` (a run, a model or an option)."""
    try:
        return DFSNet(backbone, recipe.choices, gate=recipe.gate, quantization=recipe.quantization)
    except DynscaleError as e:
        raise DynscaleError(f"{source}: {e}") from None


def _describe(net: DFSNet) -> tuple[ModelSpec, dict]:
    return ModelSpec.of(net.backbone), {"choices": net.choices, "embedding": net.embedding, "hidden": net.hidden,
                                        "blocks": net.block_names, "gate": net.gate.kind,
                                        "quantization": net.quantization}


def _build(config: RunConfig) -> DFSNet:
    section = config.section
    net = DFSNet(config.model.build(), section["choices"], section["embedding"], section["hidden"],
                 gate=section.get("gate", "lstm"), quantization=section.get("quantization", "uniform"))
    # Runs saved before the model graph have no block names; their layout (every block of the
    # registered ResNets but the first) is the one the graph finds.
    if section.get("blocks", net.block_names) != net.block_names:
        raise CheckpointError(f"config.json: its gated blocks ({section['blocks']}) are not the ones the graph finds "
                              f"in its network ({net.block_names}); retrain the run with this version")
    return net


def _summary(config: RunConfig) -> list[tuple[str, str]]:
    choices = ", ".join("skip" if c == 0 else "full" if c == FULL else f"{c} bits" for c in config.section["choices"])
    return [("choices", choices), ("target", f"{config.recipe.get('target', 0):g}% of the full-precision BitOps")]


DFS = "dfs"


@dataclass
class DFSSection:
    """The ``section`` of a DFS run's config: the gate's shape."""

    choices: list[int] = setting(check=ListOf(Int(0, FULL), min_len=2, unique=True),
                                 help="the gates' choices: 0 skips a block, 1-32 bits")
    embedding: int = setting(check=Int(1), help="channels of the gate's input projection")
    hidden: int = setting(check=Int(1), help="the gate LSTM's hidden size")
    blocks: list[str] | None = setting(None, check=Optional(ListOf(Str(empty=True))),
                                       help="the gated residual blocks, as the graph names them (absent in runs "
                                            "saved before the model graph)")
    gate: str = setting("lstm", check=Str(GATES), help="the gate's kind (absent in runs saved before issue 18: lstm)")
    quantization: str = setting("uniform", check=Str(SCHEMES),
                                help="how bit-widths were simulated in training: uniform (the paper's) or int8 "
                                     "(as the int8 kernels compute; absent before issue 18: uniform)")


def _check(config: RunConfig) -> None:
    try:
        check_executable(check_choices(config.section["choices"]), config.section.get("quantization", "uniform"))
    except ValueError as e:
        raise ValueError(f"section.choices: {e}") from None
    recipe = config.recipe.get("choices")
    if recipe is not None and list(recipe) != list(config.section["choices"]):
        raise ValueError(f"section.choices {config.section['choices']} and recipe.choices {recipe} disagree; the "
                         "gates were trained with one list")


register_kind(RunKind(DFS, DFSNet, _describe, _build, _summary, noun="a DFS run", made_by="`dynscale dfs train`",
                      used_by="`dynscale dfs sweep`", section=DFSSection, check=_check))
