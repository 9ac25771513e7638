"""The masked forward against an independent forward written out by hand from GPT-2's weights."""

from __future__ import annotations

import pytest
import torch

from cltrace.edges import graph_of, masked_forward
from cltrace.testing import TINY_FAMILIES, tiny_model


def reference_forward(adapter, tokens, removed=frozenset(), corrupt=None):
    """GPT-2 computed head by head; edge ``(writer, reader)`` in ``removed`` carries
    ``corrupt[writer]`` instead of the writer's output in this run. Returns logits and the
    writer outputs."""
    tr = adapter.hf_model.transformer
    p = tokens.shape[1]
    outs = [tr.wte(tokens) + tr.wpe(torch.arange(p))]
    const = 0.0
    n_heads = adapter.n_heads

    def read(reader, n_up):
        x = const
        for w in range(n_up):
            x = x + (corrupt[w] if (w, reader) in removed else outs[w])
        return x

    causal = torch.ones(p, p, dtype=torch.bool).tril()
    for layer, blk in enumerate(tr.h):
        n_up = len(outs)
        d = adapter.d_model
        dh = d // n_heads
        w_qkv, b_qkv = blk.attn.c_attn.weight, blk.attn.c_attn.bias
        heads = []
        for h in range(n_heads):
            qkv = []
            for i, port in enumerate("qkv"):
                x = blk.ln_1(read(f"a{layer}.h{h}.{port}", n_up))
                cols = slice(i * d + h * dh, i * d + (h + 1) * dh)
                qkv.append(x @ w_qkv[:, cols] + b_qkv[cols])
            q, k, v = qkv
            s = (q @ k.transpose(-1, -2)) / dh**0.5
            s = s.masked_fill(~causal, float("-inf"))
            z = torch.softmax(s, -1) @ v
            heads.append(z @ blk.attn.c_proj.weight[h * dh : (h + 1) * dh])
        outs += heads
        const = const + blk.attn.c_proj.bias
        outs.append(blk.mlp(blk.ln_2(read(f"m{layer}", len(outs)))))
    logits = adapter.hf_model.lm_head(tr.ln_f(read("logits", len(outs))))
    return logits, outs


def test_reference_is_the_model(gpt2_double):
    tokens = torch.randint(4, 200, (2, 5))
    ref, _ = reference_forward(gpt2_double, tokens)
    assert torch.allclose(ref, gpt2_double(tokens), atol=1e-10)


def test_binary_masks_equal_patching_edges_by_hand(gpt2_double):
    a = gpt2_double
    g = graph_of(a)
    gen = torch.Generator().manual_seed(1)
    clean = torch.randint(4, 200, (2, 5), generator=gen)
    corrupt_tokens = torch.randint(4, 200, (2, 5), generator=gen)
    _, corrupt_outs = reference_forward(a, corrupt_tokens)
    corrupt = torch.stack(corrupt_outs)
    masks = (torch.rand(4, g.n_edges, generator=gen) > 0.3).double()
    masks[0, :] = 1.0
    masks[1, :] = 0.0
    run = masked_forward(a, clean, masks, corrupt)
    for row in range(masks.shape[0]):
        removed = {g.edges[e] for e in range(g.n_edges) if masks[row, e] == 0}
        ref, _ = reference_forward(a, clean, frozenset(removed), corrupt_outs)
        assert (run.logits[row] - ref).abs().max() <= 1e-5
    # the rows are really different circuits
    assert (run.logits[2] - run.logits[3]).abs().max() > 1e-3


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_full_mask_is_clean_and_empty_is_corrupt(family):
    torch.manual_seed(0)
    a = tiny_model(family)
    g = graph_of(a)
    clean = torch.randint(4, 200, (2, 6))
    corrupt_tokens = torch.randint(4, 200, (2, 6))
    corrupt = masked_forward(a, corrupt_tokens, record=True).writers[:, 0]
    masks = torch.stack([torch.ones(g.n_edges), torch.zeros(g.n_edges)])
    run = masked_forward(a, clean, masks, corrupt)
    assert (run.logits[0] - a(clean)).abs().max() <= 1e-5
    assert (run.logits[1] - a(corrupt_tokens)).abs().max() <= 1e-5


def test_grouped_query_heads_read_keys_separately():
    torch.manual_seed(0)
    a = tiny_model("llama")  # 4 query heads sharing 2 key/value heads
    g = graph_of(a)
    clean = torch.randint(4, 200, (1, 6))
    corrupt = masked_forward(a, torch.randint(4, 200, (1, 6)), record=True).writers[:, 0]
    rows = []
    for head in (0, 1):  # heads 0 and 1 share key/value head 0
        z = torch.ones(g.n_edges)
        z[g.edge_names.index(f"embed->a1.h{head}.k")] = 0
        rows.append(z)
    run = masked_forward(a, clean, torch.stack(rows), corrupt)
    full = a(clean)
    assert (run.logits[0] - full).abs().max() > 1e-4
    assert (run.logits[1] - full).abs().max() > 1e-4
    assert (run.logits[0] - run.logits[1]).abs().max() > 1e-4


def test_edge_count_and_names():
    g = graph_of(tiny_model("gpt2", n_layers=2, n_heads=2, d_model=16))
    # attention layer 0: 1 writer x 3 ports x 2 heads; mlp 0: 3; layer 1: 4x6; mlp 1: 6; logits 7
    assert g.n_edges == 6 + 3 + 24 + 6 + 7
    assert len(g.edges) == g.n_edges
    assert g.edge_names[0] == "embed->a0.h0.q"
    assert g.edge_names[-1] == "m1->logits"


def test_dangling_edges_change_nothing(gpt2_double):
    a = gpt2_double
    g = graph_of(a)
    gen = torch.Generator().manual_seed(3)
    clean = torch.randint(4, 200, (2, 5), generator=gen)
    corrupt = masked_forward(a, torch.randint(4, 200, (2, 5), generator=gen), record=True)
    keep = torch.rand(g.n_edges, generator=gen) > 0.6
    pruned = g.prune_dangling(keep)
    assert pruned.sum() < keep.sum()
    run = masked_forward(a, clean, torch.stack([keep, pruned]).double(), corrupt.writers[:, 0])
    assert (run.logits[0] - run.logits[1]).abs().max() <= 1e-10


def test_nodes_of_a_circuit():
    g = graph_of(tiny_model("gpt2", n_layers=2, n_heads=2, d_model=16))
    keep = torch.zeros(g.n_edges, dtype=torch.bool)
    keep[g.edge_names.index("embed->a1.h0.v")] = True
    keep[g.edge_names.index("a1.h0->logits")] = True
    assert g.nodes_of(keep) == ["a1.h0"]
    keep[g.edge_names.index("a0.h1->m1")] = True
    assert g.nodes_of(keep) == ["a0.h1", "a1.h0", "m1"]


@pytest.mark.parametrize("intervention", ["zero", "mean", "mean-positional"])
def test_interventions_carry_their_values_by_hand(gpt2_double, intervention):
    from cltrace.edges.context import prepare
    from tests.edges.conftest import random_batch

    a = gpt2_double
    g = graph_of(a)
    batch = random_batch(a, 3, 5, seed=7)
    ctx = prepare(a, [batch], intervention)
    _, clean_outs = reference_forward(a, batch.clean)
    clean = torch.stack(clean_outs)  # [W, B, P, D]
    expected = {
        "zero": torch.zeros_like(clean),
        "mean": clean.mean((1, 2), keepdim=True).expand_as(clean),
        "mean-positional": clean.mean(1, keepdim=True).expand_as(clean),
    }[intervention]
    assert torch.allclose(ctx.corrupt[0], expected, atol=1e-10)
    # a random circuit under this intervention, against the hand-written forward
    gen = torch.Generator().manual_seed(2)
    z = (torch.rand(g.n_edges, generator=gen) > 0.5).double()
    removed = frozenset(g.edges[e] for e in range(g.n_edges) if z[e] == 0)
    ref, _ = reference_forward(a, batch.clean, removed, list(expected))
    run = masked_forward(a, batch.clean, z[None], ctx.corrupt[0])
    assert (run.logits[0] - ref).abs().max() <= 1e-5
