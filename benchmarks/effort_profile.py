"""Where the time of an effort network goes: torch.profiler over the test inputs at batch 1 and
64, one thread, with the knobs tuned for one loss bound and with no knobs (the dense network).
Prints Markdown (benchmarks/effort_fashion.sh writes it to docs/effort/profile.md).

Usage: python benchmarks/effort_profile.py EFFORT_RUN BOUND
"""

import functools
import sys

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from dynscale.data import load_dataset
from dynscale.effort import EffortSettings, layers, load_effort


def _label(owner, name: str, label: str) -> None:
    """Wraps ``owner.name`` in a profiler range: the numba kernel's time is invisible to
    torch.profiler otherwise (it would show up as nobody's)."""
    inner = getattr(owner, name)

    @functools.wraps(inner)
    def wrapped(*args, **kwargs):
        with record_function(label):
            return inner(*args, **kwargs)

    setattr(owner, name, wrapped)


_label(layers, "conv_at_positions", "effort: conv_at_positions (numba kernel)")
_label(layers.EffortConv2d, "_sample", "effort: SDSS grid and interpolation")
_label(layers.EffortConv2d, "_uniform_windows", "effort: SFMA window statistics")


def main(run: str, bound: float) -> None:
    torch.set_num_threads(1)
    net, config = load_effort(run)
    tuned = next(t for t in config.section["tuned"] if t["max_loss"] == bound)
    data = load_dataset(config.data)
    print(f"# Where the time goes: `{run}`, bound {bound:g} points, one thread\n")
    print(f"Command: `python benchmarks/effort_profile.py {run} {bound:g}`\n")
    for batch in (1, 64):
        x = data.test_x[:batch * (64 if batch == 1 else 4)]
        for label, settings in (("dense", EffortSettings()), ("effort", EffortSettings.from_json(tuned["settings"]))):
            net.set_settings(settings)
            with torch.no_grad():
                for start in range(0, len(x), batch):  # warm-up
                    net(x[start:start + batch])
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    for start in range(0, len(x), batch):
                        net(x[start:start + batch])
            events = prof.key_averages()
            total = sum(e.self_cpu_time_total for e in events)
            # A labelled range's self time is what ran inside it outside any torch operator.
            print(f"## Batch {batch}, {label}: {total / 1e3 / (len(x) // batch):.3f} ms per batch\n")
            print("| operation | calls per batch | self CPU % |\n|---|---|---|")
            for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:10]:
                print(f"| `{e.key}` | {e.count / (len(x) // batch):.1f} | {100 * e.self_cpu_time_total / total:.1f} |")
            print()


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
