"""Data-parallel training under ``torchrun``: the process group, and who does what in it.

``torchrun --nproc_per_node N -m aevb train ...`` starts N processes with ``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK`` set; :func:`session` joins them into one process group for the
training loop, which runs in every process on its share of each global minibatch; rank 0 alone
touches the run directory. Without ``torchrun`` every function here is the single process's
answer and costs nothing.
"""

from __future__ import annotations

import gc
import inspect
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from aevb.errors import AevbError

__all__ = ["all_gather_object", "all_reduce_sum", "broadcast_object", "is_main", "launched",
           "local_device", "on_main", "parallel", "rank", "seed_rank", "session", "shard",
           "sync_rows", "world_size"]

T = TypeVar("T")


def launched() -> bool:
    """Whether this process is one of several started by torchrun (or a launcher like it)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """The processes training together: the group's size inside :func:`session`, else 1."""
    return dist.get_world_size() if _active() else 1


def rank() -> int:
    """This process's rank: the group's, else ``$RANK`` of a torchrun launch (so that a command
    can leave what follows training to rank 0), else 0."""
    return dist.get_rank() if _active() else int(os.environ.get("RANK", "0")) if launched() else 0


def is_main() -> bool:
    """Rank 0: the one process that writes the run directory and prints."""
    return rank() == 0


def init_from_env() -> bool:
    """Join torchrun's process group (``env://``) unless already in one; True when this call
    joined. Gloo for CPU tensors, NCCL for CUDA ones, each process on GPU ``LOCAL_RANK``."""
    if not launched() or _active():
        return False
    if not dist.is_available():
        raise AevbError("launched with WORLD_SIZE > 1, but this PyTorch has no torch.distributed")
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend)
    return True


@contextmanager
def session() -> Iterator[None]:
    """The process group for the block (see :func:`init_from_env`), left at its end when this
    block joined it; nothing without torchrun. Nested sessions share the outer one's group."""
    joined = init_from_env()
    try:
        yield
        if joined:  # no rank leaves (closing its sockets) while another is still in a collective
            dist.barrier()
    finally:
        if joined:
            # DDP wrappers sit in reference cycles that hold the group: free them first, so
            # that the group's native threads are joined here and not at interpreter exit
            gc.collect()
            dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """``cuda:LOCAL_RANK`` for a CUDA ``device`` in a group (one GPU per process), else ``device``."""
    if device.type == "cuda" and world_size() > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def seed_rank(seed: int) -> None:
    """Seed rank r > 0's stream for the model's own noise with ``seed + 1_000_003 r``."""
    if rank():
        torch.manual_seed(seed + 1_000_003 * rank())


def shard(n: int) -> tuple[slice, int]:
    """This rank's share of a global minibatch of ``n``, strided (to spread a semi-supervised
    minibatch's labelled head), and how many; a rank left with none gets position 0 and count 0
    (it still joins the gradients' all-reduce, its loss weighted by 0)."""
    share = slice(rank(), n, world_size())
    count = len(range(n)[share])
    return (share, count) if count else (slice(0, 1), 0)


def parallel(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` under DistributedDataParallel in a group, else ``model``. Buffers are the same
    on every rank but per-example state (:func:`sync_rows`), so not broadcast; unused parameters
    are searched for (a classifier's, on a minibatch without labels)."""
    if world_size() == 1:
        return model
    ddp = torch.nn.parallel.DistributedDataParallel
    # torch 2.13 renamed broadcast_buffers (buffers are still made equal once, at the start)
    renamed = "forward_sync_buffers" in inspect.signature(ddp).parameters
    no_sync: dict[str, Any] = {"forward_sync_buffers" if renamed else "broadcast_buffers": False}
    return ddp(model, find_unused_parameters=True, **no_sync)


def sync_rows(buffers: list[torch.Tensor], index: torch.Tensor, share: slice, count: int
              ) -> None:
    """Per-example state (``buffers``, one row per training example) as after a single
    process's step on the global minibatch ``index``: each rank updated the rows of its
    ``share`` and hands them to the others."""
    if world_size() == 1 or not buffers:
        return
    mine = torch.zeros(len(index), dtype=torch.bool, device=index.device)
    mine[share] = count > 0
    for buffer in buffers:
        rows = buffer[index]
        keep = mine.view(-1, *[1] * (rows.dim() - 1))
        buffer[index] = all_reduce_sum(torch.where(keep, rows, torch.zeros_like(rows)))


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The elementwise sum of ``tensor`` over the ranks, in place and returned."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(value: T) -> T:
    """Rank 0's ``value`` (any picklable object) on every rank."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(value: T) -> list[T]:
    """Every rank's ``value``, in rank order, on every rank."""
    if world_size() == 1:
        return [value]
    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def on_main(work: Callable[[], T]) -> T:
    """``work()`` run on rank 0 alone, its result on every rank; the AevbError it raises is
    raised on every rank, so that all stop together rather than wait for rank 0."""
    if world_size() == 1:
        return work()
    result: Any = None
    error: AevbError | None = None
    if is_main():
        try:
            result = work()
        except AevbError as raised:
            error = raised
    result, error = broadcast_object((result, error))
    if error is not None:
        raise error
    return result
