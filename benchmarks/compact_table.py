"""A sweep's JSON report as a compact Markdown table for docs/RESULTS.md: per point its saving
(measured or counted), accuracy, MAC (and BitOps) ratio, and per runtime and batch size the ms
per batch, the ratio to the reference on the same runtime and, where measured, the ratio to the
reference on the other runtime ("vs").

    python benchmarks/compact_table.py docs/effort/vgg16-w0.5.json [--curves TEXT,...]
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report")
    parser.add_argument("--curves", default=None, help="only curves whose label contains one of these")
    args = parser.parse_args()
    doc = json.loads(open(args.report).read())
    wanted = args.curves.split(",") if args.curves else None
    timings = sorted({(lat["runtime"], lat["batch"]) for c in doc["curves"] for p in c["points"]
                      for lat in p["latency"]}, key=lambda t: (t[1], t[0] != "torch"))
    head = ["curve", "setting", "saving", "acc %", "MAC ratio", "BitOps ratio"]
    for runtime, batch in timings:
        head += [f"ms {runtime}@{batch}", f"ratio {runtime}@{batch}", f"vs other@{batch}"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for curve in doc["curves"]:
        if wanted and not any(w in curve["label"] for w in wanted):
            continue
        for p in curve["points"]:
            bitops = p.get("bitops_ratio")
            row = [curve["label"], p["label"], p.get("saving", "–"), f"{100 * p['accuracy']:.2f}",
                   f"{p['macs_ratio']:.3f}", "–" if bitops is None else f"{bitops:.3f}"]
            for runtime, batch in timings:
                lat = next((x for x in p["latency"] if (x["runtime"], x["batch"]) == (runtime, batch)), None)
                if lat is None:
                    row += ["–", "–", "–"]
                    continue
                versus = ", ".join(f"{v:.3f} ({k})" for k, v in (lat.get("versus") or {}).items()) or "–"
                row += [f"{lat['ms']:.3f}", f"{lat['ratio']:.3f}", versus]
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
