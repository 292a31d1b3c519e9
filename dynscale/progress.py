"""Progress bars: shown on a terminal, hidden elsewhere, and hidden everywhere once
:func:`set_quiet` is called (the command line's ``--quiet``)."""

from __future__ import annotations

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
    disable = True if _QUIET or progress is False else (None if progress is None else False)
    return tqdm(iterable, disable=disable, **kwargs)
