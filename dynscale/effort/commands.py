"""The effort method's commands: ``effort tune`` and ``effort sweep``."""

from __future__ import annotations

import argparse

from ..command import (
    add_data,
    add_fields,
    add_group,
    add_quiet,
    add_sweep_options,
    add_threads,
    dataset,
    evaluation_device,
    fields_of,
    sweep_report,
    timing,
)
from ..command import options as opt
from .runs import CPU_ONLY, TuneSettings

FLAGS = {"max_loss": "--max-loss"}


def add_commands(sub) -> None:
    """Adds ``dynscale effort ...`` to the parser."""
    group = add_group(sub, "effort", "DyVEDeep: effort knobs on a trained network, tuned on held-out data")

    p = group.add_parser("tune", help="search per-layer knob settings for each accuracy-loss bound")
    p.add_argument("run", type=opt.run_directory, help="a run trained with `dynscale train` (any traceable network)")
    add_fields(p, TuneSettings)
    add_data(p, None, "the dataset (default: the run's own; another is refused, the search uses its held-out split)")
    p.add_argument("--out", type=opt.path, default=None,
                   help="the effort run to write (default: RUN-effort beside the run)")
    p.add_argument("--force", action="store_true", help="replace an existing effort run at --out")
    add_threads(p, 1)
    add_quiet(p)
    p.set_defaults(func=tune)

    p = group.add_parser("sweep", help="each tuned bound as an operating point beside the dense network, the knobs off "
                                       "and static int8: accuracy, MACs counted, wall-clock measured")
    p.add_argument("runs", type=opt.run_directory, nargs="+", help="effort runs (dynscale effort tune)")
    add_sweep_options(p, runtime="torch,onnxruntime", cpu_only=CPU_ONLY)
    p.set_defaults(func=sweep)


def tune(args: argparse.Namespace) -> None:
    from ..runs import RunConfig, get_kind
    from .runs import tune_run

    settings = TuneSettings(**fields_of(args, TuneSettings))
    data = dataset(args.data) if args.data else None
    written = tune_run(args.run, settings.max_loss, settings.knobs, data, settings.examples, args.out,
                       force=args.force, batches=settings.batch, objective=settings.objective, threads=args.threads)
    print(f"wrote {written}")
    config = RunConfig.read(written)
    for name, text in get_kind(config.kind).summary(config):
        print(f"  {name + ':':<12} {text}")


def sweep(args: argparse.Namespace) -> None:
    from .runs import sweep_effort_runs

    device = evaluation_device(args, cpu_only=CPU_ONLY)
    data = dataset(args.data) if args.data else None
    settings = timing(args, runtimes=args.runtime, device=device) if args.latency else None
    curves = sweep_effort_runs(args.runs, data=data, timing=settings)
    sweep_report(args, curves, settings, "DyVEDeep: accuracy vs MACs performed",
                 "mean MACs performed relative to the dense network", device=device)


def points(run_dir, *, data=None, timing=None, progress=None) -> list:
    """The effort method's operating points of a run (``pick`` measures with them)."""
    from .runs import sweep_effort_runs

    return sweep_effort_runs([run_dir], data=data, timing=timing, progress=progress)
