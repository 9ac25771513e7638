"""PIE stages II and III over two processes (torchrun, gloo) on the bundled model: the activation
stores, descriptions and scores equal one process's byte for byte; a rank killed in stage III
fails the run with one clear line, and one process resumes it to the same scores."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from cltrace.pie.stage3 import PREFETCH_CHUNK
from tests.cli.conftest import _env

ARGS = ["pie", "--n-pairs", "4", "--methods", "fap,random", "--budgets", "10"]
SAME = ("descriptions.json", "descriptions_random.json", "scores.json", "scores_random.json",
        "scores_summary.json", "kept_features.json", "results.json")  # fmt: skip
STORES = ("activations", "activations_random")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not installed"),
]


def _torchrun(*args, env=None):
    port = str(28700 + os.getpid() % 1000)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", port, "-m", "cltrace", *map(str, args)]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(env), timeout=900)


def _files(run, names=SAME):
    out = {name: (run / name).read_bytes() for name in names}
    for store in STORES:
        for p in sorted((run / store).rglob("*")):
            if p.is_file():
                out[str(p.relative_to(run))] = p.read_bytes()
    return out


def _assert_same(a, b, skip=()):
    fa, fb = (
        _files(a, [n for n in SAME if n not in skip]),
        _files(b, [n for n in SAME if n not in skip]),
    )
    assert fa.keys() == fb.keys()
    assert len([k for k in fa if k.endswith(".npz")]) == 2 * 16  # 4000 docs in 256-doc chunks
    for name in fa:
        assert fa[name] == fb[name], name


@pytest.fixture(scope="module")
def one(cli, tmp_path_factory):
    """The single-process run of all three stages."""
    run = tmp_path_factory.mktemp("one") / "run"
    done = cli(*ARGS, "--out", run, timeout=900)
    assert done.returncode == 0, done.stderr
    return run


def test_two_ranks_write_the_one_process_stores_descriptions_and_scores(one, tmp_path):
    two = tmp_path / "two"
    done = _torchrun(*ARGS, "--out", two)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same(one, two)
    assert not list(two.glob("*.partial*"))  # rank 0 merged the ranks' progress and removed it
    assert (
        json.loads((two / "interpret_cost.json").read_text())["kept"]["store_chunks_computed"] == 16
    )
    kept = json.loads((one / "scores.json").read_text())
    assert len(kept) >= 4 and sum(v["detection"] is not None for v in kept.values()) >= 2


def test_a_rank_killed_in_stage_III_fails_the_run_and_one_process_resumes_it(one, cli, tmp_path):
    part = tmp_path / "part"
    shutil.copytree(one, part)
    # stage II was interrupted too: half of each store's chunks and the finished stores are gone
    for store in STORES:
        (part / store / "store.json").unlink()
        for chunk in sorted((part / store / "chunks").glob("*.npz"))[::2]:
            chunk.unlink()
    for name in ("descriptions.json", "descriptions_random.json", "scores.json",
                 "scores_random.json", "scores_summary.json"):  # fmt: skip
        (part / name).unlink()

    done = _torchrun(*ARGS, "--stages", "interpret,evaluate", "--out", part,
                     env={"CLTRACE_TEST_KILL_RANK": "1"})  # fmt: skip
    assert done.returncode != 0
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "rank 0" in errors[0] and "rerun the same command" in errors[0], errors[0]
    # the only traceback is torchrun's own report of the failed rank
    assert done.stderr.count("Traceback") == done.stderr.count("ChildFailedError:") == 1
    assert "exitcode  : -9" in done.stderr  # rank 1 was killed (SIGKILL), as the hook does
    saved = {p.name: json.loads(p.read_text()) for p in part.glob("scores.partial.rank*.json")}
    # rank 1 died after saving its first block of features (block 1: the kept set's 17th to
    # 32nd features), before its second if it has one
    n_kept = len(json.loads((one / "scores.json").read_text()))
    first_block = min(PREFETCH_CHUNK, n_kept - PREFETCH_CHUNK)
    assert first_block >= 1
    assert len(saved.get("scores.partial.rank1.json", {})) == first_block
    assert not (part / "scores.json").exists()
    # stage II finished before the kill, its stores equal the uninterrupted run's
    assert (part / "descriptions.json").read_bytes() == (one / "descriptions.json").read_bytes()

    # an entry a rank saved is taken as it is, not recomputed: mark it to see it come back
    key, entry = next(iter(saved["scores.partial.rank1.json"].items()))
    entry["info"]["resumed"] = True
    (part / "scores.partial.rank1.json").write_text(json.dumps({key: entry}))
    done = cli(*ARGS, "--stages", "evaluate", "--out", part, timeout=900)
    assert done.returncode == 0, done.stderr
    assert not list(part.glob("*.partial*"))
    resumed = json.loads((part / "scores.json").read_text())
    assert resumed[key]["info"].pop("resumed") is True
    assert resumed == json.loads((one / "scores.json").read_text())
    _assert_same(one, part, skip=("scores.json",))
