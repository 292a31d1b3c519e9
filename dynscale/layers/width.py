"""Widths: how many channels a layer keeps, and setting the width of a whole model."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

from torch import nn


def check_width(p: float) -> float:
    """Validates a width fraction.

    Args:
        p: fraction of channels to keep.

    Returns:
        ``p`` as a float.

    Raises:
        ValueError: if ``p`` is NaN or outside (0, 1].
    """
    try:
        p = float(p)
    except (TypeError, ValueError):
        raise ValueError(f"width must be a number in (0, 1], got {p!r}") from None
    if math.isnan(p) or not 0.0 < p <= 1.0:
        raise ValueError(f"width must be in (0, 1], got {p}")
    return p


def kept_channels(n: int, p: float, multiple: int = 1) -> int:
    """Number of channels kept out of ``n`` at width ``p``: ``max(1, ceil(p·n))``.

    Args:
        n: channel count at full width.
        p: width fraction in (0, 1].
        multiple: round up to a multiple of this (grouped convolutions keep whole groups).

    Returns:
        The kept count, between ``multiple`` and ``n``.
    """
    # round() absorbs float error such as 0.3 * 10 == 3.0000000000000004.
    units = n // multiple
    return multiple * min(units, max(1, math.ceil(round(p * units, 9))))


class WidthScaled(nn.Module):
    """A module whose behaviour depends on the model's width (set by :func:`set_width`).

    ``in_width`` is the fraction of its input it uses, ``out_width`` of its output it computes.
    """

    in_width: float = 1.0
    out_width: float = 1.0


def width_scaled(model: nn.Module) -> list[WidthScaled]:
    """Returns the width-dependent modules of a model in module order."""
    return [m for m in model.modules() if isinstance(m, WidthScaled)]


def set_width(model: nn.Module, p: float) -> nn.Module:
    """Sets the width of every incomplete layer (and per-width batch-norm) of ``model``.

    Args:
        model: a model containing incomplete layers.
        p: fraction of channels to keep, in (0, 1].

    Returns:
        The same model, for chaining.

    Raises:
        ValueError: if ``p`` is NaN or outside (0, 1].
    """
    p = check_width(p)
    for m in width_scaled(model):
        m.in_width = p
        m.out_width = p
    return model


@contextlib.contextmanager
def width(model: nn.Module, p: float) -> Iterator[nn.Module]:
    """Runs the block with ``model`` at width ``p``, restoring the previous widths after.

    Args:
        model: a model containing incomplete layers.
        p: fraction of channels to keep, in (0, 1].

    Yields:
        The model at width ``p``.
    """
    saved = [(m, m.in_width, m.out_width) for m in width_scaled(model)]
    set_width(model, p)
    try:
        yield model
    finally:
        for m, w_in, w_out in saved:
            m.in_width, m.out_width = w_in, w_out
