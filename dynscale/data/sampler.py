"""A distributed batch sampler: each process takes its share of every global batch.

Every process draws the same order (the same seed or generator state) and the same global
batches; process ``rank`` of ``processes`` keeps the examples ``rank, rank + processes, …`` of
each. The union of the shares is the global batch, so a step of N processes sees what one
process sees with the same global batch, and a saved position (epoch, batch) means the same
for any process count: a run resumes across a changed number of processes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from torch.utils.data import BatchSampler, Sampler


class ShardedBatchSampler(Sampler[list[int]]):
    """This process's share of each batch of ``batches``.

    A last global batch with fewer examples than processes is left out (every process must
    take part in every step); the trainer weighs each share by its size so that unequal
    shares of a last batch still add up to the global batch's mean loss.

    Args:
        batches: the global batches (lists of indices), e.g. a ``BatchSampler``.
        rank: this process, in [0, processes).
        processes: how many processes share each batch.
    """

    def __init__(self, batches: Iterable[list[int]], rank: int, processes: int) -> None:
        if not 0 <= rank < processes:
            raise ValueError(f"rank {rank} is not in [0, {processes})")
        self.batches, self.rank, self.processes = batches, rank, processes
        self.last_share: tuple[int, int, int] | None = None  # (rank, processes, global size) of the last batch

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            if len(batch) < self.processes:
                return
            self.last_share = (self.rank, self.processes, len(batch))
            yield batch[self.rank::self.processes]

    def __len__(self) -> int:
        n = len(self.batches)
        if n and isinstance(self.batches, BatchSampler) and not self.batches.drop_last:
            last = len(self.batches.sampler) - (n - 1) * self.batches.batch_size  # the last global batch's size
            if last < self.processes:
                return n - 1
        return n
