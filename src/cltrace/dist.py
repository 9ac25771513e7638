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

import contextlib
import datetime
import os
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass

from cltrace.errors import CltraceError

CONTROL_TIMEOUT_S = 7 * 24 * 3600.0
"""How long a rank waits in cltrace's own collectives (all ranks ok, barriers): rank 0 may
explain features with an LLM for hours while the others wait for it. A rank that dies is
noticed at once all the same (its connections close, and torchrun stops the rest)."""
KILL_ENV = "CLTRACE_TEST_KILL_RANK"
"""Test hook: set to a rank number, that rank kills itself (SIGKILL) right after saving its
first stage-III score, as a crash would (see :func:`crash_point`). Never set otherwise."""
RESUME = "rerun the same command, with any number of processes, to resume"

_control = None  # a gloo group for cltrace's own collectives (CPU tensors under nccl too)


class PeerLostError(CltraceError):
    """Another process of the run stopped (failed or was killed) while this one waited for it."""


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

    global _control
    if not dist.is_initialized():
        backend = "nccl" if device and str(device).startswith("cuda") else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    if _control is None:
        patient = datetime.timedelta(seconds=CONTROL_TIMEOUT_S)
        _control = dist.new_group(backend="gloo", timeout=patient)
        with contextlib.suppress(ValueError):  # signals can be set in the main thread only
            signal.signal(signal.SIGTERM, _stopped_by_torchrun)
    return world


def _stopped_by_torchrun(signum, frame) -> None:
    """torchrun sends SIGTERM to the other ranks when one fails: say so in one line (the
    CLI prints it) instead of dying silently; a second signal ends the process at once."""
    _default_sigterm()
    raise PeerLostError(
        f"rank {os.environ.get('RANK', '?')} was stopped by torchrun because another process "
        f"of the run failed (torchrun's summary names it); what was finished is kept: {RESUME}."
    )


def _default_sigterm() -> None:
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _lost(exc: Exception) -> PeerLostError:
    _default_sigterm()  # failing already: a later SIGTERM just ends the process
    # gloo says e.g. "[.../pair.cc:553] Connection closed by peer [127.0.0.1]:28875. ...";
    # its first sentence without the source location is what helps
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(exc).strip())
    detail = re.split(r"\.\s|\n", text, maxsplit=1)[0][:120] or type(exc).__name__
    return PeerLostError(
        f"rank {os.environ.get('RANK', '?')} lost contact with another process of the run, "
        f"which failed or was killed ({detail}); what was finished is kept: {RESUME}."
    )


def local_device(device):
    """``cuda`` under torchrun means this rank's GPU: ``cuda:LOCAL_RANK``."""
    import torch

    local = int(os.environ.get("LOCAL_RANK", "0"))
    return torch.device("cuda", local) if device.type == "cuda" else device


def barrier(world: World) -> None:
    """Wait for every rank (nothing to wait for in a world of one)."""
    all_ok(world, True)


def all_ok(world: World, ok: bool) -> bool:
    """True when every rank reports ``ok`` (so one rank's failure stops all of them cleanly)."""
    if not world.distributed:
        return ok
    import torch
    import torch.distributed as dist

    flag = torch.tensor([1 if ok else 0])
    try:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=_control)
    except RuntimeError as exc:  # gloo's error when a peer's connection closed
        raise _lost(exc) from None
    return bool(flag.item())


def all_sum(world: World, value: int) -> int:
    """The sum of ``value`` over the ranks."""
    if not world.distributed:
        return value
    import torch
    import torch.distributed as dist

    total = torch.tensor([value], dtype=torch.int64)
    try:
        dist.all_reduce(total, group=_control)
    except RuntimeError as exc:
        raise _lost(exc) from None
    return int(total.item())


@contextlib.contextmanager
def together(world: World, what: str) -> Iterator[None]:
    """Run a block on every rank and fail on every rank when it fails on any of them.

    The rank whose block raised a :class:`CltraceError` raises it again; the others raise one
    sentence saying that another process failed ``what`` (e.g. ``"in stage III"``). Any other
    exception ends its process, and torchrun stops the rest.
    """
    failure: CltraceError | None = None
    try:
        yield
    except CltraceError as exc:
        failure = exc
    if not all_ok(world, failure is None):
        if failure is not None:
            raise failure
        raise CltraceError(
            f"another process of the run failed {what} (its message says why); what was "
            f"finished is kept: {RESUME}."
        )


def crash_point(world: World) -> None:
    """With ``CLTRACE_TEST_KILL_RANK=r`` set, rank ``r`` of a distributed run kills itself here
    (tests of failure and resumption); without it, nothing happens."""
    wanted = os.environ.get(KILL_ENV)
    if wanted is not None and world.distributed and wanted.strip() == str(world.rank):
        os.kill(os.getpid(), signal.SIGKILL)


def finish(world: World) -> None:
    global _control
    if world.distributed:
        import torch.distributed as dist

        _default_sigterm()
        _control = None
        if dist.is_initialized():
            dist.destroy_process_group()


def shard(n_items: int, world: World) -> list[int]:
    """This rank's items: ``i`` with ``i % world.size == world.rank``."""
    return list(range(world.rank, n_items, world.size))
