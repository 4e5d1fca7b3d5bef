"""Data-parallel training on PyTorch's own engine: `torchrun` starts the processes,
`torch.distributed` connects them, `DistributedDataParallel` averages the gradients.

    torchrun --standalone --nproc_per_node N -m bilm train ...          N processes on this machine
    torchrun --nnodes M --nproc_per_node N --rdzv-backend c10d \\
             --rdzv-endpoint HOST:PORT --rdzv-id RUN -m bilm train ...  on each of M machines

torchrun gives every process RANK, LOCAL_RANK and WORLD_SIZE; `setup` reads them and joins the
group: `nccl` on CUDA (one GPU per process, cuda:LOCAL_RANK), `gloo` on the CPU. Without them
(a plain `bilm train`) it returns `Group()`, a group of one whose every method is the identity,
so the trainer runs one code path either way.

What each rank does: its own rows of the batch (data.StreamBatches / SentenceBatches take
`rank, world`); the same model, optimizer and learning rate (DDP broadcasts rank 0's weights and
averages the gradients, so the clipped norm is the global one). Everything a decision depends on
is agreed: the loss weights each rank by its share of the batch's tokens, the wall clock that
`--max-minutes`, the schedule and periodic saves read is the ranks' mean, validation sums the
ranks' shards. So every rank takes the same decisions, and only rank 0 writes (checkpoints,
metrics.jsonl, logs, progress bars).
"""

from __future__ import annotations

import gc
import os
from contextlib import contextmanager

import torch
from torch import nn

from .errors import BilmError


def launched() -> bool:
    """True inside a process that torchrun started with more than one process in all."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main() -> bool:
    """Rank 0 (or no torchrun at all): the process that writes and prints."""
    return int(os.environ.get("RANK", "0")) == 0


class Group:
    """One process: nothing to share, every method is the identity."""

    rank, local_rank, world = 0, 0, 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module, loss_fn):
        """The callable that computes `loss, state = loss_fn(batch, state)` for training."""
        return loss_fn

    def share(self, loss: torch.Tensor, tokens: int) -> tuple[torch.Tensor, int]:
        """This rank's loss weighted by its share of the tokens, and the tokens of all ranks."""
        return loss, tokens

    def mean(self, value: float) -> float:
        """The mean of `value` over the ranks (the same number on every rank)."""
        return value

    def sum(self, *values: float) -> list[float]:
        return list(values)

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        """A carried state (layers, B, H) of every rank, as (layers, world * B, H) in rank order."""
        return t

    def rows(self, t: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a gathered state: the inverse of `gather_rows`."""
        return t

    @contextmanager
    def main_first(self):
        """Rank 0 of each machine runs the block first (e.g. tokenizes into the cache); the others then."""
        yield

    def close(self, sync: bool = False) -> None:
        pass


ONE = Group()


class ProcessGroup(Group):
    """One of `world` processes joined by torch.distributed."""

    def __init__(self, device: torch.device):
        self.rank = int(os.environ["RANK"])
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.world = int(os.environ["WORLD_SIZE"])
        self.device = device
        backend = "nccl" if device.type == "cuda" else "gloo"
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group(backend)

    def wrap(self, model, loss_fn):
        # An adaptive softmax cluster with no target in a rank's batch gets no gradient there: DDP must look for those.
        sometimes_unused = any(isinstance(m, nn.AdaptiveLogSoftmaxWithLoss) for m in model.modules())
        return nn.parallel.DistributedDataParallel(_Loss(model, loss_fn), find_unused_parameters=sometimes_unused)

    def _all_reduce(self, values: list[float], dtype=torch.float64) -> torch.Tensor:
        t = torch.tensor(values, dtype=dtype, device=self.device)
        torch.distributed.all_reduce(t)
        return t

    def share(self, loss, tokens):
        total = int(self._all_reduce([tokens], torch.int64).item())
        return loss * (self.world * tokens / max(total, 1)), total

    def mean(self, value):
        return float(self._all_reduce([value]).item()) / self.world

    def sum(self, *values):
        return [type(v)(r) for v, r in zip(values, self._all_reduce(list(values)).tolist(), strict=True)]

    def gather_rows(self, t):
        parts = [torch.empty_like(t) for _ in range(self.world)]
        torch.distributed.all_gather(parts, t.contiguous())
        return torch.cat(parts, dim=1)

    def rows(self, t):
        per = t.size(1) // self.world
        return t[:, self.rank * per : (self.rank + 1) * per].contiguous()

    @contextmanager
    def main_first(self):
        if self.local_rank != 0:
            torch.distributed.barrier()
        yield
        if self.local_rank == 0:
            torch.distributed.barrier()

    def close(self, sync: bool = False) -> None:
        """Leave the group; `sync`: first wait for every rank (the run ended well on all of them)."""
        if torch.distributed.is_initialized():
            if sync:
                torch.distributed.barrier()
            gc.collect()  # anything else still holding the group (a DDP reducer) goes before it
            torch.distributed.destroy_process_group()


class _Loss(nn.Module):
    """The model's loss as a module's forward, for DistributedDataParallel to wrap."""

    def __init__(self, model: nn.Module, loss_fn):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch, state):
        return self.loss_fn(batch, state)


def setup(device: torch.device) -> tuple[Group, torch.device]:
    """The group torchrun asked for (a group of one without it), and this process's device."""
    if not launched():
        return ONE, device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise BilmError(
                f"process {local_rank} of this machine has no GPU of its own ({torch.cuda.device_count()} visible): "
                "start at most one process per GPU (--nproc_per_node)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return ProcessGroup(device), device


def per_rank_batch(batch_size: int, saved_world: int, world: int) -> int:
    """The rows per process that keep a run's effective batch (`batch_size` x `saved_world`) on `world`
    processes; the saved per-process size where it does not divide."""
    total = batch_size * saved_world
    return total // world if total % world == 0 else batch_size


def seed_rank(seed: int, rank: int, step: int) -> None:
    """Ranks after 0 draw their own dropout masks (rank 0 keeps the run's generator)."""
    if rank:
        torch.manual_seed((seed * 1_000_003 + rank * 7_919 + step) % 2**63)
