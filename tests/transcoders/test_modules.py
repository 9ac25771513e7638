"""The transcoder maths against brute-force loops written straight from docs/METHODS.md §1."""

from __future__ import annotations

import pytest
import torch

from cltrace.errors import CltraceError
from cltrace.transcoders import TranscoderConfig
from cltrace.transcoders.activations import jumprelu
from tests.transcoders.tc_helpers import D, F, L

VARIANTS = [
    (cross, act, skip)
    for cross in (True, False)
    for act in ("jumprelu", "relu", "topk")
    for skip in (False, True)
]


def brute_acts(tc, x_all):
    """a[l, t, f] by explicit loops over layers, positions and features."""
    acts = torch.zeros(L, x_all.shape[1], F)
    for layer in range(L):
        for t in range(x_all.shape[1]):
            pre = torch.tensor(
                [float(tc.W_enc[layer][f] @ x_all[layer, t] + tc.b_enc[layer][f]) for f in range(F)]
            )
            for f in range(F):
                if tc.cfg.activation == "jumprelu":
                    acts[layer, t, f] = pre[f] if pre[f] > tc.threshold[layer][f] else 0.0
                elif tc.cfg.activation == "relu":
                    acts[layer, t, f] = max(float(pre[f]), 0.0)
                else:
                    rank = int((pre > pre[f]).sum())
                    acts[layer, t, f] = max(float(pre[f]), 0.0) if rank < tc.cfg.k else 0.0
    return acts


def brute_recon(tc, x_all, acts):
    """y_hat[s, t] = b_dec[s] + sum_{l<=s} sum_f a[l,t,f] W_dec^{l->s}[f] (+ W_skip[s] x[s,t])."""
    out = torch.zeros(L, x_all.shape[1], D)
    for s in range(L):
        for t in range(x_all.shape[1]):
            y = tc.b_dec[s].clone()
            for src in range(s + 1):
                if not tc.cfg.cross_layer and src != s:
                    continue
                for f in range(F):
                    y = y + acts[src, t, f] * tc.W_dec[src][f, s - src]
            if tc.cfg.skip:
                y = y + tc.W_skip[s] @ x_all[s, t]
            out[s, t] = y
    return out


@pytest.mark.parametrize("cross,act,skip", VARIANTS)
@torch.no_grad()
def test_encode_reconstruct_match_brute_force(make_transcoder, x_all, cross, act, skip):
    tc = make_transcoder(cross, act, skip)
    acts = brute_acts(tc, x_all)
    assert 0 < (acts != 0).sum() < acts.numel()  # the random weights give a real mix
    for layer in range(L):
        torch.testing.assert_close(
            tc.encode(layer, x_all[layer]), acts[layer], rtol=1e-5, atol=1e-5
        )
    expected = brute_recon(tc, x_all, acts)
    torch.testing.assert_close(tc.reconstruct(x_all), expected, rtol=1e-5, atol=1e-5)
    recon, acts2 = tc(x_all)
    torch.testing.assert_close(recon, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(acts2, acts, rtol=1e-5, atol=1e-5)
    for s in range(L):
        skip_term = tc.skip(s, x_all[s])
        torch.testing.assert_close(
            tc.decode(list(acts), s) + skip_term, expected[s], rtol=1e-5, atol=1e-5
        )


@torch.no_grad()
def test_decode_uses_only_sources_up_to_target(make_transcoder, x_all):
    tc = make_transcoder()
    acts = tc.encode_all(x_all)
    later = acts.clone()
    later[2] = 123.0  # layer-2 features cannot write into layer 1
    torch.testing.assert_close(tc.decode(later, 1), tc.decode(acts, 1))


@torch.no_grad()
def test_encode_sparse_lists_every_nonzero(make_transcoder, x_all):
    tc = make_transcoder()
    sp = tc.encode_sparse(x_all)
    dense = tc.encode_all(x_all)
    assert len(sp) == int((dense != 0).sum())
    torch.testing.assert_close(sp.to_coo().to_dense(), dense)
    torch.testing.assert_close(dense[sp.layer, sp.position, sp.feature], sp.value)


def test_decoder_rows_shape_and_values(make_transcoder):
    for cross in (True, False):
        tc = make_transcoder(cross)
        ids = torch.tensor([5, 0, 5])
        rows = tc.decoder_rows(1, ids)
        assert rows.shape == (3, (L - 1) if cross else 1, D)
        torch.testing.assert_close(rows, tc.W_dec[1][ids])


def test_jumprelu_threshold_gradient_is_kernel_estimate():
    pre = torch.tensor([0.49, 0.51, 0.9, 0.2])
    theta = torch.tensor(0.5, requires_grad=True)
    out = jumprelu(pre, theta.expand(4), bandwidth=0.1)
    assert out.tolist() == [0.0, pytest.approx(0.51), pytest.approx(0.9), 0.0]
    out.sum().backward()
    # Two pre-activations lie within bandwidth/2 of theta: each contributes -theta/eps.
    assert theta.grad.item() == pytest.approx(-2 * 0.5 / 0.1)


def test_jumprelu_input_gradient_passes_only_active():
    pre = torch.tensor([0.2, 0.8], requires_grad=True)
    jumprelu(pre, torch.tensor([0.5, 0.5])).sum().backward()
    assert pre.grad.tolist() == [0.0, 1.0]


def test_topk_without_k_is_an_error():
    with pytest.raises(CltraceError, match="k"):
        TranscoderConfig(2, 4, 8, activation="topk")
    with pytest.raises(CltraceError, match="activation"):
        TranscoderConfig(2, 4, 8, activation="gelu")
