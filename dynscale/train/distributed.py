"""Training in several processes: the trained module's ``DistributedDataParallel`` wrapper and
the record of how a run was trained. The process group itself, and what every process does
together (rank 0 checks and writes, the others wait), are in :mod:`dynscale.parallel`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..schema import Int, Optional, Str, setting


class Replica(DistributedDataParallel):
    """``DistributedDataParallel`` that also answers the wrapped module's own attributes (a
    recipe reads ``model.mode`` or ``model.last_cost``), so a recipe's step runs unchanged on
    the replica; calling it still goes through DDP's forward, which prepares the gradient
    all-reduce."""

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["_modules"]["module"], name)


@dataclass
class ExecutionRecord:
    """How a run was trained, as its ``config.json`` records it (``training.execution``)."""

    device: str = setting("cpu", "the device trained on (cpu, cuda:N)", Str())
    amp: str | None = setting(None, "the autocast type (bfloat16, float16), None without mixed precision",
                              Optional(Str(("bfloat16", "float16"))))
    channels_last: bool = setting(False, "images and weights in channels-last memory format")
    world_size: int = setting(1, "training processes", Int(1))
    backend: str | None = setting(None, "the process group's backend (gloo, nccl)", Optional(Str()))
    global_batch: int = setting(1, "examples per optimizer step, over all processes", Int(1))
    process_batch: int = setting(1, "examples per optimizer step in one process (the largest share)", Int(1))


def replicate(module: nn.Module, device: torch.device, unused_parameters: bool) -> Replica:
    """``module`` wrapped for data-parallel training (its parameters already on ``device``)."""
    return Replica(module, device_ids=[device.index] if device.type == "cuda" else None,
                   find_unused_parameters=unused_parameters)
