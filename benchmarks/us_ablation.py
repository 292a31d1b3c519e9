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

# The variants were run when uniform widths and full distillation were the defaults: pinned, so
# that they reproduce whatever the defaults (the last of a repeated option counts).
US = ["--recipe", "us", "--sampling", "uniform", "--distill-weight", "1"]
MACS = ["--recipe", "us", "--sampling", "macs", "--distill-weight", "1"]
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
    # Switchable BN trains the fixed widths 0.25, 0.5, 0.75, 1 only: how random widths would be
    # drawn does not matter.
    "us switchable BN": [*US, "--batchnorm", "switchable"],
    # Evaluation only: the `us` run with the one set of running statistics training left, no
    # per-width recalibration.
    "us BN not recalibrated": [*US, "NO-RECALIBRATION"],
    # Combinations, on the default (widths drawn by MACs).
    "us MACs, no distillation": [*MACS, "--no-distill"],
    "us MACs, distill weight 0.5": [*MACS, "--distill-weight", "0.5"],
    "us MACs, BigNAS (wd 5e-4 none on BN/bias, smoothing 0.1)": [*MACS, "--weight-decay", "5e-4",
                                                                 "--no-decay-bn-bias", "--label-smoothing", "0.1"],
    # Longer training at equal passes: both sides get twice the epochs.
    "independent 2× epochs": ["--recipe", "independent", "--family-widths", "0.25,0.5,0.75,1", "EPOCHS×2"],
    "us MACs 2× epochs": [*MACS, "EPOCHS×2"],
    "us MACs, no distillation 2× epochs": [*MACS, "--no-distill", "EPOCHS×2"],
}
PASSES = {"us 3 widths/step": 3 / 4, "us 6 widths/step": 6 / 4, "us 2× epochs": 2.0, "independent 2× epochs": 2.0}
# The family a variant is measured against: the one with the same passes.
REFERENCE = {name: "independent 2× epochs" for name in VARIANTS if "2× epochs" in name and name != "us 2× epochs"}
REFERENCES = ("independent", "independent 2× epochs")


def options(model: str, variant: str) -> list[str]:
    base = list(MODELS[model])
    extra = list(VARIANTS[variant])
    if "EPOCHS×2" in extra:
        extra.remove("EPOCHS×2")
        i = base.index("--epochs")
        base[i + 1] = str(2 * int(base[i + 1]))
    return base + extra


def run_name(model: str, variant: str, seed: int) -> str:
    return f"{model}-{variant.replace(' ', '_').replace('/', '-').replace(',', '_')}-s{seed}"


def unrecalibrated(model: str, seed: int, root: Path) -> list[float] | None:
    """The `us` run's accuracy at each width on the running statistics training left."""
    import torch

    from dynscale.data import load_dataset
    from dynscale.layers import incomplete_batchnorms, width
    from dynscale.runs import load_run

    accuracies(model, "us", seed, root)  # trains it if needed
    net = load_run(root / run_name(model, "us", seed)).model.eval()
    norms = incomplete_batchnorms(net)
    if not norms:
        return None  # nothing to recalibrate: the same as `us`
    for bn in norms:
        bn.clear_statistics()
    data = load_dataset("fashion-mnist")
    got = []
    with torch.no_grad():
        for w in WIDTHS:
            with width(net, w):
                hits = sum((net(x).argmax(1) == y).sum().item() for x, y in
                           zip(data.test_x.split(1000), data.test_y.split(1000), strict=True))
            got.append(100 * hits / len(data.test_y))
    return got


def accuracies(model: str, variant: str, seed: int, root: Path) -> list[float] | None:
    """Trains (or reuses) one run and sweeps it; None where the variant does not apply."""
    if "NO-RECALIBRATION" in VARIANTS[variant]:
        return unrecalibrated(model, seed, root)
    name = run_name(model, variant, seed)
    run, report = root / name, root / f"{name}.json"
    if not report.exists():
        train = subprocess.run([*DYNSCALE, "train", *options(model, variant), "--data", "fashion-mnist", "--seed",
                                str(seed), "--threads", "1", "--quiet", "--force", "--out", str(run)],
                               capture_output=True, text=True)
        if train.returncode == 2 and ("global pooling" in train.stderr or "with batch-norm" in train.stderr):
            return None  # input-resolution mixing or switchable BN on the MLP: refused, as it should be
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
    chosen = args.only.split(";") if args.only else list(VARIANTS)
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        sys.exit(f"unknown variant(s) {unknown}; choose among {list(VARIANTS)}")
    needed = {"independent", *(REFERENCE.get(v, "independent") for v in chosen)}
    names = [r for r in REFERENCES if r in needed] + [v for v in chosen if v not in REFERENCES]
    args.root.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[list[float]]] = {}
    for seed in seeds:  # every variant at a seed before the next seed: partial results stay comparable
        for name in names:
            got = accuracies(args.model, name, seed, args.root)
            if got is not None:
                results.setdefault(name, []).append(got)
            print(f"{name} seed {seed}: {got}", file=sys.stderr, flush=True)
    references = {r: [statistics.mean(a[i] for a in results[r]) for i in range(len(WIDTHS))]
                  for r in REFERENCES if r in results}
    print(f"`{' '.join(MODELS[args.model])} --data fashion-mnist`, seeds {args.seeds}; accuracy % at each width "
          "(mean ± sd over seeds where several), and in brackets minus the independent networks' trained as long "
          "(the 2× epochs rows against `independent 2× epochs`).\n")
    columns = " | ".join(f"width {w:g}" for w in WIDTHS)
    print(f"| variant | passes vs family | {columns} | worst gap | widths above |")
    print("|---|---:|" + "---:|" * len(WIDTHS) + "---:|---:|")
    for name, runs in results.items():
        means = [statistics.mean(r[i] for r in runs) for i in range(len(WIDTHS))]
        sds = [statistics.stdev(r[i] for r in runs) if len(runs) > 1 else None for i in range(len(WIDTHS))]
        family = name in REFERENCES
        gaps = [m - ref for m, ref in zip(means, references[REFERENCE.get(name, "independent")], strict=True)]
        cells = [f"{m:.2f}" + (f" ± {sd:.2f}" if sd is not None else "") + ("" if family else f" ({g:+.2f})")
                 for m, sd, g in zip(means, sds, gaps, strict=True)]
        worst = "" if family else f"{min(gaps):+.2f}"
        above = "" if family else str(sum(g > 0 for g in gaps))
        print(f"| {name} | {PASSES.get(name, 1.0):.2f}× | " + " | ".join(cells) + f" | {worst} | {above} |")


if __name__ == "__main__":
    main()
