"""The one timing protocol, used by every method and command.

- Inputs are real test examples, never random tensors.
- Every (point, runtime, batch size) is warmed up before the first round.
- Rounds interleave the points; each round times the reference point before and after the
  others, and a point's ratio in that round is its time over the mean of the two, so a shared
  machine's drift falls on both sides.
- Each measurement is ``torch.utils.benchmark.Timer.blocked_autorange``'s median, at an
  explicit thread count (ONNX Runtime sessions get the same count).
- PyTorch runtimes time on the timing's device (``--device``), inputs put there beforehand;
  ONNX Runtime and the other CPU-only kernels time on the CPU. Every measurement records
  its device, and the points of one runtime run on its reference's device.
- Reported per point: the median and interquartile range over rounds of milliseconds per batch
  and of the ratio, and microseconds per example.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.benchmark import Timer

from ..device import clock, resolve_device, to_device
from ..progress import progress_bar
from .points import Latency

# torch: the model as trained (dynamic width, exits) in eager PyTorch; torch-dense: a plain
# network exported from it, in eager PyTorch; onnxruntime: that plain network in ONNX Runtime.
RUNTIMES = ("torch", "torch-dense", "onnxruntime")


def check_runtime(name: str) -> str:
    """Validates a runtime name.

    Raises:
        ValueError: naming the known runtimes.
    """
    if name not in RUNTIMES:
        raise ValueError(f"unknown runtime {name!r}; choose from {', '.join(RUNTIMES)}")
    return name


@dataclass
class TimingConfig:
    """How wall-clock time is measured.

    Attributes:
        batch_sizes: batch sizes timed.
        threads: intra-op threads of PyTorch and ONNX Runtime while timing.
        rounds: interleaved rounds; reported values are medians over them.
        warmup: calls of each point before the first round.
        min_run_time: seconds of ``blocked_autorange`` per measurement.
        examples: test examples per timed call, run in batches (for methods whose cost depends
            on the input, like early exits); None times one batch.
        runtimes: runtimes to time on (``dynscale.eval.runtime.RUNTIMES``).
        channels_last: time convolutional inputs and weights in channels-last memory (on a
            copy of the model; the caller's model is left as it was).
        device: where the PyTorch runtimes time (``cpu``, ``cuda:N``; ``auto`` and ``cuda``
            are resolved here, a GPU PyTorch does not see refused); code that runs on the CPU
            only (ONNX Runtime, int8 kernels) times there whatever this says.
    """

    batch_sizes: list[int] = field(default_factory=lambda: [1, 64])
    threads: int = 1
    rounds: int = 3
    warmup: int = 3
    min_run_time: float = 0.3
    examples: int | None = None
    runtimes: list[str] = field(default_factory=lambda: ["torch"])
    channels_last: bool = False
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.device = str(resolve_device(str(self.device)))  # the report names the real device
        self.batch_sizes = [int(b) for b in self.batch_sizes]
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError(f"batch sizes must be integers >= 1, got {self.batch_sizes}")
        for name, value, low in (("threads", self.threads, 1), ("rounds", self.rounds, 1), ("warmup", self.warmup, 0)):
            if int(value) != value or value < low:
                raise ValueError(f"timing {name} must be an integer >= {low}, got {value}")
        if not (math.isfinite(self.min_run_time) and self.min_run_time > 0):
            raise ValueError(f"the timing's min run time must be a number of seconds > 0, got {self.min_run_time}")
        if self.examples is not None and self.examples < 1:
            raise ValueError(f"timed examples must be at least 1, got {self.examples}")
        if not self.runtimes:
            raise ValueError("give at least one runtime to time on")
        for runtime in self.runtimes:
            check_runtime(runtime)


def require_cpu(timing: TimingConfig | None, why: str) -> None:
    """Refuses a timing on a GPU for points that run on the CPU only (their ratios against a
    reference on a GPU would compare two devices).

    Args:
        timing: the timing settings, if timing.
        why: what runs on the CPU only.

    Raises:
        ValueError: naming the timing's device and why.
    """
    if timing is not None and timing.device != "cpu":
        raise ValueError(f"timing on {timing.device}: {why}; time on the CPU")


@dataclass
class Runner:
    """How one operating point runs a batch on one runtime.

    Attributes:
        run: computes one batch.
        prepare: called before each timed block (e.g. to set the model's width).
        convert: turns a batch into the runtime's input once, outside the timing (a NumPy
            array for ONNX Runtime, channels-last memory…).
        device: where ``run`` computes: batches are put there before ``convert``, and its
            clock waits for that device's queued work (the CPU: ONNX Runtime, int8 kernels).
    """

    run: Callable[[Any], object]
    prepare: Callable[[], None] | None = None
    convert: Callable[[torch.Tensor], Any] | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


def batches_for(x: torch.Tensor, batch: int, examples: int | None) -> list[torch.Tensor]:
    """The batches of one timed call: ``examples`` test examples (or one batch) cut into
    batches of ``batch``; the examples are repeated when there are too few."""
    n = batch if examples is None else examples
    if len(x) < n:
        x = x.repeat(math.ceil(n / len(x)), *[1] * (x.dim() - 1))
    return [x[i:i + batch] for i in range(0, n, batch)]


def median_iqr(values: Sequence[float]) -> tuple[float, float]:
    """The median and interquartile range (0 for fewer than two values)."""
    if len(values) < 2:
        return float(values[0]), 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return statistics.median(values), q3 - q1


def check_devices(runners: Sequence[dict[str, Runner | None]], reference: dict[str, Runner]) -> None:
    """Checks that every point runs on its reference's device on each runtime: a ratio
    compares like with like (a point on the CPU against a reference on a GPU would not).

    Raises:
        ValueError: naming the runtime and the two devices.
    """
    for runtime, ref in reference.items():
        if ref is None:
            continue
        others = {str(r[runtime].device) for r in runners if r.get(runtime) is not None} - {str(ref.device)}
        if others:
            raise ValueError(f"on {runtime} the reference runs on {ref.device} but a point on "
                             f"{', '.join(sorted(others))}; time a runtime's points on one device")


def time_points(runners: Sequence[dict[str, Runner | None]], reference: dict[str, Runner], x: torch.Tensor,
                config: TimingConfig, progress: bool | None = None,
                timer: Callable[[], float] | None = None) -> list[list[Latency]]:
    """Times every point on every runtime and batch size with the protocol above.

    Args:
        runners: per point, a runner for each runtime of ``config.runtimes``; None where the
            point does not run on that runtime (it is not timed there).
        reference: the reference point's runner per runtime (every runtime of ``config``); a
            point whose runner is that same object is the reference itself (ratio 1, its time
            the mean of the brackets).
        x: test inputs ``(N, ...)``.
        config: the timing settings.
        progress: show a progress bar; None shows it only on a terminal.
        timer: the clock (tests pass a simulated one); None: each runner's device's
            (:func:`dynscale.device.clock`, which waits for a GPU's queued work).

    Returns:
        Per point, one :class:`Latency` per (runtime, batch size) it runs on, batch sizes
        outermost. Each one's ``versus`` relates its time to the reference's on every runtime
        at that batch size, round by round.

    Raises:
        ValueError: when the reference has no runner for a runtime of ``config``, or a point
            runs on another device than the reference on the same runtime.
    """
    missing = [runtime for runtime in config.runtimes if reference.get(runtime) is None]
    if missing:
        raise ValueError(f"the reference point does not run on {', '.join(missing)}; it is timed on every runtime")
    check_devices(runners, reference)
    keys = [(runtime, batch) for batch in config.batch_sizes for runtime in config.runtimes]
    converted: dict[tuple, list] = {}

    def chunks(runner: Runner, key: tuple[str, int]) -> list:
        cached = (runner.convert, runner.device, key)
        if cached not in converted:  # moved and converted once, outside the timing
            raw = [to_device(c, runner.device) for c in batches_for(x, key[1], config.examples)]
            converted[cached] = [runner.convert(c) for c in raw] if runner.convert else raw
        return converted[cached]

    def call(runner: Runner, key: tuple[str, int]) -> Callable[[], None]:
        batches = chunks(runner, key)
        if runner.prepare is not None:
            runner.prepare()

        def run_all() -> None:
            for batch in batches:
                runner.run(batch)
        return run_all

    def seconds(runner: Runner, key: tuple[str, int]) -> float:
        # torch.utils.benchmark's Timer synchronises a GPU only with its own default clock; the
        # clock given here replaces it, so ours (dynscale.device.clock) waits for the runner's
        # device itself, and never for a GPU while ONNX Runtime times on the CPU.
        measurement = Timer(stmt="run_all()", globals={"run_all": call(runner, key)}, num_threads=config.threads,
                            timer=timer or clock(runner.device)).blocked_autorange(min_run_time=config.min_run_time)
        return measurement.median

    # Per key, the points timed there: those with a runner of their own on that runtime.
    timed = [[i for i, r in enumerate(runners) if r.get(runtime) is not None and r[runtime] is not reference[runtime]]
             for runtime, _ in keys]
    is_reference = [{runtime for runtime in config.runtimes if r.get(runtime) is reference[runtime]} for r in runners]
    bar = progress_bar(total=sum(config.rounds * (len(t) + 2) for t in timed), progress=progress, desc="timing",
                       unit="timing")
    times: list[dict] = [{key: [] for key in keys} for _ in runners]
    ratios: list[dict] = [{key: [] for key in keys} for _ in runners]
    versus: list[dict] = [{key: {runtime: [] for runtime in config.runtimes} for key in keys} for _ in runners]
    with torch.no_grad():
        for key, points in zip(keys, timed, strict=True):  # warm-up: first calls allocate, plan, cache
            for runner in [reference[key[0]]] + [runners[i][key[0]] for i in points]:
                run_all = call(runner, key)
                for _ in range(config.warmup):
                    run_all()
        for _ in range(config.rounds):
            brackets: dict[tuple, float] = {}
            measured: dict[tuple, dict[int, float]] = {}
            for key, points in zip(keys, timed, strict=True):
                before = seconds(reference[key[0]], key)
                measured[key] = {i: seconds(runners[i][key[0]], key) for i in points}
                after = seconds(reference[key[0]], key)
                bar.update(len(points) + 2)
                brackets[key] = (before + after) / 2
            for key in keys:
                runtime, batch = key
                for i in range(len(runners)):
                    if i in measured[key]:
                        t = measured[key][i]
                    elif runtime in is_reference[i]:
                        t = brackets[key]
                    else:
                        continue
                    times[i][key].append(t)
                    ratios[i][key].append(t / brackets[key])
                    for other in config.runtimes:
                        versus[i][key][other].append(t / brackets[other, batch])
    bar.close()
    results = []
    for i in range(len(runners)):
        latencies = []
        for key in keys:
            if not times[i][key]:
                continue  # not run on this runtime
            runtime, batch = key
            n = len(batches_for(x, batch, config.examples))
            examples = batch * n if config.examples is None else config.examples
            ms, ms_iqr = median_iqr([t * 1e3 / n for t in times[i][key]])
            ratio, ratio_iqr = median_iqr(ratios[i][key])
            others = {other: round(statistics.median(values), 4) for other, values in versus[i][key].items()
                      if other != runtime}
            latencies.append(Latency(runtime, batch, round(ms, 5), round(ms_iqr, 5),
                                     round(statistics.median(times[i][key]) * 1e6 / examples, 3),
                                     round(ratio, 4), round(ratio_iqr, 4), others, str(runners[i][runtime].device)))
        results.append(latencies)
    return results
