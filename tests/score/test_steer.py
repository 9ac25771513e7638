"""Clamping a feature: checked against additive steering, and faithfulness' gates."""

import copy
import math

import numpy as np
import torch

from cltrace.interventions import steer
from cltrace.score import ScoreConfig, score_feature
from cltrace.score.activations import sequence_scores
from cltrace.score.fade import faithfulness
from cltrace.score.raters import LexicalRater
from cltrace.score.steer import clamp_hooks, clamp_rows_hooks, generate
from tests.score.conftest import TEXTS

PROMPT = "w1 w2 w3 w4 w5"


def test_clamping_a_silent_feature_is_additive_steering(setup):
    adapter, tc = setup
    tc = copy.deepcopy(tc)
    layer, f, value = 1, 4, 3.0
    with torch.no_grad():
        tc.threshold[layer][f] = 1e9  # the feature never fires, so clamping adds value * decoders
    tokens = adapter.to_tokens(PROMPT)
    with torch.no_grad(), adapter.hooks(clamp_hooks(tc, layer, f, value)):
        clamped = adapter(tokens)[0]
    expected = steer(adapter, tc, PROMPT, [(layer, f)], alpha=value).logits
    torch.testing.assert_close(clamped, expected, rtol=1e-4, atol=1e-4)


def test_clamping_to_its_own_value_is_a_no_op(setup):
    adapter, tc = setup
    tc = copy.deepcopy(tc)
    layer, f, c = 0, 2, 1.7
    with torch.no_grad():  # a feature whose value is c at every token, whatever the input
        tc.W_enc[layer][f] = 0.0
        tc.b_enc[layer][f] = c
        tc.threshold[layer][f] = -1.0
    tokens = adapter.to_tokens(PROMPT)
    with torch.no_grad():
        clean = adapter(tokens)[0]
        with adapter.hooks(clamp_hooks(tc, layer, f, c)):
            same = adapter(tokens)[0]
        with adapter.hooks(clamp_hooks(tc, layer, f, c + 1.0)):
            moved = adapter(tokens)[0]
        expected = steer(adapter, tc, PROMPT, [(layer, f)], alpha=1.0).logits
    torch.testing.assert_close(same, clean, rtol=0, atol=1e-5)
    # one unit above its value everywhere = additive steering by one unit
    torch.testing.assert_close(moved, expected, rtol=1e-4, atol=1e-4)


def test_large_clamp_changes_generation_and_faithfulness_sees_it(setup):
    adapter, tc = setup
    layer, f = 0, 3
    plain = generate(adapter, TEXTS[:4], n_tokens=10)
    forced = generate(adapter, TEXTS[:4], n_tokens=10, hooks=clamp_hooks(tc, layer, f, 200.0))
    assert forced != plain
    # describe the feature by a token its strong clamp produces but plain generation does not
    new = [w for w in " ".join(forced).split() if w not in " ".join(plain).split()]
    assert new
    natural = sequence_scores(adapter, tc, TEXTS, [(layer, f)])[0]
    peak = float(np.abs(natural).max())
    assert peak > 0
    cfg = ScoreConfig(alphas=(0.0, 200.0 / peak), n_faith_prompts=4, n_new_tokens=10, seed=0)
    score, info, _ = faithfulness(adapter, tc, LexicalRater(), (layer, f), f"'{new[0]}'",
                                  TEXTS, natural, cfg)  # fmt: skip
    assert score.value > 0 and set(info["shares"]) == {"0.0", str(200.0 / peak)}


def test_faithfulness_is_skipped_below_the_gates(setup):
    adapter, tc = setup
    feat = (0, 3)
    natural = sequence_scores(adapter, tc, TEXTS, [feat])[0]
    # a description no text contains: clarity from templates only, no positives to rate
    cfg = ScoreConfig(n_faith_prompts=2, n_new_tokens=2, n_rated=20)
    fs = score_feature(adapter, tc, LexicalRater(pool=TEXTS), "lexical", feat, "'w199'",
                       TEXTS, natural, cfg)  # fmt: skip
    assert fs.values["faithfulness"] is None
    assert "skipped" in fs.reasons["faithfulness"]
    assert math.isnan(fs.values["responsiveness"]) and "rating 2" in fs.reasons["responsiveness"]


def test_per_row_clamp_values_generate_what_one_value_per_call_does(setup):
    adapter, tc = setup
    layer, f = 1, 4
    prompts = [TEXTS[0], TEXTS[1], TEXTS[3]]
    values = [-5.0, 0.0, 5.0]
    each = [generate(adapter, prompts, 6, clamp_hooks(tc, layer, f, v), batch_size=2)
            for v in values]  # fmt: skip
    rows = torch.tensor([v for v in values for _ in prompts])
    together = generate(adapter, [p for _ in values for p in prompts], 6, None, batch_size=4,
                        hooks_for=lambda idx: clamp_hooks(tc, layer, f, rows[idx]))  # fmt: skip
    assert together == [c for conts in each for c in conts]
    assert each[0] != each[2]  # the clamp matters, so the comparison checks something


def test_rows_with_features_of_their_own_equal_each_feature_alone(setup):
    adapter, tc = setup
    feats = [(0, 3), (1, 4), (1, 7)]  # two layers, and two features of one layer
    prompts = [TEXTS[0], TEXTS[1], TEXTS[3]]
    values = [-5.0, 5.0]
    each = {
        (ft, v): generate(adapter, prompts, 6, clamp_hooks(tc, *ft, v), batch_size=2)
        for ft in feats for v in values
    }  # fmt: skip
    jobs = [(ft, v, p) for ft in feats for v in values for p in prompts]
    rows = [ft for ft, _, _ in jobs]
    vals = torch.tensor([v for _, v, _ in jobs])
    together = generate(adapter, [p for _, _, p in jobs], 6, None, batch_size=5,
                        hooks_for=lambda idx: clamp_rows_hooks(tc, [rows[i] for i in idx],
                                                               vals[idx]))  # fmt: skip
    assert together == [c for ft in feats for v in values for c in each[(ft, v)]]
    assert len({tuple(c) for c in each.values()}) > 1  # the features steer differently
