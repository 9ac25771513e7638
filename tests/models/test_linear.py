"""FrozenTranspose against autograd through the real model with frozen patterns and norms."""

import pytest
import torch

from cltrace.models.freeze import frozen, record_frozen
from cltrace.models.linear import FrozenTranspose
from cltrace.testing import TINY_FAMILIES, tiny_model


def _autograd(adapter, fs, layer, pos, read, post, skip):
    """Gradients at the block-0 input and every MLP output, one prompt copy per batch row."""
    b, L = pos.numel(), adapter.n_layers
    sites = [f"mlp_out.{i}" for i in range(L)]
    with adapter.cache(["resid_pre.0", *sites]) as c:
        adapter(fs.tokens)
    emb = c["resid_pre.0"].expand(b, -1, -1).clone().requires_grad_()
    outs = [c[s].expand(b, -1, -1).clone().requires_grad_() for s in sites]
    mlp_in, resid_post = {}, {}
    hooks = {"resid_pre.0": lambda _t: emb}
    for i in range(L):
        hooks[f"mlp_in.{i}"] = lambda t, _i=i: mlp_in.__setitem__(_i, t)
        if skip is None:
            hooks[f"mlp_out.{i}"] = lambda _t, _i=i: outs[_i]
        else:
            hooks[f"mlp_out.{i}"] = lambda _t, _i=i: outs[_i] + mlp_in[_i] @ skip[_i].T
        hooks[f"resid_post.{i}"] = lambda t, _i=i: resid_post.__setitem__(_i, t)
    with torch.enable_grad(), frozen(adapter, fs), adapter.hooks(hooks):
        adapter(fs.tokens.expand(b, -1))
        rows = torch.arange(b)
        total = torch.zeros(())
        if read is not None:
            total = total + (mlp_in[layer][rows, pos] * read).sum()
        if post is not None:
            total = total + (resid_post[layer][rows, pos] * post).sum()
        grads = torch.autograd.grad(total, [emb, *outs], allow_unused=True)
    grads = [torch.zeros_like(emb) if g is None else g for g in grads]
    return grads[0], torch.stack(grads[1:])  # [b, pos, d], [L, b, pos, d]


@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("with_skip", [False, True])
def test_transpose_equals_autograd(family, with_skip):
    torch.manual_seed(0)
    adapter = tiny_model(family, n_layers=3)
    tokens = torch.randint(4, adapter.d_vocab, (1, 9))
    fs = record_frozen(adapter, tokens)
    D = adapter.d_model
    skip = [0.1 * torch.randn(D, D) for _ in range(3)] if with_skip else None
    ft = FrozenTranspose(adapter, fs, skip)
    pos = torch.tensor([2, 5, 5, 7])
    for layer, read, post, n_pos in [
        (2, torch.randn(4, D), None, 8),  # feature-like reads on a prefix of 8 positions
        (1, torch.randn(4, D), torch.randn(4, D), None),  # both kinds of read, whole prompt
        (0, torch.randn(4, D), None, 9),  # nothing below layer 0 but the embeddings
    ]:
        g_emb, g_out = ft.backward(layer, pos, read=read, post=post, n_pos=n_pos)
        ref_emb, ref_out = _autograd(adapter, fs, layer, pos, read, post, skip)
        P = g_emb.shape[0]
        assert P == (n_pos or 9) and g_out.shape[2] == layer + (post is not None)
        scale = ref_emb.abs().max()
        torch.testing.assert_close(g_emb.transpose(0, 1), ref_emb[:, :P], atol=1e-5 * scale, rtol=0)
        if P < 9:
            assert ref_emb[:, P:].abs().max() == 0  # causal: nothing reaches later positions
        n = g_out.shape[2]
        got = g_out.permute(2, 1, 0, 3)  # [layers, b, pos, d]
        torch.testing.assert_close(got, ref_out[:n, :, :P], atol=1e-5 * scale, rtol=0)
        if n < 3:
            assert ref_out[n:].abs().max() == 0  # layers above the reads get no gradient
