"""A forward pass that stops at a site: the sites up to it equal the full run's, nothing after
it runs."""

import pytest
import torch

from cltrace.testing import tiny_model


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma2"])
def test_run_until_records_what_the_full_run_records_and_stops(family):
    adapter = tiny_model(family, n_layers=4)
    tokens = adapter.to_tokens("w1 w2 w3 w4")
    stop = 1
    sites = [f"mlp_in.{layer}" for layer in range(stop + 1)] + ["resid_post.0"]
    with torch.no_grad(), adapter.cache(sites) as full:
        adapter(tokens)
    ran = []
    handles = [adapter.block(j).register_forward_hook(lambda *_a, j=j: ran.append(j))
               for j in range(adapter.n_layers)]  # fmt: skip
    head = adapter.hf_model.get_output_embeddings()
    handles.append(head.register_forward_hook(lambda *_a: ran.append("unembed")))
    with torch.no_grad(), adapter.cache(sites) as part:
        adapter.run_until(tokens, f"mlp_in.{stop}")
    for h in handles:
        h.remove()
    for s in sites:
        assert torch.equal(part[s], full[s]), s
    assert ran == [0]  # block 1 stopped inside, at its MLP input; no later block, no unembedding
    assert stop + 1 < adapter.n_layers  # so there were blocks left to skip
