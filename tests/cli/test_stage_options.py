"""``cltrace interpret`` and ``cltrace evaluate`` with a model other than the bundled one, and
their ``--device``/``--dtype``/``--lazy-decoders`` options, through the real parser."""

import json
import random

import pytest

from tests.cli.conftest import expect_error, snapshot, tiny_opts


@pytest.fixture(scope="module")
def bare(tiny, tmp_path_factory):
    """A run directory that names the tiny model (all the corpus check reads) and a corpus."""
    root = tmp_path_factory.mktemp("stage-options")
    run = root / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": str(tiny / "model"),
                                                 "transcoder": str(tiny / "clt")}))  # fmt: skip
    rng = random.Random(0)
    docs = [" ".join(f"w{rng.randrange(40)}" for _ in range(rng.randint(3, 9))) for _ in range(40)]
    (root / "corpus.txt").write_text("\n".join(docs) + "\n")
    return root


@pytest.mark.parametrize(
    "args",
    [["interpret"], ["evaluate"], ["evaluate", "--evals", "sort"],
     ["interpret", "--dtype", "bf16", "--lazy-decoders"]],
)  # fmt: skip
def test_another_model_without_a_corpus_asks_for_one(cli, bare, args):
    run = bare / "run"
    before = snapshot(run)
    done = cli(*args, "--run", run)
    expect_error(done, 2, "is not the bundled model", "--corpus FILE", "hf:NAME")
    assert snapshot(run) == before


@pytest.mark.parametrize(
    "command, option, value, fragments",
    [("interpret", "--dtype", "bf17", ["--dtype 'bf17'", "bfloat16"]),
     ("evaluate", "--dtype", "int8", ["--dtype 'int8'", "float16"]),
     ("interpret", "--device", "tpu", ["--device 'tpu'", "cuda:N"]),
     ("evaluate", "--device", "gpu:0", ["--device 'gpu:0'", "cpu"])],
)  # fmt: skip
def test_bad_device_or_dtype_is_refused_like_attribute(cli, bare, command, option, value,
                                                       fragments):  # fmt: skip
    done = cli(command, "--run", bare / "run", "--corpus", bare / "corpus.txt", option, value)
    line = expect_error(done, 2, *fragments)
    same = cli("attribute", "--prompt", "w1 w2", "--out", bare / "g.json", option, value)
    assert expect_error(same, 2) == line  # one parser, one sentence
    assert not (bare / "g.json").exists()


@pytest.mark.slow
def test_stages_two_and_three_in_bf16_with_lazy_decoders_on_a_user_corpus(
    cli, tiny, bare, tmp_path
):
    run = tmp_path / "run"
    done = cli("pie", *tiny_opts(tiny), "--data", tiny / "pairs.json", "--budgets", "2,4",
               "--methods", "fap,random", "--stages", "prune", "--out", run, "--force")  # fmt: skip
    assert done.returncode == 0, done.stderr
    opts = ["--corpus", bare / "corpus.txt", "--dtype", "bf16", "--lazy-decoders"]
    done = cli("interpret", "--run", run, "--n-docs", "40", *opts)
    assert done.returncode == 0, done.stderr
    saved = json.loads((run / "interpret_config.json").read_text())
    assert saved["dtype"] == "bfloat16" and saved["lazy_decoders"] and saved["device"] == "cpu"
    assert saved["store"]["corpus"] == str(bare / "corpus.txt")
    done = cli("evaluate", "--run", run, "--variant", "pie", *opts)
    assert done.returncode == 0, done.stderr
    summary = json.loads((run / "scores_summary.json").read_text())
    assert summary["corpus"] == str(bare / "corpus.txt") and summary["n_features"] > 0
