"""What the executor runs a piece of the network with, per runtime: float32 and int8 kernels of a
gated block, its skip path, and the fixed segments between the blocks.

- ``torch``: eager PyTorch in channels-last memory; int8 through PyTorch's quantized engine
  (``torch.ao`` FX on the block's dense copy, calibrated on training inputs), the input
  quantized and the output dequantized outside the int8 graph (spans ``dfs.quantize``).
- ``onnxruntime``: an ONNX Runtime session per piece (float32, or QDQ int8 calibrated on the
  same inputs); its QuantizeLinear/DequantizeLinear run inside the session.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..eval.baselines import int8_onnx, int8_torch
from ..eval.profiling import span
from ..eval.runtime import check_onnx_equal, onnx_bytes, onnxruntime_session

RUNTIMES = ("torch", "onnxruntime")  # where an executor runs its pieces
Kernel = Callable[[torch.Tensor], torch.Tensor]


class OrtKernel:
    """A piece of the network in an ONNX Runtime session: a torch tensor in (made contiguous
    NCHW), a torch tensor out (sharing the session's output memory).

    Args:
        model_bytes: the ONNX model (input ``input``).
        threads: intra-op threads.
    """

    def __init__(self, model_bytes: bytes, threads: int = 1) -> None:
        self.model_bytes = model_bytes
        self.session = onnxruntime_session(model_bytes, threads)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with span("dfs.kernel"):
            return torch.from_numpy(self.session.run(None, {"input": x.contiguous().numpy()})[0])


def ort_float(module: nn.Module, batches: Sequence[torch.Tensor], what: str, threads: int = 1) -> OrtKernel:
    """``module`` in ONNX Runtime at float32, checked against PyTorch on a calibration batch."""
    kernel = OrtKernel(onnx_bytes(module, batches[0][:2]), threads)
    check_onnx_equal(kernel.session, module, batches[0][:8], what)
    return kernel


def ort_quantized(module: nn.Module, batches: Sequence[torch.Tensor], threads: int = 1) -> OrtKernel:
    """``module`` in ONNX Runtime, statically quantized to int8 on ``batches``."""
    return OrtKernel(int8_onnx(module, batches[0], batches), threads)


class TorchKernel:
    """A float module in eager PyTorch, under the span ``dfs.kernel``."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with span("dfs.kernel"):
            return self.module(x)


class TorchQuantized:
    """A float module on PyTorch's int8 kernels: quantize the input (quint8, at its calibrated
    range), the int8 graph, dequantize the output.

    Args:
        module: the float module (channels-last), not changed.
        batches: calibration inputs, channels-last.
    """

    def __init__(self, module: nn.Module, batches: Sequence[torch.Tensor]) -> None:
        self.int8 = int8_torch(module, batches[0], batches, quantized_io=True)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with span("dfs.quantize"):
            q = torch.quantize_per_tensor(x, self.int8.input_scale, self.int8.input_zero_point, torch.quint8)
        with span("dfs.kernel"):
            q = self.int8(q)
        with span("dfs.quantize"):
            return q.dequantize()


def float_kernel(runtime: str, module: nn.Module, batches: Sequence[torch.Tensor], what: str,
                 threads: int = 1) -> Kernel:
    """``module`` at float32 on ``runtime`` (one of :data:`RUNTIMES`)."""
    if runtime == "torch":
        return TorchKernel(module)
    return ort_float(module, batches, what, threads)


def int8_kernel(runtime: str, module: nn.Module, batches: Sequence[torch.Tensor], threads: int = 1) -> Kernel:
    """``module`` on the int8 kernels of ``runtime``, calibrated on ``batches``."""
    if runtime == "torch":
        return TorchQuantized(module, batches)
    return ort_quantized(module, batches, threads)


def has_layers(module: nn.Module) -> bool:
    """Whether ``module`` holds a convolution or linear layer (else it is not worth a session)."""
    return any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in module.modules())
