"""Where the time of an effort network goes, with the shared profiler
(:func:`dynscale.eval.profiling.profile_point`): at batch 1 and 64, one thread, on test
inputs, the knobs tuned for one loss bound (those tuned for that batch size) beside the knobs
off — the time in decisions, gathers, kernels and scatters (the knobs' spans), the operators
outside them, and Python between operators. Prints Markdown (benchmarks/effort_fashion.sh
writes it to docs/effort/profile.md).

Usage: python benchmarks/effort_profile.py EFFORT_RUN BOUND
"""

import sys

import torch

from dynscale.data import load_dataset
from dynscale.effort import EffortSettings, load_effort, measure
from dynscale.eval.profiling import profile_point, profiles_markdown

BATCHES = (1, 64)
EXAMPLES = 256  # test examples profiled per batch size


def main(run: str, bound: float) -> None:
    torch.set_num_threads(1)
    net, config = load_effort(run)
    data = load_dataset(config.data)
    measure(net.layers, config.section["knobs"], BATCHES, 1, progress=False)  # each layer's fastest dense kernel
    print(f"# Where the time goes: `{run}`, bound {bound:g} points, one thread\n")
    print(f"Command: `python benchmarks/effort_profile.py {run} {bound:g}`\n")
    profiles = []
    for batch in BATCHES:
        at_bound = [t for t in config.section["tuned"] if t["max_loss"] == bound]
        if not at_bound:
            sys.exit(f"{run} has no settings tuned for bound {bound:g}")
        # The settings tuned for this batch size, else (a run tuned for the MACs, which do not
        # depend on it) those of the first batch size tuned.
        tuned = [t for t in at_bound if t.get("batch", 1) == batch] or at_bound
        x = data.test_x[:EXAMPLES]
        batches = [x[i:i + batch] for i in range(0, len(x), batch)]
        chosen = (f"loss≤{bound:g} @b{tuned[0].get('batch', 1)}", EffortSettings.from_json(tuned[0]["settings"]))
        for label, settings in (("knobs off", EffortSettings()), chosen):
            net.set_settings(settings)
            profiles.append(profile_point(net, batches, label))
    print(profiles_markdown(profiles))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
