"""A method of the tests' own, registered as a plugin: random block skipping on the registered
ResNet. It trains with stochastic depth (each identity block skipped with probability
``drop`` at every step), and at inference skips the first k blocks of a fixed random order, one
operating point per k. It has a recipe, a run kind with a settings schema, two commands and its
operating points, and it touches no file of ``dynscale``."""

from __future__ import annotations

import argparse
import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dynscale.command import (
    add_fields,
    add_group,
    add_model_options,
    add_quiet,
    add_sweep_options,
    add_training_options,
    check_model_options,
    dataset,
    fields_of,
    model_name,
    model_options,
    sweep_report,
    training_config,
)
from dynscale.command import options as opt
from dynscale.cost import count_macs
from dynscale.data import Dataset
from dynscale.eval import Candidate, CurveSpec, Measurement, accuracy, evaluate, torch_runner
from dynscale.methods import Method, register_method, unregister_method
from dynscale.models import get_model
from dynscale.runs import ModelSpec, RunConfig, RunKind, open_run, register_kind, unregister_kind
from dynscale.schema import Int, ListOf, Num, Str, setting
from dynscale.train import Recipe, Training, register_recipe, sized_for, train_and_save, unregister_recipe

KIND = "block-skip"


class BlockSkipNet(nn.Module):
    """A ResNet whose identity blocks can be skipped: ``skipped`` of them, in ``order``."""

    def __init__(self, backbone: nn.Module, order: list[str] | None = None, seed: int = 0) -> None:
        super().__init__()
        self.backbone = backbone
        names = [f"{i}.{j}" for i, stage in enumerate(backbone.layers) for j, block in enumerate(stage)
                 if isinstance(block.shortcut, nn.Identity)]
        if order is None:
            order = random.Random(seed).sample(names, len(names))
        unknown = sorted(set(order) - set(names))
        if unknown:
            raise ValueError(f"section.order names {unknown[0]!r}, not an identity block of the network")
        self.order = list(order)
        self.skipped = 0
        self.dropped: set[str] = set()  # set by the recipe at each training step

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, classes)
        skip = set(self.order[:self.skipped]) | self.dropped
        x = self.backbone.stem(x)
        for i, stage in enumerate(self.backbone.layers):
            for j, block in enumerate(stage):
                if f"{i}.{j}" not in skip:
                    x = block(x)
        return self.backbone.classifier(self.backbone.pool(x).flatten(1))


@dataclass
class BlockDrop(Recipe):
    """Stochastic depth.

    Attributes:
        drop: the probability that an identity block is skipped at a training step.
    """

    name = "block-drop"
    drop: float = setting(0.2, check=Num(0.0, 1.0, high_open=True))

    def losses(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, rng: torch.Generator,
               phase: int) -> Iterator[torch.Tensor]:
        draws = torch.rand(len(model.order), generator=rng)
        model.dropped = {name for name, u in zip(model.order, draws.tolist(), strict=True) if u < self.drop}
        try:
            yield F.cross_entropy(model(x), y)
        finally:
            model.dropped = set()


@dataclass
class Section:
    """The ``section`` of a block-skip run's config."""

    order: list[str] = setting(check=ListOf(Str(), min_len=1, unique=True), help="the blocks, in skipping order")


@dataclass
class Settings:
    """What ``skip train`` trains.

    Attributes:
        seed_order: the seed of the skipping order.
    """

    seed_order: int = setting(0, check=Int(0))


def _describe(net: BlockSkipNet) -> tuple[ModelSpec, dict]:
    return ModelSpec.of(net.backbone), {"order": list(net.order)}


def _build(config: RunConfig) -> BlockSkipNet:
    return BlockSkipNet(config.model.build(), config.section["order"])


def _summary(config: RunConfig) -> list[tuple[str, str]]:
    order = config.section["order"]
    return [("skips", f"up to {len(order)} blocks, in the order {', '.join(order)}")]


def train_block_skip(out, model_name: str, data: Dataset, config, recipe: BlockDrop, options: dict, seed_order: int,
                     **kwargs):
    def build(dataset: Dataset) -> Training:
        backbone = get_model(model_name, **sized_for(dataset, {"profile": "all-one", **options}))
        return Training(BlockSkipNet(backbone, seed=seed_order), recipe, config)

    return train_and_save(out, data, config, build, **kwargs)


def points(run_dir, *, data=None, timing=None, progress=None) -> list:
    run = open_run(run_dir, (KIND,), data, with_data=True, what="skip sweep")
    net, test = run.model, (run.dataset.test_x, run.dataset.test_y)

    def candidate(k: int) -> Candidate:
        def prepare() -> None:
            net.skipped = k

        def measure(x: torch.Tensor, y: torch.Tensor) -> Measurement:
            prepare()
            return Measurement(accuracy(net, x, y), count_macs(net, x[:1]), sum(p.numel() for p in net.parameters()))

        return Candidate("block-skip", {"skipped": k}, f"skip {k}", measure, lambda runtime: torch_runner(net, prepare))

    candidates = [candidate(k) for k in range(len(net.order) + 1)]
    spec = CurveSpec(f"{run.path.name}: block skipping", str(run.path), run.dataset.name, "block-skip")
    return evaluate([(spec, candidates)], candidates[0], test, timing, progress)


def add_commands(sub) -> None:
    group = add_group(sub, "skip", "random block skipping: drop residual blocks at inference")
    p = group.add_parser("train", help="train a ResNet with stochastic depth")
    add_model_options(p, "resnet")
    add_fields(p, BlockDrop)
    add_fields(p, Settings)
    add_training_options(p)
    p.add_argument("--out", type=opt.path, required=True, help="run directory to write")
    add_quiet(p)
    p.set_defaults(func=train)

    p = group.add_parser("sweep", help="accuracy and MACs per number of skipped blocks")
    p.add_argument("runs", type=opt.run_directory, nargs="+", help="block-skip runs")
    add_sweep_options(p)
    p.set_defaults(func=sweep)


def train(args: argparse.Namespace) -> None:
    data = dataset(args.data)
    options = check_model_options(model_name(args), {"profile": "all-one", **model_options(args, profile=False)},
                                  data)
    recipe = BlockDrop(**fields_of(args, BlockDrop))
    out = train_block_skip(args.out, model_name(args), data, training_config(args), recipe,
                           {k: v for k, v in options.items() if k != "profile"},
                           Settings(**fields_of(args, Settings)).seed_order, force=args.force, resume=args.resume,
                           checkpoint_every=args.checkpoint_every)
    print(f"wrote {out}")


def sweep(args: argparse.Namespace) -> None:
    data = dataset(args.data) if args.data else None
    curves = [c for run in args.runs for c in points(run, data=data)]
    sweep_report(args, curves, None, "Block skipping")


def register():
    """Registers the method (recipe, run kind, commands, points); returns the undo."""
    register_recipe(BlockDrop)
    register_kind(RunKind(KIND, BlockSkipNet, _describe, _build, _summary, noun="a block-skip run",
                          made_by="`dynscale skip train`", used_by="`dynscale skip sweep`", section=Section))
    register_method(Method("skip", "random block skipping", kinds=(KIND,), recipes=("block-drop",),
                           add_commands=add_commands, points=points))

    def undo() -> None:
        unregister_method("skip")
        unregister_kind(KIND)
        unregister_recipe("block-drop")

    return undo
