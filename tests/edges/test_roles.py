"""Head roles against GPT-2 written out by hand from its weights (attention read directly)."""

from __future__ import annotations

import math

import pytest
import torch

from cltrace.edges.context import prepare
from cltrace.edges.data import PairBatch
from cltrace.edges.roles import READER_MIN, HeadRoles, head_roles, name_positions
from cltrace.testing import TINY_FAMILIES, tiny_model


def ioi_batch(b: int, p: int, seed: int) -> PairBatch:
    """Random prompts of length ``p`` with IO once and S twice before the last position."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(4, 100, (b, p), generator=g)
    corrupt = torch.randint(4, 100, (b, p), generator=g)
    io = torch.randint(100, 150, (b,), generator=g)
    s = torch.randint(150, 200, (b,), generator=g)
    for i in range(b):
        slots = torch.randperm(p - 2, generator=g)[:3] + 1  # never the first or last position
        s1, s2 = sorted(slots[:2].tolist())
        clean[i, slots[2]], clean[i, s1], clean[i, s2] = io[i], s[i], s[i]
    ones = torch.ones(b, 1)
    return PairBatch(clean, corrupt, io[:, None], ones, s[:, None], ones)


def hand_forward(a, tokens, patched=None, corrupt_heads=None):
    """GPT-2 from its weights: logits [B, P, V], each layer's pattern [B, H, P, P] and each
    head's output [B, P, D]; head ``patched`` = (layer, head) outputs ``corrupt_heads`` of it."""
    tr = a.hf_model.transformer
    n_heads, d = a.n_heads, a.d_model
    dh = d // n_heads
    p = tokens.shape[1]
    x = tr.wte(tokens) + tr.wpe(torch.arange(p))
    causal = torch.ones(p, p, dtype=torch.bool).tril()
    patterns, heads = [], {}
    for layer, blk in enumerate(tr.h):
        y = blk.ln_1(x) @ blk.attn.c_attn.weight + blk.attn.c_attn.bias
        q, k, v = (y[..., i * d : (i + 1) * d].unflatten(-1, (n_heads, dh)).transpose(1, 2)
                   for i in range(3))  # fmt: skip
        s = (q @ k.transpose(-1, -2)) / dh**0.5
        pat = torch.softmax(s.masked_fill(~causal, float("-inf")), -1)
        patterns.append(pat)
        z = pat @ v  # [B, H, P, dh]
        for h in range(n_heads):
            out = z[:, h] @ blk.attn.c_proj.weight[h * dh : (h + 1) * dh]
            heads[layer, h] = corrupt_heads[layer, h] if patched == (layer, h) else out
            x = x + heads[layer, h]
        x = x + blk.attn.c_proj.bias
        x = x + blk.mlp(blk.ln_2(x))
    return a.hf_model.lm_head(tr.ln_f(x)), patterns, heads


def hand_roles(a, batches):
    """The role numbers of every head, summed over examples by hand, then averaged."""
    n_layers, n_heads = a.n_layers, a.n_heads
    names = [(lay, h) for lay in range(n_layers) for h in range(n_heads)]
    n = sum(b.size for b in batches)
    io_at = torch.zeros(1 + len(names), n_layers, n_heads, dtype=torch.float64)
    s_at, dup = torch.zeros_like(io_at), torch.zeros_like(io_at)
    lp = torch.zeros(2, 1 + len(names), dtype=torch.float64)
    for b in batches:
        _, _, corrupt_heads = hand_forward(a, b.corrupt)
        for row, patched in enumerate([None, *names]):
            logits, pats, _ = hand_forward(a, b.clean, patched, corrupt_heads)
            logp = torch.log_softmax(logits[:, -1], -1)
            for i in range(b.size):
                toks = b.clean[i].tolist()
                io = toks.index(int(b.answers[i, 0]))
                s1 = toks.index(int(b.wrong[i, 0]))
                s2 = toks.index(int(b.wrong[i, 0]), s1 + 1)
                lp[0, row] += logp[i, b.answers[i, 0]]
                lp[1, row] += logp[i, b.wrong[i, 0]]
                for lay in range(n_layers):
                    io_at[row, lay] += pats[lay][i, :, -1, io]
                    s_at[row, lay] += pats[lay][i, :, -1, s1] + pats[lay][i, :, -1, s2]
                    dup[row, lay] += pats[lay][i, :, s2, s1]
    io_at, s_at, dup, lp = io_at / n, s_at / n, dup / n, lp / n
    readers = io_at[0] + s_at[0] >= READER_MIN
    s_inh = torch.full((n_layers, n_heads), math.nan, dtype=torch.float64)
    for r, (lay, h) in enumerate(names):
        later = [(m_l, m_h) for m_l in range(lay + 1, n_layers) for m_h in range(n_heads)
                 if readers[m_l, m_h]]  # fmt: skip
        if later:
            change = [s_at[1 + r, ml, mh] - s_at[0, ml, mh] for ml, mh in later]
            s_inh[lay, h] = sum(change) / len(later)
    d_io = (lp[0, 1:] - lp[0, 0]).view(n_layers, n_heads)
    d_s = (lp[1, 1:] - lp[1, 0]).view(n_layers, n_heads)
    return io_at[0], s_at[0], dup[0], d_io, d_s, s_inh


@pytest.fixture(scope="module")
def gpt2_three():
    torch.manual_seed(1)
    a = tiny_model("gpt2", n_layers=3, n_heads=2, d_model=16)
    a.hf_model.double()
    return a


def test_hand_forward_is_the_model(gpt2_three):
    tokens = ioi_batch(2, 7, 0).clean
    logits, _, _ = hand_forward(gpt2_three, tokens)
    # the model's attention takes its softmax in float32, hence not 1e-12
    assert torch.allclose(logits, gpt2_three(tokens), atol=1e-7)


def test_name_positions():
    b = ioi_batch(4, 8, 3)
    pos = name_positions(b)
    assert bool(pos.valid.all())
    for i in range(4):
        toks = b.clean[i].tolist()
        assert toks[pos.io[i]] == b.answers[i, 0]
        assert toks[pos.s1[i]] == toks[pos.s2[i]] == b.wrong[i, 0]
        assert pos.s1[i] < pos.s2[i]


def test_roles_equal_the_hand_computation(gpt2_three):
    a = gpt2_three
    batches = [ioi_batch(3, 7, 0), ioi_batch(2, 9, 1)]
    ctx = prepare(a, batches)
    roles = head_roles(ctx, chunk=3)  # rows split over several passes
    assert roles is not None and roles.n_examples == 5
    io_at, s_at, dup, d_io, d_s, s_inh = hand_roles(a, batches)
    for got, want in ((roles.attn_io, io_at), (roles.attn_s, s_at), (roles.dup_token, dup),
                      (roles.effect_io, d_io), (roles.effect_s, d_s),
                      (roles.logit_effect, d_io - d_s)):  # fmt: skip
        assert torch.allclose(got.double(), want, atol=1e-6), (got, want)
    finite = torch.isfinite(s_inh)
    assert finite.any()  # some head has a later name reader, so the S-inhibition test ran
    assert torch.equal(torch.isfinite(roles.s_inhibition), finite)
    assert torch.allclose(roles.s_inhibition[finite], s_inh[finite], atol=1e-6)
    # patching a head changes the answer: the effects are not all zero
    assert d_io.abs().max() > 1e-4


def test_no_roles_without_the_name_structure(gpt2_three):
    b = ioi_batch(2, 7, 0)
    b.wrong[0, 0] = 3  # a token the prompt never holds: S is not named twice
    assert head_roles(prepare(gpt2_three, [b])) is None


def test_labels_follow_their_thresholds():
    z = torch.zeros(1, 4, dtype=torch.float64)
    roles = HeadRoles(
        n_examples=1,
        attn_io=torch.tensor([[0.5, 0.1, 0.0, 0.0]]),
        attn_s=torch.tensor([[0.1, 0.6, 0.0, 0.0]]),
        dup_token=torch.tensor([[0.0, 0.0, 0.4, 0.0]]),
        logit_effect=torch.tensor([[-1.0, -1.0, 0.0, 0.0]]),
        effect_io=z,
        effect_s=torch.tensor([[0.0, 0.5, 0.0, 0.0]]),
        s_inhibition=torch.tensor([[math.nan, math.nan, math.nan, 0.2]]),
    )
    assert [roles.labels(0, h) for h in range(4)] == [
        ["name-mover-like"], ["s-suppression-like"], ["duplicate-token-like"],
        ["s-inhibition-like"],
    ]  # fmt: skip
    doc = roles.to_json(["a0.h3", "m0"])
    assert list(doc["heads"]) == ["a0.h3"] and doc["readers"] == ["a0.h0", "a0.h1"]
    assert doc["heads"]["a0.h3"]["s_inhibition"] == 0.2


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_clean_attention_is_the_models_pattern(family):
    """On every family (grouped-query heads, Gemma-2's soft-capping and post-norms) the clean
    numbers equal the pattern the adapter caches in an ordinary forward."""
    torch.manual_seed(0)
    a = tiny_model(family)
    b = ioi_batch(3, 7, 0)
    roles = head_roles(prepare(a, [b]))
    assert roles is not None
    with a.cache([f"attn_pattern.{lay}" for lay in range(a.n_layers)]) as cache:
        a(b.clean)
    pats = torch.stack([cache[f"attn_pattern.{lay}"] for lay in range(a.n_layers)], 1)
    io, s, dup = [], [], []
    for i, toks in enumerate(b.clean.tolist()):
        p_io = toks.index(int(b.answers[i, 0]))
        s1 = toks.index(int(b.wrong[i, 0]))
        s2 = toks.index(int(b.wrong[i, 0]), s1 + 1)
        io.append(pats[i, :, :, -1, p_io])
        s.append(pats[i, :, :, -1, s1] + pats[i, :, :, -1, s2])
        dup.append(pats[i, :, :, s2, s1])
    for got, want in ((roles.attn_io, io), (roles.attn_s, s), (roles.dup_token, dup)):
        assert torch.allclose(got.float(), torch.stack(want).mean(0), atol=1e-6)
    assert roles.logit_effect.abs().max() > 1e-3  # patching heads changes the answer
