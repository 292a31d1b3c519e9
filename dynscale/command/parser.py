"""The pieces every command's parser is made of: one-line errors, defaults in the help, the
shared option groups, and options made from a settings dataclass's fields (one source of
defaults and documentation)."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence

from ..device import Execution
from ..schema import Bool, field_help, spec_of
from ..train import TrainConfig
from . import options as opt


def _shown(value: object) -> str:
    if isinstance(value, list | tuple):
        return ",".join(_shown(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default unless it has none to show (None, off, empty)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, []) or action.default is argparse.SUPPRESS:
            return action.help or ""
        if isinstance(action.default, list):
            return f"{action.help} (default: {_shown(action.default)})"
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, exit 2."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # one line, exit 2, instead of usage + message
        if os.environ.get("RANK", "0") != "0":  # under torchrun every process parses; rank 0 says it
            self.exit(2)
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def add_group(subparsers, name: str, help: str) -> argparse._SubParsersAction:
    """A command with subcommands (``dynscale NAME COMMAND``)."""
    p = subparsers.add_parser(name, help=help)
    return p.add_subparsers(dest=f"{name}_command", required=True, parser_class=Parser, metavar="COMMAND")


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_fields(p: argparse.ArgumentParser, cls: type, names: Sequence[str] | None = None,
               flags: dict[str, str] | None = None, defaults: dict[str, object] | None = None,
               helps: dict[str, str] | None = None, prefix: str = "", **kwargs) -> None:
    """Adds one option per field of the dataclass ``cls``: its flag (``--field-name`` unless
    ``flags`` renames it), its parser (the field's :mod:`dynscale.schema` description), its
    default and help (the field's documentation). A bool field that is on by default becomes
    ``--no-FIELD``. ``prefix`` starts each help text (e.g. the recipe the option belongs to).

    The parsed value is None where the option was not given (see :func:`fields_of`), so a
    command can tell an option given from its default.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in names or list(fields):
        f = fields[name]
        default = (defaults or {}).get(name, f.default if f.default is not dataclasses.MISSING
                                       else f.default_factory() if f.default_factory is not dataclasses.MISSING
                                       else None)
        text = prefix + ((helps or {}).get(name) or field_help(cls, name))
        check = spec_of(f)
        flag = (flags or {}).get(name, flag_of(name) if not (isinstance(check, Bool) and default) else
                                 flag_of(f"no_{name}"))
        if isinstance(check, Bool):
            p.add_argument(flag, dest=name, action="store_const", const=not default, default=None, help=text)
            continue
        shown = f" (default: {_shown(default)})" if default not in (None, [], ()) else ""
        p.add_argument(flag, dest=name, type=opt.spec(check), default=None, help=text + shown, **kwargs)


def fields_of(args: argparse.Namespace, cls: type, names: Sequence[str] | None = None,
              defaults: dict[str, object] | None = None) -> dict:
    """The values of the options :func:`add_fields` made: those given, and the defaults of
    the others (the command's ``defaults``, then the field's)."""
    values = {}
    for f in dataclasses.fields(cls):
        if names is not None and f.name not in names or not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        if value is None and defaults and f.name in defaults:
            value = defaults[f.name]
        if value is not None:
            values[f.name] = value
    return values


def given(args: argparse.Namespace, names: Sequence[str]) -> list[str]:
    """The options of ``names`` (made by :func:`add_fields`) that the user gave."""
    return [n for n in names if getattr(args, n, None) is not None]


def add_execution_options(p: argparse.ArgumentParser) -> None:
    """``--device``, ``--amp`` and ``--channels-last`` (``dynscale.device.Execution``'s fields),
    which mark a command that trains (the ones that may run under ``torchrun``)."""
    add_fields(p, Execution)
    p.set_defaults(trains=True)


def add_device_option(p: argparse.ArgumentParser, cpu_only: str | None = None) -> None:
    """``--device`` alone (``dynscale.device.Execution``'s field), for commands that evaluate
    and time (``kit.evaluation_device`` resolves it).

    Args:
        p: the command's parser.
        cpu_only: why the command computes on the CPU only, for its help (``auto`` is the CPU
            there, and a GPU is refused).
    """
    text = (f"where to evaluate and time: the CPU whether auto or cpu ({cpu_only})" if cpu_only else
            "where to evaluate and time: auto (a GPU if PyTorch sees one), cpu, cuda or cuda:N; ONNX Runtime and "
            "int8 kernels run on the CPU whatever it says, and each measurement records its device")
    add_fields(p, Execution, ["device"], helps={"device": text})


def add_training_options(p: argparse.ArgumentParser, leave_out: Sequence[str] = ()) -> None:
    """The shared training settings (``TrainConfig``'s fields but those of ``leave_out``), the
    execution options, resume and force."""
    add_fields(p, TrainConfig, [f.name for f in dataclasses.fields(TrainConfig) if f.name not in leave_out])
    add_execution_options(p)
    p.add_argument("--force", action="store_true",
                   help="replace an existing run at --out, or discard an unfinished training's saved state")
    p.add_argument("--resume", action="store_true",
                   help="continue the unfinished training saved in OUT.resume (same command and options)")
    p.add_argument("--checkpoint-every", type=opt.POSITIVE, default=500,
                   help="optimizer steps between saved training states (and on Ctrl-C or SIGTERM)")


def add_data(p: argparse.ArgumentParser, default: str | None = "digits", help: str | None = None) -> None:
    p.add_argument("--data", type=opt.data_name, default=default,
                   help=help or "digits, fashion-mnist, mnist, synthetic or idx:DIR")


def add_model_options(p: argparse.ArgumentParser, model: str | None, profile: str | None = None) -> None:
    """``--model``, ``--data``, ``--profile`` (with a default profile), ``--width-mult`` and
    ``--set``. The model and profile are None where not given (so a command can refuse them
    where they would do nothing); ``kit.model_name`` and ``kit.model_options`` fill in the
    defaults."""
    p.add_argument("--model", type=opt.model_name, default=None,
                   help=f"registered model (see `dynscale list`{f'; default: {model}' if model else ''})")
    add_data(p)
    if profile is not None:
        p.add_argument("--profile", type=opt.profile, default=None,
                       help=f"channel profile: a name (see `dynscale list`) or comma-separated coefficients "
                            f"(default: {profile})")
    p.set_defaults(default_model=model, default_profile=profile)
    p.add_argument("--width-mult", type=opt.number(0.0, low_open=True), default=None,
                   help="scale every channel count (convolutional models; default: the model's own)")
    p.add_argument("--set", type=opt.model_option, action="append", default=[], metavar="KEY=VALUE",
                   help="a model option, e.g. --set hidden=[200,200] (repeatable)")


def add_threads(p: argparse.ArgumentParser, default: int | None = None) -> None:
    p.add_argument("--threads", type=opt.POSITIVE, default=default,
                   help="CPU threads of PyTorch (and ONNX Runtime when timing)"
                        + ("" if default else "; default: every core"))


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_timing_options(p: argparse.ArgumentParser, batch: str, rounds: int, runtime: str | None = "torch",
                       cpu_only: str | None = None) -> None:
    """Batch sizes, threads, rounds, the time per round, runtimes and ``--device``
    (:func:`add_device_option`, ``cpu_only`` for a command that computes on the CPU only)."""
    p.add_argument("--batch", type=opt.BATCHES, default=opt.BATCHES(batch), metavar="SIZES",
                   help="batch sizes timed, comma-separated")
    add_threads(p, 1)
    p.add_argument("--rounds", type=opt.POSITIVE, default=rounds,
                   help="interleaved timing rounds, the reference timed in each (medians over rounds)")
    p.add_argument("--min-run-time", type=opt.number(0.0, low_open=True), default=0.3,
                   help="seconds of timing per point per round")
    if runtime is not None:
        p.add_argument("--runtime", type=opt.runtime_list, default=opt.runtime_list(runtime), metavar="RUNTIMES",
                       help="torch (the dynamic model), torch-dense (its dense export in PyTorch) or onnxruntime "
                            "(the dense export in ONNX Runtime); comma-separated for several")
    add_device_option(p, cpu_only)


def add_report_options(p: argparse.ArgumentParser, plot: str = "accuracy vs MAC ratio") -> None:
    p.add_argument("--json", type=opt.path, default=None, help="write the curves as JSON here")
    p.add_argument("--csv", type=opt.path, default=None, help="write one CSV row per operating point here")
    p.add_argument("--markdown", type=opt.path, default=None, help="write the table as Markdown here")
    p.add_argument("--plot", type=opt.path, default=None, help=f"write {plot} as PNG here")
    p.add_argument("--title", type=opt.name, default=None, help="title of the plot")


def add_sweep_options(p: argparse.ArgumentParser, plot: str = "accuracy vs MAC ratio",
                      runtime: str | None = None, cpu_only: str | None = None) -> None:
    """What the sweeps of the methods share: another dataset, latency, timing (``--device``,
    ``cpu_only`` for a sweep that computes on the CPU only), reports."""
    add_data(p, None, "evaluate on this dataset instead of the run's")
    p.add_argument("--latency", action="store_true", help="also measure wall-clock time")
    add_timing_options(p, batch="1,64", rounds=3, runtime=runtime, cpu_only=cpu_only)
    add_report_options(p, plot)
    add_quiet(p)
