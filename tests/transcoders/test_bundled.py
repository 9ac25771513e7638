"""The transcoders cltrace ships load, fit the bundled model, and reconstruct its MLP outputs."""

from __future__ import annotations

import pytest
import torch

from cltrace.paths import BUNDLED_CLT_DIR, BUNDLED_MODEL_DIR, BUNDLED_PLT_DIR
from cltrace.transcoders import load_transcoder

pytestmark = pytest.mark.skipif(
    not (BUNDLED_MODEL_DIR / "config.json").is_file()
    or not (BUNDLED_CLT_DIR / "config.yaml").is_file(),
    reason="bundled model or transcoders not built yet",
)


@pytest.fixture(scope="module")
def model():
    from cltrace.models import load_model

    return load_model()


# FVU on the sentence below as measured: CLT 0.033, PLT 0.043; bounds about 20% above
@pytest.mark.parametrize(
    "directory,cross,max_fvu", [(BUNDLED_CLT_DIR, True, 0.04), (BUNDLED_PLT_DIR, False, 0.052)]
)
@torch.no_grad()
def test_bundled_transcoder_fits_bundled_model(model, directory, cross, max_fvu):
    tc = load_transcoder(directory, model=model)
    assert tc.cfg.cross_layer == cross and tc.n_features() >= 2000
    assert tc.W_enc[0].dtype == torch.float32
    sites = [f"{k}.{i}" for k in ("mlp_in", "mlp_out") for i in range(model.n_layers)]
    tokens = model.to_tokens("Then, Mary and John went to the store. John gave a drink to")
    with model.cache(sites) as cache:
        model(tokens)
    x = torch.stack([cache[f"mlp_in.{i}"][0] for i in range(model.n_layers)])
    y = torch.stack([cache[f"mlp_out.{i}"][0] for i in range(model.n_layers)])
    fvu = ((tc.reconstruct(x) - y) ** 2).sum() / ((y - y.mean(1, keepdim=True)) ** 2).sum()
    assert fvu < max_fvu
    assert len(tc.encode_sparse(x)) > 800  # enough occurrences for K = 50..800 budgets


# README's figures (`cltrace transcoder eval --json`, 20,001 held-out tokens), as measured:
# CLT FVU 0.051 / 0.039 / 0.040 / 0.045, L0 mean 21.4, agreement 0.826, KL 0.154;
# PLT FVU mean 0.048, L0 mean 27.2, agreement 0.802, KL 0.184. Bounds: 15% of each.
README_FIGURES = {
    "clt": dict(fvu=[0.051, 0.039, 0.040, 0.045], l0=21.4, agreement=0.826, kl=0.154),
    "plt": dict(fvu=[0.056, 0.043, 0.046, 0.048], l0=27.2, agreement=0.802, kl=0.184),
}


@pytest.mark.parametrize("directory", [BUNDLED_CLT_DIR, BUNDLED_PLT_DIR], ids=["clt", "plt"])
def test_bundled_transcoder_matches_readme_figures(model, directory):
    from cltrace.cli.transcoders import EVAL_SEED
    from cltrace.transcoders.data import load_texts
    from cltrace.transcoders.evaluate import evaluate_transcoder

    want = README_FIGURES[directory.name]
    tc = load_transcoder(directory, model=model)
    report = evaluate_transcoder(model, tc, load_texts(None, 4000, EVAL_SEED), n_tokens=20_000)
    assert report.fvu == pytest.approx(want["fvu"], rel=0.15)
    assert report.mean_l0 == pytest.approx(want["l0"], rel=0.15)
    assert report.dead_share == 0.0
    # agreement near 1: 15% of the disagreement (0.174, 0.198), not of the agreement
    assert report.replacement_agreement >= 1 - 1.15 * (1 - want["agreement"])
    assert report.replacement_kl <= 1.15 * want["kl"]
