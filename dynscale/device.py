"""Where a model runs: ``--device auto|cpu|cuda[:N]``, mixed precision (``--amp``) and the
channels-last memory format (``--channels-last``), in one place for training, evaluation and
timing.

``auto`` picks the GPU when PyTorch sees one (under ``torchrun``: the process's own,
``LOCAL_RANK``), else the CPU. Mixed precision autocasts to bfloat16 where the device supports
it (every CPU PyTorch runs on, Ampere and later GPUs) and to float16 with a gradient scaler on
older GPUs.
"""

from __future__ import annotations

import contextlib
import os
import re
import timeit
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .parallel import launched_size
from .schema import Spec, setting

_DEVICE = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


class DeviceSpec(Spec):
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""

    takes = "auto, cpu, cuda or cuda:N"

    def check(self, value: object, where: str) -> str:
        if not isinstance(value, str):
            raise self.fail(value, where)
        match = _DEVICE.match(value.strip())
        if not match or (match.group(2) is not None and match.group(1) != "cuda"):
            raise self.fail(value, where)
        return value.strip()


@dataclass
class Execution:
    """How a training runs on the hardware: settings a resume may change (they are recorded in
    the run's ``config.json`` under ``training.execution``, never checked against a saved
    state)."""

    device: str = setting("auto", "where to train and evaluate: auto (a GPU if PyTorch sees one), cpu, cuda or "
                          "cuda:N", DeviceSpec())
    amp: bool = setting(False, "mixed precision: bfloat16 autocast (float16 with a gradient scaler on GPUs "
                        "without bfloat16)")
    channels_last: bool = setting(False, "images and convolution weights in the channels-last memory format")

    def __post_init__(self) -> None:
        self.device = DeviceSpec().check(self.device, "device")


def resolve_device(name: str = "auto") -> torch.device:
    """The device ``name`` means here.

    Args:
        name: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; under ``torchrun``, ``auto`` and ``cuda``
            mean this process's GPU (``LOCAL_RANK``).

    Raises:
        ValueError: for a malformed name, or a GPU that PyTorch does not see (naming the fix).
    """
    name = DeviceSpec().check(name, "--device")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"--device {name}: PyTorch sees no GPU here (torch {torch.__version__}, "
                         f"built {'with' if torch.version.cuda else 'without'} CUDA); use --device cpu or auto")
    count = torch.cuda.device_count()
    if ":" in name and launched_size() > 1:
        raise ValueError(f"--device {name}: under torchrun each process takes its own GPU (LOCAL_RANK); give "
                         "--device cuda or auto")
    # Under torchrun, process LOCAL_RANK takes GPU LOCAL_RANK (shared round-robin with fewer GPUs).
    index = int(name.split(":")[1]) if ":" in name else int(os.environ.get("LOCAL_RANK", 0)) % count
    if index >= count:
        raise ValueError(f"--device {name}: there {'is' if count == 1 else 'are'} {count} GPU"
                         f"{'' if count == 1 else 's'} (cuda:0 to cuda:{count - 1})")
    return torch.device("cuda", index)


def amp_dtype(device: torch.device) -> torch.dtype:
    """The autocast type of ``device``: bfloat16 where supported, else float16."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """Autocast on ``device`` to :func:`amp_dtype` when ``enabled``, else nothing."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype(device))


def grad_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler | None:
    """A gradient scaler where float16 needs one (mixed precision on a GPU without bfloat16)."""
    if enabled and amp_dtype(device) == torch.float16:
        return torch.amp.GradScaler(device.type)
    return None


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """``x`` on ``device`` (a 4-D image batch in channels-last memory format when asked)."""
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def place(model: nn.Module, device: torch.device, channels_last: bool = False) -> nn.Module:
    """Moves ``model`` to ``device``, in place, its 4-D weights in the channels-last memory format
    when asked, else the standard one."""
    return model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter or buffer (the CPU for a model with none)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def synchronize(device: torch.device) -> None:
    """Waits for ``device``'s queued work (a no-op on the CPU): call before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: torch.device) -> Callable[[], float]:
    """A clock for timing work on ``device``: on a GPU it first waits for the queued work
    (kernels run asynchronously, so an unsynchronised reading would time their launch, not
    their run); on the CPU it is the plain clock.

    Args:
        device: where the timed work runs.

    Returns:
        A function returning seconds, like ``timeit.default_timer``.
    """
    if device.type == "cpu":
        return timeit.default_timer

    def synchronized() -> float:
        synchronize(device)
        return timeit.default_timer()
    return synchronized

