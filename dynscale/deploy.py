"""``dynscale deploy``: a run's operating points as a bundle that runs without PyTorch.

The run's method (its ``deploy`` hook, ``dynscale.methods``) hands over its pieces as plain
modules and how they make up each operating point (``dynscale.deployable``). This module, for
every method alike:

1. exports each piece as ONNX and checks ONNX Runtime's outputs against PyTorch's on real
   inputs; with ``--int8`` (or where the plan runs a piece in int8) quantizes it statically
   (QDQ), calibrated on training inputs;
2. runs every operating point through ``dynscale.runtime`` (the code the bundle ships with) on
   the whole test split: its accuracy and counted cost, and its outputs against the PyTorch
   model's (float32: equal within :data:`FLOAT_TOLERANCE`; int8: :data:`INT8_AGREEMENT` of the
   predictions and accuracy within :data:`INT8_ACCURACY_POINTS`);
3. times every point in ONNX Runtime at batch 1 and 64 (interleaved rounds, median);
4. writes ``graphs/``, ``sample.npy`` and ``manifest.json``, the directory whole or not at all.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

from .data import class_names, input_description
from .deployable import INT8_SUFFIX, Deployment, DeployPoint, GraphSpec, int8_plan
from .errors import DynscaleError
from .eval.baselines import quantize_onnx
from .eval.runtime import ONNX_TOLERANCE, check_onnx_equal, onnx_bytes, onnxruntime_session, require_onnxruntime
from .export import dense
from .files import atomic_directory, dumps_json
from .layers import WidthScaled
from .methods import method_of_kind
from .progress import progress_bar
from .runs import RunConfig, check_output, open_run
from .runtime import FORMAT, MANIFEST_VERSION, Bundle, check_manifest, machine, measure_latency, sample_batches

# Largest logit difference of a float32 point (several graphs in a row), relative to the logits' scale.
FLOAT_TOLERANCE = 10 * ONNX_TOLERANCE
FLOAT_AGREEMENT = 0.999  # share of test predictions a float32 point must share with PyTorch (ties at an exit flip)
INT8_AGREEMENT = 0.97  # share of test predictions an int8 point must share with the PyTorch model
INT8_ACCURACY_POINTS = 1.0  # and its accuracy within this many points of the PyTorch model's
SAMPLE_SIZE = 256  # real test inputs kept in the bundle: a new machine times and checks on them
LATENCY_BATCHES = (1, 64)
INT8_BITOPS = (8 / 32) ** 2  # an int8 graph's BitOps against its float32 one's


def _version() -> str:
    """dynscale's installed version ("unknown" from a checkout that is not installed)."""
    try:
        return version("dynscale")
    except PackageNotFoundError:
        return "unknown"


def is_bundle(path: Path) -> bool:
    """Whether ``path`` holds a deploy bundle (its manifest names the format)."""
    try:
        return json.loads((path / "manifest.json").read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def calibration_batches(x: torch.Tensor, batches: int, batch_size: int = 32) -> list[torch.Tensor]:
    """``batches`` batches of training inputs, drawn by a fixed shuffle (seed 0)."""
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:batches * batch_size]
    return [x[order[i:i + batch_size]] for i in range(0, len(order), batch_size)]


def deploy_run(run_dir: str | Path, out: str | Path, *, int8: bool = False, calibration: int = 8, threads: int = 1,
               rounds: int = 5, min_time: float = 0.2, force: bool = False, progress: bool | None = None,
               **options) -> Path:
    """Writes a run's operating points as a deploy bundle.

    Args:
        run_dir: a run of a method that deploys (``dynscale list`` shows the methods).
        out: the bundle's directory (never the run, never inside a run).
        int8: add each point with its graphs statically quantized to int8.
        calibration: batches of 32 training inputs that calibrate the int8 graphs.
        threads: ONNX Runtime's intra-op threads while timing.
        rounds: interleaved timing rounds.
        min_time: seconds of calls per point, batch size and round.
        force: replace an existing bundle at ``out``.
        options: the method's own (the width method's ``widths``); one it does not take is refused.

    Returns:
        ``out``.

    Raises:
        DynscaleError: before any work for a bad output, a run no method deploys or an option
            that does nothing; later for a graph whose outputs differ from PyTorch's.
    """
    require_onnxruntime()
    config = RunConfig.read(run_dir)
    method = method_of_kind(config.kind)
    if method is None or method.deploy is None:
        raise DynscaleError(f"{run_dir} is a {config.kind} run, which no method deploys yet; deploy runs of the "
                            "width, adaptive, dfs or effort methods")
    takes = inspect.signature(method.deploy).parameters
    for name, value in options.items():
        if value is not None and name not in takes:
            raise DynscaleError(f"--{name.replace('_', '-')} does nothing for {run_dir}, a {config.kind} run; "
                                "leave it out")
    for name, value, low in (("--calibration-batches", calibration, 1), ("--rounds", rounds, 1),
                             ("--threads", threads, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise DynscaleError(f"{name} must be an integer >= {low}, got {value!r}")
    if not min_time > 0:
        raise DynscaleError(f"--min-run-time must be a positive number of seconds, got {min_time!r}")
    out = check_output(out, force, inputs=[run_dir], what=("a bundle", is_bundle))
    run = open_run(run_dir, with_data=True, what="deploy")
    data = run.dataset
    deployment = method.deploy(run, calibration=calibration_batches(data.train_x, calibration),
                               **{k: v for k, v in options.items() if v is not None})
    names = [p.name for p in deployment.points]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DynscaleError(f"two operating points would both be called {twice[0]!r}; give each value once "
                            "(--widths, --lambdas)")
    shape = list(data.test_x.shape[1:])
    about = {"input": {"shape": shape, **input_description(data)}, "classes": class_names(data),
             "source": {"run": str(Path(run_dir)), "kind": config.kind, "method": method.name,
                        "data": data.name}}
    return atomic_directory(out, lambda tmp: _fill(tmp, deployment, data, about, int8, threads, rounds, min_time,
                                                              progress))


def _fill(directory: Path, deployment: Deployment, data, about: dict, int8: bool, threads: int, rounds: int,
          min_time: float, progress: bool | None) -> None:
    graphs_dir = directory / "graphs"
    graphs_dir.mkdir()
    graphs: dict[str, dict] = {}
    int8_of: set[str] = set()
    specs = deployment.graphs
    bar = progress_bar(total=len(specs), desc="exporting graphs", progress=progress)
    for name, spec in specs.items():
        float_bytes = _export(name, spec)
        if spec.int8 in ("always", "option") and (spec.int8 == "always" or int8):
            if spec.calibration is None:
                raise DynscaleError(f"the graph {name!r} has no calibration inputs for int8; please report it")
            _write_graph(graphs_dir, graphs, name + INT8_SUFFIX, quantize_onnx(float_bytes, spec.calibration), spec,
                         "int8")
            int8_of.add(name)
        _write_graph(graphs_dir, graphs, name, float_bytes, spec, "float32")
        bar.update(1)
    bar.close()
    points = list(deployment.points)
    if int8:
        for p in deployment.points:
            names = _graph_names(p.plan, specs)
            if p.int8_variant and p.precision == "float32" and names and names <= int8_of:
                points.append(DeployPoint(p.name + INT8_SUFFIX, int8_plan(p.plan, names), {**p.settings, "int8": True},
                                          p.reference, p.count, p.macs,
                                          None if p.bitops_ratio is None else p.bitops_ratio * INT8_BITOPS,
                                          "int8", False))
    sample = data.test_x[:SAMPLE_SIZE].contiguous().numpy()
    np.save(directory / "sample.npy", sample, allow_pickle=False)
    sample_digest = hashlib.sha256((directory / "sample.npy").read_bytes()).hexdigest()
    manifest = {"format": FORMAT, "schema_version": MANIFEST_VERSION, **about,
                "plan": deployment.structure, "graphs": graphs, "points": [], "notes": deployment.notes,
                "sample": {"file": "sample.npy", "sha256": sample_digest, "examples": len(sample)},
                "checks": {"float32": {"tolerance": FLOAT_TOLERANCE, "agreement": FLOAT_AGREEMENT},
                           "int8": {"agreement": INT8_AGREEMENT, "accuracy_points": INT8_ACCURACY_POINTS}},
                "made_by": {"dynscale": _version(), "torch": torch.__version__,
                            "python": platform.python_version()}}
    draft = {**manifest, "points": [_entry(p, 0.0, 0.0, None) for p in points]}
    bundle = Bundle(directory, check_manifest(draft), threads)
    entries = []
    bar = progress_bar(total=len(points), desc="checking points", progress=progress)
    for p in points:
        accuracy, macs, bitops = _check_point(bundle, p, data, deployment.full_macs)
        if bitops is None:  # every MAC at the point's precision: float32 32×32 bits, int8 8×8
            bitops = macs / deployment.full_macs * (INT8_BITOPS if p.precision == "int8" else 1.0)
        entries.append(_entry(p, accuracy, macs / deployment.full_macs, bitops, macs))
        bar.update(1)
    bar.close()
    manifest["points"] = entries
    bundle = Bundle(directory, check_manifest(manifest), threads)
    inputs = sample_batches(sample, LATENCY_BATCHES)  # consecutive real inputs: routes vary as in use
    calls = {p.name: (lambda x, p=p: bundle.run(x, p)) for p in bundle.points}
    latency = measure_latency(calls, inputs, rounds, min_time)
    for entry in manifest["points"]:
        entry["latency_ms"] = {str(b): ms for b, ms in latency[entry["name"]].items()}
    manifest["machine"] = machine()
    manifest["latency"] = {"batches": list(LATENCY_BATCHES), "threads": threads, "rounds": rounds, "min_time": min_time,
                           "inputs": "consecutive batches of the bundle's sample.npy (real test inputs)"}
    (directory / "manifest.json").write_text(dumps_json(check_manifest(manifest)))


def _export(name: str, spec: GraphSpec) -> bytes:
    """The piece as ONNX, checked against PyTorch on its real example inputs."""
    module = spec.module.eval()
    example = tuple(spec.example.values())
    plain = module
    if any(isinstance(m, WidthScaled) for m in module.modules()):  # incomplete layers at full width: plain ones
        plain = dense(module, 1.0, example[0][:1])
    data = onnx_bytes(plain, example, input_names=tuple(spec.example), output_names=spec.outputs)
    check_onnx_equal(onnxruntime_session(data), module, spec.example, f"the graph {name!r}", spec.outputs)
    return data


def _write_graph(directory: Path, graphs: dict, name: str, data: bytes, spec: GraphSpec, precision: str) -> None:
    file = directory / f"{name}.onnx"
    file.write_bytes(data)
    graphs[name] = {"file": f"graphs/{name}.onnx", "sha256": hashlib.sha256(data).hexdigest(),
                    "inputs": list(spec.example), "outputs": list(spec.outputs), "precision": precision}


def _graph_names(plan: object, specs: dict) -> set[str]:
    if isinstance(plan, str):
        return {plan} if plan in specs else set()
    values = plan.values() if isinstance(plan, dict) else plan if isinstance(plan, list) else []
    return set().union(*(_graph_names(v, specs) for v in values)) if values else set()


def _entry(p: DeployPoint, accuracy: float, macs_ratio: float, bitops: float | None, macs: float = 0.0) -> dict:
    return {"name": p.name, "precision": p.precision, "accuracy": round(accuracy, 6), "macs": round(macs, 1),
            "macs_ratio": round(macs_ratio, 6), "bitops_ratio": None if bitops is None else round(bitops, 6),
            "latency_ms": {}, "settings": p.settings, "plan": p.plan}


@torch.no_grad()
def _check_point(bundle: Bundle, p: DeployPoint, data, full_macs: float,
                 batch_size: int = 500) -> tuple[float, float, float | None]:
    """Runs a point through the runtime on the test split; checks it against PyTorch.

    Returns:
        Accuracy, mean MACs per example and mean BitOps ratio (None where it does not apply).
    """
    x, y = data.test_x, data.test_y.numpy()
    logits, want, routes = [], [], []
    for start in range(0, len(x), batch_size):
        batch = x[start:start + batch_size]
        result = bundle.run(batch.numpy(), bundle.point_named(p.name))
        logits.append(result.logits)
        want.append(p.reference(batch).float().numpy())
        routes.append(result.route)
    got, want = np.concatenate(logits), np.concatenate(want)
    # A reference gives logits (N, classes), or predictions (N,) where PyTorch's graph keeps no logits.
    predicted = want.argmax(1) if want.ndim == 2 else want.astype(np.int64)
    same = got.argmax(1) == predicted
    agree = float(same.mean())
    accuracy, reference = float((got.argmax(1) == y).mean()), float((predicted == y).mean())
    if p.precision == "float32":
        diff = 0.0
        if want.ndim == 2 and same.any():
            scale = max(1.0, float(np.abs(want).max()))
            diff = float(np.abs(got[same] - want[same]).max()) / scale
        if agree < FLOAT_AGREEMENT or not diff <= FLOAT_TOLERANCE:
            raise DynscaleError(f"point {p.name}: the bundle's outputs differ from PyTorch's (predictions agree on "
                                f"{100 * agree:.2f}%, logits by up to {diff:.3g} of their scale); please report it")
    elif agree < INT8_AGREEMENT or abs(accuracy - reference) * 100 > INT8_ACCURACY_POINTS:
        raise DynscaleError(f"point {p.name}: int8 predictions agree with PyTorch's on {100 * agree:.2f}% of the test "
                            f"split (accuracy {100 * accuracy:.2f}% against {100 * reference:.2f}%), outside the "
                            f"tolerance ({100 * INT8_AGREEMENT:.0f}%, {INT8_ACCURACY_POINTS} point); try more "
                            "--calibration-batches, or deploy without --int8")
    if p.count is None:
        return accuracy, float(p.macs if p.macs is not None else full_macs), p.bitops_ratio
    route = np.concatenate(routes) if routes[0] is not None else None
    macs, bitops = p.count(route)
    mean_bitops = p.bitops_ratio if bitops is None else float(np.mean(bitops))
    return accuracy, float(np.mean(macs)), mean_bitops


def summarize(directory: str | Path) -> list[str]:
    """Lines describing a bundle's points: accuracy, MAC ratio and latency at each batch."""
    bundle = Bundle.load(directory)
    lines = []
    for p in bundle.points:
        latency = "  ".join(f"{ms:8.3f} ms@{b}" for b, ms in sorted(p.latency_ms.items()))
        bitops = f"  BitOps {p.bitops_ratio:.3f}" if p.bitops_ratio is not None else ""
        lines.append(f"{p.name:>22}  {p.precision:7}  acc {100 * p.accuracy:6.2f}%  MACs {p.macs_ratio:.3f}"
                     f"{bitops}  {latency}")
    return lines


__all__ = ["FLOAT_TOLERANCE", "INT8_ACCURACY_POINTS", "INT8_AGREEMENT", "calibration_batches", "deploy_run",
           "summarize"]

