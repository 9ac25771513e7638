"""WeightLens over lazily read decoders: the same findings as over decoders in memory, virtual
weights equal to a brute-force sum, and memory held within the configured bytes."""

import pytest
import torch

from cltrace.interpret import weightlens
from cltrace.interpret.weightlens import WeightLens, WeightLensConfig
from cltrace.testing import random_transcoder, tiny_model
from cltrace.transcoders import load_transcoder, save_transcoder


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The same random 3-layer CLT in memory and lazily read from disk."""
    adapter = tiny_model("gpt2", n_layers=3)
    tc = random_transcoder(adapter, d_features=24)
    folder = tmp_path_factory.mktemp("lazy-wl")
    save_transcoder(tc, folder)
    eager = load_transcoder(folder, model=adapter)
    lazy = load_transcoder(folder, model=adapter, lazy_decoder=True)
    return adapter, eager, lazy


def test_virtual_weights_equal_a_brute_force_sum_in_any_block_size(pair, monkeypatch):
    adapter, eager, _ = pair
    e = eager.W_enc[2][3].detach().double()
    for block in (5, 24, 4096):  # several blocks, one exact block, one larger than the layer
        monkeypatch.setattr(weightlens, "SCAN_BLOCK", block)
        lens = WeightLens(adapter, eager)
        for src in (0, 1):
            # every decoder of src that writes below layer 2's MLP input: targets src .. 1
            want = sum(eager.W_dec[src][:, j].double() @ e for j in range(2 - src))
            got = lens.virtual_weights(src, 2, e.float())
            assert got.shape == (eager.d_features,)
            torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("summed_bytes", [0, 10**9])
def test_lazy_weightlens_finds_what_eager_finds_within_its_byte_bounds(
    pair, monkeypatch, summed_bytes
):
    adapter, eager, lazy = pair
    monkeypatch.setattr(weightlens, "SCAN_BLOCK", 7)  # several blocks per layer
    row_bytes = lazy.lazy.rows(0, torch.tensor([0])).numel() * 4  # the widest rows: layer 0
    lazy.lazy.cache_bytes = 3 * row_bytes
    cfg = WeightLensConfig(summed_cache_bytes=summed_bytes, threshold_features=1.0)
    a, b = WeightLens(adapter, eager, cfg), WeightLens(adapter, lazy, cfg)
    upstream = 0
    for key in [(layer, f) for layer in range(3) for f in range(0, 24, 3)]:
        ra, rb = a.analyse(key), b.analyse(key)
        assert ra.to_json() == rb.to_json(), key
        assert ra.description() == rb.description()
        upstream += len(ra.upstream)
        assert lazy.lazy.cached_bytes <= lazy.lazy.cache_bytes
    assert upstream > 0  # the upstream search (the decoder sums) was exercised
    held = sum(t.numel() * t.element_size() for t in b._summed.values())
    assert held <= summed_bytes
    assert (held > 0) == (summed_bytes > 0)


def test_circuitlens_reads_only_the_rows_of_active_features(pair):
    from cltrace.interpret.circuitlens import attribute_sample
    from cltrace.interpret.features import mlp_inputs

    adapter, eager, lazy = pair
    lazy.lazy.cache_bytes = 10**9  # every row read once, so rows_read counts distinct rows
    ids = [adapter.to_tokens(f" w{i}")[0, -1].item() for i in (3, 8, 1, 9, 4, 7)]
    tokens = torch.tensor([[adapter.bos_token_id, *ids]])
    x = mlp_inputs(adapter, tokens, range(3))
    # the features active at a non-BOS position: the rows a replacement model needs
    active = {(layer, int(f)) for layer in range(3)
              for f in (eager.encode(layer, x[layer][0, 1:]) > 0).any(0).nonzero().flatten()}
    last = [(layer, f) for layer, f in sorted(active)
            if eager.encode(layer, x[layer][0, -1])[f] > 0]  # fmt: skip
    assert last
    key = last[-1]
    example = {"ids": ids, "max_pos": len(ids) - 1}
    before = lazy.lazy.rows_read
    got = attribute_sample(adapter, lazy, key, example, top_k=5)
    want = attribute_sample(adapter, eager, key, example, top_k=5)
    assert got is not None and want is not None
    assert len(active | {key}) < 3 * eager.d_features  # fewer than the whole decoders
    assert 0 < lazy.lazy.rows_read - before <= len(active | {key})
    assert got.vector.keys() == want.vector.keys()
    for k, v in want.vector.items():  # sums over fewer (active-only) rows: rounding differs
        assert got.vector[k] == pytest.approx(v, rel=1e-4, abs=1e-5)
    assert got.tokens == want.tokens and got.activation == pytest.approx(want.activation)
