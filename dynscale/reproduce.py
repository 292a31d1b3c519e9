"""``dynscale reproduce``: a paper's experiments at CPU scale, from a YAML description.

Every run is trained once into ``OUT/runs/NAME`` (reused when its settings are unchanged), each
experiment is swept into ``OUT/NAME.json``, ``.md`` and ``.png``, and ``OUT/summary.md``
gathers the tables.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import yaml

from .checkpoint import atomic_write
from .data import Dataset, load_dataset
from .multiprofile import parse_profile_ranges
from .sweep import format_markdown, format_table, plot, sweep_runs, write_json
from .training import TrainConfig, train_run

PAPERS = ("idp",)
MODEL_OPTIONS = ("width_mult",)


def load_plan(paper: str) -> dict:
    """Reads the YAML plan of a paper's experiments."""
    if paper not in PAPERS:
        raise ValueError(f"unknown paper {paper!r}; choose one of {', '.join(PAPERS)}")
    text = resources.files("dynscale.experiments").joinpath(f"{paper}.yaml").read_text()
    return yaml.safe_load(text)


def run_settings(plan: dict, name: str, mode: str) -> tuple[dict, TrainConfig, dict]:
    """The (run spec, training config, model options) of one run in a mode."""
    spec = plan["runs"][name]
    family = dict(plan["settings"][mode][spec["model"]])  # a copy: options are popped below
    options = {"profile": spec["profile"], **{k: family.pop(k) for k in MODEL_OPTIONS if k in family}}
    recipe = {k: spec[k] for k in ("cut", "recipe", "family_widths") if k in spec}
    config = TrainConfig(**{**family, **recipe})
    return spec, config, options


def has_batchnorm(model_name: str, options: dict) -> bool:
    """Whether a registered model (built with ``options``) has width-aware batch-norm."""
    from .layers import incomplete_batchnorms
    from .models import get_model

    return bool(incomplete_batchnorms(get_model(model_name, **options)))


def _same_run(run_dir: Path, expected: dict) -> bool:
    try:
        saved = json.loads((run_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return saved.get("reproduce") == expected


def reproduce(paper: str | dict, out: str | Path, quick: bool = False, progress: bool | None = None,
              only: list[str] | None = None) -> dict:
    """Trains and sweeps a paper's experiments.

    Args:
        paper: ``"idp"``, or a plan with the same structure as ``experiments/idp.yaml``.
        out: output directory.
        quick: the few-minute settings instead of the full ones.
        progress: show progress bars; None shows them only on a terminal.
        only: run only these experiments.

    Returns:
        ``{experiment: {"title", "runs", "json", "png", "markdown"}}``.
    """
    plan = load_plan(paper) if isinstance(paper, str) else paper
    paper = paper if isinstance(paper, str) else plan.get("name", "custom")
    mode = "quick" if quick else "full"
    out = Path(out)
    experiments = plan["experiments"]
    if only:
        unknown = sorted(set(only) - set(experiments))
        if unknown:
            raise ValueError(f"unknown experiment {', '.join(unknown)}; choose from {', '.join(experiments)}")
        experiments = {k: v for k, v in experiments.items() if k in only}
    data = load_dataset(plan["data"])
    test_limit = plan["settings"][mode].get("test_limit")
    if test_limit:
        data = Dataset(data.name, data.train_x, data.train_y, data.test_x[:test_limit],
                       data.test_y[:test_limit], data.num_classes)
    widths = plan["widths"]
    needed = list(dict.fromkeys(r for e in experiments.values() for r in e["runs"]))
    for name in needed:
        spec, config, options = run_settings(plan, name, mode)
        ranges = parse_profile_ranges(plan["two_profiles"]) if spec.get("profiles") == "two" else None
        record = {"paper": paper, "mode": mode, "spec": spec, "training": config.to_dict(), "options": options}
        run_dir = out / "runs" / name
        if _same_run(run_dir, record):
            print(f"[reproduce] {name}: reusing {run_dir}")
            continue
        print(f"[reproduce] training {name} ({spec['model']}, {mode})", flush=True)
        calibrate = widths if has_batchnorm(spec["model"], options) else None
        train_run(run_dir, spec["model"], data, config, options, progress=progress,
                  profile_ranges=ranges, calibrate=calibrate)
        _mark(run_dir, record)
    summary, sections = {}, [f"# {paper} reproduction ({mode})\n"]
    for key, exp in experiments.items():
        results = sweep_runs([str(out / "runs" / r) for r in exp["runs"]], widths, data=data, progress=progress)
        write_json(results, out / f"{key}.json", title=exp["title"], mode=mode)
        plot(results, out / f"{key}.png", title=exp["title"])
        markdown = format_markdown(results)
        atomic_write(out / f"{key}.md", lambda p, m=markdown: p.write_text(m + "\n"))
        print(f"\n{exp['title']}\n{format_table(results)}", flush=True)
        sections.append(f"## {exp['title']}\n\n{markdown}\n\n![{key}]({key}.png)\n")
        summary[key] = {"title": exp["title"], "runs": exp["runs"], "json": f"{key}.json",
                        "png": f"{key}.png", "markdown": f"{key}.md"}
    atomic_write(out / "summary.md", lambda p: p.write_text("\n".join(sections)))
    atomic_write(out / "summary.json", lambda p: p.write_text(json.dumps(summary, indent=2) + "\n"))
    return summary


def _mark(run_dir: Path, record: dict) -> None:
    path = run_dir / "config.json"
    config = json.loads(path.read_text())
    config["reproduce"] = record
    atomic_write(path, lambda p: p.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n"))
