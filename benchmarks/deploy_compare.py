"""Each operating point of a deploy bundle in ONNX Runtime beside the same point in eager
PyTorch, interleaved in one run (median of rounds), at batch 1 and 64, one thread:

    python benchmarks/deploy_compare.py RUN BUNDLE [--rounds 5] > docs/deploy/NAME.md

Eager PyTorch runs each point as dynscale does without a bundle: the dense width, the early-exit
graph with real exits, the DFS executor on PyTorch's int8 kernels; an int8 point of the bundle
is set beside the same point's eager float32 (what eager PyTorch runs). The wall-clock saving
of a point is 1 - its time over the full network's time in the same runtime; the counted one
is 1 - its MAC ratio."""

from __future__ import annotations

import argparse
import sys

import torch

from dynscale.deploy import calibration_batches
from dynscale.deployable import INT8_SUFFIX
from dynscale.methods import method_of_kind
from dynscale.runs import open_run
from dynscale.runtime import Bundle, machine, measure_latency, sample_batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("bundle")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=0.3)
    parser.add_argument("--full", default=None, help="the point that is the full network (default: the costliest)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    bundle = Bundle.load(args.bundle, threads=1)
    run = open_run(args.run, with_data=True, what="deploy_compare")
    # The method's points again, with the bundle's own knob values (its PyTorch side, to time eagerly).
    options = {}
    for setting, option in (("width", "widths"), ("lambda", "lambdas")):
        values = [p.settings[setting] for p in bundle.points if setting in p.settings and not p.settings.get("int8")]
        if values and run.kind != "dense":
            options[option] = values
    deployed = method_of_kind(run.kind).deploy(run, calibration=calibration_batches(run.dataset.train_x, 8), **options)
    eager = {p.name: (p.eager or p.reference) for p in deployed.points}
    sample = bundle.sample()
    inputs = sample_batches(sample, (1, 64))
    calls = {}
    for p in bundle.points:
        calls[f"ort:{p.name}"] = lambda x, p=p: bundle.run(x, p)
    for name, forward in eager.items():
        def call(x, forward=forward):
            with torch.no_grad():
                return forward(torch.from_numpy(x))
        calls[f"eager:{name}"] = call
    times = measure_latency(calls, inputs, args.rounds, args.min_time)
    full = args.full or ("full" if any(p.name == "full" for p in bundle.points) else
                         max(bundle.points, key=lambda p: (p.macs_ratio, p.precision == "float32")).name)
    print(f"Bundle `{args.bundle}` from `{args.run}`; machine: {machine()['cpu']}, 1 thread, "
          f"{args.rounds} interleaved rounds (median), inputs: the bundle's real test sample.\n")
    print("| point | precision | acc % | MAC ratio | eager ms@1 | ORT ms@1 | ORT/eager @1 | eager ms@64 | ORT ms@64 | "
          "ORT/eager @64 | ORT time ratio @1 | ORT time ratio @64 | saving kept @1 | saving kept @64 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for p in bundle.points:
        base = p.name[:-len(INT8_SUFFIX)] if p.name.endswith(INT8_SUFFIX) and p.name not in eager else p.name
        row = [p.name, p.precision, f"{100 * p.accuracy:.2f}", f"{p.macs_ratio:.3f}"]
        ratios, kept = [], []
        for b in (1, 64):
            e, o = times[f"eager:{base}"][b], times[f"ort:{p.name}"][b]
            row += [f"{e:.3f}", f"{o:.3f}", f"{o / e:.3f}"]
            reference = f"{full}{INT8_SUFFIX}" if p.precision == "int8" and f"ort:{full}{INT8_SUFFIX}" in times \
                else full  # an int8 point against the full network in int8
            ratio = o / times[f"ort:{reference}"][b]
            ratios.append(f"{ratio:.3f}")
            counted = 1 - p.macs_ratio
            kept.append(f"{(1 - ratio) / counted:.2f}" if counted > 0.02 else "–")
        print("| " + " | ".join(row + ratios + kept) + " |")
    print(f"\n(eager ms of an int8 point: the same point's eager float32. Time ratios are against `{full}` in ONNX "
          f"Runtime, an int8 point's against `{full}{INT8_SUFFIX}` where there is one; \"saving kept\" is the measured "
          "wall-clock saving over the counted MAC saving.)")


if __name__ == "__main__":
    sys.exit(main())
