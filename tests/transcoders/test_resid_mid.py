"""``hook_resid_mid`` transcoders: features read the residual stream before the MLP's norm, raw
(no norm folded in), in every family; loading keeps the file's weights."""

import pytest
import torch

from cltrace.prune import compute_components
from cltrace.replacement import build_replacement
from cltrace.tasks import PromptPair
from cltrace.testing import resid_mid_transcoder, tiny_model
from cltrace.transcoders import load_transcoder, save_transcoder

FAMILIES = ["gpt2", "llama", "gemma2", "qwen3"]
PROMPT = "w3 w8 w1 w3 w8 w9"


def _resid_mid_by_hand(adapter, tokens) -> list[torch.Tensor]:
    """Block input plus attention's write, and block output minus the MLP's write: the residual
    stream between attention and MLP computed two ways from sites that do not involve it."""
    sites = [f"{k}.{i}" for k in ("resid_pre", "attn_out", "resid_post", "mlp_out")
             for i in range(adapter.n_layers)]  # fmt: skip
    with torch.no_grad(), adapter.cache(sites) as c:
        adapter(tokens)
    out = []
    for i in range(adapter.n_layers):
        a = (c[f"resid_pre.{i}"] + c[f"attn_out.{i}"])[0].double()
        b = (c[f"resid_post.{i}"] - c[f"mlp_out.{i}"])[0].double()
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        out.append(a)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_the_encoder_is_fed_the_raw_residual_stream(family):
    adapter = tiny_model(family, seed=1)
    tc = resid_mid_transcoder(adapter, d_features=16, skip=True, seed=2)
    tokens = adapter.to_tokens(PROMPT)
    by_hand = _resid_mid_by_hand(adapter, tokens)
    state = build_replacement(adapter, tc, tokens)
    assert state.input_kind == "resid_mid"
    with torch.no_grad(), adapter.cache(adapter.sites("mlp_in")) as mlp_in:
        adapter(tokens)
    for layer in range(adapter.n_layers):
        torch.testing.assert_close(state.mlp_in[layer].double(), by_hand[layer], atol=1e-5, rtol=0)
        # and not the norm's output, which an mlp.hook_in transcoder reads
        assert (mlp_in[f"mlp_in.{layer}"][0] - state.mlp_in[layer]).abs().max() > 1e-1
        skip = by_hand[layer] @ tc.W_skip[layer].double().T
        torch.testing.assert_close(state.skip_out[layer].double(), skip, atol=1e-5, rtol=1e-4)
    # the active occurrences are the encoder's on the hand-built input (BOS zeroed)
    a = state.active
    assert a.value.numel() > 0
    for layer in range(adapter.n_layers):
        pre = by_hand[layer] @ tc.W_enc[layer].double().T + tc.b_enc[layer].double()
        dense = torch.where(pre > tc.threshold[layer].double(), pre, 0.0)
        dense[0] = 0
        m = a.layer == layer
        assert int((dense != 0).sum()) == int(m.sum())
        got = dense[a.position[m], a.feature[m]]
        torch.testing.assert_close(a.value[m].double(), got, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_pie_components_encode_both_prompts_from_the_residual_stream(family):
    adapter = tiny_model(family, seed=1)
    tc = resid_mid_transcoder(adapter, d_features=16, seed=2)
    pair = PromptPair("w1 w2 w3 w4 w2 w5", "w6 w7 w3 w4 w7 w5", (" w2",), (" w7",))
    comps = compute_components(adapter, tc, pair)
    for tokens, values in ((comps.tokens, comps.a_clean), (comps.corrupt_tokens, comps.a_corrupt)):
        x = _resid_mid_by_hand(adapter, tokens)
        want = torch.stack(
            [tc.encode(int(layer), x[int(layer)][int(pos)].float())[int(f)]
             for layer, pos, f in zip(comps.layer, comps.position, comps.feature, strict=True)]
        )  # fmt: skip
        torch.testing.assert_close(values, want, atol=1e-5, rtol=1e-5)
    assert (comps.a_clean != 0).sum() > 0


def test_loading_keeps_the_file_weights_and_hook(tmp_path):
    adapter = tiny_model("gemma2")
    tc = resid_mid_transcoder(adapter, d_features=8)
    tc.cfg.feature_input_hook = "blocks.0.hook_resid_mid"
    tc.cfg.model_name = adapter.name
    save_transcoder(tc, tmp_path / "clt")
    loaded = load_transcoder(tmp_path / "clt", model=adapter)
    assert loaded.cfg.feature_input_hook == "blocks.0.hook_resid_mid"
    for layer in range(adapter.n_layers):
        assert torch.equal(loaded.W_enc[layer], tc.W_enc[layer])
        assert torch.equal(loaded.b_enc[layer], tc.b_enc[layer])


def test_evaluation_reads_the_residual_stream():
    from cltrace.transcoders.evaluate import active_occurrences, replacement_hooks

    adapter = tiny_model("gemma2", seed=1)
    tc = resid_mid_transcoder(adapter, d_features=16, skip=True, seed=2)
    tokens = adapter.to_tokens(PROMPT)
    x = _resid_mid_by_hand(adapter, tokens)
    dense = [tc.encode(layer, x[layer].float()) for layer in range(adapter.n_layers)]
    assert active_occurrences(adapter, tc, [PROMPT]) == [sum(int((d != 0).sum()) for d in dense)]
    # layer 0's input is the clean one in the replaced pass too: its output is the
    # reconstruction from the hand-built residual stream
    with torch.no_grad(), adapter.hooks(replacement_hooks(tc)), adapter.cache(["mlp_out.0"]) as c:
        adapter(tokens)
    want = tc.decode([dense[0]], 0) + tc.skip(0, x[0].float())
    torch.testing.assert_close(c["mlp_out.0"][0], want.float(), atol=1e-5, rtol=1e-5)
