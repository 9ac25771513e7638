"""Patched passes that start after the first patched block equal the whole hooked model."""

import pytest
import torch

from cltrace.prune import compute_components
from cltrace.testing import random_transcoder, tiny_model
from tests.prune.conftest import PAIR, dense_writes


def _full_run(comps, writes, mask):
    """Last logits of the whole model with the mask's delta writes taken off every MLP output,
    the patch summed occurrence by occurrence."""
    L, D = writes.shape[1:]
    patch = torch.zeros(comps.n_pos, L, D)
    for o in mask.nonzero().squeeze(1).tolist():
        patch[comps.position[o]] += writes[o]
    hooks = {f"mlp_out.{s}": (lambda t, s=s: t - patch[:, s]) for s in range(L)}
    with torch.no_grad(), comps.adapter.hooks(hooks):
        return comps.adapter(comps.tokens)[0, -1].float()


def _masks(comps, writes, seed=0):
    """Single occurrences of every layer (ones that write something), mixed sets, an empty and
    a full mask."""
    g = torch.Generator().manual_seed(seed)
    n, rows = comps.n, []
    nonzero = writes.flatten(1).abs().amax(1) > 1e-3
    for layer in comps.layer.unique().tolist():
        idx = ((comps.layer == layer) & nonzero).nonzero().squeeze(1)
        for o in idx[torch.randperm(idx.numel(), generator=g)[:2]].tolist():
            row = torch.zeros(n, dtype=torch.bool)
            row[o] = True
            rows.append(row)
    for frac in (0.1, 0.5):
        rows.append(torch.rand(n, generator=g) < frac)
    rows += [torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)]
    return torch.stack(rows)


@pytest.mark.parametrize(("family", "window"), [("gpt2", None), ("llama", None), ("qwen3", None),
                                               ("gemma2", 4), ("gemma2", 64)])  # fmt: skip
def test_removals_equal_the_whole_hooked_model(family, window):
    adapter = tiny_model(family, **({"sliding_window": window} if window else {}))
    tc = random_transcoder(adapter, d_features=24, skip=family == "gpt2")
    comps = compute_components(adapter, tc, PAIR)
    # rows start mid-prompt from the clean keys and values, except where Gemma-2's local
    # attention window (4) is shorter than the prompt (7 tokens)
    assert (comps._clean_keys_values() is None) == (window == 4)
    writes = dense_writes(comps, tc)
    masks = _masks(comps, writes)
    assert len(comps.layer.unique()) == adapter.n_layers  # every start layer is exercised
    got = comps.run_removals(masks, batch_size=3)
    for i, mask in enumerate(masks):
        want = _full_run(comps, writes, mask)
        assert torch.allclose(got[i], want, rtol=1e-5, atol=1e-5), (i, (got[i] - want).abs().max())
    assert torch.equal(got[-2], comps.clean_logits)  # nothing removed: the clean run itself
    # the mixed and full removals do change the logits, so the comparison is not clean vs clean
    # (a last-layer write away from the last position cannot reach the last logits)
    assert (got[[-4, -3, -1]] - comps.clean_logits).abs().amax(1).min() > 1e-3


def test_skipped_blocks_run_nothing_and_are_restored():
    adapter = tiny_model("llama")
    calls = []
    handles = [adapter.block(j).mlp.register_forward_hook(lambda *_a, j=j: calls.append(j))
               for j in range(adapter.n_layers)]  # fmt: skip
    tokens = adapter.to_tokens("w1 w2 w3")
    with torch.no_grad(), adapter.cache(["resid_post.0"]) as c:
        clean = adapter(tokens)
    with torch.no_grad(), adapter.resume_after(0, c["resid_post.0"]):
        adapter(tokens)  # the first use also learns what the blocks return
    calls.clear()
    with torch.no_grad(), adapter.resume_after(0, c["resid_post.0"]):
        resumed = adapter(tokens)
    assert calls == list(range(1, adapter.n_layers))
    assert torch.allclose(resumed, clean, atol=1e-5)
    calls.clear()
    with torch.no_grad():
        adapter(tokens)
    assert calls == list(range(adapter.n_layers))  # every block is back
    for h in handles:
        h.remove()


def test_masks_sharing_a_removed_set_equal_the_whole_hooked_model():
    adapter = tiny_model("llama")
    tc = random_transcoder(adapter, d_features=24)
    comps = compute_components(adapter, tc, PAIR)
    writes = dense_writes(comps, tc)
    g = torch.Generator().manual_seed(1)
    base = torch.rand(comps.n, generator=g) < 0.3
    assert base.sum() > 4  # the shared set is summed once for all rows
    masks = base.repeat(6, 1)
    for i, o in enumerate((~base).nonzero().squeeze(1)[:6].tolist()):
        masks[i, o] = True
    got = comps.run_removals(masks)
    for i, mask in enumerate(masks):
        assert torch.allclose(got[i], _full_run(comps, writes, mask), rtol=1e-5, atol=1e-5), i
