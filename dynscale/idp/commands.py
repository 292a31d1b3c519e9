"""The width method's commands: ``train``, ``sweep``, ``calibrate``, ``export`` and ``bench``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..command import (
    MODEL_OPTIONS,
    about,
    add_data,
    add_fields,
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
    fields_of,
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
from ..train import get_recipe, recipe_class
from .sweep import DEFAULT_WIDTHS

RECIPES = ("idp", "us", "independent")  # --recipe; idp with --profiles is multi-profile
# Each width recipe setting's option, and the recipes whose fields they are.
US_SETTINGS = ["sandwich", "min_width", "distill", "distill_weight", "temperature", "sampling", "label_smoothing",
               "resolutions", "batchnorm"]
SETTINGS = {"cut": "--cut", "profile_gradient": "--profile-gradient", "distill": "--no-distill",
            "widths": "--family-widths", **{k: "--" + k.replace("_", "-") for k in US_SETTINGS if k != "distill"}}


def add_commands(sub) -> None:
    """Adds the width method's commands to the ``dynscale`` parser."""
    p = sub.add_parser("train", help="train a model with a channel profile into a run directory")
    add_model_options(p, "mlp", "linear")
    p.add_argument("--from", dest="start", type=opt.run_directory, default=None, metavar="RUN",
                   help="start from this width run's model and weights (a converted model, a trained network): "
                        "fine-tune it, or make it slimmable with --recipe us")
    add_training_options(p)
    p.add_argument("--recipe", default="idp", choices=RECIPES,
                   help="idp: the paper's (see --cut); us: universally slimmable; independent: one network per "
                        "width of --family-widths")
    add_fields(p, recipe_class("idp"), ["cut", "profile_gradient"], prefix="idp, independent: ")
    p.add_argument("--profiles", type=opt.profile_ranges, default=None, metavar="RANGES",
                   help="idp: multiple profiles, e.g. 0-0.3,0.3-1.0, trained one after another")
    add_fields(p, recipe_class("us"), US_SETTINGS, prefix="us: ")
    add_fields(p, recipe_class("independent"), ["widths"], flags={"widths": "--family-widths"}, metavar="WIDTHS",
               prefix="independent: ")
    p.add_argument("--calibrate", type=opt.WIDTHS, default=None, metavar="WIDTHS",
                   help="after training, store batch-norm statistics for these widths")
    p.add_argument("--out", type=opt.path, required=True, help="run directory to write")
    add_threads(p)
    add_quiet(p)
    p.set_defaults(func=train)

    p = sub.add_parser("sweep", help="evaluate runs at several widths: table, JSON, CSV, plot")
    p.add_argument("runs", type=opt.run_directory, nargs="+", help="run directories")
    add_data(p, None, "evaluate on this dataset instead of the run's")
    p.add_argument("--widths", type=opt.WIDTHS, default=DEFAULT_WIDTHS, help="widths to evaluate")
    p.add_argument("--latency", action="store_true", help="also measure wall-clock time per width")
    add_timing_options(p, batch="1,64", rounds=3)
    add_report_options(p)
    add_quiet(p)
    p.set_defaults(func=sweep)

    p = sub.add_parser("calibrate", help="store batch-norm statistics per width in a run")
    p.add_argument("run", type=opt.run_directory, help="a run trained with `dynscale train`")
    p.add_argument("--widths", type=opt.WIDTHS, default=DEFAULT_WIDTHS, help="widths to calibrate")
    add_data(p, None, "calibrate on this dataset's training split instead (same shape and classes)")
    p.add_argument("--batches", type=opt.POSITIVE, default=20, help="batches of 256 training examples per width")
    add_threads(p)
    add_quiet(p)
    p.set_defaults(func=calibrate)

    p = sub.add_parser("export", help="write one width as a plain dense model (ONNX or safetensors)")
    p.add_argument("run", type=opt.run_directory, help="a run trained with `dynscale train`")
    p.add_argument("--width", type=opt.width, required=True, help="the width to export, in (0, 1]")
    p.add_argument("--format", default="onnx", choices=["onnx", "safetensors"], help="the file format")
    p.add_argument("--out", type=opt.path, default=None, help="default: RUN-wW.onnx or RUN-wW/ beside the run")
    p.add_argument("--force", action="store_true", help="replace an existing export at --out")
    p.set_defaults(func=export)

    p = sub.add_parser("bench", help="latency per width on each runtime, beside the MAC ratio")
    p.add_argument("run", type=opt.run_directory, help="a run trained with `dynscale train`")
    p.add_argument("--widths", type=opt.WIDTHS, default=[0.25, 0.5, 0.75, 1.0], help="widths to time (and 1)")
    add_data(p, None, "time on this dataset's test inputs instead")
    add_timing_options(p, batch="1,64", rounds=5, runtime="torch,torch-dense")
    add_report_options(p)
    add_quiet(p)
    p.set_defaults(func=bench)


def width_recipe(args: argparse.Namespace):
    """The recipe of ``--recipe``, ``--profiles`` and the recipe settings, each setting checked
    by the recipe itself; a setting of another recipe is refused (it would do nothing)."""
    name = args.recipe
    if args.profiles is not None:
        if name != "idp":
            trains = "every width of one profile" if name == "us" else "one network per width"
            raise DynscaleError(f"--profiles: the {name} recipe trains {trains}; it takes no --profiles")
        name = "multi-profile"
    cls = recipe_class(name)
    fields = set(cls.__dataclass_fields__)
    refuse(args, {k: v for k, v in SETTINGS.items() if k not in fields}, f"with --recipe {args.recipe}")
    settings = fields_of(args, cls, [k for k in SETTINGS if k in fields])
    if args.profiles is not None:
        settings["profiles"] = args.profiles
    for key, value in settings.items():
        with about(SETTINGS.get(key, "--profiles")):
            get_recipe(name, **{key: value})
    return get_recipe(name, **settings)


def train(args: argparse.Namespace) -> None:
    from ..runs import RunConfig, check_output
    from .runs import train_run

    check_output(args.out, args.force, inputs=inputs(args))
    recipe = width_recipe(args)
    config = training_config(args)
    settings = execution(args)
    data = dataset(args.data)
    if args.start is None:
        options = check_model_options(model_name(args), model_options(args), data)
    else:
        refuse(args, MODEL_OPTIONS, "with --from: the model and its options are the start run's")
        options = {}
    out = train_run(args.out, model_name(args), data, config, recipe, options, calibrate=args.calibrate,
                    force=args.force, resume=args.resume, checkpoint_every=args.checkpoint_every, start=args.start,
                    execution=settings)
    metrics = RunConfig.read(out).metrics
    print(f"wrote {out}: test accuracy {100 * metrics['test_accuracy']:.2f}% at full width "
          f"({metrics['train_seconds']:.1f} s)")


def calibrate(args: argparse.Namespace) -> None:
    from .calibration import calibrate_run

    data = dataset(args.data) if args.data else None
    widths = calibrate_run(args.run, args.widths, data=data, batches=args.batches)
    print(f"{args.run}: batch-norm statistics stored for widths {', '.join(f'{w:g}' for w in widths)}")


def export(args: argparse.Namespace) -> None:
    from ..export import export_run

    print(f"wrote {export_run(args.run, args.width, args.format, args.out, force=args.force)}")


def sweep(args: argparse.Namespace) -> None:
    from .sweep import sweep_runs

    device = evaluation_device(args)
    data = dataset(args.data) if args.data else None
    settings = timing(args, device=device) if args.latency or args.runtime != ["torch"] else None
    curves = sweep_runs(args.runs, args.widths, data=data, timing=settings, device=device)
    sweep_report(args, curves, settings, "Accuracy vs computation", device=device)


def bench(args: argparse.Namespace) -> None:
    from .sweep import sweep_runs

    device = evaluation_device(args)
    data = dataset(args.data) if args.data else None
    settings = timing(args, device=device)
    widths = sorted(set(args.widths) | {1.0}, reverse=True)
    curves = sweep_runs([args.run], widths, data=data, timing=settings, what="bench", device=device)
    sweep_report(args, curves, settings, f"Latency per width: {Path(args.run).name}", device=device, layout="long")


def points(run_dir, *, data=None, timing=None, progress=None, widths=None, int8=False) -> list:
    """The width method's operating points of a run (``pick`` and ``report`` measure with them);
    ``int8`` adds each width statically quantized in ONNX Runtime (their own curve)."""
    from .sweep import sweep_runs

    return sweep_runs([run_dir], widths or DEFAULT_WIDTHS, data=data, timing=timing, progress=progress, what="pick",
                      int8=int8)
