"""Per-sequence activations against a direct single-text computation."""

import numpy as np
import pytest
import torch

from cltrace.interpret.features import encode_subset
from cltrace.score.activations import DECIMALS, pool, sequence_scores, token_activations
from cltrace.testing import random_transcoder, tiny_model
from tests.score.conftest import TEXTS

FEATURES = [(0, 3), (1, 5), (2, 0), (0, 7)]


def direct(adapter, tc, text, layer, f):
    """Activation at each token (BOS dropped), one text at a time, through transcoder.encode."""
    tokens = adapter.to_tokens(text)
    with torch.no_grad(), adapter.cache([f"mlp_in.{layer}"]) as c:
        adapter(tokens)
        return tc.encode(layer, c[f"mlp_in.{layer}"])[0, 1:, f].numpy()


def test_batched_token_activations_equal_single_text_runs(setup):
    adapter, tc = setup
    per = token_activations(adapter, tc, TEXTS, FEATURES, batch_size=3)
    for text, t in zip(TEXTS, per, strict=True):
        assert t.ids == adapter.encode(text)[1:]
        for j, (layer, f) in enumerate(FEATURES):
            np.testing.assert_allclose(t.acts[j], direct(adapter, tc, text, layer, f), atol=1e-5)


def test_sequence_scores_pool_per_text(setup):
    adapter, tc = setup
    fade = sequence_scores(adapter, tc, TEXTS, FEATURES, "fade", batch_size=2)
    mx = sequence_scores(adapter, tc, TEXTS, FEATURES, "max", batch_size=5)
    for i, text in enumerate(TEXTS):
        for j, (layer, f) in enumerate(FEATURES):
            a = direct(adapter, tc, text, layer, f)
            # sequence scores are rounded to DECIMALS (ties must not depend on the batch)
            tol = 0.5 * 10.0**-DECIMALS + 1e-5
            assert fade[j, i] == pytest.approx(a[np.abs(a).argmax()], abs=tol)
            assert mx[j, i] == pytest.approx(a.max(), abs=tol)
    assert (fade != 0).any(), "the random transcoder should fire somewhere"


def test_truncation_and_empty_inputs(setup):
    adapter, tc = setup
    per = token_activations(adapter, tc, ["w1 w2 w3 w4 w5"], FEATURES, max_tokens=3)
    assert len(per[0].ids) == 2  # BOS + 2 tokens kept, BOS dropped
    assert sequence_scores(adapter, tc, [], FEATURES).shape == (4, 0)


def test_fade_pooling_keeps_the_sign():
    acts = np.array([[0.5, -2.0, 1.0], [0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(pool(acts, "fade"), [-2.0, 0.0])
    np.testing.assert_array_equal(pool(acts, "max"), [1.0, 0.0])


@pytest.mark.parametrize("activation", ["jumprelu", "relu", "topk"])
def test_feature_values_match_encode(activation):
    adapter = tiny_model("llama", n_layers=2)
    tc = random_transcoder(adapter, d_features=16, activation=activation, k=4)
    x = torch.randn(2, 5, adapter.d_model)
    ids = [3, 0, 9]
    torch.testing.assert_close(encode_subset(tc, 1, x, ids), tc.encode(1, x)[..., ids])
