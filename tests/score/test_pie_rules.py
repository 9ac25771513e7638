"""PIE's stage-III rules against hand computations: strict ``>``, rating 1 counted as negative,
purity 0 without positives; FADE's rules and the old PIE variant stay available."""

import math
from dataclasses import replace

import pytest

from cltrace.score.config import ScoreConfig
from cltrace.score.fade import responsiveness_and_purity
from cltrace.score.metrics import gini, strict_gini


def test_strict_statistic_counts_ties_against():
    # pairs (pos, neg): 2>1 yes, 2>2 tie, 3>1 yes, 3>2 yes
    assert strict_gini([1, 2], [2, 3]).value == pytest.approx(abs(2 * 3 / 4 - 1))
    assert gini([1, 2], [2, 3]).value == pytest.approx(abs(2 * 3.5 / 4 - 1))
    assert strict_gini([1, 1], [1, 1]).value == pytest.approx(1.0)  # all ties: P(>) = 0


def test_rating_one_is_a_negative_under_pie_rules():
    acts, ratings = [3.0, 5.0, 0.0, 2.0], [2, 1, 0, 2]
    resp, pur = responsiveness_and_purity(acts, ratings, "pie")
    # pos = {3, 2}, neg = {5, 0}: 2 of 4 pairs strictly greater -> |2 * 0.5 - 1| = 0
    assert resp.value == pytest.approx(0.0)
    # ranking 5(neg) 3(pos) 2(pos) 0(neg): AP = 0.5 * 1/2 + 0.5 * 2/3
    assert pur.value == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    resp_f, _ = responsiveness_and_purity(acts, ratings, "fade")
    assert resp_f.value == pytest.approx(1.0)  # FADE drops the rating-1 text


def test_no_positive_gives_purity_zero_under_pie_rules_only():
    resp, pur = responsiveness_and_purity([1.0, 2.0], [0, 1], "pie")
    assert math.isnan(resp.value) and pur.value == 0.0
    resp_f, pur_f = responsiveness_and_purity([1.0, 2.0], [0, 1], "fade")
    assert math.isnan(resp_f.value) and math.isnan(pur_f.value)


def test_variants():
    assert ScoreConfig().rules == "fade" and ScoreConfig.pie().rules == "pie"
    old = ScoreConfig.pie_fade_rules()
    assert old.rules == "fade" and replace(old, rules="pie") == ScoreConfig.pie()
