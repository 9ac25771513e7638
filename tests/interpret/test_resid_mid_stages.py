"""Stages II and III read what a ``hook_resid_mid`` transcoder's features read: the residual
stream before the MLP's norm, not the MLP input."""

import numpy as np
import torch

from cltrace.interpret.features import feature_activations
from cltrace.score.activations import token_activations
from cltrace.score.steer import clamp_hooks
from cltrace.testing import resid_mid_transcoder, tiny_model

TEXT = "w1 w2 w3 w4 w5 w6"


def _setup():
    adapter = tiny_model("llama")
    tc = resid_mid_transcoder(adapter, d_features=24)
    tokens = adapter.to_tokens(TEXT)
    with torch.no_grad(), adapter.cache(adapter.sites("resid_mid") + adapter.sites("mlp_in")) as c:
        adapter(tokens)
    # by hand: the features of every layer on the residual stream before the norm
    with torch.no_grad():
        acts = {layer: tc.encode(layer, c[f"resid_mid.{layer}"][0].float())
                for layer in range(adapter.n_layers)}  # fmt: skip
        wrong = {layer: tc.encode(layer, c[f"mlp_in.{layer}"][0].float())
                 for layer in range(adapter.n_layers)}  # fmt: skip
    layer = adapter.n_layers - 1
    live = (acts[layer][1:] > 0).any(0).nonzero().flatten()
    assert live.numel() >= 2  # features that fire, so the comparison is not zeros against zeros
    feats = [(layer, int(f)) for f in live[:2]] + [(0, int((acts[0][1:] > 0).any(0).nonzero()[0]))]
    return adapter, tc, tokens, acts, wrong, feats


def test_store_and_natural_text_activations_read_the_residual_stream():
    adapter, tc, tokens, acts, wrong, feats = _setup()
    got = feature_activations(adapter, tc, tokens, feats)[0]
    want = torch.stack([acts[layer][:, f] for layer, f in feats], -1)
    assert torch.allclose(got, want, atol=1e-5)
    misread = torch.stack([wrong[layer][:, f] for layer, f in feats], -1)
    assert (misread - want).abs().max() > 1e-2  # reading the MLP input would differ
    (text,) = token_activations(adapter, tc, [TEXT], feats)
    assert np.allclose(text.acts, want[1:].T.numpy(), atol=1e-5)


def test_clamping_reads_the_feature_from_the_residual_stream():
    adapter, tc, tokens, acts, _, feats = _setup()
    layer, f = feats[0]
    with torch.no_grad(), adapter.cache([f"mlp_out.{layer}"]) as base:
        adapter(tokens)
    value = 3.0
    with torch.no_grad(), adapter.hooks(clamp_hooks(tc, layer, f, value)), \
            adapter.cache([f"mlp_out.{layer}"]) as clamped:
        adapter(tokens)
    row = tc.decoder_rows(layer, torch.tensor([f]))[0, 0].float()
    want = (value - acts[layer][:, f])[:, None] * row  # the edit at layer l's own MLP output
    got = (clamped[f"mlp_out.{layer}"] - base[f"mlp_out.{layer}"])[0].float()
    assert torch.allclose(got, want, atol=1e-4)
