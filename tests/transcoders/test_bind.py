"""Hook semantics: a transcoder reading ``ln2.hook_normalized`` (the MLP's norm before its weight
and bias) computes, once bound, exactly what it computes on that tensor built by hand, in every
family; sites cltrace cannot read exactly are refused with one sentence."""

import pytest
import torch

from cltrace.errors import CltraceError
from cltrace.models.families import get_path
from cltrace.replacement import build_replacement
from cltrace.testing import random_transcoder, tiny_model
from cltrace.transcoders import load_transcoder, save_transcoder
from cltrace.transcoders.bind import bind_transcoder

FAMILIES = ["gpt2", "llama", "gemma2", "qwen3"]


def _model_with_random_norms(family: str):
    adapter = tiny_model(family, seed=1)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for layer in range(adapter.n_layers):
            norm = get_path(adapter.block(layer), adapter.family.mlp_in_norm)
            norm.weight.copy_(0.5 + torch.rand(norm.weight.shape, generator=g))
            if getattr(norm, "bias", None) is not None:
                norm.bias.copy_(torch.randn(norm.bias.shape, generator=g) * 0.3)
    return adapter


def _normalized_by_hand(adapter, tokens) -> list[torch.Tensor]:
    """The MLP norm's input at every layer, normalised by hand (no weight, no bias)."""
    inputs = {}
    handles = []
    for layer in range(adapter.n_layers):
        norm = get_path(adapter.block(layer), adapter.family.mlp_in_norm)

        def grab(_mod, args, _l=layer):
            inputs[_l] = args[0].detach().double()

        handles.append(norm.register_forward_pre_hook(grab))
    try:
        with torch.no_grad():
            adapter(tokens)
    finally:
        for h in handles:
            h.remove()
    out = []
    for layer in range(adapter.n_layers):
        norm = get_path(adapter.block(layer), adapter.family.mlp_in_norm)
        x = inputs[layer][0]
        eps = getattr(norm, "eps", None) or norm.variance_epsilon
        if adapter.family.norm_kind == "layernorm":
            centred = x - x.mean(-1, keepdim=True)
            out.append(centred / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + eps))
        else:
            out.append(x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps))
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_normalized_hook_reads_the_norm_before_its_weight(family):
    adapter = _model_with_random_norms(family)
    original = random_transcoder(adapter, d_features=12, skip=True, seed=3)
    original.cfg.feature_input_hook = "blocks.0.ln2.hook_normalized"
    bound = random_transcoder(adapter, d_features=12, skip=True, seed=3)
    bound.cfg.feature_input_hook = "ln2.hook_normalized"
    bind_transcoder(bound, adapter)
    assert bound.cfg.feature_input_hook == "mlp.hook_in"

    tokens = adapter.to_tokens("w1 w2 w3 w4 w5")
    normalized = _normalized_by_hand(adapter, tokens)
    with torch.no_grad(), adapter.cache([f"mlp_in.{i}" for i in range(adapter.n_layers)]) as mlp_in:
        adapter(tokens)
    for layer in range(adapter.n_layers):
        n = normalized[layer]
        want_pre = n @ original.W_enc[layer].double().T + original.b_enc[layer].double()
        want_skip = n @ original.W_skip[layer].double().T + original.b_dec[layer].double()
        x = mlp_in[f"mlp_in.{layer}"][0].double()
        got_pre = x @ bound.W_enc[layer].double().T + bound.b_enc[layer].double()
        got_skip = x @ bound.W_skip[layer].double().T + bound.b_dec[layer].double()
        torch.testing.assert_close(got_pre, want_pre, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(got_skip, want_skip, atol=2e-5, rtol=1e-5)
        # the fold matters: reading mlp_in with the file's encoder would be wrong
        naive = x @ original.W_enc[layer].double().T + original.b_enc[layer].double()
        assert (naive - want_pre).abs().max() > 1e-2


@pytest.mark.parametrize("family", ["gpt2", "gemma2"])
def test_loading_with_the_model_binds_and_the_replacement_is_exact(family, tmp_path):
    adapter = _model_with_random_norms(family)
    tc = random_transcoder(adapter, d_features=12, seed=4)
    tc.cfg.feature_input_hook = "ln2.hook_normalized"
    tc.cfg.model_name = adapter.name
    save_transcoder(tc, tmp_path / "clt")
    loaded = load_transcoder(tmp_path / "clt", model=adapter)
    assert loaded.cfg.feature_input_hook == "mlp.hook_in"
    # the replacement's logits equal the model's (error nodes close the gap exactly)
    tokens = adapter.to_tokens("w3 w1 w4 w1 w5")
    state = build_replacement(adapter, loaded, tokens)
    with torch.no_grad():
        logits = adapter(tokens)[0]
    torch.testing.assert_close(state.logits, logits.float(), atol=1e-4, rtol=1e-4)


def test_a_transcoder_met_without_binding_is_bound_by_the_replacement_model():
    adapter = _model_with_random_norms("llama")
    by_load = random_transcoder(adapter, d_features=8, seed=6)
    by_load.cfg.feature_input_hook = "ln2.hook_normalized"
    bind_transcoder(by_load, adapter)
    late = random_transcoder(adapter, d_features=8, seed=6)
    late.cfg.feature_input_hook = "ln2.hook_normalized"
    tokens = adapter.to_tokens("w1 w2 w3")
    a = build_replacement(adapter, by_load, tokens).active
    b = build_replacement(adapter, late, tokens).active
    assert torch.equal(a.feature, b.feature) and torch.allclose(a.value, b.value)


def test_resid_mid_is_kept_as_it_is_and_gemma_raw_mlp_out_is_refused():
    adapter = tiny_model("gemma2")
    tc = random_transcoder(adapter, d_features=8)
    tc.cfg.feature_input_hook = "hook_resid_mid"
    W = [w.clone() for w in tc.W_enc]
    assert bind_transcoder(tc, adapter) is tc
    assert tc.cfg.feature_input_hook == "hook_resid_mid"
    assert all(torch.equal(a, b) for a, b in zip(W, tc.W_enc, strict=True))
    tc.cfg.feature_input_hook = "mlp.hook_in"
    tc.cfg.feature_output_hook = "blocks.1.mlp.hook_out"
    with pytest.raises(CltraceError, match="post-feedforward norm"):
        bind_transcoder(tc, adapter)
    # on Llama the MLP module's output is what the block adds: accepted as it is
    llama = tiny_model("llama")
    other = random_transcoder(llama, d_features=8)
    other.cfg.feature_output_hook = "mlp.hook_out"
    assert bind_transcoder(other, llama) is other
