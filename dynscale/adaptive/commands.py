"""The adaptive method's commands: ``adaptive train``, ``adaptive sweep``, ``adaptive cascade``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..command import (
    MODEL_OPTIONS,
    about,
    add_data,
    add_group,
    add_model_options,
    add_quiet,
    add_report_options,
    add_threads,
    add_timing_options,
    add_training_options,
    check_model_options,
    dataset,
    evaluation_device,
    execution,
    inputs,
    model_name,
    model_options,
    refuse,
    sweep_report,
    timing,
    training_config,
)
from ..command import options as opt
from ..errors import DynscaleError
from .cascade import parse_edges
from .sweep import DEFAULT_LAMBDAS, DEFAULT_MAX_LOSSES

edges = opt.parsed_by(parse_edges, "FROM-TO pairs like 0-1,1-2,0-2")
XLABEL = "mean MACs relative to the full network"


def add_commands(sub) -> None:
    """Adds ``dynscale adaptive ...`` to the parser."""
    group = add_group(sub, "adaptive", "adaptive inference: learned early exits and network selection")

    p = group.add_parser("train", help="train a backbone with early exits (or exits on a frozen backbone)")
    add_model_options(p, "vgg16", "all-one")
    p.add_argument("--exits", type=opt.listing(opt.name, "block1,block2"), required=True,
                   help="stage names to put exits after, e.g. block1,block2,block3 (an unknown name lists them)")
    p.add_argument("--exit-weights", type=opt.listing(opt.number(0.0), "1,1,1"), default=None,
                   help="loss weight per exit and then the final output, e.g. 1,1,1,1 (default: all 1)")
    p.add_argument("--backbone", type=opt.run_directory, default=None, metavar="RUN",
                   help="a trained run (dynscale train --holdout N) to freeze; only the exits train")
    p.add_argument("--holdout", type=opt.POSITIVE, default=None,
                   help="training examples kept out to fit the policies on (default: 10%%)")
    add_training_options(p, leave_out=["holdout"])
    p.add_argument("--out", type=opt.path, required=True, help="run directory to write")
    add_threads(p)
    add_quiet(p)
    p.set_defaults(func=train)

    p = group.add_parser("sweep", help="fit exit policies over λ, with the threshold baseline: table, JSON, plot")
    p.add_argument("run", type=opt.run_directory, help="an early-exit run (dynscale adaptive train) or a saved cascade")
    _add_sweep_options(p)
    p.set_defaults(func=sweep)

    p = group.add_parser("cascade", help="network selection among trained runs of rising cost: table, JSON, plot")
    p.add_argument("runs", type=opt.run_directory, nargs="+",
                   help="run directories, cheapest first, trained with the same --holdout")
    p.add_argument("--edges", type=edges, default=None, help="FROM-TO indices, e.g. 0-1,1-2,0-2 (default: a chain)")
    p.add_argument("--name", type=opt.name, default="cascade", help="label of the cascade in the report")
    p.add_argument("--save", type=opt.path, default=None, metavar="RUN", help="also write the cascade as a run")
    p.add_argument("--force", action="store_true", help="replace an existing run at --save")
    _add_sweep_options(p)
    p.set_defaults(func=cascade)


def _add_sweep_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lambdas", type=opt.listing(opt.number(0.0), "0,0.01,0.1"),
                   default=list(DEFAULT_LAMBDAS), metavar="VALUES",
                   help="cost weights λ >= 0 of the learned policy (one full network's MACs = λ errors)")
    p.add_argument("--max-loss", type=opt.listing(opt.number(0.0, 100.0), "0,0.5,1"),
                   default=list(DEFAULT_MAX_LOSSES), metavar="POINTS",
                   help="threshold baseline: accuracy points (0-100) below the full network allowed on held-out data")
    add_data(p, None, "evaluate on this dataset instead of the run's")
    add_timing_options(p, batch="256", rounds=3, runtime=None)
    p.add_argument("--timing-examples", type=opt.POSITIVE, default=2560, help="test examples timed per point")
    p.add_argument("--channels-last", action="store_true",
                   help="time in channels-last memory, full network and adaptive alike (often faster on CPU)")
    p.add_argument("--no-timing", action="store_true", help="skip the wall-clock timing")
    add_report_options(p, "accuracy vs mean MAC ratio")
    add_quiet(p)


def _exit_points(args: argparse.Namespace, options: dict, data) -> list[str]:
    """The names an exit can follow: the backbone's stage boundaries (built on the meta device,
    or the ``--backbone`` run's network)."""
    import torch

    from ..models import get_model
    from ..runs import WIDTH, open_run
    from .exits import exit_points

    if args.backbone is None:
        with torch.device("meta"):  # no memory is allocated for the weights
            backbone = get_model(model_name(args), **{**options, "in_channels": data.in_channels,
                                                      "input_size": data.input_size, "num_classes": data.num_classes})
    else:
        with about("--backbone"):
            backbone = open_run(args.backbone, (WIDTH,), what="--backbone").model
    with about("--backbone" if args.backbone is not None else "--model"):
        return exit_points(backbone)


def train(args: argparse.Namespace) -> None:
    from ..runs import RunConfig, check_output
    from .runs import train_early_exit_run

    check_output(args.out, args.force, inputs=inputs(args))
    config = training_config(args, holdout=args.holdout or 0)
    data = dataset(args.data)
    if args.backbone is None:
        options = check_model_options(model_name(args), model_options(args), data)
    else:
        refuse(args, MODEL_OPTIONS, "with --backbone: the model and its options are the backbone run's")
        options = {}
    points = _exit_points(args, options, data)
    unknown = [e for e in args.exits if e not in points]
    if unknown:
        raise DynscaleError(f"--exits: unknown stage {unknown[0]!r}; exits can follow {', '.join(points)}")
    if len(set(args.exits)) != len(args.exits):
        raise DynscaleError(f"--exits: each stage takes at most one exit, got {','.join(args.exits)}")
    if args.exit_weights is not None:
        if len(args.exit_weights) != len(args.exits) + 1 or sum(args.exit_weights) <= 0:
            raise DynscaleError(f"--exit-weights: give {len(args.exits) + 1} weights >= 0, not all 0 (one per exit, "
                                f"then the final output), got {','.join(f'{w:g}' for w in args.exit_weights)}")
    out = train_early_exit_run(args.out, model_name(args), data, config, args.exits, args.exit_weights, options,
                               backbone_run=args.backbone, force=args.force, resume=args.resume,
                               checkpoint_every=args.checkpoint_every, execution=execution(args))
    metrics = RunConfig.read(out).metrics
    accs = ", ".join(f"{k} {100 * v:.2f}%" for k, v in metrics["exit_accuracy"].items())
    print(f"wrote {out}: test accuracy per exit: {accs} ({metrics['train_seconds']:.1f} s)")


def _sweep_options(args: argparse.Namespace) -> dict:
    if args.no_timing:
        refuse(args, {"channels_last": "--channels-last"}, "with --no-timing (it is a setting of the timing)")
    device = evaluation_device(args)
    settings = None if args.no_timing else timing(args, runtimes=["torch"], examples=args.timing_examples,
                                                  channels_last=args.channels_last, device=device)
    return {"lambdas": args.lambdas, "max_losses": args.max_loss, "timing": settings,
            "data": dataset(args.data) if args.data else None, "device": device}


def sweep(args: argparse.Namespace) -> None:
    from .sweep import sweep_adaptive_run

    options = _sweep_options(args)
    curves = sweep_adaptive_run(args.run, **options)
    sweep_report(args, curves, options["timing"], f"Adaptive inference: {Path(args.run).name}", XLABEL,
                 device=options["device"])


def cascade(args: argparse.Namespace) -> None:
    from ..runs import check_output
    from .sweep import build_cascade, sweep_cascade

    if len(args.runs) < 2:
        raise DynscaleError("a cascade needs at least two runs, cheapest first")
    if args.save is not None:
        check_output(args.save, args.force, "--save", inputs=inputs(args))
    options = _sweep_options(args)
    with about("--edges" if args.edges else "runs"):
        build_cascade(args.runs, args.edges, options["data"])  # every check, before any work
    curves = sweep_cascade(args.runs, args.edges, name=args.name, save=args.save, **options)
    if args.save:
        print(f"wrote {args.save}")
    sweep_report(args, curves, options["timing"], f"Network selection: {' → '.join(Path(r).name for r in args.runs)}",
                 XLABEL, device=options["device"])


def points(run_dir, *, data=None, timing=None, progress=None) -> list:
    """The adaptive method's operating points of a run (``pick`` measures with them)."""
    from .sweep import sweep_adaptive_run

    return sweep_adaptive_run(run_dir, data=data, timing=timing, progress=progress)
