"""What each effort knob costs against its layer's fastest dense kernel, per layer of a network,
from the measured cost table the tuner uses (``$DYNSCALE_CACHE/effort-costs.json``; what is
missing is measured first): the physical limit of the knobs on this machine, whatever the
accuracy bound. Prints Markdown (benchmarks/effort_fashion.sh writes it to docs/effort/).

For each layer and batch size: the fastest dense kernel and its time, then each knob's time
relative to it (below 1: the knob is faster) when it keeps all, half, a quarter, an eighth or
none of its units of work (SDSS: the positions off its grid computed exactly; SFMA: the tiles
computed exactly; SPET: the filters finished).

Usage: python benchmarks/effort_costs.py EFFORT_RUN [BATCH ...]
"""

import sys

import torch

from dynscale.data import load_dataset
from dynscale.effort import load_effort
from dynscale.effort.costs import dense_variants, knob_variant, measure, placeholder, signature, variants

FRACTIONS = (1.0, 0.5, 0.25, 0.125, 0.0)


def main(run: str, batches: list[int]) -> None:
    torch.set_num_threads(1)
    net, config = load_effort(run)
    data = load_dataset(config.data)
    with torch.no_grad():
        net(data.test_x[:2])  # every layer's input size
    knobs = config.section["knobs"]
    table = measure(net.layers, knobs, batches, 1, progress=False)
    print(f"Command: `python benchmarks/effort_costs.py {run} {' '.join(map(str, batches))}` "
          f"(one thread; {table.machine})\n")
    header = "| layer | batch | fastest dense kernel | ms |"
    columns = [(knob, value) for knob in knobs for value in sorted({v for layer in net.layers.values()
                                                                     for v in variants(layer, knob)})]
    header += "".join(f" {knob} {value:g}: kept {', '.join(f'{f:g}' for f in FRACTIONS)} |" for knob, value in columns)
    print(header)
    print("|" + "---|" * (4 + len(columns)))
    for name, layer in net.layers.items():
        sig = signature(layer)
        for batch in batches:
            times = {v: table.seconds(sig, v, batch, 1) for v in dense_variants(layer)}
            best = min(times, key=times.get)
            row = f"| `{name}` | {batch} | {best[6:]} | {1e3 * times[best]:.3f} |"
            for knob, value in columns:
                if value not in variants(layer, knob):
                    row += " – |"
                    continue
                variant = knob_variant(knob, placeholder(knob, value))
                ratios = [table.seconds(sig, variant, batch, 1, f) / times[best] for f in FRACTIONS]
                row += " " + " / ".join(f"{r:.2f}" for r in ratios) + " |"
            print(row)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python benchmarks/effort_costs.py EFFORT_RUN [BATCH ...]")
    main(sys.argv[1], [int(b) for b in sys.argv[2:]] or [1, 64])
