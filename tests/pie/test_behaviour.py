"""PIE's behaviour metric (answer sets, recorded in results) and the no-behaviour check."""

import pytest
import torch

from cltrace.errors import CltraceError
from cltrace.pie import PieConfig, run_pie
from cltrace.pie.behaviour import Behaviour
from cltrace.pie.run import run_metric
from cltrace.prune import PruneConfig, compute_components
from cltrace.tasks import METRICS, PromptPair, write_pairs
from cltrace.testing import random_transcoder, save_tiny_assets, tiny_model

PAIR = PromptPair("w1 w2 w3 w4 w2 w5", "w6 w7 w3 w4 w7 w5", (" w2", " w9"), (" w7", " w8"))


@pytest.mark.parametrize("metric", ["logit_diff", "mean_logit_diff", "prob_diff", "logsumexp"])
def test_components_measure_the_chosen_metric_over_the_answer_sets(metric):
    adapter = tiny_model("gpt2")
    tc = random_transcoder(adapter, d_features=16)
    comps = compute_components(adapter, tc, PAIR, metric=metric)
    ids = [[adapter.single_token_id(t) for t in s] for s in (PAIR.answers, PAIR.wrong_answers)]
    want = METRICS[metric](comps.clean_logits, *ids)
    assert comps.m_clean == pytest.approx(float(want), rel=1e-6, abs=1e-7)
    # the gradient FAP uses is the chosen metric's: its sum over MLP outputs differs by metric
    base = compute_components(adapter, tc, PAIR, metric="logit_diff")
    same = torch.allclose(comps.grads["direct"], base.grads["direct"])
    assert same == (metric == "logit_diff")


def test_run_metric_defaults_follow_the_task():
    assert run_metric(PieConfig(task="greater_than")) == "prob_diff"
    assert run_metric(PieConfig(task="ioi")) == "logit_diff"
    assert run_metric(PieConfig(data="pairs.json")) == "logit_diff"
    assert run_metric(PieConfig(prune=PruneConfig(metric="mean-logit-diff"))) == "mean_logit_diff"


def test_behaviour_rules_on_hand_numbers():
    def b(clean, corrupt, d, dse, cse):
        return Behaviour("logit_diff", 50, clean, corrupt, d, dse, cse, 1.0)

    assert b(5.0, 0.1, 4.9, 0.2, 0.3).problem("p") is None
    assert "do not change" in b(5.33, 5.34, -0.01, 0.02, 0.1).problem("p")
    assert "do not change" in b(5.0, 4.7, 0.3, 0.01, 0.1).problem("p")  # below a tenth of clean
    assert "does not show" in b(0.05, 0.0, 0.05, 0.01, 0.1).problem("p")


def test_run_pie_api_refuses_too(tmp_path):
    save_tiny_assets(tmp_path, "gpt2", d_features=16)
    same = PromptPair("w1 w2 w3", "w1 w2 w3", (" w2",), (" w7",))
    write_pairs(tmp_path / "pairs.json", [same])
    cfg = PieConfig(
        data=str(tmp_path / "pairs.json"), model=str(tmp_path / "model"),
        transcoder=str(tmp_path / "clt"), methods=("fap",), prune=PruneConfig(budgets=(2,)),
        interpret_method="fap", interpret_budget=2,
    )  # fmt: skip
    with pytest.raises(CltraceError, match="--force"):
        run_pie(cfg, tmp_path / "run")
