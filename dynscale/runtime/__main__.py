"""``python -m dynscale.runtime DIR --input FILE.npy [--latency-ms MS | --macs-ratio R | --accuracy A]``:
predictions of a deploy bundle, and the operating point it chose (needs onnxruntime and numpy only)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .bundle import Bundle
from .manifest import BundleError


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    """The runtime command's options."""
    p = argparse.ArgumentParser(prog="python -m dynscale.runtime",
                                description="Run a dynscale deploy bundle with ONNX Runtime (no PyTorch).")
    p.add_argument("bundle", type=Path, help="the bundle's directory (from `dynscale deploy`)")
    p.add_argument("--input", type=Path, required=True,
                   help="a .npy file of inputs (N, C, H, W) or one (C, H, W), prepared as the manifest says")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--latency-ms", type=_positive, help="the most accurate point within this latency at --batch")
    budget.add_argument("--macs-ratio", type=_positive, help="the most accurate point within this share of the MACs")
    budget.add_argument("--accuracy", type=_positive, help="the fastest point reaching this accuracy (a fraction)")
    budget.add_argument("--point", help="an operating point by name")
    p.add_argument("--batch", type=_count, default=1, help="the batch size a latency budget is for (default 1)")
    p.add_argument("--threads", type=_count, default=1, help="ONNX Runtime's intra-op threads")
    p.add_argument("--calibrate", action="store_true",
                   help="re-measure every point's latency on this machine before picking")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    return p


def main(argv: list[str] | None = None) -> int:
    """Runs the command; returns the exit status (2 with one line for bad input or a bad bundle)."""
    args = build_parser().parse_args(argv)
    try:
        if not args.input.is_file():
            raise BundleError(f"--input {args.input} does not exist; give a .npy file of inputs")
        try:
            x = np.load(args.input, allow_pickle=False)
        except ValueError as e:
            raise BundleError(f"--input {args.input} is not a plain .npy array ({e}); save it with "
                              "numpy.save") from None
        bundle = Bundle.load(args.bundle, threads=args.threads)
        if args.calibrate:
            bundle.calibrate_latency(batches=sorted({1, args.batch}))
        if args.point is not None:
            point = bundle.point_named(args.point)
        elif args.latency_ms or args.macs_ratio or args.accuracy:
            point = bundle.pick(latency_ms=args.latency_ms, macs_ratio=args.macs_ratio, accuracy=args.accuracy,
                                batch=args.batch)
        else:
            point = bundle.point
        result = bundle.run(x, point)
    except (BundleError, OSError, ValueError) as e:
        print(f"dynscale.runtime: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    classes = bundle.classes
    names = [classes[i] if i < len(classes) else str(i) for i in result.predictions.tolist()]
    latency = ", ".join(f"{ms:.3g} ms at batch {b}" for b, ms in sorted(point.latency_ms.items()))
    if args.json:
        print(json.dumps({"point": point.name, "accuracy": point.accuracy, "macs_ratio": point.macs_ratio,
                          "latency_ms": {str(b): ms for b, ms in point.latency_ms.items()},
                          "predictions": result.predictions.tolist(), "classes": names}))
    else:
        print(f"point {point.name}: accuracy {100 * point.accuracy:.2f}%, {point.macs_ratio:.3f} of the MACs, "
              f"{latency}")
        for i, (k, name) in enumerate(zip(result.predictions.tolist(), names, strict=True)):
            print(f"{i}\t{k}\t{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
