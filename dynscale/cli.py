"""The ``dynscale`` command line. Every error prints one line and exits 2."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import DynscaleError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, instead of usage + message
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parse_profile(text: str) -> str | list[float]:
    if any(c.isdigit() for c in text.split(",")[0]):
        try:
            return [float(v) for v in text.split(",")]
        except ValueError:
            raise ValueError(f"profile {text!r} is neither a name nor comma-separated numbers") from None
    return text


def _parse_sets(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            options[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            options[key.replace("-", "_")] = value
    return options


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated numbers, got {text!r}") from None


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"expected positive integers, got {text!r}")
    return values


def _model_options(args: argparse.Namespace) -> dict:
    options = {"profile": _parse_profile(args.profile), **_parse_sets(args.set)}
    if args.width_mult is not None:
        options["width_mult"] = args.width_mult
    return options


def _training_config(args: argparse.Namespace):
    from .train import TrainConfig

    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                       momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule,
                       seed=args.seed, train_limit=args.train_limit, holdout=args.holdout or 0)


def _width_recipe(args: argparse.Namespace):
    from .idp import IDP, MultiProfile
    from .models import parse_profile_ranges
    from .slimmable import Independent, Sandwich

    if args.recipe == "independent":
        if args.profiles:
            raise ValueError("the independent recipe trains one network per width; it takes no --profiles")
        return Independent(widths=_float_list(args.family_widths), cut=args.cut,
                           profile_gradient=args.profile_gradient)
    if args.recipe == "us":
        if args.profiles:
            raise ValueError("the us recipe trains every width of one profile; it takes no --profiles")
        return Sandwich(profile_gradient=args.profile_gradient, sandwich=args.sandwich, min_width=args.min_width,
                        distill=not args.no_distill)
    if args.profiles:
        return MultiProfile(profile_gradient=args.profile_gradient, cut=args.cut,
                            profiles=parse_profile_ranges(args.profiles))
    return IDP(profile_gradient=args.profile_gradient, cut=args.cut)


def _timing(args: argparse.Namespace, runtimes: str | None = None, batch: str | None = None,
            examples: int | None = None, channels_last: bool = False):
    from .eval import TimingConfig
    from .eval.runtime import parse_runtimes

    return TimingConfig(batch_sizes=_int_list(batch or args.batch), threads=args.threads, rounds=args.rounds,
                        min_run_time=args.min_run_time, examples=examples,
                        runtimes=parse_runtimes(runtimes or args.runtime), channels_last=channels_last)


def _report(args: argparse.Namespace, curves: list, title: str, xlabel: str | None = None, meta: dict | None = None,
            layout: str = "auto") -> None:
    from .eval import format_table, write_report

    print(format_table(curves, layout=layout))
    for path in write_report(curves, json=args.json, csv=args.csv, markdown=args.markdown, png=args.plot,
                             title=args.title or title, xlabel=xlabel, meta=meta, layout=layout):
        print(f"wrote {path}")


def _timing_meta(timing) -> dict:
    from dataclasses import asdict

    import torch

    return {"timing": asdict(timing) if timing is not None else None, "torch": torch.__version__}


def cmd_train(args: argparse.Namespace) -> None:
    from .idp import parse_widths, train_run
    from .runs import RunConfig

    recipe = _width_recipe(args)
    calibrate = parse_widths(args.calibrate) if args.calibrate else None
    out = train_run(args.out, args.model, args.data, _training_config(args), recipe, _model_options(args),
                    calibrate=calibrate)
    metrics = RunConfig.read(out).metrics
    print(f"wrote {out}: test accuracy {100 * metrics['test_accuracy']:.2f}% at full width "
          f"({metrics['train_seconds']:.1f} s)")


def cmd_calibrate(args: argparse.Namespace) -> None:
    from .idp import calibrate_run, parse_widths

    widths = calibrate_run(args.run, parse_widths(args.widths), data=args.data, batches=args.batches)
    print(f"{args.run}: batch-norm statistics stored for widths {', '.join(f'{w:g}' for w in widths)}")


def cmd_export(args: argparse.Namespace) -> None:
    from .export import export_run

    path = export_run(args.run, args.width, args.format, args.out)
    print(f"wrote {path}")


def cmd_sweep(args: argparse.Namespace) -> None:
    from .idp import parse_widths, sweep_runs

    timing = _timing(args) if args.latency or args.runtime != "torch" else None
    curves = sweep_runs(args.runs, parse_widths(args.widths), data=args.data, timing=timing)
    _report(args, curves, "Accuracy vs computation", meta=_timing_meta(timing))


def cmd_bench(args: argparse.Namespace) -> None:
    from .idp import parse_widths, sweep_runs

    timing = _timing(args)
    widths = sorted(set(parse_widths(args.widths)) | {1.0}, reverse=True)
    curves = sweep_runs([args.run], widths, data=args.data, timing=timing)
    _report(args, curves, f"Latency per width: {Path(args.run).name}", meta=_timing_meta(timing), layout="long")


def cmd_reproduce(args: argparse.Namespace) -> None:
    from .reproduce import reproduce

    out = args.out or f"runs/reproduce-{args.paper}{'-quick' if args.quick else ''}"
    only = [e.strip() for e in args.only.split(",")] if args.only else None
    reproduce(args.paper, out, quick=args.quick, only=only)
    print(f"\nwrote {out}/summary.md, and JSON, Markdown and PNG per experiment")


def cmd_compare(args: argparse.Namespace) -> None:
    from .compare import compare

    out = args.out or f"runs/compare-{args.model}-{args.data}"
    compare(args.model, args.data, out, widths=_float_list(args.widths), epochs=args.epochs,
            train_limit=args.train_limit, width_mult=args.width_mult, seed=args.seed,
            batch_size=args.batch_size)
    print(f"\nwrote {out}/compare.json, compare.md and compare.png")


def cmd_pick(args: argparse.Namespace) -> None:
    from .eval import Controller, describe_knobs
    from .idp import parse_widths, sweep_runs

    (batch,) = _int_list(args.batch) if "," not in args.batch else (None,)
    if batch is None:
        raise ValueError(f"--batch takes one batch size for a budget, got {args.batch!r}")
    if args.sweep:
        controller = Controller.from_file(args.sweep, run=args.run)
    else:
        timing = _timing(args) if args.latency_ms is not None else None
        curves = sweep_runs([args.run], parse_widths(args.widths), timing=timing)
        controller = Controller.from_curves(curves, label=args.run)
    point = controller.pick(macs_ratio=args.macs_ratio, latency_ms=args.latency_ms, batch=batch, runtime=args.runtime)
    lat = point.latency_at(args.runtime, batch)
    latency = f", {lat.ms:.4g} ms at batch {batch} on {args.runtime}" if lat is not None else ""
    print(f"{describe_knobs(point)}: expected accuracy {100 * point.accuracy:.2f}% "
          f"(MAC ratio {point.macs_ratio:.3f}{latency})")


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo import demo_report, run_demo

    curves = run_demo(args.out, epochs=args.epochs, seed=args.seed)
    print(demo_report(curves, args.out))


def cmd_info(args: argparse.Namespace) -> None:
    from .layers import incomplete_layers
    from .runs import get_kind, load_run

    run = load_run(args.run)
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


def cmd_adaptive_train(args: argparse.Namespace) -> None:
    from .adaptive import train_early_exit_run
    from .runs import RunConfig

    exits = [e.strip() for e in args.exits.split(",") if e.strip()]
    weights = _float_list(args.exit_weights) if args.exit_weights else None
    out = train_early_exit_run(args.out, args.model, args.data, _training_config(args), exits, weights,
                               _model_options(args), backbone_run=args.backbone)
    metrics = RunConfig.read(out).metrics
    accs = ", ".join(f"{k} {100 * v:.2f}%" for k, v in metrics["exit_accuracy"].items())
    print(f"wrote {out}: test accuracy per exit: {accs} ({metrics['train_seconds']:.1f} s)")


def _adaptive_options(args: argparse.Namespace) -> dict:
    from .adaptive.sweep import parse_lambdas

    timing = None if args.no_timing else _timing(args, runtimes="torch", examples=args.timing_examples,
                                                 channels_last=args.channels_last)
    return {"lambdas": parse_lambdas(args.lambdas), "max_losses": _float_list(args.max_loss), "data": args.data,
            "timing": timing}


def cmd_adaptive_sweep(args: argparse.Namespace) -> None:
    from .adaptive import sweep_adaptive_run

    options = _adaptive_options(args)
    curves = sweep_adaptive_run(args.run, **options)
    _report(args, curves, f"Adaptive inference: {Path(args.run).name}", "mean MACs relative to the full network",
            _timing_meta(options["timing"]))


def cmd_adaptive_cascade(args: argparse.Namespace) -> None:
    from .adaptive import sweep_cascade
    from .adaptive.cascade import parse_edges

    edges = parse_edges(args.edges) if args.edges else None
    options = _adaptive_options(args)
    curves = sweep_cascade(args.runs, edges, name=args.name, save=args.save, **options)
    if args.save:
        print(f"wrote {args.save}")
    _report(args, curves, f"Network selection: {' → '.join(Path(r).name for r in args.runs)}",
            "mean MACs relative to the full network", _timing_meta(options["timing"]))


def cmd_list(args: argparse.Namespace) -> None:
    from .data import DATASETS
    from .models import list_models, model_info
    from .profiles import list_profiles
    from .runs import list_kinds
    from .train import list_recipes

    print("models:")
    for name in list_models():
        info = model_info(name)
        kind = "convolutional" if info.convolutional else "fully connected"
        print(f"  {name:<10} {info.input_kind} input, {kind}; stages: {', '.join(info.stages())}")
    print(f"profiles: {', '.join(list_profiles())} (or comma-separated coefficients)")
    print(f"data:     {', '.join(DATASETS)}")
    print(f"recipes:  {', '.join(list_recipes())}")
    print(f"runs:     {', '.join(list_kinds())}")


def _add_training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    p.add_argument("--lr", type=float, default=None, help="default 0.05 for sgd, 0.001 for adam")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--schedule", default="cosine", choices=["constant", "cosine", "step"])
    p.add_argument("--train-limit", type=int, default=None, help="train on N examples of a fixed shuffle")
    p.add_argument("--seed", type=int, default=0)


def _add_model_options(p: argparse.ArgumentParser, profile: str) -> None:
    p.add_argument("--profile", default=profile, help="profile name or comma-separated coefficients")
    p.add_argument("--width-mult", type=float, default=None, help="scale every channel count (conv models)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="model option, e.g. --set hidden=[200,200] (repeatable)")


def _add_timing_options(p: argparse.ArgumentParser, batch: str, rounds: int, runtime: str = "torch",
                        runtimes: bool = True) -> None:
    p.add_argument("--batch", default=batch, help="batch sizes timed")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads while timing (PyTorch and ONNX Runtime)")
    p.add_argument("--rounds", type=int, default=rounds,
                   help="interleaved timing rounds, the reference timed in each (medians over rounds)")
    p.add_argument("--min-run-time", type=float, default=0.3, help="seconds of timing per point per round")
    if runtimes:
        p.add_argument("--runtime", default=runtime,
                       help="torch (the dynamic model), torch-dense (its dense export in PyTorch) or "
                            "onnxruntime (the dense export in ONNX Runtime); comma-separated for several")


def _add_report_options(p: argparse.ArgumentParser, plot: str = "accuracy vs MAC ratio") -> None:
    p.add_argument("--json", default=None, help="write the curves as JSON here")
    p.add_argument("--csv", default=None, help="write one CSV row per operating point here")
    p.add_argument("--markdown", default=None, help="write the table as Markdown here")
    p.add_argument("--plot", default=None, help=f"write {plot} as PNG here")
    p.add_argument("--title", default=None, help="title of the plot")


def _add_adaptive_sweep_options(p: argparse.ArgumentParser) -> None:
    from .adaptive.sweep import DEFAULT_LAMBDAS, DEFAULT_MAX_LOSSES

    p.add_argument("--lambdas", default=",".join(f"{v:g}" for v in DEFAULT_LAMBDAS),
                   help="cost weights λ >= 0 of the learned policy (one full network's MACs = λ errors)")
    p.add_argument("--max-loss", default=",".join(f"{v:g}" for v in DEFAULT_MAX_LOSSES),
                   help="threshold baseline: accuracy points below the full network allowed on held-out data")
    p.add_argument("--data", default=None, help="evaluate on this dataset instead of the run's")
    _add_timing_options(p, batch="256", rounds=3, runtimes=False)
    p.add_argument("--timing-examples", type=int, default=2560, help="test examples timed per point")
    p.add_argument("--channels-last", action="store_true",
                   help="time with channels-last memory, full network and adaptive alike (often faster on CPU)")
    p.add_argument("--no-timing", action="store_true", help="skip the wall-clock timing")
    _add_report_options(p, "accuracy vs mean MAC ratio")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dynscale`` command."""
    parser = _Parser(prog="dynscale", description="Dynamic computation scaling for PyTorch "
                     "networks: train one network, scale its cost at run time.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train a model with a channel profile into a run directory")
    p.add_argument("--model", default="mlp", help="registered model name (see `dynscale list`)")
    p.add_argument("--data", default="digits", help="digits, fashion-mnist, mnist, synthetic, idx:DIR")
    _add_model_options(p, "linear")
    _add_training_options(p)
    p.add_argument("--holdout", type=int, default=0,
                   help="training examples kept out (for fitting adaptive policies later; same N for a cascade)")
    p.add_argument("--cut", default="full", choices=["full", "random"],
                   help="full: train at full width (MLP recipe); random: per-layer random cuts (conv recipe)")
    p.add_argument("--profile-gradient", default="chain", choices=["chain", "straight-through"],
                   help="straight-through: the authors' weight gradient without the profile")
    p.add_argument("--profiles", default=None, metavar="RANGES",
                   help="multiple profiles, e.g. 0-0.3,0.3-1.0, trained one after another")
    p.add_argument("--calibrate", default=None, metavar="WIDTHS",
                   help="after training, store batch-norm statistics for these widths")
    p.add_argument("--recipe", default="idp", choices=["idp", "us", "independent"],
                   help="idp: the paper's (see --cut); us: universally slimmable; independent: "
                        "one network per width of --family-widths")
    p.add_argument("--sandwich", type=int, default=4, help="us: widths per step (largest, smallest, random)")
    p.add_argument("--min-width", type=float, default=0.25, help="us: the smallest width trained")
    p.add_argument("--no-distill", action="store_true", help="us: narrow widths learn from labels only")
    p.add_argument("--family-widths", default="0.25,0.5,0.75,1.0", help="independent: the widths")
    p.add_argument("--out", required=True, help="run directory to write")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sweep", help="evaluate runs at several widths: table, JSON, CSV, plot")
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--data", default=None, help="evaluate on this dataset instead of the run's")
    p.add_argument("--widths", default="0.1,0.25,0.5,0.75,1.0")
    p.add_argument("--latency", action="store_true", help="also measure wall-clock time per width")
    _add_timing_options(p, batch="1,64", rounds=3)
    _add_report_options(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("calibrate", help="store batch-norm statistics per width in a run")
    p.add_argument("run")
    p.add_argument("--widths", default="0.1,0.25,0.5,0.75,1.0")
    p.add_argument("--data", default=None, help="calibrate on this dataset's training split instead")
    p.add_argument("--batches", type=int, default=20, help="batches of 256 per width")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("export", help="write one width as a plain dense model (ONNX or safetensors)")
    p.add_argument("run")
    p.add_argument("--width", type=float, required=True)
    p.add_argument("--format", default="onnx", choices=["onnx", "safetensors"])
    p.add_argument("--out", default=None, help="default RUN-wW.onnx or RUN-wW/ beside the run")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="latency per width on each runtime, beside the MAC ratio")
    p.add_argument("run")
    p.add_argument("--widths", default="0.25,0.5,0.75,1.0")
    p.add_argument("--data", default=None, help="time on this dataset's test inputs instead of the run's")
    _add_timing_options(p, batch="1,64", rounds=5, runtime="torch,torch-dense")
    _add_report_options(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("reproduce", help="run a paper's experiments at CPU scale (Fashion-MNIST)")
    p.add_argument("paper", choices=["idp"])
    p.add_argument("--quick", action="store_true", help="a few minutes instead of up to an hour")
    p.add_argument("--out", default=None, help="default runs/reproduce-PAPER[-quick]")
    p.add_argument("--only", default=None, help="comma-separated experiment names")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("compare", help="independent networks vs IDP vs universally slimmable, one table")
    p.add_argument("--model", default="mlp")
    p.add_argument("--data", default="digits")
    p.add_argument("--widths", default="0.25,0.5,0.75,1.0", help="the independent networks' widths, swept by all")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--width-mult", type=float, default=None, help="conv models: scale every channel count")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="default runs/compare-MODEL-DATA")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("pick", help="the best operating point for a MAC or latency budget, from a measured sweep")
    p.add_argument("run", help="run directory (swept now) or its name in --sweep")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--macs-ratio", type=float, help="budget as a fraction of full-width MACs")
    budget.add_argument("--latency-ms", type=float, help="budget in ms per batch of --batch on --runtime")
    p.add_argument("--sweep", default=None, help="use this report JSON (from sweep --json) instead of measuring")
    p.add_argument("--widths", default="0.1,0.25,0.5,0.75,1.0", help="widths to sweep when measuring")
    _add_timing_options(p, batch="1", rounds=3)
    p.set_defaults(func=cmd_pick)

    p = sub.add_parser("demo", help="the IDP demo: MLP on digits, all-one vs linear profile")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("adaptive", help="adaptive inference: learned early exits and network selection")
    adaptive = p.add_subparsers(dest="adaptive_command", required=True, parser_class=_Parser)

    p = adaptive.add_parser("train", help="train a backbone with early exits (or exits on a frozen backbone)")
    p.add_argument("--model", default="vgg16", help="registered model name (see `dynscale list`)")
    p.add_argument("--data", default="digits", help="digits, fashion-mnist, mnist, synthetic, idx:DIR")
    p.add_argument("--exits", required=True,
                   help="stage names to put exits after, e.g. block1,block2,block3 (an unknown name lists them)")
    p.add_argument("--exit-weights", default=None,
                   help="loss weight per exit and then the final output, e.g. 1,1,1,1 (default all 1)")
    p.add_argument("--backbone", default=None, metavar="RUN",
                   help="a trained run (dynscale train --holdout N) to freeze; only the exits are trained")
    p.add_argument("--holdout", type=int, default=None,
                   help="training examples kept out to fit the policies on (default 10%%)")
    _add_model_options(p, "all-one")
    _add_training_options(p)
    p.add_argument("--out", required=True, help="run directory to write")
    p.set_defaults(func=cmd_adaptive_train)

    p = adaptive.add_parser("sweep", help="fit exit policies over λ, with the threshold baseline: table, JSON, plot")
    p.add_argument("run", help="an early-exit run (dynscale adaptive train) or a saved cascade")
    _add_adaptive_sweep_options(p)
    p.set_defaults(func=cmd_adaptive_sweep)

    p = adaptive.add_parser("cascade", help="network selection among trained runs of rising cost: table, JSON, plot")
    p.add_argument("runs", nargs="+", help="run directories, cheapest first, trained with the same --holdout")
    p.add_argument("--edges", default=None, help="FROM-TO indices, e.g. 0-1,1-2,0-2 (default: a chain)")
    p.add_argument("--name", default="cascade", help="label of the cascade in the report")
    p.add_argument("--save", default=None, metavar="RUN", help="also write the cascade as a run directory")
    _add_adaptive_sweep_options(p)
    p.set_defaults(func=cmd_adaptive_cascade)

    p = sub.add_parser("info", help="describe a run directory")
    p.add_argument("run")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("list", help="list models, profiles, datasets, recipes and run kinds")
    p.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (DynscaleError, ValueError, OSError) as e:
        if os.environ.get("DYNSCALE_DEBUG"):
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"dynscale: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dynscale: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug, not bad input: still one line, with a way to see more
        if os.environ.get("DYNSCALE_DEBUG"):
            raise
        print(f"dynscale: internal error: {type(e).__name__}: {' '.join(str(e).split())} "
              "(rerun with DYNSCALE_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
