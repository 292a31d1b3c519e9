"""The ``dynscale`` command line.

Every option is checked by type and range as it is parsed (``options.py``), and every command
checks its inputs and outputs before any work (``commands.py``). A user's mistake prints one
line naming the option and exits 2; a bug prints one line that says so and exits 1.
"""

from __future__ import annotations

import argparse
import os
import sys

from .. import __version__
from ..effort.settings import parse_knobs
from ..errors import DynscaleError, TrainingInterrupted
from ..progress import set_quiet
from . import commands
from . import options as opt


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default unless it has none to show (None, off, empty)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, []) or action.default is argparse.SUPPRESS:
            return action.help or ""
        default = action.default
        if isinstance(default, list):
            return f"{action.help} (default: {','.join(f'{v:g}' if isinstance(v, float) else str(v) for v in default)})"
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # one line, exit 2, instead of usage + message
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def _add_training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=opt.POSITIVE, default=30, help="passes over the training data")
    p.add_argument("--batch-size", type=opt.POSITIVE, default=64, help="examples per optimizer step")
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"], help="the optimizer")
    p.add_argument("--lr", type=opt.number(0.0, low_open=True), default=None,
                   help="learning rate (default 0.05 for sgd, 0.001 for adam)")
    p.add_argument("--momentum", type=opt.number(0.0, 1.0, high_open=True), default=0.9,
                   help="SGD momentum, in [0, 1)")
    p.add_argument("--weight-decay", type=opt.number(0.0), default=0.0, help="L2 weight decay, >= 0")
    p.add_argument("--schedule", default="cosine", choices=["constant", "cosine", "step"],
                   help="learning-rate schedule over the steps")
    p.add_argument("--train-limit", type=opt.POSITIVE, default=None,
                   help="train on N examples of a fixed shuffle (default: all)")
    p.add_argument("--seed", type=opt.NON_NEGATIVE, default=0, help="seed of the initialisation and data order")
    p.add_argument("--force", action="store_true",
                   help="replace an existing run at --out, or discard an unfinished training's saved state")
    p.add_argument("--resume", action="store_true",
                   help="continue the unfinished training saved in OUT.resume (same command and options)")
    p.add_argument("--checkpoint-every", type=opt.POSITIVE, default=500,
                   help="optimizer steps between saved training states (and on Ctrl-C or SIGTERM)")


def _add_model_options(p: argparse.ArgumentParser, model: str, profile: str) -> None:
    p.add_argument("--model", type=opt.model_name, default=model, help="registered model (see `dynscale list`)")
    p.add_argument("--data", type=opt.data_name, default="digits",
                   help="digits, fashion-mnist, mnist, synthetic or idx:DIR")
    p.add_argument("--profile", type=opt.profile, default=profile,
                   help="channel profile: a name (see `dynscale list`) or comma-separated coefficients")
    p.add_argument("--width-mult", type=opt.number(0.0, low_open=True), default=None,
                   help="scale every channel count (convolutional models; default: the model's own)")
    p.add_argument("--set", type=opt.model_option, action="append", default=[], metavar="KEY=VALUE",
                   help="a model option, e.g. --set hidden=[200,200] (repeatable)")


def _add_threads(p: argparse.ArgumentParser, default: int | None) -> None:
    p.add_argument("--threads", type=opt.POSITIVE, default=default,
                   help="CPU threads of PyTorch (and ONNX Runtime when timing)"
                        + ("" if default else "; default: every core"))


def _add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_timing_options(p: argparse.ArgumentParser, batch: str, rounds: int, runtime: str | None = "torch") -> None:
    p.add_argument("--batch", type=opt.BATCHES, default=opt.BATCHES(batch), metavar="SIZES",
                   help="batch sizes timed, comma-separated")
    _add_threads(p, 1)
    p.add_argument("--rounds", type=opt.POSITIVE, default=rounds,
                   help="interleaved timing rounds, the reference timed in each (medians over rounds)")
    p.add_argument("--min-run-time", type=opt.number(0.0, low_open=True), default=0.3,
                   help="seconds of timing per point per round")
    if runtime is not None:
        p.add_argument("--runtime", type=opt.runtime_list, default=opt.runtime_list(runtime), metavar="RUNTIMES",
                       help="torch (the dynamic model), torch-dense (its dense export in PyTorch) or onnxruntime "
                            "(the dense export in ONNX Runtime); comma-separated for several")


def _add_report_options(p: argparse.ArgumentParser, plot: str = "accuracy vs MAC ratio") -> None:
    p.add_argument("--json", type=opt.path, default=None, help="write the curves as JSON here")
    p.add_argument("--csv", type=opt.path, default=None, help="write one CSV row per operating point here")
    p.add_argument("--markdown", type=opt.path, default=None, help="write the table as Markdown here")
    p.add_argument("--plot", type=opt.path, default=None, help=f"write {plot} as PNG here")
    p.add_argument("--title", type=opt.name, default=None, help="title of the plot")


def _add_adaptive_sweep_options(p: argparse.ArgumentParser) -> None:
    from ..adaptive.sweep import DEFAULT_LAMBDAS, DEFAULT_MAX_LOSSES

    p.add_argument("--lambdas", type=opt.listing(opt.number(0.0), "0,0.01,0.1"),
                   default=list(DEFAULT_LAMBDAS), metavar="VALUES",
                   help="cost weights λ >= 0 of the learned policy (one full network's MACs = λ errors)")
    p.add_argument("--max-loss", type=opt.listing(opt.number(0.0, 100.0), "0,0.5,1"),
                   default=list(DEFAULT_MAX_LOSSES), metavar="POINTS",
                   help="threshold baseline: accuracy points (0-100) below the full network allowed on held-out data")
    p.add_argument("--data", type=opt.data_name, default=None, help="evaluate on this dataset instead of the run's")
    _add_timing_options(p, batch="256", rounds=3, runtime=None)
    p.add_argument("--timing-examples", type=opt.POSITIVE, default=2560, help="test examples timed per point")
    p.add_argument("--channels-last", action="store_true",
                   help="time in channels-last memory, full network and adaptive alike (often faster on CPU)")
    p.add_argument("--no-timing", action="store_true", help="skip the wall-clock timing")
    _add_report_options(p, "accuracy vs mean MAC ratio")
    _add_quiet(p)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dynscale`` command."""
    parser = _Parser(prog="dynscale", description="Dynamic computation scaling for PyTorch networks: train one "
                     "network, scale its cost at run time, measure what it saves.")
    parser.add_argument("--version", action="version", version=f"dynscale {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model with a channel profile into a run directory")
    _add_model_options(p, "mlp", "linear")
    _add_training_options(p)
    p.add_argument("--holdout", type=opt.NON_NEGATIVE, default=0,
                   help="training examples kept out (to fit adaptive policies on later; the same N for a cascade)")
    p.add_argument("--cut", default="full", choices=["full", "random"],
                   help="full: train at full width (MLP recipe); random: per-layer random cuts (conv recipe)")
    p.add_argument("--profile-gradient", default="chain", choices=["chain", "straight-through"],
                   help="straight-through: the authors' weight gradient without the profile")
    p.add_argument("--profiles", type=opt.profile_ranges, default=None, metavar="RANGES",
                   help="multiple profiles, e.g. 0-0.3,0.3-1.0, trained one after another")
    p.add_argument("--calibrate", type=opt.WIDTHS, default=None, metavar="WIDTHS",
                   help="after training, store batch-norm statistics for these widths")
    p.add_argument("--recipe", default="idp", choices=["idp", "us", "independent"],
                   help="idp: the paper's (see --cut); us: universally slimmable; independent: one network per "
                        "width of --family-widths")
    p.add_argument("--sandwich", type=opt.integer(2), default=4,
                   help="us: widths per step (the largest, the smallest, and random ones)")
    p.add_argument("--min-width", type=opt.width, default=0.25, help="us: the smallest width trained")
    p.add_argument("--no-distill", action="store_true", help="us: narrower widths learn from the labels only")
    p.add_argument("--family-widths", type=opt.WIDTHS, default=[0.25, 0.5, 0.75, 1.0], metavar="WIDTHS",
                   help="independent: the widths, including 1")
    p.add_argument("--out", type=opt.path, required=True, help="run directory to write")
    _add_threads(p, None)
    _add_quiet(p)
    p.set_defaults(func=commands.train)

    p = sub.add_parser("sweep", help="evaluate runs at several widths: table, JSON, CSV, plot")
    p.add_argument("runs", type=opt.run_directory, nargs="+", help="run directories")
    p.add_argument("--data", type=opt.data_name, default=None, help="evaluate on this dataset instead of the run's")
    p.add_argument("--widths", type=opt.WIDTHS, default=[0.1, 0.25, 0.5, 0.75, 1.0], help="widths to evaluate")
    p.add_argument("--latency", action="store_true", help="also measure wall-clock time per width")
    _add_timing_options(p, batch="1,64", rounds=3)
    _add_report_options(p)
    _add_quiet(p)
    p.set_defaults(func=commands.sweep)

    p = sub.add_parser("calibrate", help="store batch-norm statistics per width in a run")
    p.add_argument("run", type=opt.run_directory, help="a run trained with `dynscale train`")
    p.add_argument("--widths", type=opt.WIDTHS, default=[0.1, 0.25, 0.5, 0.75, 1.0], help="widths to calibrate")
    p.add_argument("--data", type=opt.data_name, default=None,
                   help="calibrate on this dataset's training split instead (same shape and classes)")
    p.add_argument("--batches", type=opt.POSITIVE, default=20, help="batches of 256 training examples per width")
    _add_threads(p, None)
    _add_quiet(p)
    p.set_defaults(func=commands.calibrate)

    p = sub.add_parser("export", help="write one width as a plain dense model (ONNX or safetensors)")
    p.add_argument("run", type=opt.run_directory, help="a run trained with `dynscale train`")
    p.add_argument("--width", type=opt.width, required=True, help="the width to export, in (0, 1]")
    p.add_argument("--format", default="onnx", choices=["onnx", "safetensors"], help="the file format")
    p.add_argument("--out", type=opt.path, default=None, help="default: RUN-wW.onnx or RUN-wW/ beside the run")
    p.add_argument("--force", action="store_true", help="replace an existing export at --out")
    p.set_defaults(func=commands.export)

    p = sub.add_parser("bench", help="latency per width on each runtime, beside the MAC ratio")
    p.add_argument("run", type=opt.run_directory, help="a run trained with `dynscale train`")
    p.add_argument("--widths", type=opt.WIDTHS, default=[0.25, 0.5, 0.75, 1.0], help="widths to time (and 1)")
    p.add_argument("--data", type=opt.data_name, default=None, help="time on this dataset's test inputs instead")
    _add_timing_options(p, batch="1,64", rounds=5, runtime="torch,torch-dense")
    _add_report_options(p)
    _add_quiet(p)
    p.set_defaults(func=commands.bench)

    p = sub.add_parser("reproduce", help="run a paper's experiments at CPU scale (Fashion-MNIST)")
    p.add_argument("paper", choices=["idp"], help="the paper")
    p.add_argument("--quick", action="store_true", help="a few minutes instead of up to an hour")
    p.add_argument("--out", type=opt.path, default=None, help="default runs/reproduce-PAPER[-quick]")
    p.add_argument("--only", type=opt.listing(opt.name, "mlp_profiles"), default=None,
                   help="comma-separated experiment names")
    p.add_argument("--force", action="store_true", help="retrain runs of --out trained with other settings")
    _add_threads(p, None)
    _add_quiet(p)
    p.set_defaults(func=commands.reproduce)

    p = sub.add_parser("compare", help="independent networks vs IDP vs universally slimmable, one table")
    p.add_argument("--model", type=opt.model_name, default="mlp", help="registered model")
    p.add_argument("--data", type=opt.data_name, default="digits", help="the dataset")
    p.add_argument("--widths", type=opt.WIDTHS, default=[0.25, 0.5, 0.75, 1.0],
                   help="the independent networks' widths, swept by all")
    p.add_argument("--epochs", type=opt.POSITIVE, default=30, help="epochs of each training")
    p.add_argument("--batch-size", type=opt.POSITIVE, default=64, help="examples per step")
    p.add_argument("--train-limit", type=opt.POSITIVE, default=None, help="train on N examples (default: all)")
    p.add_argument("--width-mult", type=opt.number(0.0, low_open=True), default=None,
                   help="convolutional models: scale every channel count")
    p.add_argument("--seed", type=opt.NON_NEGATIVE, default=0, help="seed of every training")
    p.add_argument("--out", type=opt.path, default=None, help="default runs/compare-MODEL-DATA")
    p.add_argument("--force", action="store_true", help="retrain runs of --out trained with other settings")
    _add_threads(p, None)
    _add_quiet(p)
    p.set_defaults(func=commands.compare)

    p = sub.add_parser("pick", help="the best operating point for a MAC or latency budget, from a measured sweep")
    p.add_argument("run", help="a run directory (swept now), or a run's name in --sweep")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--macs-ratio", type=opt.number(0.0, low_open=True),
                        help="budget as a fraction of the full network's MACs")
    budget.add_argument("--latency-ms", type=opt.number(0.0, low_open=True),
                        help="budget in ms per batch of --batch on --runtime")
    p.add_argument("--sweep", type=opt.existing_file, default=None,
                   help="use this report JSON (from --json of sweep, bench, adaptive sweep) instead of measuring")
    p.add_argument("--widths", type=opt.WIDTHS, default=[0.1, 0.25, 0.5, 0.75, 1.0],
                   help="widths to sweep when measuring")
    p.add_argument("--batch", type=opt.POSITIVE, default=1, help="the batch size of a latency budget")
    _add_threads(p, 1)
    p.add_argument("--rounds", type=opt.POSITIVE, default=3, help="timing rounds when measuring")
    p.add_argument("--min-run-time", type=opt.number(0.0, low_open=True), default=0.3,
                   help="seconds of timing per point per round")
    p.add_argument("--runtime", default="torch", choices=["torch", "torch-dense", "onnxruntime"],
                   help="the runtime of a latency budget")
    _add_quiet(p)
    p.set_defaults(func=commands.pick)

    p = sub.add_parser("demo", help="the IDP demo: MLP on digits, all-one vs linear profile")
    p.add_argument("--out", type=opt.path, default="runs/demo", help="directory of the two runs and the report")
    p.add_argument("--epochs", type=opt.POSITIVE, default=30, help="epochs of each training")
    p.add_argument("--seed", type=opt.NON_NEGATIVE, default=0, help="seed of both trainings")
    p.add_argument("--force", action="store_true", help="replace the demo's runs in --out")
    _add_threads(p, None)
    _add_quiet(p)
    p.set_defaults(func=commands.demo)

    p = sub.add_parser("adaptive", help="adaptive inference: learned early exits and network selection")
    adaptive = p.add_subparsers(dest="adaptive_command", required=True, parser_class=_Parser, metavar="COMMAND")

    p = adaptive.add_parser("train", help="train a backbone with early exits (or exits on a frozen backbone)")
    _add_model_options(p, "vgg16", "all-one")
    p.add_argument("--exits", type=opt.listing(opt.name, "block1,block2"), required=True,
                   help="stage names to put exits after, e.g. block1,block2,block3 (an unknown name lists them)")
    p.add_argument("--exit-weights", type=opt.listing(opt.number(0.0), "1,1,1"), default=None,
                   help="loss weight per exit and then the final output, e.g. 1,1,1,1 (default: all 1)")
    p.add_argument("--backbone", type=opt.run_directory, default=None, metavar="RUN",
                   help="a trained run (dynscale train --holdout N) to freeze; only the exits train")
    p.add_argument("--holdout", type=opt.POSITIVE, default=None,
                   help="training examples kept out to fit the policies on (default: 10%%)")
    _add_training_options(p)
    p.add_argument("--out", type=opt.path, required=True, help="run directory to write")
    _add_threads(p, None)
    _add_quiet(p)
    p.set_defaults(func=commands.adaptive_train)

    p = adaptive.add_parser("sweep", help="fit exit policies over λ, with the threshold baseline: table, JSON, plot")
    p.add_argument("run", type=opt.run_directory, help="an early-exit run (dynscale adaptive train) or a saved cascade")
    _add_adaptive_sweep_options(p)
    p.set_defaults(func=commands.adaptive_sweep)

    p = adaptive.add_parser("cascade", help="network selection among trained runs of rising cost: table, JSON, plot")
    p.add_argument("runs", type=opt.run_directory, nargs="+",
                   help="run directories, cheapest first, trained with the same --holdout")
    p.add_argument("--edges", type=opt.edges, default=None, help="FROM-TO indices, e.g. 0-1,1-2,0-2 (default: a chain)")
    p.add_argument("--name", type=opt.name, default="cascade", help="label of the cascade in the report")
    p.add_argument("--save", type=opt.path, default=None, metavar="RUN", help="also write the cascade as a run")
    p.add_argument("--force", action="store_true", help="replace an existing run at --save")
    _add_adaptive_sweep_options(p)
    p.set_defaults(func=commands.adaptive_cascade)

    p = sub.add_parser("effort", help="DyVEDeep: effort knobs on a trained network, tuned on held-out data")
    effort = p.add_subparsers(dest="effort_command", required=True, parser_class=_Parser, metavar="COMMAND")

    p = effort.add_parser("tune", help="search per-layer knob settings for each accuracy-loss bound")
    p.add_argument("run", type=opt.run_directory, help="a run trained with `dynscale train` (mlp or vgg16)")
    p.add_argument("--max-loss", type=opt.listing(opt.number(0.0, 100.0), "0.5,1"), default=[0.5], metavar="POINTS",
                   help="accuracy points (0-100) the knobs may lose on the held-out data, one search per value: "
                   "the share of examples the dense network gets right and the knobs get wrong")
    p.add_argument("--knobs", type=opt.parsed_by(parse_knobs, "knobs like spet,sdss,sfma"),
                   default=["spet", "sdss", "sfma"], help="the knobs to use: spet, sdss, sfma")
    p.add_argument("--data", type=opt.data_name, default=None, help="the dataset (default: the run's own)")
    p.add_argument("--examples", type=opt.POSITIVE, default=2000, help="held-out examples the search measures on")
    p.add_argument("--out", type=opt.path, default=None,
                   help="the effort run to write (default: RUN-effort beside the run)")
    p.add_argument("--force", action="store_true", help="replace an existing effort run at --out")
    _add_threads(p, None)
    _add_quiet(p)
    p.set_defaults(func=commands.effort_tune)

    p = effort.add_parser("sweep", help="each tuned bound as an operating point: accuracy, MACs, wall-clock")
    p.add_argument("runs", type=opt.run_directory, nargs="+", help="effort runs (dynscale effort tune)")
    p.add_argument("--data", type=opt.data_name, default=None, help="evaluate on this dataset instead")
    p.add_argument("--latency", action="store_true", help="also measure wall-clock time")
    _add_timing_options(p, batch="1,64", rounds=3, runtime=None)
    _add_report_options(p)
    _add_quiet(p)
    p.set_defaults(func=commands.effort_sweep)

    p = sub.add_parser("dfs", help="dynamic fractional skipping: per example and block, skip or a bit-width")
    dfs = p.add_subparsers(dest="dfs_command", required=True, parser_class=_Parser, metavar="COMMAND")

    p = dfs.add_parser("train", help="pretrain a ResNet, then its gates, then both, at a computation target")
    p.add_argument("--model", type=opt.model_name, default=None,
                   help="resnet38 (the default), resnet74 or resnet; with --backbone, the backbone's")
    p.add_argument("--data", type=opt.data_name, default="digits", help="digits, fashion-mnist, mnist, synthetic or "
                   "idx:DIR")
    p.add_argument("--width-mult", type=opt.number(0.0, low_open=True), default=None,
                   help="scale every channel count (default: the model's own)")
    p.add_argument("--set", type=opt.model_option, action="append", default=[], metavar="KEY=VALUE",
                   help="a model option (repeatable)")
    p.add_argument("--target", type=opt.number(0.0, 100.0, low_open=True), required=True,
                   help="computation to reach, in percent (0-100] of the full-precision BitOps")
    p.add_argument("--choices", type=opt.listing(opt.integer(0, 32), "0,8,16,32"), default=[0, 8, 10, 12, 14, 16, 32],
                   help="the gates' choices: 0 skips a block, 1-32 bits (32 is full precision)")
    p.add_argument("--beta", type=opt.number(0.0), default=0.02,
                   help="weight of the computation cost in the loss (0.02: the authors' scale)")
    p.add_argument("--gate-objective", choices=("full", "target"), default="full",
                   help="what the gate phase trains towards: full execution (the authors') or the target")
    p.add_argument("--backbone", type=opt.run_directory, default=None, metavar="RUN",
                   help="a trained ResNet (dynscale train) to start from: the pretrain phase is left out")
    p.add_argument("--pretrain-epochs", type=opt.NON_NEGATIVE, default=8, help="epochs of the backbone alone")
    p.add_argument("--gate-epochs", type=opt.NON_NEGATIVE, default=3, help="epochs of the gates on the frozen backbone")
    p.add_argument("--joint-epochs", type=opt.NON_NEGATIVE, default=4, help="epochs of gates and backbone together")
    _add_training_options(p)
    p.add_argument("--holdout", type=opt.NON_NEGATIVE, default=0, help="training examples kept out")
    p.add_argument("--out", type=opt.path, required=True, help="run directory to write")
    _add_threads(p, None)
    _add_quiet(p)
    p.set_defaults(func=commands.dfs_train, epochs=1)

    p = dfs.add_parser("sweep", help="DFS and SkipNet runs, static quantization and int8 of a backbone: BitOps, "
                       "MACs, accuracy, wall-clock")
    p.add_argument("runs", type=opt.run_directory, nargs="+",
                   help="DFS runs (dynscale dfs train), and ResNet runs for the static and int8 baselines")
    p.add_argument("--static-bits", type=opt.listing(opt.integer(1, 31), "8,16"), default=[],
                   help="bit-widths of static quantization of the ResNet runs")
    p.add_argument("--int8", action="store_true", help="also measure the ResNet runs in int8 with ONNX Runtime")
    p.add_argument("--data", type=opt.data_name, default=None, help="evaluate on this dataset instead")
    p.add_argument("--latency", action="store_true", help="also measure wall-clock time")
    _add_timing_options(p, batch="1,64", rounds=3, runtime=None)
    p.add_argument("--choices-plot", type=opt.path, default=None,
                   help="write the per-block choices of each gated point as PNG here")
    _add_report_options(p, "accuracy vs BitOps ratio")
    _add_quiet(p)
    p.set_defaults(func=commands.dfs_sweep)

    p = sub.add_parser("info", help="describe a run directory")
    p.add_argument("run", type=opt.run_directory, help="a run directory")
    p.set_defaults(func=commands.info)

    p = sub.add_parser("list", help="list models, profiles, datasets, recipes and run kinds")
    p.set_defaults(func=commands.list_all)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    import torch

    args = build_parser().parse_args(argv)
    threads = torch.get_num_threads()  # a command's --threads lasts as long as the command
    try:
        commands.prepare(args)
        args.func(args)
    except (DynscaleError, ValueError, OSError) as e:
        if os.environ.get("DYNSCALE_DEBUG"):
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"dynscale: error: {message}", file=sys.stderr)
        return 2
    except TrainingInterrupted as e:
        print(f"dynscale: interrupted: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("dynscale: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug, not bad input: still one line, with a way to see more
        if os.environ.get("DYNSCALE_DEBUG"):
            raise
        print(f"dynscale: internal error (a bug in dynscale, please report it): {type(e).__name__}: "
              f"{' '.join(str(e).split())} (rerun with DYNSCALE_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    finally:
        torch.set_num_threads(threads)
        set_quiet(False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
