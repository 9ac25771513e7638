"""The lazy decoders' row cache: rows equal the eager ones whatever was cached, the cache never
holds more bytes than its bound, rows come off disk once while they fit, and attribution on a
lazily loaded CLT gives the eager graph."""

import torch

from cltrace.graph import attribute
from cltrace.testing import random_transcoder as random_for_model
from cltrace.testing import tiny_model
from cltrace.transcoders import load_transcoder, save_transcoder
from tests.transcoders.tc_helpers import L, random_transcoder


def test_cache_is_bounded_and_exact(tmp_path):
    tc = random_transcoder(True, "jumprelu")
    save_transcoder(tc, tmp_path)
    eager = load_transcoder(tmp_path)
    lazy = load_transcoder(tmp_path, lazy_decoder=True)
    row_bytes = lazy.lazy.rows(0, torch.tensor([0])).numel() * 4  # layer 0: the widest rows
    lazy.lazy.cache_bytes = 5 * row_bytes
    g = torch.Generator().manual_seed(0)
    F = tc.d_features
    for _ in range(40):
        layer = int(torch.randint(L, (1,), generator=g))
        ids = torch.randint(F, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g)
        assert torch.equal(lazy.decoder_rows(layer, ids), eager.decoder_rows(layer, ids))
        assert lazy.lazy.cached_bytes <= lazy.lazy.cache_bytes


def test_rows_come_off_disk_once_while_they_fit(tmp_path):
    tc = random_transcoder(True, "jumprelu")
    save_transcoder(tc, tmp_path)
    lazy = load_transcoder(tmp_path, lazy_decoder=True)
    ids = torch.tensor([3, 1, 3, 8])
    first = lazy.decoder_rows(1, ids)
    read = lazy.lazy.rows_read
    assert read == 3  # unique ids
    again = lazy.decoder_rows(1, torch.tensor([8, 1]))
    assert lazy.lazy.rows_read == read and torch.equal(again, first[[3, 1]])
    lazy.lazy.cache_bytes = 0  # no cache: every call reads
    lazy.decoder_rows(1, ids)
    assert lazy.lazy.rows_read == read + 3


def test_blockwise_norms_equal_eager(tmp_path):
    tc = random_transcoder(False, "jumprelu")
    save_transcoder(tc, tmp_path)
    lazy = load_transcoder(tmp_path, lazy_decoder=True)
    for layer in range(L):
        torch.testing.assert_close(lazy.lazy.norms(layer, block=3), tc.decoder_norms(layer))


def test_attribution_on_lazy_decoders_equals_eager(tmp_path):
    adapter = tiny_model("gpt2")
    tc = random_for_model(adapter, d_features=24, seed=2)
    save_transcoder(tc, tmp_path)
    lazy = load_transcoder(tmp_path, lazy_decoder=True, model=adapter)
    lazy.lazy.cache_bytes = 2048  # a few rows: most reads miss
    a = attribute(adapter, tc, "w1 w5 w2 w9 w3")
    b = attribute(adapter, lazy, "w1 w5 w2 w9 w3")
    torch.testing.assert_close(b.adjacency, a.adjacency, rtol=1e-5, atol=1e-6)
    assert lazy.lazy.cached_bytes <= 2048
