"""Several processes as one command: ``torchrun --nproc_per_node=N -m dynscale …``.

torchrun starts N copies of the command with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` set. :func:`setup` joins them into one process group (gloo
for CPU tensors, nccl for GPU ones); rank 0 alone checks and writes outputs (:func:`on_main`)
while the others wait for its verdict, so every process stops together on an error. Without
torchrun every function here is a no-op for one process.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from .errors import DynscaleError

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one command."""

    rank: int = 0
    size: int = 1
    backend: str | None = None

    @property
    def main(self) -> bool:
        """Whether this process writes (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launched_size() -> int:
    """The process count torchrun asked for (1 without torchrun)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        size = 0
    if size < 1:
        raise DynscaleError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a process count; unset it, or launch "
                            "with torchrun --nproc_per_node=N")
    return size


def launched_rank() -> int:
    """This process's rank as torchrun gives it (0 without torchrun), before any group is joined."""
    try:
        return max(0, int(os.environ.get("RANK", "0")))
    except ValueError:
        return 0


def said_everywhere(message: str) -> DynscaleError:
    """The error of a check every process makes alike: rank 0 says it, the others stop quietly."""
    return DynscaleError(message) if launched_rank() == 0 else FollowerError(message)


def setup() -> World:
    """Joins the processes torchrun started (once; later calls return the same world).

    Returns:
        This process's rank and the process count (rank 0 of 1 without torchrun).
    """
    if dist.is_initialized() or launched_size() == 1:
        return world()
    backend = "gloo"
    if torch.cuda.is_available():  # GPU tensors (DDP's gradients) over nccl, the rest over gloo
        backend = "cpu:gloo,cuda:nccl"
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return world()


def world() -> World:
    """The current process group's world (one process when none is set up)."""
    if not dist.is_initialized():
        return World()
    return World(dist.get_rank(), dist.get_world_size(), str(dist.get_backend()))


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over the processes (``tensor`` itself for one process)."""
    if not world().distributed:
        return tensor
    reduced = tensor.detach().cpu().clone()  # small tensors: over gloo, wherever the model is
    dist.all_reduce(reduced)
    return reduced.to(tensor.device)


def broadcast_text(text: str | None) -> str | None:
    """Rank 0's ``text`` in every process (as UTF-8 bytes in a tensor: nothing is pickled)."""
    if not world().distributed:
        return text
    data = torch.tensor(list(text.encode()) if text is not None else [], dtype=torch.uint8)
    size = torch.tensor([len(data) if text is not None else -1], dtype=torch.int64)
    dist.broadcast(size, 0)
    if size.item() < 0:
        return None
    buffer = data if world().main else torch.empty(int(size.item()), dtype=torch.uint8)
    dist.broadcast(buffer, 0)
    return bytes(buffer.tolist()).decode()


class FollowerError(DynscaleError):
    """Rank 0 failed: the other processes stop with its message (which rank 0 prints)."""


def on_main(action: Callable[[], T]) -> T | None:
    """Runs ``action`` on rank 0 alone; the other processes wait for it.

    Returns:
        ``action``'s result on rank 0, None elsewhere.

    Raises:
        whatever ``action`` raised, on rank 0; :class:`FollowerError` with its message on the
        others, so that every process stops (none waits forever for a step rank 0 never takes).
    """
    if not world().distributed:
        return action()
    result, failure = None, None
    if world().main:
        try:
            result = action()
        except BaseException as e:
            failure = e
    message = broadcast_text((str(failure) or type(failure).__name__) if failure is not None else None)
    if failure is not None:
        raise failure
    if message is not None:
        raise FollowerError(message)
    return result


def main_first(action: Callable[[], T]) -> T:
    """Runs ``action`` on rank 0, then on the others (e.g. loading data rank 0 may download)."""
    first = on_main(action)
    return first if world().main else action()


def barrier() -> None:
    """Waits for every process (a no-op for one)."""
    if world().distributed:
        dist.barrier()


def teardown() -> None:
    """Leaves the process group :func:`setup` joined (a no-op without one)."""
    if dist.is_initialized():
        dist.destroy_process_group()
