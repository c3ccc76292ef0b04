"""Single-process and ``torchrun`` (multi-device, multi-node) training set-up.

Launched by ``torchrun``, each process finds ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` in its environment; we then join the process group (NCCL on
GPUs, gloo on CPU), bind the process to GPU ``LOCAL_RANK`` and split the
*global* batch evenly across the ranks. Without those variables everything
runs in one process and the collective helpers below do nothing.

Data order: :class:`InfiniteBatchSampler` draws global batch ``k`` as positions
``[k·B, (k+1)·B)`` of an endless sequence made of one seeded permutation of the
training set per epoch; rank ``r`` takes its ``B / world_size`` share of that
batch. The sampler's whole state is therefore the number of batches already
drawn, which is what makes ``--resume`` exact.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist

from medgen.core.device import resolve_device
from medgen.core.errors import UsageError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: its rank among ``world_size`` and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes logs, samples and checkpoints and shows the progress bar."""
        return self.rank == 0


def setup(device_request: str = "auto") -> DistInfo:
    """Join the ``torchrun`` process group if launched by it; pick this process's device."""
    kind = resolve_device(device_request)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        if kind.type == "cuda":
            return DistInfo(device=torch.device("cuda", torch.cuda.current_device()))
        return DistInfo(device=kind)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if kind.type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        kwargs = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30), **kwargs)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_batch_size(global_batch: int, world_size: int) -> int:
    """Per-rank batch; the global batch must split evenly."""
    if global_batch < 1:
        raise UsageError(f"--batch {global_batch}: must be at least 1")
    if global_batch % world_size:
        raise UsageError(
            f"--batch {global_batch} is the global batch and must be divisible by the number of processes ({world_size})"
        )
    return global_batch // world_size


def any_rank(flag: bool | torch.Tensor, info: DistInfo) -> bool:
    """True if ``flag`` is set on any rank (all ranks must call this together)."""
    if not info.distributed:
        return bool(flag)
    t = torch.as_tensor(flag, dtype=torch.int32, device=info.device).reshape(1).clone()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def max_over_ranks(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Element-wise maximum of ``t`` over ranks (identity in one process)."""
    if info.distributed:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


class InfiniteBatchSampler:
    """Endless, seeded, resumable batches of indices into a data set of ``n`` items.

    Yields this rank's list of indices for global batches ``start_batch``,
    ``start_batch + 1``, ... (see the module docstring). Usable as a
    ``DataLoader`` ``batch_sampler``.
    """

    def __init__(
        self,
        n: int,
        global_batch: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
    ) -> None:
        if n < 1:
            raise UsageError("the training split is empty")
        self.n = n
        self.global_batch = global_batch
        self.local_batch = local_batch_size(global_batch, world_size)
        self.seed = seed
        self.rank = rank
        self.start_batch = start_batch
        self._cached: tuple[int, np.ndarray] | None = None

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The permutation of ``range(n)`` used in ``epoch``."""
        if self._cached is None or self._cached[0] != epoch:
            self._cached = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n))
        return self._cached[1]

    def position(self, batch: int) -> tuple[int, int]:
        """(epoch, index within epoch) where global batch ``batch`` starts."""
        return divmod(batch * self.global_batch, self.n)

    def global_batch_indices(self, batch: int) -> list[int]:
        epoch, pos = self.position(batch)
        order = self.epoch_order(epoch)
        out: list[int] = []
        while len(out) < self.global_batch:
            take = order[pos : pos + self.global_batch - len(out)]
            out.extend(int(i) for i in take)
            pos += len(take)
            if pos >= self.n:
                epoch, pos = epoch + 1, 0
                order = self.epoch_order(epoch)
        return out

    def __iter__(self) -> Iterator[list[int]]:
        batch = self.start_batch
        lo = self.rank * self.local_batch
        while True:
            yield self.global_batch_indices(batch)[lo : lo + self.local_batch]
            batch += 1
