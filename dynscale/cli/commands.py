"""What each ``dynscale`` command does, once its options are parsed and checked.

Each command checks the runs it reads and the files it will write before any work starts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from ..errors import DynscaleError

REPORTS = ("json", "csv", "markdown", "plot")
# The command-line option of each model option.
MODEL_FLAGS = {"profile": "--profile", "width_mult": "--width-mult"}


@contextlib.contextmanager
def about(flag: str) -> Iterator[None]:
    """Names ``flag`` in any user error raised inside, so the one-line message says which
    option to fix."""
    try:
        yield
    except (DynscaleError, ValueError) as e:
        message = " ".join(str(e).split())
        raise DynscaleError(message if flag in message else f"{flag}: {message}") from None


def _dataset(name: str, flag: str = "--data"):
    from ..data import load_dataset

    with about(f"{flag} {name}"):
        return load_dataset(name)


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
            check_file_output(path, f"--{form}")
            if path.resolve() in seen:
                raise DynscaleError(f"--{form} and --{seen[path.resolve()]} name the same file {path}; give each its "
                                    "own")
            seen[path.resolve()] = form


def _model_options(args: argparse.Namespace) -> dict:
    options = {"profile": args.profile, **dict(args.set)}
    if args.width_mult is not None:
        options["width_mult"] = args.width_mult
    return options


def _check_model_options(model: str, options: dict, data=None) -> dict:
    """Checks each model option (naming the flag it came from) and, given the data, sizes the
    options for it."""
    from ..models import check_options
    from ..train import sized_for

    for key, value in options.items():
        with about(MODEL_FLAGS.get(key, f"--set {key}")):
            check_options(model, {key: value})
    if data is None:
        return options
    for key in ("in_channels", "input_size", "num_classes"):
        with about(f"--set {key}"):
            sized_for(data, {k: v for k, v in options.items() if k == key})
    import torch

    from ..models import get_model

    flags = [MODEL_FLAGS.get(k, "--set") for k in options if k != "profile"] or ["--profile"]
    with torch.device("meta"), about(" / ".join(dict.fromkeys(flags))):  # the model's own checks, nothing allocated
        get_model(model, **sized_for(data, options))
    return options


def _check_fit(config, data) -> None:
    """The data is big enough for the held-out split asked for."""
    if config.holdout and not 0 < config.holdout < len(data.train_y):
        raise DynscaleError(f"--holdout {config.holdout} must be below the {len(data.train_y)} training examples of "
                            f"{data.name}")


def _training_config(args: argparse.Namespace):
    from ..train import TrainConfig

    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                       momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule,
                       seed=args.seed, train_limit=args.train_limit, holdout=args.holdout or 0)


def _width_recipe(args: argparse.Namespace):
    from ..idp import IDP, MultiProfile
    from ..slimmable import Independent, Sandwich

    if args.recipe == "independent":
        if args.profiles:
            raise ValueError("the independent recipe trains one network per width; it takes no --profiles")
        if 1.0 not in args.family_widths:
            raise ValueError(f"--family-widths must include 1 (the full network), got {args.family_widths}")
        return Independent(widths=args.family_widths, cut=args.cut, profile_gradient=args.profile_gradient)
    if args.recipe == "us":
        if args.profiles:
            raise ValueError("the us recipe trains every width of one profile; it takes no --profiles")
        return Sandwich(profile_gradient=args.profile_gradient, sandwich=args.sandwich, min_width=args.min_width,
                        distill=not args.no_distill)
    if args.profiles:
        return MultiProfile(profile_gradient=args.profile_gradient, cut=args.cut, profiles=args.profiles)
    return IDP(profile_gradient=args.profile_gradient, cut=args.cut)


def _timing(args: argparse.Namespace, runtimes: list[str] | None = None, examples: int | None = None,
            channels_last: bool = False, batch_sizes: list[int] | None = None):
    from ..eval import TimingConfig

    return TimingConfig(batch_sizes=batch_sizes or args.batch, threads=args.threads, rounds=args.rounds,
                        min_run_time=args.min_run_time, examples=examples, runtimes=runtimes or args.runtime,
                        channels_last=channels_last)


def _report(args: argparse.Namespace, curves: list, title: str, xlabel: str | None = None, meta: dict | None = None,
            layout: str = "auto", x: str = "macs") -> None:
    from ..eval import format_table, write_report

    print(format_table(curves, layout=layout))
    for path in write_report(curves, json=args.json, csv=args.csv, markdown=args.markdown, png=args.plot,
                             title=args.title or title, xlabel=xlabel, meta=meta, layout=layout, x=x):
        print(f"wrote {path}")


def _timing_meta(timing) -> dict:
    import torch

    return {"timing": asdict(timing) if timing is not None else None, "torch": torch.__version__}


def _width_run(path: Path, what: str = "this command"):
    from ..runs import RunConfig

    config = RunConfig.read(path)
    if config.kind != "width":
        raise DynscaleError(f"{path} is a {config.kind} run; {what} takes a run trained with `dynscale train`")
    return config


def _checked_width_runs(runs: list[Path], data_name: str | None, what: str):
    """Checks, before any work, that the runs are width runs fitting the data; returns the data
    given with ``--data`` (None: each run's own)."""
    from ..evaluation import check_compatible

    configs = [_width_run(run, what) for run in runs]
    data = _dataset(data_name) if data_name else None
    for run, config in zip(runs, configs, strict=True):
        with about("--data" if data is not None else str(run)):
            check_compatible(config.model_config, data or _dataset(config.data, str(run)), str(run))
    return data


def train(args: argparse.Namespace) -> None:
    from ..idp import train_run
    from ..runs import RunConfig, check_output

    check_output(args.out, args.force)
    recipe = _width_recipe(args)
    config = _training_config(args)
    data = _dataset(args.data)
    options = _check_model_options(args.model, _model_options(args), data)
    _check_fit(config, data)
    out = train_run(args.out, args.model, data, config, recipe, options,
                    calibrate=args.calibrate, force=args.force, resume=args.resume,
                    checkpoint_every=args.checkpoint_every)
    metrics = RunConfig.read(out).metrics
    print(f"wrote {out}: test accuracy {100 * metrics['test_accuracy']:.2f}% at full width "
          f"({metrics['train_seconds']:.1f} s)")


def calibrate(args: argparse.Namespace) -> None:
    from ..idp import calibrate_run

    config = _width_run(args.run, "calibrate")
    data = _dataset(args.data or config.data)
    with about("--data"):
        from ..evaluation import check_compatible

        check_compatible(config.model_config, data, str(args.run))
    widths = calibrate_run(args.run, args.widths, data=data, batches=args.batches)
    print(f"{args.run}: batch-norm statistics stored for widths {', '.join(f'{w:g}' for w in widths)}")


def export(args: argparse.Namespace) -> None:
    from ..export import export_run

    _width_run(args.run, "export")
    path = export_run(args.run, args.width, args.format, args.out, force=args.force)
    print(f"wrote {path}")


def sweep(args: argparse.Namespace) -> None:
    from ..idp import sweep_runs

    data = _checked_width_runs(args.runs, args.data, "sweep (adaptive runs: `dynscale adaptive sweep`)")
    timing = _timing(args) if args.latency or args.runtime != ["torch"] else None
    curves = sweep_runs(args.runs, args.widths, data=data, timing=timing)
    _report(args, curves, "Accuracy vs computation", meta=_timing_meta(timing))


def bench(args: argparse.Namespace) -> None:
    from ..idp import sweep_runs

    data = _checked_width_runs([args.run], args.data, "bench")
    timing = _timing(args)
    widths = sorted(set(args.widths) | {1.0}, reverse=True)
    curves = sweep_runs([args.run], widths, data=data, timing=timing)
    _report(args, curves, f"Latency per width: {Path(args.run).name}", meta=_timing_meta(timing), layout="long")


def reproduce(args: argparse.Namespace) -> None:
    from ..reproduce import load_plan
    from ..reproduce import reproduce as run_reproduce
    from ..runs import check_directory

    out = args.out or Path(f"runs/reproduce-{args.paper}{'-quick' if args.quick else ''}")
    check_directory(out)
    unknown = sorted(set(args.only or []) - set(load_plan(args.paper)["experiments"]))
    if unknown:
        raise DynscaleError(f"--only: unknown experiment {', '.join(unknown)}; choose from "
                            f"{', '.join(load_plan(args.paper)['experiments'])}")
    run_reproduce(args.paper, out, quick=args.quick, only=args.only, force=args.force)
    print(f"\nwrote {out}/summary.md, and JSON, Markdown and PNG per experiment")


def compare(args: argparse.Namespace) -> None:
    from ..compare import compare as run_compare

    if 1.0 not in args.widths:
        raise ValueError(f"--widths must include 1 (the full network), got {args.widths}")
    from ..runs import check_directory

    if args.width_mult is not None:
        _check_model_options(args.model, {"width_mult": args.width_mult})
    out = args.out or Path(f"runs/compare-{args.model}-{args.data}")
    check_directory(out)
    _dataset(args.data)
    run_compare(args.model, args.data, out, widths=args.widths, epochs=args.epochs, train_limit=args.train_limit,
                width_mult=args.width_mult, seed=args.seed, batch_size=args.batch_size, force=args.force)
    print(f"\nwrote {out}/compare.json, compare.md and compare.png")


def pick(args: argparse.Namespace) -> None:
    from ..eval import Controller, describe_knobs
    from ..idp import sweep_runs

    if args.sweep:
        with about("--sweep"):
            controller = Controller.from_file(args.sweep, run=args.run)
    else:
        from .options import run_directory

        try:
            run_directory(args.run)
        except argparse.ArgumentTypeError as e:
            raise DynscaleError(f"{e} (or name a run of a report with --sweep)") from None
        _checked_width_runs([Path(args.run)], None, "pick (without --sweep)")
        timing = None
        if args.latency_ms is not None:
            timing = _timing(args, runtimes=[args.runtime], batch_sizes=[args.batch])
        controller = Controller.from_curves(sweep_runs([args.run], args.widths, timing=timing), label=args.run)
    with about("--macs-ratio" if args.macs_ratio is not None else "--latency-ms"):
        point = controller.pick(macs_ratio=args.macs_ratio, latency_ms=args.latency_ms, batch=args.batch,
                                runtime=args.runtime)
    lat = point.latency_at(args.runtime, args.batch)
    latency = f", {lat.ms:.4g} ms at batch {args.batch} on {args.runtime}" if lat is not None else ""
    print(f"{describe_knobs(point)}: expected accuracy {100 * point.accuracy:.2f}% "
          f"(MAC ratio {point.macs_ratio:.3f}{latency})")


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
    from ..runs import get_kind, load_run

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


def adaptive_train(args: argparse.Namespace) -> None:
    from ..adaptive import train_early_exit_run
    from ..models import model_info
    from ..runs import RunConfig, check_output, load_run

    check_output(args.out, args.force)
    config = _training_config(args)
    data = _dataset(args.data)
    options = _model_options(args)
    if args.backbone is None:
        options = _check_model_options(args.model, options, data)
        stages = model_info(args.model).stages(**{**options, "in_channels": data.in_channels,
                                                   "input_size": data.input_size, "num_classes": data.num_classes})
    else:
        _width_run(args.backbone, "--backbone")
        with about("--backbone"):
            from ..adaptive import backbone_stages

            stages = [n for n, _ in backbone_stages(load_run(args.backbone).model)]
    unknown = [e for e in args.exits if e not in stages[:-1]]
    if unknown:
        raise DynscaleError(f"--exits: unknown stage {unknown[0]!r}; exits can follow {', '.join(stages[:-1])}")
    if len(set(args.exits)) != len(args.exits):
        raise DynscaleError(f"--exits: each stage takes at most one exit, got {','.join(args.exits)}")
    if args.exit_weights is not None:
        if len(args.exit_weights) != len(args.exits) + 1 or sum(args.exit_weights) <= 0:
            raise DynscaleError(f"--exit-weights: give {len(args.exits) + 1} weights >= 0, not all 0 (one per exit, "
                                f"then the final output), got {','.join(f'{w:g}' for w in args.exit_weights)}")
    _check_fit(config, data)
    out = train_early_exit_run(args.out, args.model, data, config, args.exits, args.exit_weights, options,
                               backbone_run=args.backbone, force=args.force, resume=args.resume,
                               checkpoint_every=args.checkpoint_every)
    metrics = RunConfig.read(out).metrics
    accs = ", ".join(f"{k} {100 * v:.2f}%" for k, v in metrics["exit_accuracy"].items())
    print(f"wrote {out}: test accuracy per exit: {accs} ({metrics['train_seconds']:.1f} s)")


def _adaptive_options(args: argparse.Namespace) -> dict:
    timing = None if args.no_timing else _timing(args, runtimes=["torch"], examples=args.timing_examples,
                                                 channels_last=args.channels_last)
    return {"lambdas": args.lambdas, "max_losses": args.max_loss, "data": args.data, "timing": timing}


def adaptive_sweep(args: argparse.Namespace) -> None:
    from ..adaptive import sweep_adaptive_run
    from ..runs import RunConfig

    config = RunConfig.read(args.run)
    if config.kind not in ("early-exit", "cascade"):
        raise DynscaleError(f"{args.run} is a {config.kind} run, not an early-exit run; make one with "
                            "`dynscale adaptive train`, or sweep widths with `dynscale sweep`")
    options = _adaptive_options(args)
    if args.data:
        options["data"] = _dataset(args.data)
        with about("--data"):
            from ..evaluation import check_compatible

            for member in config.section.get("members", [config.model_config]):
                check_compatible(member.get("config", member), options["data"], str(args.run))
    curves = sweep_adaptive_run(args.run, **options)
    _report(args, curves, f"Adaptive inference: {Path(args.run).name}", "mean MACs relative to the full network",
            _timing_meta(options["timing"]))


def adaptive_cascade(args: argparse.Namespace) -> None:
    from ..adaptive import build_cascade, sweep_cascade
    from ..runs import check_output

    if len(args.runs) < 2:
        raise DynscaleError("a cascade needs at least two runs, cheapest first")
    if args.save is not None:
        check_output(args.save, args.force, "--save")
    for run in args.runs:
        _width_run(run, "a cascade")
    options = _adaptive_options(args)
    if args.data:
        options["data"] = _dataset(args.data)
    with about("--edges" if args.edges else "runs"):
        build_cascade(args.runs, args.edges, options["data"])  # every check, before any work
    curves = sweep_cascade(args.runs, args.edges, name=args.name, save=args.save, **options)
    if args.save:
        print(f"wrote {args.save}")
    _report(args, curves, f"Network selection: {' → '.join(Path(r).name for r in args.runs)}",
            "mean MACs relative to the full network", _timing_meta(options["timing"]))


def effort_tune(args: argparse.Namespace) -> None:
    from ..effort import tune_run
    from ..effort.net import CHAIN_MODELS
    from ..effort.runs import default_output
    from ..runs import RunConfig, check_output

    config = _width_run(args.run, "effort tune")
    out = check_output(args.out or default_output(args.run, args.knobs), args.force)
    if config.model_name not in CHAIN_MODELS or config.profile_ranges:
        several = " of several members" if config.profile_ranges else ""
        raise DynscaleError(f"{args.run} is a {config.model_name} run{several}; effort knobs take single "
                            f"{' or '.join(CHAIN_MODELS)} networks")
    data = _dataset(args.data or config.data)
    with about("--data"):
        from ..evaluation import check_compatible

        check_compatible(config.model_config, data, str(args.run))
    written = tune_run(args.run, args.max_loss, args.knobs, data, args.examples, out, force=args.force)
    print(f"wrote {written}")
    for name, text in _effort_summary(RunConfig.read(written)):
        print(f"  {name + ':':<12} {text}")


def _effort_summary(config) -> list[tuple[str, str]]:
    from ..runs import get_kind

    return get_kind("effort").summary(config)


def effort_sweep(args: argparse.Namespace) -> None:
    from ..effort import sweep_effort_runs
    from ..runs import RunConfig

    for run in args.runs:
        kind = RunConfig.read(run).kind
        if kind != "effort":
            raise DynscaleError(f"{run} is a {kind} run, not an effort run; make one with `dynscale effort tune RUN`")
    data = _dataset(args.data) if args.data else None
    timing = _timing(args, runtimes=["torch"]) if args.latency else None
    curves = sweep_effort_runs(args.runs, data=data, timing=timing)
    _report(args, curves, "DyVEDeep: accuracy vs MACs performed", "mean MACs performed relative to the dense network",
            _timing_meta(timing))


def dfs_train(args: argparse.Namespace) -> None:
    from ..dfs import FractionalSkipping, train_dfs_run
    from ..runs import RunConfig, check_output

    check_output(args.out, args.force)
    with about("--choices"):
        from ..dfs import check_choices

        check_choices(args.choices)
    pretrain = 0 if args.backbone else args.pretrain_epochs
    if not (pretrain or args.gate_epochs or args.joint_epochs):
        raise DynscaleError("--pretrain-epochs, --gate-epochs and --joint-epochs are all 0: nothing to train")
    recipe = FractionalSkipping(target=args.target, beta=args.beta, gate_objective=args.gate_objective,
                                pretrain=pretrain, gates=args.gate_epochs, joint=args.joint_epochs,
                                choices=args.choices)
    config = _training_config(args)
    data = _dataset(args.data)
    options = {**dict(args.set), **({"width_mult": args.width_mult} if args.width_mult is not None else {})}
    model = args.model or "resnet38"
    if args.backbone is None:
        options = _check_model_options(model, {"profile": "all-one", **options}, data)
        from ..dfs import DFSNet
        from ..models import get_model

        with about(f"--model {model}"):
            DFSNet(get_model(model, **options), args.choices)  # gates need residual blocks
    else:
        if args.model or options:
            raise DynscaleError("with --backbone the model and its options are the backbone run's; leave out "
                                "--model, --width-mult and --set")
        _width_run(args.backbone, "--backbone")
    _check_fit(config, data)
    out = train_dfs_run(args.out, model, data, config, recipe, options, backbone_run=args.backbone,
                        force=args.force, resume=args.resume, checkpoint_every=args.checkpoint_every)
    metrics = RunConfig.read(out).metrics
    share = 100 * metrics.get("bitops_ratio", 1.0)
    print(f"wrote {out}: test accuracy {100 * metrics['test_accuracy']:.2f}% at {share:.1f}% of the full-precision "
          f"BitOps ({metrics['train_seconds']:.1f} s)")


def dfs_sweep(args: argparse.Namespace) -> None:
    from ..dfs import dfs_curves, plot_choices
    from ..runs import RunConfig, check_file_output

    if args.choices_plot is not None:
        check_file_output(args.choices_plot, "--choices-plot")
    kinds = []
    for run in args.runs:
        config = RunConfig.read(run)
        kinds.append(config.kind)
        if config.kind not in ("dfs", "width"):
            raise DynscaleError(f"{run} is a {config.kind} run of {config.model_name}; give DFS runs (dynscale dfs "
                                "train) or width runs with residual blocks (ResNet runs, say) for the static and int8 "
                                "baselines")
    if args.choices_plot is not None and "dfs" not in kinds:
        raise DynscaleError("--choices-plot draws what the gates chose: give at least one DFS run (dynscale dfs train)")
    data = _dataset(args.data) if args.data else None
    timing = _timing(args, runtimes=["torch"]) if args.latency else None
    curves = dfs_curves(args.runs, args.static_bits, args.int8, data, timing)
    _report(args, curves, "Dynamic fractional skipping: accuracy vs BitOps", "BitOps relative to full precision",
            _timing_meta(timing), layout="long", x="bitops")
    if args.choices_plot is not None:
        print(f"wrote {plot_choices(curves, args.choices_plot)}")


def list_all(args: argparse.Namespace) -> None:
    from ..data import DATASETS
    from ..models import list_models, model_info
    from ..profiles import list_profiles
    from ..runs import list_kinds
    from ..train import list_recipes

    print("models:")
    for name in list_models():
        info = model_info(name)
        kind = "convolutional" if info.convolutional else "fully connected"
        print(f"  {name:<10} {info.input_kind} input, {kind}; stages: {', '.join(info.stages())}")
    print(f"profiles: {', '.join(list_profiles())} (or comma-separated coefficients)")
    print(f"data:     {', '.join(DATASETS)}")
    print(f"recipes:  {', '.join(list_recipes())}")
    print(f"runs:     {', '.join(list_kinds())}")
