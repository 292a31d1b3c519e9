"""``dynscale reproduce``: a paper's experiments from a YAML description, at CPU scale
(``experiments/PAPER.yaml``, modes ``quick`` and ``full``) or at the paper's own size
(``experiments/PAPER-paper.yaml``, mode ``paper``: ``--full``).

Every run is trained once into ``OUT/runs/NAME`` (reused when its settings and data are
unchanged), each experiment is swept into ``OUT/NAME.json``, ``.md`` and ``.png``, and
``OUT/summary.md`` gathers the tables.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from importlib import resources
from pathlib import Path

import yaml

from .data import load_dataset
from .data.cifar import CIFAR, local_cifar
from .data.download import cache_dir
from .device import Execution, resolve_device
from .errors import CheckpointError, DataError, DynscaleError
from .eval import format_table, write_report
from .files import atomic_write, dumps_json, write_json
from .idp import sweep_runs, train_run
from .layers import incomplete_batchnorms
from .models import get_model, parse_profile_ranges
from .parallel import on_main
from .runs import RunConfig, check_directory
from .train import Recipe, TrainConfig, get_recipe, state_directory

PAPERS = ("idp",)
MODEL_OPTIONS = ("width_mult",)
RECIPE_SETTINGS = ("cut", "profile_gradient")  # the recipe settings a run's spec may give


def load_plan(paper: str, full: bool = False) -> dict:
    """Reads the YAML plan of a paper's experiments.

    Args:
        paper: a name of ``PAPERS``.
        full: the plan at the paper's own size (``experiments/PAPER-paper.yaml``, mode
            ``paper``) instead of the CPU-scale one (``experiments/PAPER.yaml``, modes ``quick``
            and ``full``).

    Returns:
        The plan: ``data``, ``widths``, ``settings`` per mode and model, ``runs``, ``experiments``.
    """
    if paper not in PAPERS:
        raise ValueError(f"unknown paper {paper!r}; choose one of {', '.join(PAPERS)}")
    name = f"{paper}-paper.yaml" if full else f"{paper}.yaml"
    return yaml.safe_load(resources.files("dynscale.experiments").joinpath(name).read_text())


def plan_mode(quick: bool = False, full: bool = False) -> str:
    """The settings a reproduction uses: ``quick`` (minutes), ``paper`` (``full``: the paper's
    own size) or, by default, ``full`` (the CPU-scale plan's longer settings).

    Raises:
        ValueError: for both ``quick`` and ``full``.
    """
    if quick and full:
        raise ValueError("--quick and --full exclude each other: choose minutes on a CPU or the paper's size")
    return "paper" if full else "quick" if quick else "full"


def check_paper_data(plan: dict) -> None:
    """Refuses, before any work, a paper-size plan on CIFAR that is neither on this machine nor
    on a mirror (``$DYNSCALE_MIRROR``): an hours-long GPU job starts only on data placed on
    purpose, never on a download from the internet that a GPU machine often cannot make.

    Raises:
        DataError: one line saying where to get the archive and where to put it.
    """
    name = plan["data"]
    if name not in CIFAR or local_cifar(name) is not None or os.environ.get("DYNSCALE_MIRROR"):
        return
    source = CIFAR[name]
    where = f"$DYNSCALE_DATA/{name}/" + (f" (now {os.environ['DYNSCALE_DATA']}/{name}/)"
                                         if os.environ.get("DYNSCALE_DATA") else "")
    raise DataError(f"{name} is not on this machine: download {source.url}{source.archive} into {where} or "
                    f"{cache_dir() / name}/, or set DYNSCALE_MIRROR to a server holding {source.archive}; then "
                    f"run it on a GPU (--device cuda): the paper-size runs take hours")


def plan_recipe(plan: dict, spec: dict) -> Recipe:
    """The recipe a run of a plan trains with, through the recipe registry: ``recipe`` (``idp``
    by default; ``multi-profile`` with ``profiles: two``) and the settings the spec gives
    (``RECIPE_SETTINGS``)."""
    name = spec.get("recipe", "multi-profile" if spec.get("profiles") == "two" else "idp")
    settings = {k: spec[k] for k in RECIPE_SETTINGS if k in spec}
    settings.update(spec.get("recipe_settings") or {})  # any of the recipe's own settings
    if name == "independent":
        settings["widths"] = spec["family_widths"]
    if name == "multi-profile":
        settings["profiles"] = parse_profile_ranges(plan["two_profiles"])
    return get_recipe(name, **settings)


def run_settings(plan: dict, name: str, mode: str) -> tuple[dict, TrainConfig, dict, Recipe]:
    """The (run spec, training config, model options, recipe) of one run in a mode: the
    model family's settings, with what the run's own ``training`` section changes."""
    spec = plan["runs"][name]
    family = {**plan["settings"][mode][spec["model"]], **(spec.get("training") or {})}  # options are popped below
    options = {"profile": spec["profile"], **{k: family.pop(k) for k in MODEL_OPTIONS if k in family}}
    return spec, TrainConfig(**family), options, plan_recipe(plan, spec)


def has_batchnorm(model_name: str, options: dict) -> bool:
    """Whether a registered model (built with ``options``) has width-aware batch-norm."""
    return bool(incomplete_batchnorms(get_model(model_name, **options)))


def _recorded(run_dir: Path) -> dict | None:
    try:
        return RunConfig.read(run_dir).provenance.get("reproduce")
    except CheckpointError:
        return None


def reproduce(paper: str | dict, out: str | Path, quick: bool = False, progress: bool | None = None,
              only: list[str] | None = None, force: bool = False, full: bool = False,
              execution: Execution | None = None) -> dict:
    """Trains and sweeps a paper's experiments.

    Args:
        paper: ``"idp"``, or a plan with the same structure as ``experiments/idp.yaml``.
        out: output directory.
        quick: the few-minute settings (mode ``quick``) instead of the CPU-scale full ones
            (mode ``full``).
        progress: show progress bars; None shows them only on a terminal.
        only: run only these experiments.
        force: retrain a run of ``out`` that was trained with other settings or data (without
            it, such a run is an error, not silently replaced); an unfinished training with the
            same settings is resumed.
        full: the paper's own size (mode ``paper``; for a paper's name, the plan
            ``experiments/PAPER-paper.yaml``); its CIFAR data must be on this machine or a
            mirror (:func:`check_paper_data`).
        execution: where the runs train (device, mixed precision, memory format); None: the
            GPU if there is one.

    Returns:
        ``{experiment: {"title", "runs", "json", "png", "markdown"}}``.

    Raises:
        ValueError: for ``quick`` with ``full``, an unknown experiment, or a plan without the
            mode's settings.
        DataError: for a paper-size plan whose data is not here (before any work).
    """
    mode = plan_mode(quick, full)
    plan = load_plan(paper, full=full) if isinstance(paper, str) else paper
    paper = paper if isinstance(paper, str) else plan.get("name", "custom")
    if mode not in plan["settings"]:
        raise ValueError(f"the plan has no {mode!r} settings (it has {', '.join(plan['settings'])})")
    out = Path(out)
    experiments = plan["experiments"]
    if only:
        unknown = sorted(set(only) - set(experiments))
        if unknown:
            raise ValueError(f"unknown experiment {', '.join(unknown)}; choose from {', '.join(experiments)}")
        experiments = {k: v for k, v in experiments.items() if k in only}
    if mode == "paper":
        check_paper_data(plan)
    check_directory(out)
    data = load_dataset(plan["data"])
    test_limit = plan["settings"][mode].get("test_limit")
    if test_limit:
        data = dataclasses.replace(data, test_x=data.test_x[:test_limit], test_y=data.test_y[:test_limit])
    widths = plan["widths"]
    needed = list(dict.fromkeys(r for e in experiments.values() for r in e["runs"]))
    for name in needed:
        spec, config, options, recipe = run_settings(plan, name, mode)
        record = {"paper": paper, "mode": mode, "data": plan["data"], "spec": spec, "training": config.to_dict(),
                  "recipe": recipe.to_dict(), "options": options}
        run_dir = out / "runs" / name
        recorded = _recorded(run_dir)
        if recorded == json.loads(dumps_json(record)):
            print(f"[reproduce] {name}: reusing {run_dir}")
            continue
        if recorded is not None and not force:
            changed = [k for k in record if recorded.get(k) != json.loads(dumps_json(record[k]))]
            raise DynscaleError(f"{run_dir} was trained with other settings ({', '.join(changed) or 'unknown'} "
                                "differ); pass --force to retrain it, or choose another --out")
        resume = (state_directory(run_dir) / "state.json").is_file() and not force
        print(f"[reproduce] {'resuming' if resume else 'training'} {name} ({spec['model']}, {mode})", flush=True)
        calibrate = widths if has_batchnorm(spec["model"], options) else None
        train_run(run_dir, spec["model"], data, config, recipe, options, progress=progress, calibrate=calibrate,
                  provenance={"reproduce": record}, force=force, resume=resume, execution=execution)
    summary, sections = {}, [f"# {paper} reproduction ({mode})\n"]
    for key, exp in experiments.items():
        curves = sweep_runs([str(out / "runs" / r) for r in exp["runs"]], widths, data=data, progress=progress,
                            device=resolve_device((execution or Execution()).device))
        on_main(functools.partial(write_report, curves, json=out / f"{key}.json", markdown=out / f"{key}.md",
                                  png=out / f"{key}.png", title=exp["title"],
                                  meta={"title": exp["title"], "mode": mode, **exp.get("meta", {})},
                                  note=exp.get("note")))  # under torchrun: rank 0 writes
        note = exp.get("note", "")  # e.g. a comparison's training budgets
        print(f"\n{exp['title']}\n{format_table(curves)}" + (f"\n{note}" if note else ""), flush=True)
        sections.append(f"## {exp['title']}\n\n{format_table(curves, markdown=True)}\n\n"
                        + (f"{note}\n\n" if note else "") + f"![{key}]({key}.png)\n")
        summary[key] = {"title": exp["title"], "runs": exp["runs"], "json": f"{key}.json",
                        "png": f"{key}.png", "markdown": f"{key}.md"}
    text = "\n".join(sections)
    on_main(lambda: (atomic_write(out / "summary.md", lambda p: p.write_text(text)),
                     write_json(out / "summary.json", summary)))  # under torchrun: rank 0 writes
    return summary
