"""Latency per width, for the dynamic model and for its dense export, as ratios to full width."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from torch import nn
from tqdm.auto import tqdm

from .checkpoint import atomic_write, load_run
from .cost import count_macs, measure_latency
from .export import dense, example_input
from .layers import check_width, width


@dataclass
class BenchPoint:
    """Median latency at one width and batch size, for the dynamic and the dense model."""

    width: float
    batch: int
    macs_ratio: float  # the ideal latency ratio
    latency_ms: float
    latency_ratio: float
    dense_latency_ms: float
    dense_latency_ratio: float


def bench_model(model: nn.Module, widths: list[float], batch_sizes: list[int], threads: int = 1,
                rounds: int = 5, min_run_time: float = 0.2, progress: bool | None = None) -> list[BenchPoint]:
    """Times the model at each width, interleaving widths over ``rounds`` to spread machine noise
    evenly, and reports the median over rounds.

    Args:
        model: a model with incomplete layers and a config giving its input shape.
        widths: widths to time; 1.0 is added as the reference if missing.
        batch_sizes: batch sizes to time.
        threads: intra-op threads.
        rounds: interleaved repetitions per width.
        min_run_time: seconds of ``blocked_autorange`` per measurement.
        progress: show a progress bar; None shows it only on a terminal.

    Returns:
        One point per (batch size, width).
    """
    widths = sorted({check_width(w) for w in widths} | {1.0}, reverse=True)
    example = example_input(model)
    shape = tuple(example.shape[1:])
    variants = {}
    for w in widths:
        with width(model, w):
            variants[w] = (count_macs(model, example), dense(model, w))
    full_macs = variants[1.0][0]
    points = []
    total = len(batch_sizes) * rounds * len(widths)
    bar = tqdm(total=total, desc="bench", disable=None if progress is None else not progress)
    for batch in batch_sizes:
        times: dict[float, list[float]] = {w: [] for w in widths}
        dense_times: dict[float, list[float]] = {w: [] for w in widths}
        for _ in range(rounds):
            for w in widths:
                with width(model, w):
                    times[w].append(measure_latency(model, shape, batch, threads, min_run_time))
                dense_times[w].append(measure_latency(variants[w][1], shape, batch, threads, min_run_time))
                bar.update()
        ref, dense_ref = statistics.median(times[1.0]), statistics.median(dense_times[1.0])
        for w in widths:
            ms, dense_ms = statistics.median(times[w]), statistics.median(dense_times[w])
            points.append(BenchPoint(w, batch, variants[w][0] / full_macs, round(ms, 5), ms / ref,
                                     round(dense_ms, 5), dense_ms / dense_ref))
    bar.close()
    return points


def format_bench(points: list[BenchPoint]) -> str:
    """A table: per batch size and width, latency, its ratio to full width, and the ideal ratio."""
    header = (f"{'batch':>5} {'width':>6} {'ideal':>7} {'ms':>9} {'ratio':>7} {'ratio/ideal':>11}"
              f" {'dense ms':>9} {'dense ratio':>11}")
    lines = [header, "-" * len(header)]
    for p in points:
        lines.append(f"{p.batch:>5} {p.width:>6.3g} {p.macs_ratio:>7.3f} {p.latency_ms:>9.4f} "
                     f"{p.latency_ratio:>7.3f} {p.latency_ratio / p.macs_ratio:>11.2f} "
                     f"{p.dense_latency_ms:>9.4f} {p.dense_latency_ratio:>11.3f}")
    return "\n".join(lines)


def bench_run(run_dir: str, widths: list[float], batch_sizes: list[int], threads: int = 1,
              rounds: int = 5, json_path: str | Path | None = None,
              progress: bool | None = None) -> list[BenchPoint]:
    """Loads a run, benchmarks it, and optionally writes JSON."""
    import torch

    run = load_run(run_dir)
    torch.manual_seed(0)
    points = bench_model(run.model, widths, batch_sizes, threads, rounds, progress=progress)
    if json_path:
        doc = {"run": str(run_dir), "model": run.model_name, "model_config": run.config["model"]["config"],
               "threads": threads, "rounds": rounds, "torch": torch.__version__,
               "points": [asdict(p) for p in points]}
        atomic_write(Path(json_path), lambda p: p.write_text(json.dumps(doc, indent=2) + "\n"))
    return points
