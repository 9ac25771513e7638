"""WeightLens on hand-built tiny cases: a token aligned with an encoder, an upstream feature."""

import contextlib

import pytest
import torch

from cltrace.interpret.weightlens import (
    REFERENCE_VOCAB,
    REFERENCE_WINDOW,
    WeightLens,
    WeightLensConfig,
    noise_max_z,
    token_threshold,
    z_outliers,
)
from cltrace.testing import random_transcoder, tiny_model

TOKEN = 57  # vocabulary id of "w53" in the tiny word tokenizer


@pytest.fixture(scope="module")
def built():
    adapter = tiny_model("gpt2")
    # 48 features: with one outlier among n values the largest possible z is (n-1)/sqrt(n)
    tc = random_transcoder(adapter, d_features=48)
    W_E = adapter.W_E.detach()
    D = adapter.d_model
    u = torch.randn(D, generator=torch.Generator().manual_seed(1))
    u = u - u.mean()  # the norm before the MLP centres its input; keep the direction
    u = u / u.norm()
    with torch.no_grad():
        # layer-0 feature 2 reads exactly the embedding of TOKEN, and writes 10 * u into layer 0
        tc.W_enc[0][2] = W_E[TOKEN] / W_E[TOKEN].norm() * 4.0
        tc.b_enc[0][2] = 0.0
        tc.threshold[0][2] = 0.0
        tc.W_dec[0][2] = 0.0
        tc.W_dec[0][2, 0] = 10.0 * u
        # layer-1 feature 5 reads u: its input comes from the layer-0 feature, not a token
        tc.W_enc[1][5] = u * 4.0
        tc.b_enc[1][5] = 0.0
        tc.threshold[1][5] = 0.0
    return adapter, tc


def test_z_outliers_within_window():
    v = torch.cat([torch.linspace(-1, 1, 99), torch.tensor([50.0])])
    ids, vals, z = z_outliers(v, 100, 5.0)
    assert ids.tolist() == [99] and z[0] > 5
    low, _, _ = z_outliers(-v, 100, 5.0, largest=False)
    assert low.tolist() == [99]


def test_token_aligned_with_encoder_is_found_and_validated(built):
    adapter, tc = built
    wl = WeightLens(adapter, tc, WeightLensConfig())
    res = wl.analyse((0, 2))
    assert res.input_tokens[0]["id"] == TOKEN
    assert res.input_tokens[0]["activation"] > 0
    assert TOKEN in res.description_ids and adapter.to_str_tokens([TOKEN])[0] in res.description(8)
    assert res.validation and res.reason is None
    # the validation really is a model run: the activation equals a direct computation
    toks = torch.tensor([[adapter.bos_token_id, TOKEN]])
    with adapter.cache(["mlp_in.0"]) as c:
        adapter(toks)
    with torch.no_grad():
        want = tc.encode(0, c["mlp_in.0"][0, 1])[2]
    assert res.input_tokens[0]["activation"] == pytest.approx(float(want), rel=1e-5)


@contextlib.contextmanager
def layer0_mlp_is_the_clt(adapter, tc):
    """Make the model's layer-0 MLP output exactly the CLT's reconstruction, so upstream paths
    seen in the weights exist in the model too (as they approximately do for a trained CLT)."""
    seen = {}

    def store(t):
        seen["x"] = t

    def write(t):
        with torch.no_grad():
            return tc.decode([tc.encode(0, seen["x"])], 0).to(t.dtype)

    with adapter.hooks({"mlp_in.0": store, "mlp_out.0": write}):
        yield


def test_upstream_feature_and_recursive_description(built):
    adapter, tc = built
    wl = WeightLens(adapter, tc)
    with layer0_mlp_is_the_clt(adapter, tc):
        res = wl.analyse((1, 5))
    top = res.upstream[0]
    assert (top["layer"], top["feature"]) == (0, 2)
    # virtual weight = <W_dec^{0->0}[2], W_enc^1[5]> = 10 * 4
    assert top["weight"] == pytest.approx(40.0, rel=1e-4)
    assert 0 < top["relative"] <= 1
    # the token comes in through the upstream feature's own description
    assert TOKEN in res.description_ids
    assert res.validation


def test_output_logits_follow_the_decoder(built):
    adapter, tc = built
    W_U = adapter.W_U.detach()
    target = 100
    with torch.no_grad():
        tc.W_dec[0][7] = 0.0
        tc.W_dec[0][7, 1] = W_U[:, target] / W_U[:, target].norm() * 5.0
    res = WeightLens(adapter, tc).analyse((0, 7))
    assert res.promoted and res.promoted[0]["id"] == target
    last = WeightLens(adapter, tc, WeightLensConfig(decoder="last")).analyse((0, 7))
    assert last.promoted[0]["id"] == target  # layer 0 -> 1 is this 2-layer model's last decoder


def test_feature_without_tokens_gets_no_description_and_a_reason():
    adapter = tiny_model("gpt2")
    tc = random_transcoder(adapter, d_features=8)
    with torch.no_grad():
        tc.b_enc[0][1] = -1e3  # can never fire
    res = WeightLens(adapter, tc).analyse((0, 1))
    assert res.description_ids == [] and res.description() == ""
    assert "no validated input tokens" in res.reason


def test_token_threshold_scales_with_the_vocabulary():
    # the reference setting keeps the threshold WeightLens was tuned with
    assert token_threshold(REFERENCE_VOCAB, REFERENCE_WINDOW) == pytest.approx(5.5, abs=1e-12)
    small, large = token_threshold(886, 1000), token_threshold(50_257, 1000)
    assert 2.8 < small < 3.6 and 5.0 < large < 5.8
    # noise_max_z is a median: fresh noise (another seed) beats it in about half the draws
    n, k = 886, 1000
    gen = torch.Generator().manual_seed(123)
    tops = torch.stack([torch.randn(n, generator=gen).topk(k if k < n else n).values
                        for _ in range(400)])  # fmt: skip
    z = (tops[:, 0] - tops.mean(1)) / tops.std(1)
    frac = float((z > noise_max_z(n, k)).float().mean())
    assert 0.42 < frac < 0.58, frac


def test_threshold_follows_the_config_or_the_vocabulary(built):
    adapter, tc = built
    assert WeightLens(adapter, tc, WeightLensConfig(threshold_tokens=4.25)).threshold_tokens == 4.25
    wl = WeightLens(adapter, tc, WeightLensConfig())
    n_tokens = adapter.W_U.shape[1] - len(wl.special)
    assert wl.threshold_tokens == token_threshold(n_tokens, 1000)
