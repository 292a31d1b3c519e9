"""The shell's own commands, which work on any run or on the whole package: ``info``, ``list``,
``pick``, ``convert``, ``deploy`` (a bundle of any method's run), and the IDP paper's
``reproduce``, ``compare`` and ``demo``, and ``report`` (every method side by side)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..command import (
    about,
    add_data,
    add_execution_options,
    add_quiet,
    add_threads,
    check_model_options,
    execution,
    inputs,
    timing,
)
from ..command import options as opt
from ..compare import BUDGETS
from ..errors import DynscaleError

REPORTS = ("json", "csv", "markdown", "plot")


def add_commands(sub) -> None:
    """Adds the shell's commands."""
    p = sub.add_parser("pick", help="the best operating point for a MAC or latency budget, from a measured sweep")
    p.add_argument("run", help="a run directory (measured now by its method), or a run's name in --sweep")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--macs-ratio", type=opt.number(0.0, low_open=True),
                        help="budget as a fraction of the full network's MACs")
    budget.add_argument("--latency-ms", type=opt.number(0.0, low_open=True),
                        help="budget in ms per batch of --batch on --runtime")
    p.add_argument("--sweep", type=opt.existing_file, default=None,
                   help="use this report JSON (from --json of any sweep or bench) instead of measuring")
    p.add_argument("--widths", type=opt.WIDTHS, default=None,
                   help="width runs: the widths to sweep when measuring (default: 0.1,0.25,0.5,0.75,1)")
    p.add_argument("--batch", type=opt.POSITIVE, default=1, help="the batch size of a latency budget")
    add_threads(p, 1)
    p.add_argument("--rounds", type=opt.POSITIVE, default=3, help="timing rounds when measuring")
    p.add_argument("--min-run-time", type=opt.number(0.0, low_open=True), default=0.3,
                   help="seconds of timing per point per round")
    p.add_argument("--runtime", default="torch", choices=["torch", "torch-dense", "onnxruntime"],
                   help="the runtime of a latency budget")
    add_quiet(p)
    p.set_defaults(func=pick)

    p = sub.add_parser("convert", help="make a width run of your own network (imports and runs your code)")
    p.add_argument("factory", help="MODULE:FUNCTION returning your nn.Module; dynscale imports the module and calls "
                   "the function, so give only code you trust")
    p.add_argument("--input-shape", type=opt.listing(opt.POSITIVE, "3,224,224"), required=True, metavar="C,H,W",
                   help="the shape of one input, without the batch (e.g. 3,224,224)")
    p.add_argument("--out", type=opt.path, required=True, help="run directory to write")
    p.add_argument("--profile", type=opt.profile, default="linear", help="channel profile of the incomplete layers")
    p.add_argument("--force", action="store_true", help="replace an existing run at --out")
    p.set_defaults(func=convert)

    p = sub.add_parser("reproduce", help="run a paper's experiments: at CPU scale on Fashion-MNIST, or at the "
                       "paper's size (--full)")
    p.add_argument("paper", choices=["idp"], help="the paper")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a few minutes instead of up to an hour")
    size.add_argument("--full", action="store_true",
                      help="the paper's own experiment: VGG-16 on CIFAR-10 ($DYNSCALE_DATA/cifar10/), hours on a GPU")
    p.add_argument("--out", type=opt.path, default=None, help="default runs/reproduce-PAPER[-quick|-full]")
    p.add_argument("--only", type=opt.listing(opt.name, "mlp_profiles"), default=None,
                   help="comma-separated experiment names")
    p.add_argument("--force", action="store_true", help="retrain runs of --out trained with other settings")
    add_execution_options(p)
    add_threads(p)
    add_quiet(p)
    p.set_defaults(func=reproduce)

    p = sub.add_parser("compare", help="independent networks vs IDP vs universally slimmable, one table")
    p.add_argument("--model", type=opt.model_name, default="mlp", help="registered model")
    add_data(p, "digits", "the dataset")
    p.add_argument("--widths", type=opt.WIDTHS, default=[0.25, 0.5, 0.75, 1.0],
                   help="the independent networks' widths, swept by all")
    p.add_argument("--epochs", type=opt.POSITIVE, default=30, help="epochs of each training")
    p.add_argument("--batch-size", type=opt.POSITIVE, default=64, help="examples per step")
    p.add_argument("--train-limit", type=opt.POSITIVE, default=None, help="train on N examples (default: all)")
    p.add_argument("--width-mult", type=opt.number(0.0, low_open=True), default=None,
                   help="convolutional models: scale every channel count")
    p.add_argument("--seed", type=opt.NON_NEGATIVE, default=0, help="seed of every training")
    p.add_argument("--budget", choices=BUDGETS, default="equal-epochs",
                   help="equal-epochs: every network trains --epochs; equal-passes: every contender gets the us "
                        "network's forward-backward passes (the family's networks together)")
    p.add_argument("--out", type=opt.path, default=None, help="default runs/compare-MODEL-DATA")
    p.add_argument("--force", action="store_true", help="retrain runs of --out trained with other settings")
    add_execution_options(p)
    add_threads(p)
    add_quiet(p)
    p.set_defaults(func=compare)

    p = sub.add_parser("report", help="every method on one backbone and dataset, side by side: one HTML, Markdown "
                       "and JSON report")
    add_data(p, "fashion-mnist", "the dataset")
    p.add_argument("--out", type=opt.path, required=True, help="the report directory to write (whole)")
    p.add_argument("--quick", action="store_true", help="the few-minute plan (small runs, fewer timing rounds)")
    p.add_argument("--cache", type=opt.path, default=None,
                   help="where the runs are trained and reused (default runs/report-DATA-MODE)")
    p.add_argument("--plan", type=opt.existing_file, default=None,
                   help="a report plan YAML of your own (default: dynscale/experiments/report.yaml)")
    p.add_argument("--force", action="store_true",
                   help="replace the report at --out, and remake cached runs whose command changed")
    add_threads(p, 1)
    p.add_argument("--jobs", type=opt.POSITIVE, default=1,
                   help="runs trained at a time, each with --threads threads (the timing runs alone afterwards)")
    add_quiet(p)
    p.set_defaults(func=report)

    p = sub.add_parser("demo", help="the IDP demo: MLP on digits, all-one vs linear profile")
    p.add_argument("--out", type=opt.path, default="runs/demo", help="directory of the two runs and the report")
    p.add_argument("--epochs", type=opt.POSITIVE, default=30, help="epochs of each training")
    p.add_argument("--seed", type=opt.NON_NEGATIVE, default=0, help="seed of both trainings")
    p.add_argument("--force", action="store_true", help="replace the demo's runs in --out")
    add_threads(p)
    add_quiet(p)
    p.set_defaults(func=demo)

    p = sub.add_parser("deploy", help="write a run's operating points as a bundle that runs without PyTorch "
                       "(ONNX Runtime and numpy: python -m dynscale.runtime)")
    p.add_argument("run", type=opt.run_directory, help="a run of a method that deploys (width, adaptive, dfs, effort)")
    p.add_argument("--out", type=opt.path, required=True, help="the bundle's directory")
    p.add_argument("--widths", type=opt.WIDTHS, default=None,
                   help="width runs: the widths to deploy (default 0.25,0.5,0.75,1)")
    p.add_argument("--lambdas", type=opt.listing(opt.number(0.0), "0,0.01,0.1"), default=None, metavar="VALUES",
                   help="early-exit and cascade runs: the learned policies' cost weights λ "
                        "(default 0,0.01,0.02,0.05,0.1)")
    p.add_argument("--int8", action="store_true",
                   help="add every point with its graphs statically quantized to int8 (QDQ, calibrated on "
                        "training data)")
    p.add_argument("--calibration-batches", type=opt.POSITIVE, default=8,
                   help="batches of 32 training inputs that calibrate the int8 graphs")
    p.add_argument("--rounds", type=opt.POSITIVE, default=5, help="interleaved timing rounds at batch 1 and 64")
    p.add_argument("--min-run-time", type=opt.number(0.0, low_open=True), default=0.2,
                   help="seconds of timing per point, batch size and round")
    add_threads(p, 1)
    p.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    add_quiet(p)
    p.set_defaults(func=deploy)

    p = sub.add_parser("info", help="describe a run directory")
    p.add_argument("run", type=opt.run_directory, help="a run directory")
    p.set_defaults(func=info)

    p = sub.add_parser("list", help="list methods, models, profiles, datasets, recipes and run kinds")
    p.set_defaults(func=list_all)


def prepare(args: argparse.Namespace) -> None:
    """What every command does first: progress bars, threads, and the report files checked."""
    import torch

    from ..progress import set_quiet
    from ..runs import check_file_output

    set_quiet(bool(getattr(args, "quiet", False)))
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    seen: dict[Path, str] = {}
    for form in REPORTS:
        path = getattr(args, form, None)
        if path is not None:
            check_file_output(path, f"--{form}", inputs=inputs(args))
            if path.resolve() in seen:
                raise DynscaleError(f"--{form} and --{seen[path.resolve()]} name the same file {path}; give each its "
                                    "own")
            seen[path.resolve()] = form


def pick(args: argparse.Namespace) -> None:
    from ..eval import Controller, describe_knobs
    from ..methods import measure_run

    if args.sweep:
        with about("--sweep"):
            controller = Controller.from_file(args.sweep, run=args.run)
    else:
        try:
            opt.run_directory(args.run)
        except argparse.ArgumentTypeError as e:
            raise DynscaleError(f"{e} (or name a run of a report with --sweep)") from None
        options = {"widths": args.widths} if args.widths is not None else {}
        settings = timing(args, runtimes=[args.runtime], batch_sizes=[args.batch]) if args.latency_ms else None
        curves = measure_run(args.run, timing=settings, **options)
        controller = Controller.from_curves(curves, label=args.run)
    with about("--macs-ratio" if args.macs_ratio is not None else "--latency-ms"):
        point = controller.pick(macs_ratio=args.macs_ratio, latency_ms=args.latency_ms, batch=args.batch,
                                runtime=args.runtime)
    lat = point.latency_at(args.runtime, args.batch)
    latency = f", {lat.ms:.4g} ms at batch {args.batch} on {args.runtime}" if lat is not None else ""
    print(f"{describe_knobs(point)}: expected accuracy {100 * point.accuracy:.2f}% "
          f"(MAC ratio {point.macs_ratio:.3f}{latency})")


def convert(args: argparse.Namespace) -> None:
    from ..convert import convert_to_run

    with about("--input-shape"):
        if len(args.input_shape) != 3:
            raise DynscaleError(f"give C,H,W (three sizes), got {','.join(map(str, args.input_shape))}")
    out = convert_to_run(args.factory, tuple(args.input_shape), args.out, profile=args.profile, force=args.force)
    print(f"wrote {out}: train it with `dynscale train --from {out} --data NAME ...`, or sweep it with "
          f"`dynscale sweep {out} --data NAME`")


def reproduce(args: argparse.Namespace) -> None:
    from ..reproduce import load_plan
    from ..reproduce import reproduce as run_reproduce
    from ..runs import check_directory

    suffix = "-quick" if args.quick else "-full" if args.full else ""
    out = args.out or Path(f"runs/reproduce-{args.paper}{suffix}")
    settings = execution(args)
    check_directory(out, inputs=inputs(args))
    plan = load_plan(args.paper, full=args.full)
    unknown = sorted(set(args.only or []) - set(plan["experiments"]))
    if unknown:
        raise DynscaleError(f"--only: unknown experiment {', '.join(unknown)}; choose from "
                            f"{', '.join(plan['experiments'])}")
    run_reproduce(args.paper, out, quick=args.quick, full=args.full, only=args.only, force=args.force,
                  execution=settings)
    print(f"\nwrote {out}/summary.md, and JSON, Markdown and PNG per experiment")


def compare(args: argparse.Namespace) -> None:
    from ..compare import compare as run_compare
    from ..runs import check_directory

    if 1.0 not in args.widths:
        raise ValueError(f"--widths must include 1 (the full network), got {args.widths}")
    if args.width_mult is not None:
        check_model_options(args.model, {"width_mult": args.width_mult})
    settings = execution(args)
    out = args.out or Path(f"runs/compare-{args.model}-{args.data}")
    check_directory(out, inputs=inputs(args))
    from ..command import dataset

    dataset(args.data)
    run_compare(args.model, args.data, out, widths=args.widths, epochs=args.epochs, train_limit=args.train_limit,
                width_mult=args.width_mult, seed=args.seed, batch_size=args.batch_size, force=args.force,
                execution=settings, budget=args.budget)
    print(f"\nwrote {out}/compare.json, compare.md and compare.png")


def report(args: argparse.Namespace) -> None:
    import shlex

    from ..report import load_report_plan, print_budgets
    from ..report import report as run_report

    try:
        plan = load_report_plan(args.plan)
    except DynscaleError as e:
        raise DynscaleError(f"--plan {e}" if args.plan else str(e)) from None
    command = shlex.join(["dynscale", "report", "--data", args.data, *(["--quick"] if args.quick else []),
                          "--out", str(args.out), *(["--cache", str(args.cache)] if args.cache else []),
                          *(["--plan", str(args.plan)] if args.plan else []), *(["--force"] if args.force else []),
                          "--threads", str(args.threads), "--jobs", str(args.jobs)])
    meta = run_report(args.data, args.out, quick=args.quick, cache=args.cache, force=args.force, threads=args.threads,
                      progress=None if not args.quiet else False, plan=plan, command=command, jobs=args.jobs)
    print_budgets(meta, Path(args.out))


def demo(args: argparse.Namespace) -> None:
    from ..demo import demo_report, run_demo
    from ..runs import check_directory, check_output

    check_directory(args.out)
    for profile in ("all-one", "linear"):
        check_output(Path(args.out) / profile, args.force)
    curves = run_demo(args.out, epochs=args.epochs, seed=args.seed, force=args.force)
    print(demo_report(curves, args.out))


def info(args: argparse.Namespace) -> None:
    from ..layers import incomplete_layers
    from ..runs import get_kind, open_run

    run = open_run(args.run)
    cfg = run.config
    params = sum(p.numel() for p in run.model.parameters())  # shared parameters count once
    print(f"run:        {run.path} ({cfg.kind})")
    if cfg.model is not None:
        print(f"model:      {cfg.model.name} {json.dumps(cfg.model.config)}")
        print(f"profile:    {cfg.profile}")
    print(f"data:       {cfg.data}")
    print(f"parameters: {params} in {len(incomplete_layers(run.model))} incomplete layers")
    if cfg.profile_ranges:
        ranges = ", ".join(f"{a:g}-{b:g}" for a, b in cfg.profile_ranges)
        shared = cfg.model.shared
        print(f"{'profiles:  ' if shared else 'family:    '} {ranges}{'' if shared else ' (independent networks)'}")
    calibrated = ", ".join(f"{w:g}" for w in cfg.calibrated_widths)
    print(f"batch-norm: {'calibrated at ' + calibrated if calibrated else 'not calibrated'}")
    summary = get_kind(cfg.kind).summary
    for label, text in summary(cfg) if summary else []:
        print(f"{label + ':':<11} {text}")
    print(f"training:   {json.dumps(cfg.training)}")
    print(f"recipe:     {json.dumps(cfg.recipe)}")
    print(f"metrics:    {json.dumps(cfg.metrics)}")


def list_all(args: argparse.Namespace) -> None:
    from ..data import DATASETS
    from ..methods import list_methods
    from ..models import list_models, model_info
    from ..profiles import list_profiles
    from ..runs import list_kinds
    from ..train import list_recipes

    print("methods:")
    for method in list_methods():
        print(f"  {method.name:<10} {method.help} (runs: {', '.join(method.kinds) or 'none'})")
    print("models:")
    for name in list_models():
        info = model_info(name)
        kind = "convolutional" if info.convolutional else "fully connected"
        print(f"  {name:<10} {info.input_kind} input, {kind}; stages: {', '.join(info.stages())}")
    print(f"profiles: {', '.join(list_profiles())} (or comma-separated coefficients)")
    print(f"data:     {', '.join(DATASETS)}")
    print(f"recipes:  {', '.join(list_recipes())}")
    print(f"runs:     {', '.join(list_kinds())}")


def deploy(args: argparse.Namespace) -> None:
    from ..deploy import deploy_run, summarize

    out = deploy_run(args.run, args.out, int8=args.int8, calibration=args.calibration_batches, threads=args.threads,
                     rounds=args.rounds, min_time=args.min_run_time, force=args.force, widths=args.widths,
                     lambdas=args.lambdas)
    print(f"wrote {out}: run it with `python -m dynscale.runtime {out} --input X.npy --latency-ms MS`")
    for line in summarize(out):
        print(line)
