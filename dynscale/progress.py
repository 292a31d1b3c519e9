"""Progress bars: shown on a terminal, hidden elsewhere, and hidden everywhere once
:func:`set_quiet` is called (the command line's ``--quiet``)."""

from __future__ import annotations

import os

from tqdm.auto import tqdm

_QUIET = False


def set_quiet(quiet: bool = True) -> None:
    """Hides (or shows again) every progress bar of this process."""
    global _QUIET
    _QUIET = quiet


def progress_bar(iterable=None, progress: bool | None = None, **kwargs) -> tqdm:
    """A tqdm bar.

    Args:
        iterable: what to iterate over, if anything.
        progress: True shows it, False hides it, None shows it only on a terminal.
        **kwargs: tqdm's options (``desc``, ``total``, ``unit``…).
    """
    # Under torchrun only rank 0 shows progress (the others would draw the same bars again).
    quiet = _QUIET or progress is False or os.environ.get("RANK", "0") != "0"
    disable = True if quiet else (None if progress is None else False)
    return tqdm(iterable, disable=disable, **kwargs)
