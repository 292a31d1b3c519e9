"""Fractional-skipping runs (kind ``dfs``), training them, and their operating points: the gated
network, static quantization of a backbone at each bit-width, and real int8 in ONNX Runtime."""

from __future__ import annotations

import copy
import dataclasses
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..cost import count_macs
from ..data import Dataset
from ..errors import CheckpointError, DynscaleError
from ..eval import Candidate, Curve, CurveSpec, Measurement, Runner, TimingConfig, evaluate
from ..eval.runtime import check_onnx_equal, onnx_bytes, onnxruntime_session, require_onnxruntime, torch_runner
from ..export import dense
from ..models import get_model
from ..runs import WIDTH, ModelSpec, RunConfig, RunKind, open_run, open_runs, register_kind
from ..schema import Int, ListOf, Optional, Str, setting
from ..train import TrainConfig, Training, sized_for, train_and_save
from .gates import GATES
from .model import FULL, SKIPNET_CHOICES, DFSNet, check_choices, check_executable, config_input_shape
from .quant import SCHEMES
from .recipes import FractionalSkipping

CALIBRATION_BATCHES = 20  # training batches of 256 that set a backbone's activation ranges


def train_dfs_run(out: str | Path, model_name: str, data: Dataset | str, config: TrainConfig,
                  recipe: FractionalSkipping, model_options: dict | None = None,
                  backbone_run: str | Path | None = None, progress: bool | None = None, force: bool = False,
                  resume: bool = False, checkpoint_every: int = 500) -> Path:
    """Builds a ResNet with fractional-skipping gates, trains it in the recipe's three phases
    (the pretrain phase left out when ``backbone_run`` gives a trained backbone), and writes
    a run directory (resumably: :func:`dynscale.train.train_and_save`).

    Raises:
        DynscaleError: before any training, for a backbone that is not a trained ResNet of the
            data, or an output that cannot be written.
    """
    def build(dataset: Dataset) -> Training:
        steps = recipe
        if backbone_run is not None:
            run = open_run(backbone_run, (WIDTH,), dataset, own_data=True, what="--backbone")
            if run.config.profile_ranges:
                raise DynscaleError(f"{backbone_run} is a run of several members; a backbone is a single network with "
                                    "residual blocks (a ResNet trained with `dynscale train --model resnet38`, say)")
            backbone, source = run.model, backbone_run
            steps = dataclasses.replace(recipe, pretrain=0)  # the backbone is pretrained
        else:
            backbone = get_model(model_name, **sized_for(dataset, {"profile": "all-one", **(model_options or {})}))
            source = model_name
        provenance = {"backbone_run": str(backbone_run)} if backbone_run is not None else {}
        return Training(gated(backbone, steps, source), steps, config, provenance)

    return train_and_save(out, data, config, build, progress, force, resume, checkpoint_every,
                          inputs=[backbone_run] if backbone_run is not None else [])


def gated(backbone: torch.nn.Module, recipe: FractionalSkipping, source: object) -> DFSNet:
    """The DFSNet the recipe trains on ``backbone`` (its choices, gate and quantization), its
    refusal naming ``source`` (a run, a model or an option)."""
    try:
        return DFSNet(backbone, recipe.choices, gate=recipe.gate, quantization=recipe.quantization)
    except DynscaleError as e:
        raise DynscaleError(f"{source}: {e}") from None


def _measure(net: DFSNet, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> Measurement:
    """Accuracy, mean MACs, mean BitOps ratio and what the gates chose, on ``(x, y)``."""
    accuracy, macs, bitops, chosen = net.measure(x, y, batch_size)
    labels = ["skip" if c == 0 else "full" if c == FULL else f"{c} bits" for c in net.choices]
    histogram = {block: {labels[c]: round((chosen[:, i] == c).float().mean().item(), 6) for c in range(len(labels))}
                 for i, block in enumerate(net.block_names)} if net.mode == "gated" else {}
    skipped = (chosen == 0).float().mean().item() if net.mode == "gated" and 0 in net.choices else 0.0
    extra = {"skipped": round(skipped, 6)}
    if histogram:
        extra["choices"] = histogram
    params = sum(p.numel() for p in net.backbone.parameters())
    return Measurement(accuracy, macs, params, bitops, extra)


def _candidate(net: DFSNet, method: str, knobs: dict, label: str, mode: str, bits: int = FULL) -> Candidate:
    def prepare() -> None:
        net.mode, net.static_bits = mode, bits

    def measure(x: torch.Tensor, y: torch.Tensor) -> Measurement:
        prepare()
        return _measure(net, x, y)

    def runner(runtime: str) -> Runner:
        if runtime != "torch":
            raise DynscaleError(f"fractional skipping is timed in eager PyTorch only, not {runtime}")
        return torch_runner(net.eval(), prepare=prepare)

    return Candidate(method, knobs, label, measure, runner)


def calibrated(backbone: torch.nn.Module, data: Dataset) -> DFSNet:
    """A copy of ``backbone`` (left unchanged) with full-precision gates off and its activation
    ranges measured on training data, for static quantization; its batch-norm statistics stay
    the backbone's."""
    net = DFSNet(copy.deepcopy(backbone), input_shape=_input_shape(backbone, data))
    batches = (x for i, (x, _) in zip(range(CALIBRATION_BATCHES), data.loader("train", 256), strict=False))
    net.calibrate(batches)
    net.mode = "full"
    return net


def dfs_curves(runs: Sequence[str | Path], static_bits: Sequence[int] = (), int8: bool = False,
               data: str | Dataset | None = None, timing: TimingConfig | None = None,
               progress: bool | None = None, choices_plot: bool = False) -> list[Curve]:
    """Operating points of DFS runs (grouped as DFS or SkipNet-style by their choices) and, for
    ResNet width runs, static quantization at ``static_bits`` and (``int8``) real int8 in ONNX
    Runtime. Each run's points are relative to its own full-precision network. With
    ``choices_plot`` (the gates' choices will be drawn) one run must be a DFS run.

    Raises:
        DynscaleError: for a run of another kind.
    """
    curves, gated = [], {}
    opened = open_runs(runs, (DFS, WIDTH), data, with_data=True, what="dfs sweep")
    for run in opened:  # every run checked before any evaluation
        if run.kind == WIDTH:
            try:
                DFSNet(run.model, SKIPNET_CHOICES, input_shape=_input_shape(run.model, run.dataset))
            except DynscaleError as e:
                raise DynscaleError(f"{run.path}: {e}; the static and int8 baselines take width runs of a network "
                                    "with residual blocks (ResNet runs, say)") from None
    kinds = {run.kind for run in opened}
    if choices_plot and DFS not in kinds:
        raise DynscaleError("--choices-plot draws what the gates chose: give at least one DFS run (dynscale dfs train)")
    if (static_bits or int8) and WIDTH not in kinds:
        raise DynscaleError(f"{'--static-bits' if static_bits else '--int8'} quantizes ResNet runs (width runs of a "
                            "network with residual blocks): give at least one (dynscale train --model resnet38), or "
                            "leave it out")
    for run in opened:
        dataset, run_dir = run.dataset, run.path
        name = Path(run_dir).name
        test = (dataset.test_x, dataset.test_y)
        if run.kind == DFS:
            net = run.model
            method = "skipnet" if net.choices == list(SKIPNET_CHOICES) else "dfs"
            target = run.config.recipe.get("target")
            full = _candidate(net, "full", {}, "full precision", "full")
            point = _candidate(net, method, {"target": target}, f"{name} (target {target:g}%)", "gated")
            measured = evaluate([(CurveSpec(f"{name}: {method}", name, dataset.name, method), [point])], full, test,
                                timing, progress)
            gated.setdefault((method, run.config.training.get("lr")), []).extend(measured)
        else:
            net = calibrated(run.model, dataset)
            full = _candidate(net, "full", {}, "full precision", "full")
            static = [_candidate(net, "static", {"bits": b}, f"{b} bits", "static", b) for b in static_bits]
            specs = [(CurveSpec(f"{name}: full precision", name, dataset.name, "full precision"), [full])]
            if static:
                specs.append((CurveSpec(f"{name}: static quantization", name, dataset.name, "static"), static))
            curves += evaluate(specs, full, test, timing, progress)
            if int8:
                curves += int8_curve(run.model, dataset, name, timing, progress)
    return _grouped(gated) + curves


def _grouped(gated: dict[tuple[str, float], list[Curve]]) -> list[Curve]:
    """One curve per method (and learning rate, where a method was trained at several) out of
    the one-point curves of its runs, in order of BitOps; each point keeps its run's own
    full-precision network as its timing reference."""
    methods = [method for method, _ in gated]
    out = []
    for (method, lr), runs in gated.items():
        label = method if methods.count(method) == 1 else f"{method}, lr {lr}"
        points = sorted((p for c in runs for p in c.points), key=lambda p: p.bitops_ratio)
        out.append(Curve(label, points, ", ".join(c.run for c in runs), runs[0].data, method))
    return out


def int8_curve(backbone: torch.nn.Module, data: Dataset, name: str, timing: TimingConfig | None,
               progress: bool | None) -> list[Curve]:
    """The backbone in ONNX Runtime at float32 and statically quantized to int8 (weights and
    activations, calibrated on training data): accuracy, and latency measured there."""
    require_onnxruntime()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    plain = dense(backbone, 1.0)
    example = data.test_x[:16]
    model = onnx_bytes(plain, example[:2])
    threads = timing.threads if timing else 1
    fp32 = onnxruntime_session(model, threads)
    check_onnx_equal(fp32, plain, example, name)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": x.numpy()} for i, (x, _) in enumerate(data.loader("train", 64)) if i < 32])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        source.write_bytes(model)
        quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
        int8 = onnxruntime_session(target.read_bytes(), threads)
    macs = count_macs(plain, data.test_x[:1])

    def candidate(label: str, session, ratio: float) -> Candidate:
        def predict(x: torch.Tensor) -> np.ndarray:
            return np.concatenate([session.run(None, {"input": x[i:i + 500].numpy()})[0]
                                   for i in range(0, len(x), 500)])

        def measure(x: torch.Tensor, y: torch.Tensor) -> Measurement:
            correct = (predict(x).argmax(1) == y.numpy()).mean()
            return Measurement(float(correct), macs, sum(p.numel() for p in plain.parameters()), ratio)

        def runner(runtime: str) -> Runner:
            return Runner(lambda batch: session.run(None, {"input": batch}), convert=lambda t: t.numpy())

        return Candidate("onnxruntime", {"precision": label}, label, measure, runner)

    reference = candidate("float32", fp32, 1.0)
    quantized = candidate("int8", int8, (8 / FULL) ** 2)
    ort_timing = None if timing is None else TimingConfig(**{**timing.__dict__, "runtimes": ["onnxruntime"],
                                                             "channels_last": False})
    return evaluate([(CurveSpec(f"{name}: ONNX Runtime", name, data.name, "onnxruntime"), [reference, quantized])],
                    reference, (data.test_x, data.test_y), ort_timing, progress)


def plot_choices(curves: Sequence[Curve], path: str | Path, title: str = "What the gates chose, per block") -> Path:
    """A stacked bar per block: the fraction of test examples that skip it or run it at each
    bit-width, one panel per gated operating point (grouped by method, the budget falling
    from top to bottom within each)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..files import atomic_write

    order = {id(c): i for i, c in enumerate(curves)}
    points = sorted(((c, p) for c in curves for p in c.points if "choices" in p.extra),
                    key=lambda cp: (order[id(cp[0])], -cp[1].bitops_ratio))  # per method, budget falling
    if not points:
        raise DynscaleError("no gated operating point to plot the choices of; give DFS runs")
    fig, axes = plt.subplots(len(points), 1, figsize=(8, 1.9 * len(points) + 0.8), squeeze=False, sharex=True)
    labels = list(next(iter(points[0][1].extra["choices"].values())))
    colors = plt.get_cmap("viridis")(np.linspace(0, 1, len(labels)))
    colors[0] = (0.85, 0.85, 0.85, 1.0)  # skip: grey
    for ax, (curve, point) in zip(axes[:, 0], points, strict=True):
        blocks = list(point.extra["choices"])
        bottom = np.zeros(len(blocks))
        for label, color in zip(labels, colors, strict=True):
            values = np.array([point.extra["choices"][b].get(label, 0.0) for b in blocks])
            ax.bar(range(len(blocks)), values, bottom=bottom, color=color, label=label, width=0.85)
            bottom += values
        ax.set_ylabel("examples")
        ax.set_ylim(0, 1)
        ax.set_title(f"{curve.label} {point.label}: {100 * point.accuracy:.2f}%, BitOps {point.bitops_ratio:.2f}",
                     fontsize=9)
    axes[-1, 0].set_xticks(range(len(blocks)), blocks, rotation=90, fontsize=7)
    axes[-1, 0].set_xlabel("block (stage.block)")
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.suptitle(title, fontsize=10)
    fig.legend(handles, names, fontsize=7, ncol=len(labels), loc="lower center")
    fig.tight_layout(rect=(0, 0.35 / fig.get_figheight(), 1, 1 - 0.3 / fig.get_figheight()))
    atomic_write(Path(path), lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
    return Path(path)


def _input_shape(backbone: torch.nn.Module, data: Dataset) -> tuple[int, ...]:
    """One input's shape: the backbone's config's, or the data's."""
    return config_input_shape(backbone) or tuple(data.test_x.shape[1:])


def _describe(net: DFSNet) -> tuple[ModelSpec, dict]:
    return ModelSpec.of(net.backbone), {"choices": net.choices, "embedding": net.embedding, "hidden": net.hidden,
                                        "blocks": net.block_names, "gate": net.gate.kind,
                                        "quantization": net.quantization}


def _build(config: RunConfig) -> DFSNet:
    section = config.section
    net = DFSNet(config.model.build(), section["choices"], section["embedding"], section["hidden"],
                 gate=section.get("gate", "lstm"), quantization=section.get("quantization", "uniform"))
    # Runs saved before the model graph have no block names; their layout (every block of the
    # registered ResNets but the first) is the one the graph finds.
    if section.get("blocks", net.block_names) != net.block_names:
        raise CheckpointError(f"config.json: its gated blocks ({section['blocks']}) are not the ones the graph finds "
                              f"in its network ({net.block_names}); retrain the run with this version")
    return net


def _summary(config: RunConfig) -> list[tuple[str, str]]:
    choices = ", ".join("skip" if c == 0 else "full" if c == FULL else f"{c} bits" for c in config.section["choices"])
    return [("choices", choices), ("target", f"{config.recipe.get('target', 0):g}% of the full-precision BitOps")]


DFS = "dfs"


@dataclass
class DFSSection:
    """The ``section`` of a DFS run's config: the gate's shape."""

    choices: list[int] = setting(check=ListOf(Int(0, FULL), min_len=2, unique=True),
                                 help="the gates' choices: 0 skips a block, 1-32 bits")
    embedding: int = setting(check=Int(1), help="channels of the gate's input projection")
    hidden: int = setting(check=Int(1), help="the gate LSTM's hidden size")
    blocks: list[str] | None = setting(None, check=Optional(ListOf(Str(empty=True))),
                                       help="the gated residual blocks, as the graph names them (absent in runs "
                                            "saved before the model graph)")
    gate: str = setting("lstm", check=Str(GATES), help="the gate's kind (absent in runs saved before issue 18: lstm)")
    quantization: str = setting("uniform", check=Str(SCHEMES),
                                help="how bit-widths were simulated in training: uniform (the paper's) or int8 "
                                     "(as the int8 kernels compute; absent before issue 18: uniform)")


def _check(config: RunConfig) -> None:
    try:
        check_executable(check_choices(config.section["choices"]), config.section.get("quantization", "uniform"))
    except ValueError as e:
        raise ValueError(f"section.choices: {e}") from None
    recipe = config.recipe.get("choices")
    if recipe is not None and list(recipe) != list(config.section["choices"]):
        raise ValueError(f"section.choices {config.section['choices']} and recipe.choices {recipe} disagree; the "
                         "gates were trained with one list")


register_kind(RunKind(DFS, DFSNet, _describe, _build, _summary, noun="a DFS run", made_by="`dynscale dfs train`",
                      used_by="`dynscale dfs sweep`", section=DFSSection, check=_check))
