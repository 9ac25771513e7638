"""Answer-set metrics against hand computations, and their use in ``evaluate_pairs``."""

import math

import pytest
import torch

from cltrace.errors import UsageError
from cltrace.tasks import METRICS, PromptPair, evaluate_pairs, get_metric, make_ioi_pairs


def _by_hand(name: str, row: list[float], a: list[int], w: list[int]) -> float:
    z = sum(math.exp(x) for x in row)
    p = [math.exp(x) / z for x in row]
    if name == "logit_diff":
        return row[a[0]] - row[w[0]]
    if name == "mean_logit_diff":
        return sum(row[i] for i in a) / len(a) - sum(row[i] for i in w) / len(w)
    if name == "prob_diff":
        return sum(p[i] for i in a) - sum(p[i] for i in w)
    lse = lambda ids: math.log(sum(math.exp(row[i]) for i in ids))  # noqa: E731
    return lse(a) - lse(w)


@pytest.mark.parametrize("name", list(METRICS))
def test_metric_matches_hand_computation(name):
    row = [0.3, -1.2, 2.0, 0.7, -0.4, 1.1]
    a, w = [2, 5], [0, 3, 4]
    got = float(get_metric(name)(torch.tensor(row), a, w))
    assert got == pytest.approx(_by_hand(name, row, a, w), abs=1e-6)


def test_metrics_batch_over_leading_dims_and_agree_on_single_answers():
    x = torch.randn(3, 4, 10)
    for m in METRICS.values():
        assert m(x, [1, 2], [3]).shape == (3, 4)
    # one answer and one wrong answer: the three logit metrics coincide
    vals = [METRICS[k](x, [7], [2]) for k in ("logit_diff", "mean_logit_diff", "logsumexp")]
    assert torch.allclose(vals[0], vals[1]) and torch.allclose(vals[0], vals[2], atol=1e-6)


def test_unknown_metric_is_a_usage_error_and_dashes_are_accepted():
    assert get_metric("prob-diff").key == "prob_diff"
    with pytest.raises(UsageError, match="unknown metric"):
        get_metric("accuracy")


def test_evaluate_pairs_reports_the_chosen_metric_and_top1(tiny_adapter):
    base = make_ioi_pairs(tiny_adapter, 1, seed=0)[0]
    pair = PromptPair(base.clean, base.corrupt, (" Mary", " John"), (" Alice", " Bob"))
    ids = torch.tensor([tiny_adapter.encode(base.clean)])
    with torch.no_grad():
        row = tiny_adapter.hf_model(input_ids=ids).logits[0, -1].float()
    tid = tiny_adapter.single_token_id
    a, w = [tid(" Mary"), tid(" John")], [tid(" Alice"), tid(" Bob")]
    for name in METRICS:
        scores = evaluate_pairs(tiny_adapter, [pair], metric=name)
        assert scores.metric == name
        expect = _by_hand(name, row.tolist(), a, w)
        assert float(scores.metric_values[0]) == pytest.approx(expect, rel=1e-4, abs=1e-4)
    assert bool(scores.top1[0]) == (int(row.argmax()) == a[0])
