"""``dynscale.convert``: turn a user's network into an incomplete one, weights preserved.

:func:`convert` works on the model's traced graph (:mod:`dynscale.graph`) and checks itself
against the masked original before returning (see :mod:`dynscale.models.converted`).
:func:`convert_to_run` imports a factory, converts its network and writes a run of kind
``width`` of the registered ``converted`` family, which every command loads like a built-in one.
"""

from __future__ import annotations

from pathlib import Path

from .errors import DynscaleError
from .models import get_model
from .models.converted import ConvertedConfig, check_factory, convert, default_example, mac_fraction, self_check
from .runs import check_output, save_run

__all__ = ["ConvertedConfig", "convert", "convert_to_run", "default_example", "mac_fraction", "self_check"]


def parse_input_shape(text: str | tuple | list) -> tuple[int, ...]:
    """``"3,224,224"`` (or a sequence) as a tuple of positive whole numbers.

    Raises:
        ValueError: naming the expected form.
    """
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        shape = tuple(int(str(p).strip()) for p in parts)
    except ValueError:
        shape = ()
    if not shape or any(s < 1 or s > 65536 for s in shape) or (isinstance(text, str) and not text.strip()):
        raise ValueError(f"--input-shape takes one example's shape as positive whole numbers, e.g. 3,224,224; got "
                         f"{text!r}")
    return shape


def convert_to_run(factory: str, input_shape: tuple[int, ...], out: str | Path, profile="linear",
                   force: bool = False, data: str = "none") -> Path:
    """Imports ``factory`` (this runs the user's code), converts its network and writes the run.

    Args:
        factory: ``"MODULE:FACTORY"`` or ``"path/file.py:FACTORY"``, a function returning the network.
        input_shape: one example's shape, e.g. ``(3, 224, 224)``.
        out: the run directory to write (checked before any work).
        profile: the profile of the converted layers.
        force: replace an existing run at ``out``.
        data: the dataset name recorded in the run (a converted network has seen none of ours).

    Returns:
        The run directory.

    Raises:
        DynscaleError: for a bad output, factory or shape, or a network that cannot be converted.
    """
    out = check_output(out, force)
    try:
        check_factory(factory)
        shape = parse_input_shape(input_shape)
        model = get_model("converted", factory=factory, input_shape=list(shape), profile=profile)
    except ValueError as e:  # GraphError included
        raise DynscaleError(str(e)) from None
    return save_run(out, model, data, provenance={"factory": factory})
