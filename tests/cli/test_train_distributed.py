"""CLT training on two processes (torchrun, gloo): the same loss curve and weights as one process,
and a checkpoint written by two processes resumes in one."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from tests.cli.conftest import CLTRACE, _env

# Two ranks sum their gradients in another order than one process does; Adam divides each step by
# the root of the running squared gradient, so rounding in a near-zero gradient moves a weight by
# up to ~1e-5 after 30 steps (1.4e-5 seen on a threshold of 0.31). Training on other data (200
# documents instead of 400) moves 19 of the 20 tensors by 2.5e-3 to 4e-2 of their scale.
TOL = 1e-4
ARGS = ["train", "clt", "--steps", "30", "--features", "64", "--n-docs", "400", "--no-progress"]


def _torchrun(*args, n=2, script=None):
    port = str(29600 + os.getpid() % 1000)
    target = [str(script)] if script else ["-m", "cltrace", *map(str, args)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n),
           "--master-port", port, *target]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(None), timeout=600)


def _weights(path):
    out = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(f))
    return out


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not installed")
def test_two_ranks_follow_one_process_and_resume_in_one(tmp_path):
    one, two, mixed = tmp_path / "one", tmp_path / "two", tmp_path / "mixed"
    done = subprocess.run([CLTRACE, *ARGS, "--out", one], capture_output=True, text=True,
                          env=_env(None), timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = _torchrun(*ARGS, "--out", two)
    assert done.returncode == 0, done.stderr[-3000:]
    a = json.loads((one / "train_stats.json").read_text())
    b = json.loads((two / "train_stats.json").read_text())
    assert b["world_size"] == 2 and len(a["fvu_curve"]) == len(b["fvu_curve"]) == 3
    for (sa, fa), (sb, fb) in zip(a["fvu_curve"], b["fvu_curve"], strict=True):
        assert sa == sb and abs(fa - fb) < 1e-4
    wa, wb = _weights(one), _weights(two)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert (wa[k] - wb[k]).abs().max() <= TOL * (1 + wa[k].abs().max()), k

    # two processes stop at step 20, leaving a checkpoint; one process finishes the run
    script = tmp_path / "stop.py"
    script.write_text(STOP_AT_20.format(out=str(mixed)))
    done = _torchrun(script=script)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (mixed / "checkpoint.pt").is_file() and not (mixed / "train_stats.json").exists()
    done = subprocess.run([CLTRACE, *ARGS, "--out", mixed, "--resume"], capture_output=True,
                          text=True, env=_env(None), timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    wm = _weights(mixed)
    for k in wa:
        assert (wa[k] - wm[k]).abs().max() <= TOL * (1 + wa[k].abs().max()), k


# what `cltrace train clt` ARGS does, stopped after 20 of its 30 steps on every rank
STOP_AT_20 = """
from dataclasses import replace
from cltrace import dist
from cltrace.cli.transcoders import TRAIN_SEED
from cltrace.models import load_model
from cltrace.transcoders.data import load_texts
from cltrace.transcoders.train import CLTTrainConfig, train_transcoder

world = dist.start()
cfg = replace(CLTTrainConfig(seed=0), steps=30, d_features=64)
texts = load_texts(None, 400, TRAIN_SEED)
train_transcoder(load_model(None), texts, {out!r}, cfg, stop_after=20, progress=False, world=world)
dist.finish(world)
"""
