"""cltrace.dist: the helpers in a world of one process, and over two gloo ranks (torchrun) a
failure on one rank reaching every rank as one sentence."""

import os
import shutil
import subprocess
import sys

import pytest

from cltrace import dist
from cltrace.errors import CltraceError
from tests.cli.conftest import _env


def test_a_world_of_one_needs_no_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setenv(dist.KILL_ENV, "0")  # the test hook is inert in a single process
    world = dist.start()
    assert world == dist.World(0, 1) and world.is_main and not world.distributed
    assert (
        dist.all_sum(world, 7) == 7 and dist.all_ok(world, True) and not dist.all_ok(world, False)
    )
    dist.crash_point(world)
    with pytest.raises(CltraceError, match="bad input"), dist.together(world, "in a test"):
        raise CltraceError("bad input")
    with dist.together(world, "in a test"):
        pass
    assert dist.shard(5, dist.World(1, 2)) == [1, 3]


SCRIPT = """
import os

from cltrace import dist
from cltrace.errors import CltraceError


def say(line):  # one write per line: the ranks share the pipe, and print may split a line
    os.write(1, (line + "\\n").encode())


world = dist.start()
say(f"rank {world.rank} sum {dist.all_sum(world, world.rank + 1)}")
try:
    with dist.together(world, "in the test step"):
        if world.rank == 1:
            raise CltraceError("rank 1 found a bad input")
except CltraceError as exc:
    say(f"rank {world.rank} error: {exc}")
with dist.together(world, "in the second step"):  # the ranks still agree afterwards
    pass
dist.finish(world)
"""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not installed")
def test_a_failure_on_one_rank_fails_every_rank_with_one_sentence(tmp_path):
    script = tmp_path / "together.py"
    script.write_text(SCRIPT)
    port = str(27700 + os.getpid() % 1000)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", port, str(script)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(None), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = set(done.stdout.splitlines())
    assert {"rank 0 sum 3", "rank 1 sum 3", "rank 1 error: rank 1 found a bad input"} <= lines
    other = [ln for ln in lines if ln.startswith("rank 0 error: ")]
    assert len(other) == 1 and "another process of the run failed in the test step" in other[0]
    assert "rerun the same command" in other[0]
