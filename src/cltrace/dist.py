"""Running one cltrace command over several processes with ``torch.distributed``.

cltrace does not schedule work itself: ``torchrun --nproc-per-node N -m cltrace ...`` (or a
multi-node ``torchrun`` with a rendezvous, or Slurm running ``torchrun``) starts the processes
and sets ``RANK``, ``WORLD_SIZE`` and the rendezvous variables; commands that can share work
call :func:`start` and split their items with :func:`shard`. Item ``i`` goes to rank
``i % world_size``, so what is computed for an item never depends on the world size, and a run
restarted with another world size picks up the items still missing.

Without those variables everything here is a no-op for a world of one process.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

from cltrace.errors import CltraceError


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one run."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0, which merges the ranks' results and writes the shared files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world_from_env() -> World:
    """The world ``torchrun`` describes in ``RANK`` and ``WORLD_SIZE`` (one process otherwise)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    except ValueError as exc:
        raise CltraceError(
            f"RANK/WORLD_SIZE are not integers ({exc}); start cltrace with torchrun or unset them."
        ) from None
    if size < 1 or not 0 <= rank < size:
        raise CltraceError(
            f"RANK={rank} does not fit WORLD_SIZE={size}; start cltrace with torchrun or unset "
            "both."
        )
    return World(rank, size)


def start(device: str | None = None, timeout_s: float = 1800.0) -> World:
    """Join the process group when run under ``torchrun`` (gloo on CPU, nccl on CUDA)."""
    world = world_from_env()
    if not world.distributed:
        return world
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if device and str(device).startswith("cuda") else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return world


def local_device(device):
    """``cuda`` under torchrun means this rank's GPU: ``cuda:LOCAL_RANK``."""
    import torch

    local = int(os.environ.get("LOCAL_RANK", "0"))
    return torch.device("cuda", local) if device.type == "cuda" else device


def barrier(world: World) -> None:
    """Wait for every rank (nothing to wait for in a world of one)."""
    if world.distributed:
        import torch.distributed as dist

        dist.barrier()


def all_ok(world: World, ok: bool) -> bool:
    """True when every rank reports ``ok`` (so one rank's failure stops all of them cleanly)."""
    if not world.distributed:
        return ok
    import torch
    import torch.distributed as dist

    flag = torch.tensor([1 if ok else 0])
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def finish(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def shard(n_items: int, world: World) -> list[int]:
    """This rank's items: ``i`` with ``i % world.size == world.rank``."""
    return list(range(world.rank, n_items, world.size))
