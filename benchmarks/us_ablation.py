"""What closes the gap between one universally slimmable network and a family of independently
trained ones: each `us` recipe option alone (and the promising ones together), on Fashion-MNIST
(docs/RESULTS.md, "Closing the gap").

Every contender gets the same training passes: the `us` network runs 4 widths per step for E
epochs (4·E·S forward-backward passes of a batch); the family's 4 networks get E epochs each
(4·E·S together). A `us` variant that changes the widths per step changes its passes, and says
so in the table. Each run is `dynscale train` then `dynscale sweep` at widths 0.25, 0.5, 0.75, 1.

    .venv/bin/python benchmarks/us_ablation.py mlp [--seeds 0] [--only "NAME;..."] > docs/us/ablation-mlp.md
    .venv/bin/python benchmarks/us_ablation.py vgg16 ...
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DYNSCALE = [sys.executable, "-m", "dynscale"]
WIDTHS = [0.25, 0.5, 0.75, 1.0]

MODELS = {  # the networks and budgets of the comparison (benchmarks/us_compare.sh), shortened
    "mlp": ["--model", "mlp", "--profile", "all-one", "--epochs", "10"],
    "vgg16": ["--model", "vgg16", "--width-mult", "0.25", "--profile", "linear", "--epochs", "5",
              "--train-limit", "6000"],
}

US = ["--recipe", "us", "--sampling", "uniform"]  # the variants were run when uniform widths were the default
VARIANTS: dict[str, list[str]] = {  # name -> options on top of the model's
    "independent": ["--recipe", "independent", "--family-widths", "0.25,0.5,0.75,1"],
    "us": US,
    "us no distillation": [*US, "--no-distill"],
    "us distill weight 0.5": [*US, "--distill-weight", "0.5"],
    "us temperature 2": [*US, "--temperature", "2"],
    "us 3 widths/step": [*US, "--sandwich", "3"],
    "us 6 widths/step": [*US, "--sandwich", "6"],
    "us widths drawn by MACs": [*US, "--sampling", "macs"],  # the default since (the last --sampling counts)
    "us lr 0.1": [*US, "--lr", "0.1"],
    "us lr 0.2": [*US, "--lr", "0.2"],
    "us step schedule": [*US, "--schedule", "step"],
    "us label smoothing 0.1 (largest)": [*US, "--label-smoothing", "0.1"],
    "us wd 5e-4": [*US, "--weight-decay", "5e-4"],
    "us wd 5e-4, none on BN/bias": [*US, "--weight-decay", "5e-4", "--no-decay-bn-bias"],
    "us 2× epochs": [*US, "EPOCHS×2"],
    "us resolutions 20,24,28": [*US, "--resolutions", "20,24,28"],
}
PASSES = {"us 3 widths/step": 3 / 4, "us 6 widths/step": 6 / 4, "us 2× epochs": 2.0}


def options(model: str, variant: str) -> list[str]:
    base = list(MODELS[model])
    extra = list(VARIANTS[variant])
    if "EPOCHS×2" in extra:
        extra.remove("EPOCHS×2")
        i = base.index("--epochs")
        base[i + 1] = str(2 * int(base[i + 1]))
    return base + extra


def accuracies(model: str, variant: str, seed: int, root: Path) -> list[float] | None:
    """Trains (or reuses) one run and sweeps it; None where the variant does not apply."""
    name = f"{model}-{variant.replace(' ', '_').replace('/', '-').replace(',', '_')}-s{seed}"
    run, report = root / name, root / f"{name}.json"
    if not report.exists():
        train = subprocess.run([*DYNSCALE, "train", *options(model, variant), "--data", "fashion-mnist", "--seed",
                                str(seed), "--threads", "1", "--quiet", "--force", "--out", str(run)],
                               capture_output=True, text=True)
        if train.returncode == 2 and "global pooling" in train.stderr:
            return None  # input-resolution mixing on the MLP: refused, as it should be
        if train.returncode != 0:
            sys.exit(f"{name}: {train.stderr.strip()}")
        sweep = subprocess.run([*DYNSCALE, "sweep", str(run), "--widths", ",".join(map(str, WIDTHS)), "--quiet",
                                "--json", str(report)], capture_output=True, text=True)
        if sweep.returncode != 0:
            sys.exit(f"{name} sweep: {sweep.stderr.strip()}")
    curve = json.loads(report.read_text())["curves"][0]
    by_width = {round(p["knobs"]["width"], 4): p["accuracy"] for p in curve["points"]}
    return [100 * by_width[w] for w in WIDTHS]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", choices=sorted(MODELS))
    p.add_argument("--seeds", default="0", help="comma-separated seeds (mean ± sd over them)")
    p.add_argument("--only", default=None, help="semicolon-separated variants (default: all)")
    p.add_argument("--root", type=Path, default=ROOT / "runs" / "us-ablation")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    names = ["independent", *[v for v in (args.only.split(";") if args.only else VARIANTS) if v != "independent"]]
    args.root.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[list[float]]] = {}
    for seed in seeds:  # every variant at a seed before the next seed: partial results stay comparable
        for name in names:
            got = accuracies(args.model, name, seed, args.root)
            if got is not None:
                results.setdefault(name, []).append(got)
            print(f"{name} seed {seed}: {got}", file=sys.stderr, flush=True)
    reference = [statistics.mean(a[i] for a in results["independent"]) for i in range(len(WIDTHS))]
    print(f"`{' '.join(MODELS[args.model])} --data fashion-mnist`, seeds {args.seeds}; accuracy % at each width "
          "(mean ± sd over seeds where several), and in brackets minus the independent networks'.\n")
    columns = " | ".join(f"width {w:g}" for w in WIDTHS)
    print(f"| variant | passes vs family | {columns} | worst gap | widths above |")
    print("|---|---:|" + "---:|" * len(WIDTHS) + "---:|---:|")
    for name, runs in results.items():
        means = [statistics.mean(r[i] for r in runs) for i in range(len(WIDTHS))]
        sds = [statistics.stdev(r[i] for r in runs) if len(runs) > 1 else None for i in range(len(WIDTHS))]
        gaps = [m - ref for m, ref in zip(means, reference, strict=True)]
        cells = [f"{m:.2f}" + (f" ± {sd:.2f}" if sd is not None else "") + (f" ({g:+.2f})" if name != "independent"
                                                                            else "")
                 for m, sd, g in zip(means, sds, gaps, strict=True)]
        worst = "" if name == "independent" else f"{min(gaps):+.2f}"
        above = "" if name == "independent" else str(sum(g > 0 for g in gaps))
        print(f"| {name} | {PASSES.get(name, 1.0):.2f}× | " + " | ".join(cells) + f" | {worst} | {above} |")


if __name__ == "__main__":
    main()
