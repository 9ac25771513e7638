"""Sort and contrastive evals: chance is exactly 0.5 under shuffled labels, a rater that knows
the answer scores 1.0, and the lexical rater runs end to end."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch

from cltrace.score.contrastive import contrastive_eval
from cltrace.score.raters import Judgement, Rater, make_rater
from cltrace.score.sort import activity, choice_score, sort_eval, views
from cltrace.testing import random_transcoder, tiny_model


@pytest.fixture(scope="module")
def setup():
    adapter = tiny_model("llama", n_layers=2)
    tc = random_transcoder(adapter, d_features=10).requires_grad_(False)
    rng = random.Random(0)
    texts = [" ".join(f"w{rng.randrange(40)}" for _ in range(rng.randrange(2, 6)))
             for _ in range(80)]  # fmt: skip
    feats = [(ly, f) for ly in range(2) for f in range(10)]
    return adapter, tc, texts[:40], texts[40:], feats


def fires(adapter, tc, text, feature) -> bool:
    """Brute force: the full encoder on the text's MLP input, any non-BOS position."""
    layer, f = feature
    with torch.no_grad(), adapter.cache([f"mlp_in.{layer}"]) as c:
        adapter(adapter.to_tokens(text))
    return bool((tc.encode(layer, c[f"mlp_in.{layer}"][0])[1:, f] > 0).any())


class Oracle(Rater):
    """Knows which texts activate the feature a description stands for."""

    name = "oracle"

    def __init__(self, adapter, tc, by_description):
        self.adapter, self.tc, self.by_description = adapter, tc, by_description

    def generate(self, description, n_requests):
        raise NotImplementedError

    def rate(self, description, texts):
        f = self.by_description[description]
        return Judgement([2 if fires(self.adapter, self.tc, t, f) else 0 for t in texts])


class Coin(Rater):
    name = "coin"

    def __init__(self, seed):
        self.rng = random.Random(seed)

    def generate(self, description, n_requests):
        raise NotImplementedError

    def rate(self, description, texts):
        return Judgement([self.rng.randrange(3) for _ in texts])


def test_shuffled_labels_give_exactly_one_half_in_expectation():
    rng = np.random.default_rng(0)
    ra = rng.integers(0, 3, 8).tolist()
    rb = rng.integers(0, 3, 8).tolist()
    scores = [choice_score(ra, rb, list(y))[0] for y in itertools.product([0, 1], repeat=8)]
    assert np.mean(scores) == pytest.approx(0.5, abs=1e-12)
    truth = [0 if a > b else 1 for a, b in zip(ra, rb, strict=True)]
    flipped = [1 - y for y in truth]
    assert choice_score(ra, rb, truth)[0] + choice_score(ra, rb, flipped)[0] == pytest.approx(1)


def _descriptions(adapter, tc, view_texts, feats):
    vs = views(activity(adapter, tc, view_texts, feats))
    return {v.description(False): f for f, v in vs.items()}


def test_sort_eval_oracle_scores_one_and_coin_scores_half(setup):
    adapter, tc, view_texts, held, feats = setup
    by_desc = _descriptions(adapter, tc, view_texts, feats)
    alive = list(by_desc.values())  # distinct descriptions only, so the oracle can tell them
    res = sort_eval(adapter, tc, Oracle(adapter, tc, by_desc), view_texts, held, alive,
                    n_pairs=15, with_examples=False)  # fmt: skip
    assert res.n_items > 30 and res.score == 1.0
    coin = [sort_eval(adapter, tc, Coin(s), view_texts, held, feats, n_pairs=15,
                      with_examples=False, seed=s).score for s in range(8)]  # fmt: skip
    assert abs(np.mean(coin) - 0.5) < 0.08
    lex = sort_eval(adapter, tc, make_rater("lexical"), view_texts, held, feats, n_pairs=10)
    assert 0.0 <= lex.score <= 1.0 and lex.n_groups == 10


def test_contrastive_eval_oracle_scores_one(setup):
    adapter, tc, view_texts, held, feats = setup
    by_desc = _descriptions(adapter, tc, view_texts, feats)
    alive = list(by_desc.values())
    rng = random.Random(1)
    pairs = []
    for t in held[:30]:
        words = t.split()
        words[-1] = f"w{rng.randrange(40)}"  # the same prompt, one word changed
        pairs.append((t, " ".join(words)))
    res = contrastive_eval(adapter, tc, Oracle(adapter, tc, by_desc), view_texts, pairs, alive,
                           n_items=40, with_examples=False)  # fmt: skip
    assert res.n_items > 5 and res.score == 1.0
    for item in res.items:  # each item's feature really fires on exactly the labelled prompt
        f = tuple(int(x) for x in item["feature"].split("/"))
        on = [fires(adapter, tc, p, f) for p in pairs[item["pair"]]]
        assert on == [item["active"] == 0, item["active"] == 1]
