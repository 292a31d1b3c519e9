"""Coverage of ``dynscale.convert`` over torchvision's classification models.

Every model of ``torchvision.models.list_models(module=torchvision.models)`` with at most 150M
parameters is built with random weights and converted on the smallest input it accepts (tried
upward from 32 pixels). Each is tabled as *exact* (converted; ``convert``'s self-check against
the masked original passed at widths 0.25-1.0, and the full-width outputs equal the original's
on another input), *refused* (with the reason), or *wrong* (a model was returned whose outputs
differ: this must never happen). For exact models: the fraction of layer MACs in layers a width
cuts, and the MACs at width 0.5 relative to 1.0.

Run: ``PYTHONPATH=. OMP_NUM_THREADS=1 nice python benchmarks/convert_coverage.py`` (about an
hour on one thread); it writes ``docs/convert/coverage.json`` after every model (a rerun skips
the models already there; ``--fresh`` starts over) and ``docs/convert/coverage.md`` at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from dynscale import width  # noqa: E402
from dynscale.convert import convert, mac_fraction  # noqa: E402
from dynscale.cost import count_macs  # noqa: E402

from conftest import import_torchvision  # noqa: E402  (the one place that imports torchvision)

MAX_PARAMETERS = 150_000_000
SIZES = (32, 64, 75, 96, 128, 160, 224, 299)  # tried in order; the first that runs is used
OUT = ROOT / "docs" / "convert"


def smallest_input(net: torch.nn.Module) -> int | None:
    with torch.no_grad():
        for s in SIZES:
            try:
                net(torch.randn(1, 3, s, s))
                return s
            except Exception:  # too small for the model: the next size
                continue
    return None


def measure(tv, name: str) -> dict:
    torch.manual_seed(0)
    net = tv.models.get_model(name)
    params = sum(p.numel() for p in net.parameters())
    row = {"model": name, "parameters": params}
    if params > MAX_PARAMETERS:
        return {**row, "status": "skipped", "reason": f"{params / 1e6:.0f}M parameters"}
    net.eval()
    size = smallest_input(net)
    if size is None:
        return {**row, "status": "refused", "reason": f"no input size of {SIZES} runs"}
    row["input"] = size
    x = torch.randn(2, 3, size, size)
    start = time.time()
    try:
        converted = convert(net, example=x).eval()
    except ValueError as e:  # GraphError included: a refusal with its reason
        return {**row, "status": "refused", "reason": " ".join(str(e).split()), "seconds": time.time() - start}
    other = torch.randn(2, 3, size, size)
    with torch.no_grad():
        want, got = net(other), converted(other)
    scale = max(float(want.abs().max()), 1e-6)
    if got.shape != want.shape or float((got - want).abs().max()) > 1e-4 * scale:
        return {**row, "status": "wrong", "reason": "full-width outputs differ", "seconds": time.time() - start}
    full = count_macs(converted, x[:1])
    with width(converted, 0.5):
        half = count_macs(converted, x[:1])
    return {**row, "status": "exact", "scaled_mac_fraction": mac_fraction(converted, x[:1]),
            "macs": full, "macs_at_half": half / full, "seconds": time.time() - start}


def markdown(rows: list[dict]) -> str:
    counted = [r for r in rows if r["status"] != "skipped"]
    count = {s: sum(r["status"] == s for r in counted) for s in ("exact", "refused", "wrong")}
    lines = ["# `dynscale.convert` on torchvision's classification models", "",
             "Command: `PYTHONPATH=. OMP_NUM_THREADS=1 nice python benchmarks/convert_coverage.py` (random "
             "weights, the smallest input each accepts).", "",
             f"**{count['exact']} exact, {count['refused']} refused, {count['wrong']} wrong** of {len(counted)} "
             f"models with at most {MAX_PARAMETERS // 10**6}M parameters "
             f"({len(rows) - len(counted)} larger ones skipped).", "",
             "| model | params (M) | input | status | MACs in cut layers | MACs at width 0.5 | reason |",
             "|---|---:|---:|---|---:|---:|---|"]
    for r in rows:
        frac = f"{r['scaled_mac_fraction']:.0%}" if "scaled_mac_fraction" in r else ""
        half = f"{r['macs_at_half']:.0%}" if "macs_at_half" in r else ""
        lines.append(f"| {r['model']} | {r['parameters'] / 1e6:.1f} | {r.get('input', '')} | {r['status']} | {frac} "
                     f"| {half} | {r.get('reason', '')[:160]} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", action="store_true", help="start over instead of skipping measured models")
    parser.add_argument("--only", nargs="*", help="measure only these models")
    args = parser.parse_args()
    tv = import_torchvision()
    if tv is None:
        sys.exit("torchvision is not installed (a benchmark dependency): pip install torchvision")
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "coverage.json"
    done = {} if args.fresh or not path.exists() else {r["model"]: r for r in json.loads(path.read_text())}
    names = args.only or tv.models.list_models(module=tv.models)
    for name in names:
        if name not in done:
            done[name] = measure(tv, name)
            print(json.dumps(done[name]), flush=True)
            path.write_text(json.dumps([done[n] for n in names if n in done], indent=1) + "\n")
    rows = [done[n] for n in names if n in done]
    (OUT / "coverage.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
