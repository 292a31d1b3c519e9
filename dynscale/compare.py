"""``dynscale compare``: one network against a family of networks, on one model and dataset.

Trains and sweeps, with the same data, widths and cost model: independently trained networks
(one per width), IDP all-one (a standard network), IDP linear (the paper's recipe), and the
universally slimmable recipe with the all-one and the linear profile.
"""

from __future__ import annotations

from pathlib import Path

from .data import load_dataset
from .device import Execution
from .layers import check_width
from .models import model_info
from .reproduce import reproduce, run_settings

BUDGETS = ("equal-epochs", "equal-passes")


def comparison_plan(model: str, data: str, widths: list[float], epochs: int,
                    train_limit: int | None = None, width_mult: float | None = None,
                    seed: int = 0, batch_size: int = 64, budget: str = "equal-epochs",
                    train_examples: int | None = None) -> dict:
    """The plan (as in ``experiments/*.yaml``) of a comparison.

    Args:
        budget: ``equal-epochs``: every network trains ``epochs`` epochs (the `us` network
            then makes ``sandwich`` forward-backward passes per step, a family member one);
            ``equal-passes``: every contender gets the `us` network's forward-backward passes,
            the family's networks together (each ``sandwich × epochs / networks`` epochs) and
            each one-pass network alone (``sandwich × epochs`` epochs).
        train_examples: training examples per epoch (for the passes in the note; None leaves
            the counts out).

    Raises:
        ValueError: for an unknown model or budget.
    """
    if budget not in BUDGETS:
        raise ValueError(f"the budget is {' or '.join(BUDGETS)}, not {budget!r}")
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
    plan = {
        "name": "compare", "data": data, "widths": widths, "two_profiles": "0-1",
        "settings": {"full": {model: settings}},
        "runs": runs,
    }
    budgets = training_budgets(plan, budget, epochs)
    for name, spent in budgets.items():
        if spent["epochs"] != epochs:
            runs[name]["training"] = {"epochs": spent["epochs"]}
    title = f"{model} on {data}: one network vs a family ({budget.replace('-', ' ')})"
    plan["experiments"] = {"compare": {"title": title, "runs": list(runs),
                                       "meta": {"budget": budget, "training_budgets": budgets},
                                       "note": budget_note(budgets, budget, batch_size, train_examples)}}
    return plan


def training_budgets(plan: dict, budget: str, epochs: int) -> dict[str, dict]:
    """Each contender's training: networks, epochs per network and forward-backward passes per
    step (its recipe's :meth:`~dynscale.train.Recipe.passes`), after the budget's epochs."""
    recipes = {name: run_settings(plan, name, "full")[3] for name in plan["runs"]}
    reference = max(r.passes(0) for r in recipes.values()) * epochs  # the us network's passes per batch
    budgets = {}
    for name, recipe in recipes.items():
        networks = len(recipe.members()[0]) if recipe.members() is not None else 1
        per_step = recipe.passes(0)
        share = epochs if budget == "equal-epochs" else max(1, round(reference / (per_step * networks)))
        budgets[name] = {"networks": networks, "epochs": share, "passes_per_step": per_step,
                         "passes_per_batch": networks * share * per_step}
    return budgets


def budget_note(budgets: dict[str, dict], budget: str, batch_size: int, examples: int | None) -> str:
    """The contenders' training budgets as a Markdown table, naming the budget setting."""
    steps = -(-examples // batch_size) if examples else None
    lines = [f"Training budget: **{budget}** (`--budget {budget}`); a pass is one forward-backward pass of a batch "
             f"of {batch_size}" + (f", {steps} batches per epoch" if steps else "") + ".", "",
             "| contender | networks | epochs each | passes per step | passes in all |", "|---|---:|---:|---:|---:|"]
    for name, b in budgets.items():
        total = b["passes_per_batch"] * steps if steps else f"{b['passes_per_batch']} × batches per epoch"
        lines.append(f"| {name} | {b['networks']} | {b['epochs']} | {b['passes_per_step']} | {total} |")
    return "\n".join(lines)


def compare(model: str, data: str, out: str | Path, widths: list[float] | None = None,
            epochs: int = 30, train_limit: int | None = None, width_mult: float | None = None,
            seed: int = 0, batch_size: int = 64, progress: bool | None = None, force: bool = False,
            execution: Execution | None = None, budget: str = "equal-epochs") -> dict:
    """Trains and sweeps the comparison into ``out`` (``compare.json``/``.md``/``.png``); see
    :func:`~dynscale.reproduce.reproduce` for ``force`` and ``execution``, and
    :func:`comparison_plan` for ``budget``.

    Returns:
        The reproduce summary.
    """
    available = len(load_dataset(data).train_y)
    plan = comparison_plan(model, data, widths or [0.25, 0.5, 0.75, 1.0], epochs, train_limit,
                           width_mult, seed, batch_size, budget, min(available, train_limit or available))
    return reproduce(plan, out, progress=progress, force=force, execution=execution)
