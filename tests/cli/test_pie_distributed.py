"""PIE stage I over two processes (torchrun, gloo): the same results.json and kept features as
one process, resumable at another world size, and rank record files merged on resume."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.cli.conftest import _env, tiny_opts

FAST = ["--budgets", "2,4", "--methods", "fap,random", "--stages", "prune", "--force"]


def _torchrun(*args):
    port = str(29700 + os.getpid() % 1000)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", port, "-m", "cltrace", *map(str, args)]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(None), timeout=600)


def _same_outputs(a, b):
    for name in ("results.json", "kept_features.json", "behaviour.json"):
        assert json.loads((a / name).read_text()) == json.loads((b / name).read_text()), name


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not installed")
def test_two_ranks_give_the_one_process_results_and_resume(cli, tiny, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["pie", *tiny_opts(tiny), "--data", tiny / "pairs.json", *FAST]
    done = cli(*args, "--out", one)
    assert done.returncode == 0, done.stderr
    done = _torchrun(*args, "--out", two)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list(two.glob("records.rank*.jsonl"))  # merged by rank 0
    _same_outputs(one, two)

    # an interrupted two-rank run: rank files with a finished record and a torn line
    lines = (one / "records.jsonl").read_text().splitlines()
    part = tmp_path / "part"
    part.mkdir()
    for name in ("config.json", "behaviour.json"):
        shutil.copy(one / name, part / name)
    (part / "records.rank0.jsonl").write_text(lines[0] + "\n")
    (part / "records.rank1.jsonl").write_text(lines[1] + "\n" + lines[2][:20])
    done = cli(*args, "--out", part)  # resumed by one process
    assert done.returncode == 0, done.stderr
    assert "resuming: 2/4 prompts done" in done.stdout
    assert not list(part.glob("records.rank*.jsonl"))
    _same_outputs(one, part)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not installed")
def test_interpret_and_evaluate_commands_share_their_work_under_torchrun(cli, tiny, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["pie", *tiny_opts(tiny), "--data", tiny / "pairs.json", "--budgets", "2,4",
            "--methods", "fap,random", "--force"]  # fmt: skip
    done = cli(*args, "--corpus", "bundled", "--out", one)
    assert done.returncode == 0, done.stderr
    done = cli(*args, "--stages", "prune", "--out", two)
    assert done.returncode == 0, done.stderr
    for command in ("interpret", "evaluate"):  # --run-dir: torchrun's parser takes --run
        # the tiny model is not the bundled one: name the corpus, as for cltrace pie
        done = _torchrun(command, "--run-dir", two, "--corpus", "bundled")
        assert done.returncode == 0, done.stderr[-3000:]
    names = ["descriptions.json", "descriptions_random.json", "scores.json",
             "scores_random.json", "scores_summary.json"]  # fmt: skip
    for store in ("activations", "activations_random"):
        names += [str(p.relative_to(one)) for p in sorted((one / store).rglob("*")) if p.is_file()]
    assert len(names) > 5 + 2 * 16
    for name in names:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    assert not list(two.glob("*.partial*"))
