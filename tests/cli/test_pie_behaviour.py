"""cltrace pie stops on pairs whose corrupted prompts change nothing, and --force records it."""

import json

from cltrace.tasks import PromptPair, write_pairs
from cltrace.testing import save_tiny_assets
from tests.cli.conftest import expect_error


def test_pie_refuses_pairs_without_behaviour_and_records_it_with_force(cli, tmp_path):
    save_tiny_assets(tmp_path, "gpt2", d_features=16)
    same = PromptPair("w1 w2 w3 w4 w2 w5", "w1 w2 w3 w4 w2 w5", (" w2",), (" w7",))
    write_pairs(tmp_path / "pairs.json", [same, same])
    opts = ["--model", tmp_path / "model", "--transcoder", tmp_path / "clt", "--data",
            tmp_path / "pairs.json", "--budgets", "2", "--methods", "fap", "--stages", "prune",
            "--out", tmp_path / "run"]  # fmt: skip
    expect_error(cli("pie", *opts), 1, "clean", "corrupted", "--force")
    assert not (tmp_path / "run" / "config.json").exists()
    done = cli("pie", *opts, "--force", "--metric", "prob_diff")
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["metric"] == "prob_diff"
    b = results["behaviour"]
    assert b["difference"] == 0.0 and b["changed"] is False and b["metric"] == "prob_diff"
    assert json.loads((tmp_path / "run" / "behaviour.json").read_text()) == b
    expect_error(cli("pie", *opts, "--metric", "kl"), 2, "kl", "prob_diff")
