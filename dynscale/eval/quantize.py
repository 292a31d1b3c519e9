"""Static int8 of a plain network on the CPU's real int8 kernels, calibrated on real inputs: in
ONNX Runtime (QDQ, weights int8 per channel, activations uint8, min/max calibration) and in
PyTorch's quantized engine (``torch.ao`` FX graph mode, the engine's default qconfig: on x86,
weights int8 symmetric per channel, activations uint8 from histograms in 7 bits).

Nothing here is saved: a quantized network is rebuilt from the float weights and the
calibration inputs whenever it is needed (never pickled).
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..errors import DynscaleError
from .runtime import require_onnxruntime


def ort_int8(model_bytes: bytes, batches: Sequence[torch.Tensor]) -> bytes:
    """An ONNX model (input ``input``, as :func:`dynscale.eval.runtime.onnx_bytes` writes it)
    statically quantized to int8 in the QDQ format: pre-processed first (shape inference and
    graph clean-up, without which ONNX Runtime leaves some convolutions in float), weights
    int8 per output channel, activations uint8, ranges by min/max over ``batches``.

    Args:
        model_bytes: the float model.
        batches: calibration inputs, ``(B, ...)`` each, in the model's layout.

    Returns:
        The quantized model's bytes (ONNX Runtime fuses its QDQ pairs into int8 kernels).
    """
    require_onnxruntime()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": x.contiguous().numpy()} for x in batches])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        source, prepared, target = (Path(tmp) / name for name in ("float.onnx", "prepared.onnx", "int8.onnx"))
        source.write_bytes(model_bytes)
        quant_pre_process(str(source), str(prepared))
        quantize_static(str(prepared), str(target), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
        return target.read_bytes()


def torch_engine() -> str:
    """PyTorch's quantized engine (``x86`` on x86 CPUs).

    Raises:
        DynscaleError: when this PyTorch has none.
    """
    engine = torch.backends.quantized.engine
    if engine in (None, "none") or engine not in torch.backends.quantized.supported_engines:
        raise DynscaleError("this PyTorch has no quantized engine for int8 kernels; time int8 in ONNX Runtime "
                            "(--runtime onnxruntime)")
    return engine


class TorchInt8(nn.Module):
    """A module converted to int8 by ``torch.ao`` FX graph mode.

    With ``quantized_io`` the converted graph takes a quantized input and returns a quantized
    output (the caller quantizes with :attr:`input_scale` / :attr:`input_zero_point` and
    dequantizes), so that the caller can time the (de)quantization apart; otherwise it takes
    and returns float tensors.

    Args:
        module: a plain float module (Conv2d, BatchNorm2d, ReLU, additions…), not changed.
        batches: calibration inputs ``(B, ...)`` (channels-last for convolutional inputs: the
            x86 kernels convert other layouts on every call).
        quantized_io: take and return quantized tensors.

    Raises:
        DynscaleError: when PyTorch has no quantized engine.
    """

    def __init__(self, module: nn.Module, batches: Sequence[torch.Tensor], quantized_io: bool = False) -> None:
        super().__init__()
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        mapping = get_default_qconfig_mapping(torch_engine())
        custom = PrepareCustomConfig()
        if quantized_io:
            custom = custom.set_input_quantized_indexes([0]).set_output_quantized_indexes([0])
        observer = mapping.global_qconfig.activation()  # the input's range, as the graph would observe it
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # torch.ao announces its deprecation on every call
            prepared = prepare_fx(copy.deepcopy(module).eval(), mapping, (batches[0][:1],),
                                  prepare_custom_config=custom)
            for x in batches:
                prepared(x)
                observer(x)
            self.graph = convert_fx(prepared)
            scale, zero_point = observer.calculate_qparams()
        self.input_scale, self.input_zero_point = float(scale), int(zero_point)
        self.quantized_io = quantized_io

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as the graph's quantized input (quint8 at the calibrated range)."""
        return torch.quantize_per_tensor(x, self.input_scale, self.input_zero_point, torch.quint8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)
