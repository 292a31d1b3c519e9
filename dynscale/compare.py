"""``dynscale compare``: one network against a family of networks, on one model and dataset.

Trains and sweeps, with the same data, widths and cost model: independently trained networks
(one per width), IDP all-one (a standard network), IDP linear (the paper's recipe), and the
universally slimmable recipe with the all-one and the linear profile.
"""

from __future__ import annotations

from pathlib import Path

from .device import Execution
from .layers import check_width
from .models import model_info
from .reproduce import reproduce


def comparison_plan(model: str, data: str, widths: list[float], epochs: int,
                    train_limit: int | None = None, width_mult: float | None = None,
                    seed: int = 0, batch_size: int = 64) -> dict:
    """The plan (as in ``experiments/*.yaml``) of a comparison.

    Raises:
        ValueError: for an unknown model.
    """
    widths = sorted(check_width(w) for w in widths)
    settings = {"epochs": epochs, "seed": seed, "batch_size": batch_size}
    if train_limit:
        settings["train_limit"] = train_limit
    if width_mult is not None:
        settings["width_mult"] = width_mult
    # The IDP paper's own recipe: random cuts for convolutional networks, full width for the MLP.
    paper_cut = "random" if model_info(model).convolutional else "full"
    runs = {
        "independent": {"model": model, "profile": "all-one", "recipe": "independent", "family_widths": widths},
        "idp-all-one": {"model": model, "profile": "all-one"},
        "idp-linear": {"model": model, "profile": "linear", "cut": paper_cut},
        "us-all-one": {"model": model, "profile": "all-one", "recipe": "us"},
        "us-linear": {"model": model, "profile": "linear", "recipe": "us"},
    }
    return {
        "name": "compare", "data": data, "widths": widths, "two_profiles": "0-1",
        "settings": {"full": {model: settings}},
        "runs": runs,
        "experiments": {"compare": {"title": f"{model} on {data}: one network vs a family",
                                    "runs": list(runs)}},
    }


def compare(model: str, data: str, out: str | Path, widths: list[float] | None = None,
            epochs: int = 30, train_limit: int | None = None, width_mult: float | None = None,
            seed: int = 0, batch_size: int = 64, progress: bool | None = None, force: bool = False,
            execution: Execution | None = None) -> dict:
    """Trains and sweeps the comparison into ``out`` (``compare.json``/``.md``/``.png``); see
    :func:`~dynscale.reproduce.reproduce` for ``force`` and ``execution``.

    Returns:
        The reproduce summary.
    """
    plan = comparison_plan(model, data, widths or [0.25, 0.5, 0.75, 1.0], epochs, train_limit,
                           width_mult, seed, batch_size)
    return reproduce(plan, out, progress=progress, force=force, execution=execution)
