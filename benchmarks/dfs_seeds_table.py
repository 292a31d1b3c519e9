"""The executed DFS sweep's runs over seeds (docs/RESULTS.md): for each curve and run family
(the run's name without its ``-sN`` seed), the mean ± sd over seeds of accuracy, counted BitOps
and MAC ratios, skipped share, and each measured time (ms and its ratio to the dense network on
the same runtime), beside the baselines' rows as measured in the same sweep.

    python benchmarks/dfs_seeds_table.py docs/dfs/execute-w1.json > docs/dfs/execute-w1-seeds.md
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from collections import defaultdict


def spread(values: list[float], digits: int, scale: float = 1.0) -> str:
    values = [v * scale for v in values]
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main(path: str) -> None:
    doc = json.loads(open(path).read())
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    timings: set[tuple[str, int]] = set()
    for curve in doc["curves"]:
        for point in curve["points"]:
            name = re.sub(r"-s(\d+) \(target", " (target", point["label"])
            groups[(curve["label"], name)].append(point)
            timings.update((lat["runtime"], lat["batch"]) for lat in point["latency"])
    timings = sorted(timings, key=lambda t: (t[1], t[0]))
    head = ["curve", "run", "seeds", "saving", "acc %", "BitOps ratio", "MAC ratio", "skipped"]
    head += [f"ms {r}@{b}" for r, b in timings] + [f"ratio {r}@{b}" for r, b in timings]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for (curve, name), points in groups.items():
        row = [curve, name, str(len(points)), points[0].get("saving", "measured"),
               spread([p["accuracy"] for p in points], 2, 100),
               spread([p["bitops_ratio"] for p in points], 3) if points[0].get("bitops_ratio") is not None else "–",
               spread([p["macs_ratio"] for p in points], 3),
               spread([p["extra"]["skipped"] for p in points], 3) if "skipped" in points[0].get("extra", {}) else "–"]
        cells = {"ms": [], "ratio": []}
        for runtime, batch in timings:
            found = [lat for p in points for lat in p["latency"] if (lat["runtime"], lat["batch"]) == (runtime, batch)]
            cells["ms"].append(spread([lat["ms"] for lat in found], 3) if found else "–")
            cells["ratio"].append(spread([lat["ratio"] for lat in found], 3) if found else "–")
        print("| " + " | ".join(row + cells["ms"] + cells["ratio"]) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
