"""``cltrace attribute --data``: one graph per prompt and a listing, the same graphs from one
process, from two ranks under torchrun and from ``--prompt``, resumed after a lost file."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from tests.cli.conftest import _env, expect_error

PROMPTS = [
    "When Mary and John went to the store, John gave a drink to",
    {"prompt": "When Tom and Anna went to the park, Anna gave a ball to", "slug": "ioi-b"},
    "When Lisa and Paul went to the school, Paul gave a book to",
]
SLUGS = ["prompt-0000", "ioi-b", "prompt-0002"]


@pytest.fixture
def prompt_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps(p) for p in PROMPTS) + "\n")
    return path


def _graph(path):
    doc = json.loads(path.read_text())
    doc["metadata"].get("info", {}).pop("create_time_ms", None)  # when it was written
    return doc


def test_batch_writes_one_graph_per_prompt_like_prompt_does_and_resumes(cli, prompt_file, tmp_path):
    out = tmp_path / "graphs"
    done = cli("attribute", "--data", prompt_file, "--out", out, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["n_prompts"] == 3 and report["written_by_rank0"] == 3
    listing = json.loads((out / "graph-metadata.json").read_text())
    assert sorted(g["slug"] for g in listing["graphs"]) == sorted(SLUGS)
    single = cli(
        "attribute", "--prompt", PROMPTS[0], "--out", tmp_path / "one" / "prompt-0000.json"
    )
    assert single.returncode == 0, single.stderr
    assert _graph(out / "prompt-0000.json") == _graph(tmp_path / "one" / "prompt-0000.json")

    before = _graph(out / "ioi-b.json")
    (out / "ioi-b.json").unlink()
    (out / "prompt-0002.json").write_text("{")  # cut short: written again
    again = json.loads(cli("attribute", "--data", prompt_file, "--out", out, "--json").stdout)
    assert again["written_by_rank0"] == 2 and again["already_there_rank0"] == 1
    assert _graph(out / "ioi-b.json") == before


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not installed")
def test_two_ranks_under_torchrun_write_the_same_graphs(cli, prompt_file, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert cli("attribute", "--data", prompt_file, "--out", one, "--json").returncode == 0
    env = _env(None)
    port = str(29500 + os.getpid() % 1000)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", port, "-m", "cltrace", "attribute", "--data", str(prompt_file),
           "--out", str(two), "--json"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["world_size"] == 2 and report["written_by_rank0"] == 2  # prompts 0 and 2
    for slug in SLUGS:
        assert _graph(two / f"{slug}.json") == _graph(one / f"{slug}.json"), slug
    listing = "graph-metadata.json"
    assert json.loads((two / listing).read_text()) == json.loads((one / listing).read_text())


def test_batch_input_errors(cli, prompt_file, tmp_path):
    out = tmp_path / "g"
    expect_error(cli("attribute", "--out", out), 2, "exactly one of --prompt")
    expect_error(cli("attribute", "--prompt", "x", "--data", prompt_file, "--out", out), 2,
                 "exactly one of")  # fmt: skip
    bad = tmp_path / "bad.jsonl"
    bad.write_text('"fine prompt"\nnot json\n')
    expect_error(cli("attribute", "--data", bad, "--out", out), 2, "line 2", "not JSON")
    bad.write_text('{"prompt": "a", "slug": "x"}\n{"prompt": "b", "slug": "x"}\n')
    expect_error(cli("attribute", "--data", bad, "--out", out), 2, "'x'", "twice")
    bad.write_text('{"prompt": "a", "slug": "../up"}\n')
    expect_error(cli("attribute", "--data", bad, "--out", out), 2, "safe file name")
    bad.write_text('"When Mary and Zorblax went to the store"\n')
    expect_error(cli("attribute", "--data", bad, "--out", out), 2, "Zorblax")
    assert not (out / "prompt-0000.json").exists()
    expect_error(cli("attribute", "--data", tmp_path / "missing.jsonl", "--out", out), 2,
                 "missing.jsonl")  # fmt: skip


def test_device_and_dtype_options(cli, tmp_path):
    out = tmp_path / "g.json"
    prompt = PROMPTS[0]
    expect_error(cli("attribute", "--prompt", prompt, "--out", out, "--dtype", "fp8"), 2, "fp8",
                 "bfloat16")  # fmt: skip
    expect_error(cli("attribute", "--prompt", prompt, "--out", out, "--device", "tpu"), 2, "tpu")
    if not torch.cuda.is_available():
        expect_error(cli("attribute", "--prompt", prompt, "--out", out, "--device", "cuda"), 1,
                     "GPU", "--device cpu")  # fmt: skip
    assert not out.exists()
    done = cli("attribute", "--prompt", prompt, "--out", out, "--dtype", "bf16", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["replacement_score"] > 0.5 and out.exists()
