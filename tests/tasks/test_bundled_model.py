"""The shipped model must solve both tasks on held-out combinations (regression guard)."""

import pytest

from cltrace.models import load_model
from cltrace.paths import BUNDLED_MODEL_DIR
from cltrace.tasks import evaluate_pairs, make_docstring_pairs, make_ioi_pairs

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (BUNDLED_MODEL_DIR / "config.json").exists(), reason="bundled model not trained"
    ),
]


@pytest.fixture(scope="module")
def bundled():
    return load_model(None)


# README's figures (`cltrace tasks eval`, 200 held-out pairs, seed 0), as measured: IOI
# accuracy 1.00, logit difference 12.04, ABC-corrupted 0.10; Doc-String accuracy 0.95,
# logit difference 5.33. Bounds: logit differences within 15%, a few pairs' worth of accuracy.


def test_ioi_held_out(bundled):
    pairs = make_ioi_pairs(bundled, 200, seed=0)
    clean = evaluate_pairs(bundled, pairs)
    corrupt = evaluate_pairs(bundled, pairs, corrupt=True)
    assert clean.accuracy >= 0.98
    assert clean.mean_logit_diff == pytest.approx(12.04, rel=0.15)
    # ABC names carry no IO/S information, so the difference collapses (0.10, under 1%)
    assert abs(corrupt.mean_logit_diff) < 0.03 * clean.mean_logit_diff


def test_docstring_held_out(bundled):
    pairs = make_docstring_pairs(bundled, 200, seed=0)
    clean = evaluate_pairs(bundled, pairs)
    assert clean.accuracy >= 0.90
    assert clean.mean_logit_diff == pytest.approx(5.33, rel=0.15)
