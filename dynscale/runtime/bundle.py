"""A deploy bundle loaded for inference: its operating points, picking one for a budget, running
it, and re-measuring its latencies on the machine it runs on."""

from __future__ import annotations

import hashlib
import json
import math
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .manifest import BundleError, check_manifest, point_graphs
from .plans import RUNNERS, Result

MANIFEST = "manifest.json"
CRITERIA = ("latency_ms", "macs_ratio", "accuracy")


@dataclass
class Point:
    """One operating point of a bundle.

    Attributes:
        name: e.g. ``w0.5``, ``w0.5-int8``, ``λ=0.1``.
        precision: ``float32`` or ``int8``.
        accuracy: test accuracy measured when the bundle was made, in [0, 1].
        macs: multiply-accumulates per example (counted; mean over the test split where they
            depend on the input).
        macs_ratio: ``macs`` over the full network's.
        bitops_ratio: counted BitOps over the full-precision network's, where it applies.
        latency_ms: ms per batch in ONNX Runtime, by batch size.
        settings: the method's own description of the point (width, λ, threshold, ...).
    """

    name: str
    precision: str
    accuracy: float
    macs: float
    macs_ratio: float
    bitops_ratio: float | None
    latency_ms: dict[int, float]
    settings: dict = field(default_factory=dict)
    plan: dict = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, doc: dict) -> Point:
        """A point from its checked manifest entry."""
        return cls(doc["name"], doc["precision"], float(doc["accuracy"]), float(doc["macs"]),
                   float(doc["macs_ratio"]), None if doc.get("bitops_ratio") is None else float(doc["bitops_ratio"]),
                   {int(b): float(ms) for b, ms in doc["latency_ms"].items()}, dict(doc.get("settings", {})),
                   doc["plan"])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cpu_session(model: bytes | str, threads: int = 1):
    """An ONNX Runtime CPU session of ``model`` (bytes or a file's path) with ``threads``
    intra-op threads, one inter-op thread, sequential execution and every graph optimisation
    on: how dynscale times and runs every graph."""
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise BundleError("ONNX Runtime is not installed; install it with `pip install onnxruntime numpy`") from None
    return onnxruntime


class Bundle:
    """A directory written by ``dynscale deploy``: graphs, ``manifest.json`` and a sample of inputs.

    Use :meth:`load`; then :meth:`pick` an operating point for a budget and :meth:`run` inputs.
    """

    def __init__(self, directory: Path, manifest: dict, threads: int = 1) -> None:
        self.directory, self.manifest, self.threads = directory, manifest, threads
        self.points = [Point.of(p) for p in manifest["points"]]
        self.point = max(self.points, key=lambda p: (p.accuracy, -p.macs))  # until one is picked
        self._sessions: dict[str, object] = {}
        # The graphs each point runs, read from its (checked) plan once rather than on every call.
        self._graph_names = {p.name: point_graphs(manifest["plan"], p.plan, len(manifest["classes"]))
                             for p in self.points}

    @classmethod
    def load(cls, directory: str | Path, threads: int = 1) -> Bundle:
        """Opens a bundle: reads and checks its manifest and every graph's checksum.

        Args:
            directory: the bundle's directory.
            threads: ONNX Runtime's intra-op threads per session.

        Raises:
            BundleError: for a missing directory, a damaged manifest or a graph whose checksum
                does not match.
        """
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise BundleError(f"threads must be a positive integer, got {threads!r}")
        directory = Path(directory)
        path = directory / MANIFEST
        if not path.is_file():
            raise BundleError(f"{directory} is not a bundle (no {MANIFEST}); make one with `dynscale deploy RUN --out "
                              "DIR`")
        try:
            manifest = check_manifest(json.loads(path.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BundleError(f"{path} is not valid JSON ({e}); the bundle is damaged") from None
        files = [(f"the graph {name!r}", graph["file"], graph["sha256"], "graphs")
                 for name, graph in manifest["graphs"].items()]
        files.append(("the sample", manifest["sample"]["file"], manifest["sample"]["sha256"], ""))
        for what, name, digest, folder in files:
            file = directory / name
            if not file.is_file() or file.resolve().parent != (directory / folder).resolve():
                raise BundleError(f"{directory}: {what} ({name}) is missing; the bundle is incomplete, copy it whole")
            if _sha256(file) != digest:
                raise BundleError(f"{file}: its checksum does not match the manifest; the file is damaged, copy the "
                                  "bundle again")
        return cls(directory, manifest, threads)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input, without the batch: ``(C, H, W)``."""
        return tuple(self.manifest["input"]["shape"])

    @property
    def classes(self) -> list[str]:
        """The class names, by label."""
        return list(self.manifest["classes"])

    def point_named(self, name: str) -> Point:
        """The operating point called ``name``.

        Raises:
            BundleError: naming the points there are.
        """
        for p in self.points:
            if p.name == name:
                return p
        names = ", ".join(p.name for p in self.points)
        raise BundleError(f"the bundle has no operating point {name!r}; it has {names}")

    def pick(self, *, latency_ms: float | None = None, macs_ratio: float | None = None,
             accuracy: float | None = None, batch: int = 1) -> Point:
        """Chooses the operating point :meth:`run` uses, for one budget, and returns it.

        Args:
            latency_ms: the most accurate point whose latency at ``batch`` is within this.
            macs_ratio: the most accurate point within this fraction of the full network's MACs.
            accuracy: the fastest point (at ``batch``) whose accuracy reaches this, in [0, 1].
            batch: the batch size the latency is for (a measured one: see ``latency_ms`` of the points).

        Raises:
            BundleError: for no budget or several, or one that no point meets (naming the nearest).
        """
        given = {k: v for k, v in (("latency_ms", latency_ms), ("macs_ratio", macs_ratio), ("accuracy", accuracy))
                 if v is not None}
        if len(given) != 1:
            raise BundleError(f"give exactly one budget of {', '.join(CRITERIA)}")
        (criterion, budget), = given.items()
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) \
                or budget <= 0:
            raise BundleError(f"{criterion} must be a positive number, got {budget!r}")
        if criterion != "macs_ratio" and any(batch not in p.latency_ms for p in self.points):
            measured = sorted(set.intersection(*(set(p.latency_ms) for p in self.points)))
            raise BundleError(f"no latency at batch {batch} in the bundle (measured: {measured}); pick another batch "
                              "or call calibrate_latency(batches=...)")
        if criterion == "accuracy":
            if budget > 1:
                raise BundleError(f"accuracy is a fraction in (0, 1], got {budget}")
            fits = [p for p in self.points if p.accuracy >= budget]
            if not fits:
                best = max(p.accuracy for p in self.points)
                raise BundleError(f"no operating point reaches accuracy {budget:.4f}; the best has {best:.4f}")
            chosen = min(fits, key=lambda p: (p.latency_ms[batch], p.macs))
        else:
            cost = (lambda p: p.latency_ms[batch]) if criterion == "latency_ms" else (lambda p: p.macs_ratio)
            fits = [p for p in self.points if cost(p) <= budget]
            if not fits:
                cheapest = min(self.points, key=cost)
                raise BundleError(f"no operating point fits {criterion} {budget:g}; the cheapest, {cheapest.name}, "
                                  f"needs {cost(cheapest):.4g}")
            chosen = max(fits, key=lambda p: (p.accuracy, -cost(p)))
        self.point = chosen
        return chosen

    def _session(self, name: str):
        if name not in self._sessions:
            session = cpu_session(str(self.directory / self.manifest["graphs"][name]["file"]), self.threads)
            self._sessions[name] = lambda feeds, s=session: s.run(None, feeds)
        return self._sessions[name]

    def _check_input(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.shape[1:] != self.input_shape and x.shape == self.input_shape:
            x = x[None]  # one example
        if x.ndim != len(self.input_shape) + 1 or x.shape[1:] != self.input_shape:
            raise BundleError(f"the input has shape {tuple(x.shape)}; the bundle takes (N, "
                              f"{', '.join(map(str, self.input_shape))})")
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise BundleError(f"the input is {x.dtype}, not real numbers")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(x).all():
            raise BundleError("the input holds NaN or infinite values; fix the data")
        return x

    def run(self, x: np.ndarray, point: str | Point | None = None) -> Result:
        """Runs inputs through an operating point (the picked one by default).

        Args:
            x: ``(N, C, H, W)`` (or one ``(C, H, W)``) float inputs, prepared as the manifest's
                ``input`` says.
            point: a point or its name.

        Returns:
            The logits, the point's name and each example's route.

        Raises:
            BundleError: for an input of the wrong shape or with non-finite values, or
                non-finite outputs.
        """
        chosen = self.point if point is None else point if isinstance(point, Point) else self.point_named(point)
        x = self._check_input(x)
        plan = self.manifest["plan"]
        names = self._graph_names.get(chosen.name) or point_graphs(plan, chosen.plan, len(self.classes))
        sessions = {name: self._session(name) for name in names}
        if not len(x):
            route = {"graph": np.zeros((0, len(chosen.plan["nodes"])), bool),
                     "dfs": np.zeros((0, len(chosen.plan["gates"])), np.int64)}.get(plan["kind"])
            return Result(np.zeros((0, len(self.classes)), np.float32), chosen.name, route)
        logits, route = RUNNERS[plan["kind"]](sessions, plan, chosen.plan, x)
        if not np.isfinite(logits).all():
            raise BundleError(f"the point {chosen.name} computed non-finite logits; the bundle or input is broken")
        return Result(logits, chosen.name, route)

    def sample(self) -> np.ndarray:
        """The real test inputs the bundle was checked on ``(N, C, H, W)`` (checksummed at load)."""
        path = self.directory / self.manifest["sample"]["file"]
        try:
            return self._check_input(np.load(path, allow_pickle=False))
        except (OSError, ValueError) as e:
            raise BundleError(f"{path} cannot be read ({e}); copy the bundle again") from None

    def calibrate_latency(self, batches: Sequence[int] = (1, 64), rounds: int = 5,
                          min_time: float = 0.2) -> dict[str, dict[int, float]]:
        """Re-measures every point's latency on this machine and keeps it (``pick`` uses it).

        Each round times every point once per batch size, in turn (so a slower phase of the
        machine hits them all); a point's latency is the median over rounds of the mean time
        per call, on the bundle's real sample inputs: consecutive batches of it in turn (an
        input-dependent point is timed over many examples' routes, not one).

        Args:
            batches: batch sizes.
            rounds: interleaved rounds.
            min_time: seconds of calls per point per round.

        Returns:
            ``{point: {batch: ms}}``.
        """
        if rounds < 1 or not batches or any(b < 1 for b in batches):
            raise BundleError("give rounds >= 1 and positive batch sizes")
        inputs = sample_batches(self.sample(), batches)
        measured = measure_latency({p.name: (lambda x, p=p: self.run(x, p)) for p in self.points}, inputs, rounds,
                                   min_time)
        for p in self.points:
            p.latency_ms = measured[p.name]
        self.manifest["machine"] = machine()
        return measured


def sample_batches(sample: np.ndarray, batches: Sequence[int], most: int = 64) -> dict[int, list[np.ndarray]]:
    """Consecutive batches of ``sample`` per batch size, at most ``most`` of them (the sample
    repeated where it is shorter than a batch): what latencies are measured on."""
    out = {}
    for b in batches:
        count = max(1, min(most, len(sample) // b))
        tiled = np.resize(sample, (max(b, len(sample)), *sample.shape[1:]))
        out[b] = [np.ascontiguousarray(tiled[i * b:(i + 1) * b]) for i in range(count)]
    return out


def measure_latency(calls: dict[str, object], inputs: dict[int, list[np.ndarray]], rounds: int = 5,
                    min_time: float = 0.2) -> dict[str, dict[int, float]]:
    """ms per call of each ``calls[name](x)`` at each batch size of ``inputs``, cycling through
    that size's batches: interleaved rounds (every call, every size, in turn), the median over
    rounds of the mean per call, after one warm-up pass over every batch.

    Raises:
        BundleError: for no rounds, a non-positive time or a batch size without batches.
    """
    if rounds < 1 or not min_time > 0 or any(not xs for xs in inputs.values()):
        raise BundleError("measure with rounds >= 1, min_time > 0 and at least one batch per size")
    times: dict[str, dict[int, list[float]]] = {name: {b: [] for b in inputs} for name in calls}
    for call in calls.values():
        for xs in inputs.values():
            for x in xs:
                call(x)  # warm-up: sessions open, memory allocated
    for _ in range(rounds):
        for name, call in calls.items():
            for b, xs in inputs.items():
                count, start = 0, time.perf_counter()
                while True:
                    call(xs[count % len(xs)])
                    count += 1
                    elapsed = time.perf_counter() - start
                    if elapsed >= min_time and count >= len(xs):
                        break
                times[name][b].append(1000 * elapsed / count)
    return {name: {b: round(statistics.median(ts), 6) for b, ts in per.items()} for name, per in times.items()}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` where there is one)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return model


def machine() -> dict:
    """The machine a latency was measured on."""
    import os

    ort = _onnxruntime()
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "system": platform.platform(),
            "python": platform.python_version(), "onnxruntime": ort.__version__}
