"""Runtimes an operating point is timed on: eager PyTorch (on the timing's device), and ONNX
Runtime (what an edge deployment ships, on the CPU), with the same thread count and full graph
optimisation."""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..device import model_device, place
from ..errors import DynscaleError
from ..runtime import cpu_session
from .timing import RUNTIMES, Runner, check_runtime

# Largest allowed difference between ONNX Runtime's and PyTorch's logits, relative to their scale.
ONNX_TOLERANCE = 1e-4


def parse_runtimes(text: str) -> list[str]:
    """Parses ``"torch,onnxruntime"``.

    Raises:
        ValueError: for an empty list or an unknown runtime.
    """
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ValueError(f"give at least one runtime, from {', '.join(RUNTIMES)}")
    return [check_runtime(n) for n in dict.fromkeys(names)]


def timing_copy(modules: object, channels_last: bool, device: torch.device | str | None = None) -> object:
    """The modules to time: themselves, or a deep copy converted to channels-last memory and
    on ``device`` (the caller's modules keep their memory format and device). Sharing between
    the given modules is kept in the copy.

    Args:
        modules: a module, or modules in a list, tuple or object (an adaptive graph).
        channels_last: time in channels-last memory.
        device: where to time (a timing's ``device``); None: where the modules are.

    Returns:
        ``modules`` when nothing changes, else the converted copy.
    """
    device = torch.device(device) if device is not None else None
    moves = device is not None and any(model_device(m) != device for m in _modules_in(modules))
    if not channels_last and not moves:
        return modules
    copied = copy.deepcopy(modules)
    for module in _modules_in(copied):
        place(module, device if device is not None else model_device(module), channels_last)
    return copied


def _modules_in(value: object) -> list[nn.Module]:
    if isinstance(value, nn.Module):
        return [value]
    if isinstance(value, (list, tuple)):
        return [m for v in value for m in _modules_in(v)]
    return [m for v in vars(value).values() for m in _modules_in(v)] if hasattr(value, "__dict__") else []


def channels_last_input(x: torch.Tensor) -> torch.Tensor:
    """A 4-D batch in channels-last memory (other tensors unchanged)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def torch_runner(forward: Callable[[torch.Tensor], object], prepare: Callable[[], None] | None = None,
                 channels_last: bool = False, device: torch.device | None = None) -> Runner:
    """A runner calling ``forward`` in eager PyTorch (gradients are off while timing).

    Args:
        forward: a module, or a function running one (then give ``device``).
        prepare: called before each timed block.
        channels_last: feed 4-D batches in channels-last memory.
        device: where ``forward`` computes; None: the module's device (the CPU for a function).
    """
    if device is None:
        device = model_device(forward) if isinstance(forward, nn.Module) else torch.device("cpu")
    return Runner(forward, prepare, channels_last_input if channels_last else None, device)


def require_onnxruntime():
    """Imports ONNX Runtime.

    Raises:
        DynscaleError: with the install command when it is missing.
    """
    try:
        import onnxruntime
    except ImportError:
        raise DynscaleError("ONNX Runtime is not installed; install it with `pip install onnxruntime onnx` "
                            "or choose --runtime torch") from None
    return onnxruntime


def onnx_bytes(model: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...], opset: int = 17,
               input_names: tuple[str, ...] = ("input",), output_names: tuple[str, ...] = ("logits",)) -> bytes:
    """Serialises a plain network as ONNX with a dynamic batch dimension on every input and
    output (by default input ``input``, output ``logits``), with the TorchScript exporter (it
    needs no onnxscript).

    Args:
        example: an input batch, or one per input of a network of several inputs.
        input_names, output_names: the graph's names, one per input and output.
    """
    buffer = io.BytesIO()
    args = example if isinstance(example, tuple) else (example,)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
        torch.onnx.export(model.eval(), args, buffer, dynamo=False, opset_version=opset,
                          input_names=list(input_names), output_names=list(output_names),
                          dynamic_axes={name: {0: "batch"} for name in (*input_names, *output_names)})
    return buffer.getvalue()


def onnxruntime_session(model_bytes: bytes, threads: int = 1):
    """An ONNX Runtime CPU session with ``threads`` intra-op threads, one inter-op thread and
    every graph optimisation on (the deploy runtime's sessions: ``dynscale.runtime.cpu_session``)."""
    require_onnxruntime()
    return cpu_session(model_bytes, threads)


def check_onnx_equal(session, model: nn.Module, example: torch.Tensor | dict[str, torch.Tensor], what: str,
                     names: tuple[str, ...] = ("logits",)) -> None:
    """Checks that ONNX Runtime computes what PyTorch does on ``example``, every output.

    Args:
        example: the input batch (the graph's input ``input``), or a batch per input name.
        names: the outputs' names, for the message.

    Raises:
        DynscaleError: naming the output and its largest difference.
    """
    feeds = example if isinstance(example, dict) else {"input": example}
    with torch.no_grad():
        expected = model.eval()(*feeds.values())
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = session.run(None, {k: v.contiguous().numpy() for k, v in feeds.items()})
    for i, (want, have) in enumerate(zip(expected, got, strict=True)):
        want = want.numpy()
        scale = max(1.0, float(np.abs(want).max()))
        diff = float(np.abs(have - want).max()) if have.shape == want.shape else float("inf")
        if not diff <= ONNX_TOLERANCE * scale:
            output = f" ({names[i] if i < len(names) else i})" if len(expected) > 1 else ""
            raise DynscaleError(f"{what}{output}: ONNX Runtime's outputs differ from PyTorch's by {diff:.3g}; "
                                "this export cannot be used, please report it")


def on_cpu(model: nn.Module) -> nn.Module:
    """``model`` where it is on the CPU, else a copy there (the model stays on its device)."""
    return model if model_device(model).type == "cpu" else copy.deepcopy(model).cpu()


def onnxruntime_runner(model: nn.Module, example: torch.Tensor, threads: int = 1, what: str = "model") -> Runner:
    """Exports a plain network to ONNX, checks ONNX Runtime's outputs against PyTorch's on
    ``example`` (real test inputs), and returns a runner of the session. ONNX Runtime runs on
    the CPU: a model on a GPU is exported from a CPU copy, and the runner times on the CPU."""
    model, example = on_cpu(model), example.cpu()
    session = onnxruntime_session(onnx_bytes(model, example[:2]), threads)
    check_onnx_equal(session, model, example, what)
    return Runner(lambda batch: session.run(None, {"input": batch}), convert=lambda x: x.numpy())
