"""Every command-line option's parsing and validation, in one place per option.

Each ``type=`` function either returns the checked value or raises ``ArgumentTypeError`` with
what the option takes; argparse then names the option in one line and exits 2, before any work.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path

from ..eval.runtime import RUNTIMES, parse_runtimes
from ..models import parse_profile_ranges

Check = Callable[[str], object]


def _fail(message: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(message)


def integer(low: int = 0, high: int | None = None) -> Check:
    """A whole number in [low, high]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise _fail(f"takes a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            raise _fail(f"takes a whole number {bound}, got {value}")
        return value
    return parse


def number(low: float | None = None, high: float | None = None, low_open: bool = False,
           high_open: bool = False) -> Check:
    """A finite number in a range (``low_open``: strictly above ``low``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise _fail(f"takes a number, got {text!r}") from None
        if not math.isfinite(value):
            raise _fail(f"takes a finite number, got {text!r}")
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            left = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
            right = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
            raise _fail(f"takes a number {' and '.join(p for p in (left, right) if p)}, got {value:g}")
        return value
    return parse


def listing(item: Check, example: str, minimum: int = 1) -> Check:
    """Comma-separated values, each checked by ``item``; empty items and lists are refused."""
    def parse(text: str) -> list:
        parts = [p.strip() for p in text.split(",")]
        if not text.strip() or any(not p for p in parts):
            raise _fail(f"takes comma-separated values like {example}, got {text!r}")
        values = []
        for p in parts:
            try:
                values.append(item(p))
            except argparse.ArgumentTypeError as e:
                raise _fail(f"{e} (in {text!r})") from None
        if len(values) < minimum:
            raise _fail(f"takes at least {minimum} values like {example}, got {text!r}")
        return values
    return parse


def parsed_by(parse: Callable[[str], object], takes: str) -> Check:
    """A check made of a library parser: an empty value is refused, and the parser's
    ValueError becomes the option's message."""
    def check(text: str) -> object:
        if not text.strip():
            raise _fail(f"takes {takes}, got an empty value")
        try:
            return parse(text)
        except ValueError as e:
            raise _fail(str(e)) from None
    return check


def spec(check) -> Check:
    """The command-line parser of a :mod:`dynscale.schema` description."""
    def parse(text: str) -> object:
        try:
            return check.parse(text)
        except ValueError as e:
            raise _fail(" ".join(str(e).split())) from None
    return parse


def width(text: str) -> float:
    """A width fraction in (0, 1]."""
    try:
        return number(0.0, 1.0, low_open=True)(text)
    except argparse.ArgumentTypeError:
        raise _fail(f"takes a width in (0, 1], got {text!r}") from None


def name(text: str) -> str:
    """A non-empty name."""
    if not text.strip():
        raise _fail("takes a name, got an empty value")
    return text.strip()


def profile(text: str) -> str | list[float]:
    """A profile name or comma-separated coefficients (non-increasing, > 0)."""
    from ..profiles import make_profile

    if not text.strip():
        raise _fail("takes a profile name or comma-separated coefficients, got an empty value")
    spec: str | list[float] = text.strip()
    if any(c.isdigit() for c in text.split(",")[0]):
        spec = listing(number(), "1,0.5,0.25")(text)
    try:
        make_profile(spec, 4)
    except ValueError as e:
        raise _fail(str(e)) from None
    return spec


def model_option(text: str) -> tuple[str, object]:
    """``KEY=VALUE``; the value is JSON when it parses as JSON, else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise _fail(f"takes KEY=VALUE, e.g. hidden=[200,200], got {text!r}")
    if not value.strip():
        raise _fail(f"{key}= has no value; give KEY=VALUE, e.g. hidden=[200,200]")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    if isinstance(parsed, float) and not math.isfinite(parsed):
        raise _fail(f"{key}={value} is not a finite number")
    return key.strip().replace("-", "_"), parsed


def path(text: str) -> Path:
    """A non-empty path."""
    if not text.strip():
        raise _fail("takes a path, got an empty value")
    return Path(text)


def existing_file(text: str) -> Path:
    """A file that exists."""
    p = path(text)
    if not p.is_file():
        raise _fail(f"{text} is not a file")
    return p


def run_directory(text: str) -> Path:
    """An existing dynscale run directory."""
    p = path(text)
    if not p.is_dir():
        raise _fail(f"no run directory at {text}; train one with `dynscale train --out {text}`")
    if not (p / "config.json").is_file():
        raise _fail(f"{text} has no config.json; it is not a dynscale run directory")
    return p


def data_name(text: str) -> str:
    """A dataset name, or ``idx:DIR`` with an existing directory."""
    from ..data import DATASETS

    if not text.strip():
        raise _fail(f"takes a dataset: {', '.join(DATASETS)}; got an empty value")
    if text.startswith("idx:"):
        if not Path(text[4:]).expanduser().is_dir():
            raise _fail(f"{text[4:] or 'the directory'} is not a directory; give idx:DIR with the four MNIST-format "
                        "files")
    elif text.startswith("folder:"):
        if not Path(text[7:]).expanduser().is_dir():
            raise _fail(f"{text[7:] or 'the directory'} is not a directory; give folder:PATH with one directory per "
                        "class of PNG or JPEG images")
    elif text not in DATASETS:
        raise _fail(f"unknown dataset {text!r}; choose one of {', '.join(DATASETS)}")
    return text


def model_name(text: str) -> str:
    """A registered model."""
    from ..models import list_models

    if text not in list_models():
        raise _fail(f"unknown model {text!r}; choose one of {', '.join(list_models())}")
    return text


profile_ranges = parsed_by(parse_profile_ranges, "width ranges like 0-0.3,0.3-1.0")
runtime_list = parsed_by(parse_runtimes, f"runtimes from {', '.join(RUNTIMES)}")
POSITIVE = integer(1)
NON_NEGATIVE = integer(0)
WIDTHS = listing(width, "0.25,0.5,1.0")
BATCHES = listing(POSITIVE, "1,64")
FRACTIONS = listing(number(0.0), "0.5,1")
