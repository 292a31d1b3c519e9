"""The DFS method's commands: ``dfs train`` and ``dfs sweep``."""

from __future__ import annotations

import argparse

from ..command import (
    about,
    add_data,
    add_fields,
    add_group,
    add_quiet,
    add_sweep_options,
    add_threads,
    add_training_options,
    check_model_options,
    dataset,
    evaluation_device,
    execution,
    fields_of,
    inputs,
    model_options,
    refuse,
    sweep_report,
    timing,
    training_config,
)
from ..command import options as opt
from ..errors import DynscaleError
from .execute import FIXED
from .recipes import FractionalSkipping
from .sweep import CPU_ONLY

FLAGS = {"target": "--target", "beta": "--beta", "gate_objective": "--gate-objective",
         "target_mode": "--target-mode", "pretrain": "--pretrain-epochs", "gates": "--gate-epochs",
         "joint": "--joint-epochs", "choices": "--choices", "execute": "--execute", "gate": "--gate",
         "int8_cost": "--int8-cost"}
DEFAULT_MODEL = "resnet38"


def add_commands(sub) -> None:
    """Adds ``dynscale dfs ...`` to the parser."""
    group = add_group(sub, "dfs", "dynamic fractional skipping: per example and block, skip or a bit-width")

    p = group.add_parser("train", help="pretrain a ResNet, then its gates, then both, at a computation target")
    p.add_argument("--model", type=opt.model_name, default=None,
                   help="a registered model with residual blocks (default resnet38); with --backbone, the backbone's")
    add_data(p)
    p.add_argument("--width-mult", type=opt.number(0.0, low_open=True), default=None,
                   help="scale every channel count (default: the model's own)")
    p.add_argument("--set", type=opt.model_option, action="append", default=[], metavar="KEY=VALUE",
                   help="a model option (repeatable)")
    add_fields(p, FractionalSkipping, ["target"], FLAGS, required=True)
    add_fields(p, FractionalSkipping, [k for k in FLAGS if k != "target"], FLAGS)
    p.add_argument("--backbone", type=opt.run_directory, default=None, metavar="RUN",
                   help="a trained ResNet (dynscale train) to start from: the pretrain phase is left out")
    add_training_options(p, leave_out=["epochs"])  # each phase has its own epochs
    p.add_argument("--out", type=opt.path, required=True, help="run directory to write")
    add_threads(p)
    add_quiet(p)
    p.set_defaults(func=train)

    p = group.add_parser("sweep", help="DFS and SkipNet runs (executed on real kernels where their choices run on the "
                         "CPU), the dense backbone, static int8 and static quantization: BitOps, MACs, accuracy, "
                         "wall-clock")
    p.add_argument("runs", type=opt.run_directory, nargs="+",
                   help="DFS runs (dynscale dfs train), and ResNet runs for the dense and static baselines")
    p.add_argument("--static-bits", type=opt.listing(opt.integer(1, 31), "8,16"), default=[],
                   help="bit-widths of static quantization of the ResNet runs, simulated (counted, not timed)")
    p.add_argument("--int8", action="store_true",
                   help="also the ResNet runs in static int8: ONNX Runtime (QDQ) and PyTorch's x86 engine")
    p.add_argument("--fixed", choices=FIXED, default="auto",
                   help="how executed points run the stem, first block and head (trained in float32): float32, "
                        "int8 (statically quantized like their int8 blocks), or auto (int8 when the gates may choose "
                        "int8)")
    p.add_argument("--choices-plot", type=opt.path, default=None,
                   help="write the per-block choices of each gated point as PNG here")
    add_sweep_options(p, "accuracy vs BitOps ratio", cpu_only=CPU_ONLY)
    p.set_defaults(func=sweep)


def recipe(args: argparse.Namespace) -> FractionalSkipping:
    """The recipe of the options, each setting checked by the recipe (naming its option)."""
    settings = fields_of(args, FractionalSkipping, list(FLAGS))
    if args.backbone is not None:
        refuse(args, {"pretrain": "--pretrain-epochs"}, "with --backbone (the backbone is pretrained)")
        settings["pretrain"] = 0
    for key, value in settings.items():
        with about(FLAGS[key]):
            FractionalSkipping(**{key: value, **({"pretrain": 0} if args.backbone is not None else {})})
    if "choices" in settings and settings.get("execute"):
        with about("--choices"):  # a bit-width the CPU does not execute
            FractionalSkipping(choices=settings["choices"], execute=True)
    if "int8_cost" in settings:
        with about("--int8-cost"):  # needs an int8 choice
            FractionalSkipping(**{k: settings[k] for k in ("choices", "execute", "int8_cost") if k in settings})
    phases = [FLAGS[k] for k in ("pretrain", "gates", "joint")]
    with about(", ".join(phases)):
        if not any(settings.get(k, 1) for k in ("pretrain", "gates", "joint")):
            raise DynscaleError(f"{', '.join(phases)} are all 0: nothing to train")
        return FractionalSkipping(**settings)


def train(args: argparse.Namespace) -> None:
    from ..runs import RunConfig, check_output
    from .runs import train_dfs_run

    check_output(args.out, args.force, inputs=inputs(args))
    if args.backbone is not None and (args.model or args.width_mult is not None or args.set):
        raise DynscaleError("with --backbone the model and its options are the backbone run's; leave out "
                            "--model, --width-mult and --set")
    steps = recipe(args)
    config = training_config(args, epochs=1)
    settings = execution(args)
    data = dataset(args.data)
    options = model_options(args, profile=False)
    if args.backbone is None:
        options = check_model_options(args.model or DEFAULT_MODEL, {"profile": "all-one", **options}, data)
        from ..models import get_model
        from .runs import gated

        # gates need residual blocks: checked before any work, refused as the training would
        name = args.model or DEFAULT_MODEL
        gated(get_model(name, **options), steps, f"--model {name}")
    out = train_dfs_run(args.out, args.model or DEFAULT_MODEL, data, config, steps, options,
                        backbone_run=args.backbone, force=args.force, resume=args.resume,
                        checkpoint_every=args.checkpoint_every, execution=settings)
    metrics = RunConfig.read(out).metrics
    share = 100 * metrics.get("bitops_ratio", 1.0)
    print(f"wrote {out}: test accuracy {100 * metrics['test_accuracy']:.2f}% at {share:.1f}% of the full-precision "
          f"BitOps ({metrics['train_seconds']:.1f} s)")


def sweep(args: argparse.Namespace) -> None:
    import sys

    from ..runs import check_file_output
    from .kernels import RUNTIMES
    from .plot import plot_choices
    from .sweep import dfs_curves

    device = evaluation_device(args, cpu_only=CPU_ONLY)
    if args.choices_plot is not None:
        check_file_output(args.choices_plot, "--choices-plot", inputs=inputs(args))
    data = dataset(args.data) if args.data else None
    settings = timing(args, runtimes=list(RUNTIMES), device=device) if args.latency else None
    notes: list[str] = []
    curves = dfs_curves(args.runs, args.static_bits, args.int8, data, settings,
                        choices_plot=args.choices_plot is not None, notes=notes, fixed=args.fixed)
    for note in notes:
        print(note, file=sys.stderr)
    sweep_report(args, curves, settings, "Dynamic fractional skipping: accuracy vs BitOps",
                 "BitOps relative to full precision", device=device, layout="long", x="bitops")
    if args.choices_plot is not None:
        print(f"wrote {plot_choices(curves, args.choices_plot)}")


def points(run_dir, *, data=None, timing=None, progress=None) -> list:
    """The DFS method's operating points of a run (``pick`` measures with them)."""
    from .sweep import dfs_curves

    return dfs_curves([run_dir], data=data, timing=timing, progress=progress)
