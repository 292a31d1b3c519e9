"""What the commands of every method share once their options are parsed: naming the option in
an error, loading the data, the training settings, timing, and the report."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from ..device import Execution
from ..errors import DynscaleError
from ..train import TrainConfig
from .parser import fields_of

if TYPE_CHECKING:
    import torch

    from ..eval import TimingConfig

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


def dataset(name: str, flag: str = "--data"):
    """The dataset ``name``, a failure to load it naming ``flag``."""
    from ..data import load_dataset
    from ..parallel import main_first

    with about(f"{flag} {name}"):
        return main_first(lambda: load_dataset(name))  # under torchrun rank 0 downloads or extracts first


def inputs(args: argparse.Namespace) -> list[Path]:
    """What a command reads (its runs, a report, an ``idx:`` data directory), which none of
    its outputs may be, hold or lie in."""
    found = []
    for name in ("run", "runs", "backbone", "sweep", "start"):
        value = getattr(args, name, None)
        found += [Path(v) for v in (value if isinstance(value, list) else [value]) if v is not None]
    data = getattr(args, "data", None)
    if isinstance(data, str) and data.startswith("idx:"):
        found.append(Path(data[len("idx:"):]))
    return found


def refuse(args: argparse.Namespace, flags: dict[str, str], reason: str) -> None:
    """Refuses options that would do nothing: ``flags`` maps an argument's dest to its flag.

    Raises:
        DynscaleError: naming the first option given and why it does nothing.
    """
    for dest, flag in flags.items():
        value = getattr(args, dest, None)
        if value not in (None, False, []):
            raise DynscaleError(f"{flag} does nothing {reason}; leave it out")


MODEL_OPTIONS = {"model": "--model", "profile": "--profile", "width_mult": "--width-mult", "set": "--set"}


def training_config(args: argparse.Namespace, **defaults) -> TrainConfig:
    """The shared training settings of the options (``add_training_options``)."""
    return TrainConfig(**fields_of(args, TrainConfig, defaults=defaults))


def execution(args: argparse.Namespace) -> Execution:
    """The device, mixed-precision and memory-format options (``add_execution_options``),
    checked before any work (a GPU asked for is there)."""
    from ..device import resolve_device

    settings = Execution(**fields_of(args, Execution))
    with about("--device"):
        resolve_device(settings.device)
    return settings


def evaluation_device(args: argparse.Namespace, cpu_only: str | None = None) -> torch.device:
    """The device of ``--device`` (``add_device_option``; ``auto`` where not given), resolved
    and checked before any work.

    Args:
        args: the parsed options.
        cpu_only: why the command computes on the CPU only (its kernels run nowhere else);
            ``auto`` then means the CPU, and a GPU is refused.

    Returns:
        The ``torch.device``.

    Raises:
        DynscaleError: naming ``--device``: a GPU PyTorch does not see, or one a CPU-only
            command cannot use.
    """
    import torch

    from ..device import resolve_device

    name = Execution(**fields_of(args, Execution, ["device"])).device
    if cpu_only is not None and name not in ("auto", "cpu"):
        raise DynscaleError(f"--device {name}: {cpu_only}; use --device cpu")
    with about("--device"):
        return torch.device("cpu") if cpu_only is not None else resolve_device(name)


def model_name(args: argparse.Namespace) -> str:
    """``--model``, or the command's default model."""
    return args.model or args.default_model


def model_options(args: argparse.Namespace, profile: bool = True) -> dict:
    """The model options of ``--profile`` (or the command's default profile), ``--width-mult``
    and ``--set``."""
    chosen = getattr(args, "profile", None) or getattr(args, "default_profile", None)
    options = {"profile": chosen} if profile and chosen is not None else {}
    options.update(dict(args.set))
    if args.width_mult is not None:
        options["width_mult"] = args.width_mult
    return options


def check_model_options(model: str, options: dict, data=None) -> dict:
    """Checks each model option (naming the flag it came from) and, given the data, sizes the
    options for it."""
    import torch

    from ..models import check_options, get_model
    from ..train import sized_for

    for key, value in options.items():
        with about(MODEL_FLAGS.get(key, f"--set {key}")):
            check_options(model, {key: value})
    if data is None:
        return options
    for key in ("in_channels", "input_size", "num_classes"):
        with about(f"--set {key}"):
            sized_for(data, {k: v for k, v in options.items() if k == key})
    flags = [MODEL_FLAGS.get(k, "--set") for k in options if k != "profile"] or ["--profile"]
    with torch.device("meta"), about(" / ".join(dict.fromkeys(flags))):  # the model's own checks, nothing allocated
        get_model(model, **sized_for(data, options))
    return options


def timing(args: argparse.Namespace, runtimes: list[str] | None = None, examples: int | None = None,
           channels_last: bool = False, batch_sizes: list[int] | None = None,
           device: torch.device | str | None = None) -> TimingConfig:
    """The timing settings of the timing options, timing PyTorch on ``device`` (a
    :func:`evaluation_device`; None: the CPU)."""
    from ..eval import TimingConfig

    return TimingConfig(batch_sizes=batch_sizes or args.batch, threads=args.threads, rounds=args.rounds,
                        min_run_time=args.min_run_time, examples=examples,
                        runtimes=runtimes or getattr(args, "runtime", None) or ["torch"], channels_last=channels_last,
                        device=str(device) if device is not None else "cpu")


def timing_meta(settings: TimingConfig | None, device: torch.device | str | None = None) -> dict:
    """The report's meta: the timing settings, the device evaluated on (the timing's where
    ``device`` is None; its GPU's name too), and PyTorch's version."""
    import torch

    device = torch.device(device if device is not None else settings.device if settings is not None else "cpu")
    meta = {"device": str(device), "timing": asdict(settings) if settings is not None else None,
            "torch": torch.__version__}
    if device.type == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(device)
    return meta


def report(args: argparse.Namespace, curves: list, title: str, xlabel: str | None = None, meta: dict | None = None,
           layout: str = "auto", x: str = "macs") -> None:
    """Prints the table and writes the report files the options asked for."""
    from ..eval import format_table, write_report

    print(format_table(curves, layout=layout))
    for path in write_report(curves, json=args.json, csv=args.csv, markdown=args.markdown, png=args.plot,
                             title=args.title or title, xlabel=xlabel, meta=meta, layout=layout, x=x):
        print(f"wrote {path}")


def sweep_report(args: argparse.Namespace, curves: list, settings: TimingConfig | None, title: str,
                 xlabel: str | None = None, device: torch.device | str | None = None, **kwargs) -> None:
    """:func:`report` with the timing settings and the device (:func:`timing_meta`) in the
    JSON's meta."""
    report(args, curves, title, xlabel, timing_meta(settings, device), **kwargs)


def run_name(path: str | Path) -> str:
    return Path(path).name
