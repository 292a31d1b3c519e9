"""Training throughput of one process vs two (torchrun, gloo on 127.0.0.1) on this machine
(docs/RESULTS.md, "Training in several processes").

Trains the same run in three ways, interleaved over rounds (median of the rounds' examples per
second, and each round's ratio to the one-process run of that round):
  1 process, every core's threads  (what `dynscale train` does by default),
  1 process, 1 thread,
  2 processes (torchrun), 1 thread each.
The recipe is `us` (the sandwich rule: 4 widths per step, so three of every four backward
passes accumulate under no_sync) on VGG-16 (width_mult 0.25), Fashion-MNIST, global batch 64.
Examples per second are the run's own `examples_per_second` (rank 0's optimizer steps alone:
no start-up, evaluation or checkpoint).

    .venv/bin/python benchmarks/ddp_throughput.py [--rounds 3] [--examples 4000] > docs/ddp/throughput.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

TRAIN = ["train", "--model", "vgg16", "--width-mult", "0.25", "--data", "fashion-mnist", "--recipe", "us",
         "--epochs", "1", "--batch-size", "64", "--seed", "0", "--quiet", "--device", "cpu"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(way: str, examples: int, out: Path) -> list[str]:
    command = [*TRAIN, "--train-limit", str(examples), "--out", str(out)]
    if way == "2 processes × 1 thread":
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                f"--master_port={free_port()}", "-m", "dynscale", *command]
    threads = "1" if way == "1 process × 1 thread" else str(os.cpu_count())
    return [sys.executable, "-m", "dynscale", *command, "--threads", threads]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


WAYS = ["1 process × all threads", "1 process × 1 thread", "2 processes × 1 thread"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--examples", type=int, default=4000, help="training examples (one epoch)")
    args = p.parse_args()
    rates: dict[str, list[float]] = {w: [] for w in WAYS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for way in WAYS:
                out = Path(tmp) / f"run-{r}-{WAYS.index(way)}"
                env = {**os.environ, "OMP_NUM_THREADS": "1"} if "1 thread" in way else dict(os.environ)
                done = subprocess.run(launch(way, args.examples, out), capture_output=True, text=True, env=env)
                if done.returncode != 0:
                    sys.exit(f"{way} failed: {done.stderr[-2000:]}")
                config = json.loads((out / "config.json").read_text())
                rates[way].append(config["metrics"]["examples_per_second"])
                print(f"round {r + 1} {way}: {rates[way][-1]:.0f} examples/s", file=sys.stderr, flush=True)
                shutil.rmtree(out)
    base = rates[WAYS[0]]
    print(f"Machine: {cpu_name()}, {os.cpu_count()} cores; "
          f"torch {__import__('torch').__version__}; {args.rounds} interleaved rounds, {args.examples} examples.\n")
    print("| training | examples/s (median) | vs 1 process × all threads (median of rounds) |")
    print("|---|---:|---:|")
    for way in WAYS:
        ratio = statistics.median(a / b for a, b in zip(rates[way], base, strict=True))
        print(f"| {way} | {statistics.median(rates[way]):.0f} | {ratio:.2f}× |")


if __name__ == "__main__":
    main()
