"""What a user would pick instead of a dynamic method, as operating points every sweep can hold:
the dense network in eager PyTorch and in ONNX Runtime, and the same network statically
quantized to int8 — in ONNX Runtime (QDQ, calibrated) and in PyTorch's x86 quantized engine
(``torch.ao`` FX graph mode, convolutions fused with their batch norms and ReLUs).

Every point here executes what it counts: the int8 ones run int8 kernels, so their speed is
measured, not simulated. Their BitOps ratio is counted as (8/32)² of the dense network's.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..cost import count_macs
from .engine import Candidate, CurveSpec, Measurement
from .runtime import (
    channels_last_input,
    check_onnx_equal,
    onnx_bytes,
    onnxruntime_session,
    require_onnxruntime,
    torch_runner,
)
from .timing import Runner

INT8_BITOPS = (8 / 32) ** 2  # an int8 multiply-accumulate against a float32 one, counted
EVAL_BATCH = 500
INT8_CALIBRATION = (4, 128)  # training batches (count, size) that set static int8's activation ranges


def int8_calibration(train_x: torch.Tensor) -> list[torch.Tensor]:
    """The training batches that calibrate every static int8 graph of a sweep: the first
    ``INT8_CALIBRATION`` batches (the same examples for every network compared)."""
    count, size = INT8_CALIBRATION
    return [train_x[i * size:(i + 1) * size].cpu() for i in range(count) if i * size < len(train_x)]


@dataclass
class Baselines:
    """The baselines of one network.

    Attributes:
        reference: the dense network; timed in eager PyTorch (runtime ``torch``) and in ONNX
            Runtime (``onnxruntime``). Sweeps relate every point's costs to it.
        int8: static int8 points (ONNX Runtime QDQ on ``onnxruntime``, PyTorch x86 on ``torch``),
            those that could be built.
        notes: one line per baseline that could not be built, and why (to print).
    """

    reference: Candidate
    int8: list[Candidate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def curves(self, name: str, data: str | None = None) -> list[tuple[CurveSpec, list[Candidate]]]:
        """The baselines as the engine's curves: the dense network, then static int8."""
        out = [(CurveSpec(f"{name}: dense", name, data, "dense"), [self.reference])]
        if self.int8:
            out.append((CurveSpec(f"{name}: static int8", name, data, "static int8"), list(self.int8)))
        return out


def _accuracy(predict: Callable[[torch.Tensor], np.ndarray], x: torch.Tensor, y: torch.Tensor) -> float:
    logits = np.concatenate([predict(x[i:i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)])
    return float((logits.argmax(1) == y.numpy()).mean())


def _candidate(method: str, knobs: dict, label: str, predict: Callable[[torch.Tensor], np.ndarray], macs: float,
               params: int, bitops: float, runners: dict[str, Callable[[], Runner]]) -> Candidate:
    def measure(x: torch.Tensor, y: torch.Tensor) -> Measurement:
        return Measurement(_accuracy(predict, x, y), macs, params, bitops)

    def runner(runtime: str) -> Runner | None:
        make = runners.get(runtime)
        return make() if make is not None else None

    return Candidate(method, knobs, label, measure, runner)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silences the quantizers' advice and deprecation notes (logged and warned on every call)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def int8_onnx(plain: nn.Module, example: torch.Tensor, calibration: Sequence[torch.Tensor]) -> bytes:
    """The network as a statically quantized ONNX graph (QDQ: int8 weights per channel, uint8
    activations), its activation ranges calibrated on ``calibration`` batches (NCHW)."""
    return quantize_onnx(onnx_bytes(plain, example[:2]), [{"input": x} for x in calibration])


def quantize_onnx(model_bytes: bytes, calibration: Sequence[dict[str, torch.Tensor]]) -> bytes:
    """A float ONNX graph statically quantized (QDQ: int8 weights per channel, uint8
    activations), its activation ranges calibrated on ``calibration`` feeds (input name ->
    batch).

    The graph is pre-processed first (shape inference and ONNX Runtime's clean-up): without it
    the ``Identity`` nodes the exporter writes (for parameters it deduplicates, and for identity
    shortcuts) keep ONNX Runtime from fusing the quantize/dequantize pairs around convolutions,
    which then run in float32 between a dequantize and a quantize (an untrained ResNet-38 ran
    5× slower at batch 1, slower than in float32).
    """
    require_onnxruntime()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{k: v.contiguous().numpy() for k, v in feed.items()} for feed in calibration])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp, _quiet():
        source, prepared, target = (Path(tmp) / name for name in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        source.write_bytes(model_bytes)
        quant_pre_process(str(source), str(prepared))
        quantize_static(str(prepared), str(target), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
        return target.read_bytes()


def int8_candidate(plain: nn.Module, example: torch.Tensor, calibration: Sequence[torch.Tensor], *,
                   macs: float | None = None, params: int | None = None, bitops: float = INT8_BITOPS,
                   method: str = "static int8", knobs: dict | None = None, label: str = "int8 (ONNX Runtime QDQ)",
                   threads: int = 1) -> Candidate:
    """A plain network statically quantized to int8 and run in ONNX Runtime (QDQ), as a candidate
    timed on ``onnxruntime`` only.

    Args:
        plain: the dense network (plain layers, eval mode).
        example: real inputs the graph is exported with.
        calibration: training batches that set the activation ranges.
        macs, params: its counted costs (default: counted on ``plain``).
        bitops: its BitOps ratio (default: an int8 network's against its float32 self).
        method, knobs, label: how the point is named.
        threads: ONNX Runtime's intra-op threads.
    """
    plain = plain.eval()
    macs = count_macs(plain, example[:1]) if macs is None else macs
    params = sum(p.numel() for p in plain.parameters()) if params is None else params
    session = onnxruntime_session(int8_onnx(plain, example, calibration), threads)
    return _candidate(method, dict(knobs or {"runtime": "onnxruntime"}), label,
                      lambda x: session.run(None, {"input": x.numpy()})[0], macs, params, bitops,
                      {"onnxruntime": lambda: Runner(lambda batch: session.run(None, {"input": batch}),
                                                     convert=lambda t: t.numpy())})


@torch.no_grad()
def int8_torch(plain: nn.Module, example: torch.Tensor, calibration: Iterable[torch.Tensor],
               quantized_io: bool = False) -> nn.Module:
    """The network statically quantized in PyTorch's x86 engine (``torch.ao`` FX graph mode:
    int8 weights per channel, uint8 activations, convolutions fused with batch norm and ReLU),
    calibrated on ``calibration`` batches. Its inputs run fastest in channels-last memory.

    Args:
        plain: the float network (plain layers), not changed.
        example: an input batch.
        calibration: batches that set the activation ranges.
        quantized_io: take a quantized input and return a quantized output, so that a caller
            can keep the (de)quantization apart (a block inside a float network): the input's
            quint8 range, as the input's observer would set it, is then in the module's
            ``input_scale`` and ``input_zero_point``.

    Raises:
        Exception: whatever FX tracing or the quantizer raises for a network it cannot take.
    """
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    mapping = get_default_qconfig_mapping("x86")
    custom = PrepareCustomConfig()
    if quantized_io:
        custom = custom.set_input_quantized_indexes([0]).set_output_quantized_indexes([0])
    with _quiet():
        observer = mapping.global_qconfig.activation()  # the input's range, as the graph would observe it
        prepared = prepare_fx(copy.deepcopy(plain).eval(), mapping, (example[:1],), prepare_custom_config=custom)
        for x in calibration:
            prepared(x)
            if quantized_io:
                observer(x)
        quantized = convert_fx(prepared).eval()
        if quantized_io:
            scale, zero_point = observer.calculate_qparams()
            quantized.input_scale, quantized.input_zero_point = float(scale), int(zero_point)
        return quantized


def dense_baselines(plain: nn.Module, example: torch.Tensor, calibration: Sequence[torch.Tensor], *,
                    name: str = "network", int8: bool = True, threads: int = 1) -> Baselines:
    """The dense network and, with ``int8``, its static int8 versions, as candidates.

    Args:
        plain: the dense network (plain layers, eval mode), e.g. ``dynscale.export.dense``'s.
        example: real test inputs; ONNX Runtime's outputs are checked against PyTorch's on them.
        calibration: training batches that set the int8 activation ranges.
        name: the network's name, for messages.
        int8: also build the static int8 points.
        threads: ONNX Runtime's intra-op threads (the timing's).

    Returns:
        The :class:`Baselines`. A static int8 version that cannot be built for this network
        (a quantizer refusing an operation) is left out with a note saying why.

    Raises:
        DynscaleError: when ONNX Runtime is missing or computes other outputs than PyTorch.
    """
    plain = plain.eval()
    macs = count_macs(plain, example[:1])
    params = sum(p.numel() for p in plain.parameters())
    fp32 = onnxruntime_session(onnx_bytes(plain, example[:2]), threads)
    check_onnx_equal(fp32, plain, example, name)

    def eager(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return plain(x).numpy()

    reference = _candidate("dense", {}, "dense", eager, macs, params, 1.0,
                           {"torch": lambda: torch_runner(plain),
                            "onnxruntime": lambda: Runner(lambda batch: fp32.run(None, {"input": batch}),
                                                          convert=lambda t: t.numpy())})
    out = Baselines(reference)
    if not int8:
        return out
    out.int8.append(int8_candidate(plain, example, calibration, macs=macs, params=params, threads=threads))
    try:
        quantized = int8_torch(plain, example, calibration)
    except Exception as e:  # the quantizer's own error says which operation it cannot take
        out.notes.append(f"{name}: no static int8 in PyTorch ({type(e).__name__}: {' '.join(str(e).split())[:200]})")
        return out

    def quantized_predict(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return quantized(channels_last_input(x)).numpy()

    out.int8.append(_candidate("static int8", {"runtime": "torch"}, "int8 (PyTorch x86)", quantized_predict, macs,
                               params, INT8_BITOPS, {"torch": lambda: torch_runner(quantized, channels_last=True)}))
    return out
