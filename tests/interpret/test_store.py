"""The activation store against brute force on a tiny corpus; quantiles; resumption."""

import json

import pytest
import torch

from cltrace.errors import CltraceError
from cltrace.interpret.features import encode_subset
from cltrace.interpret.store import StoreConfig, build_store, build_stores
from tests.interpret.conftest import tiny_docs

FEATURES = [(0, 3), (1, 5), (0, 11), (1, 0)]
CFG = StoreConfig(n_top=5, n_quantiles=3, per_quantile=3, chunk_docs=16, batch_size=7,
                  window_before=4, window_after=2)  # fmt: skip


def brute_force(adapter, tc, docs, key):
    """Per document: (max activation, argmax) of the feature, computed one document at a time
    with the full dense encoder."""
    layer, feat = key
    out = []
    for d, text in enumerate(docs):
        toks = adapter.to_tokens(text)
        with adapter.cache([f"mlp_in.{layer}"]) as c:
            adapter(toks)
        with torch.no_grad():
            a = tc.encode(layer, c[f"mlp_in.{layer}"][0])[:, feat]
        a[0] = 0  # BOS is never counted
        out.append((float(a.max()), int(a.argmax()), d, int((a > 0).sum()), a.numel() - 1))
    return out


def test_encode_subset_equals_dense(tiny):
    adapter, tc = tiny
    x = torch.randn(5, adapter.d_model)
    ids = torch.tensor([3, 0, 7])
    assert torch.allclose(encode_subset(tc, 1, x, ids), tc.encode(1, x)[:, ids])


def test_top_examples_and_frequency_match_brute_force(tiny, tmp_path):
    adapter, tc = tiny
    docs = tiny_docs()
    store, stats = build_store(adapter, tc, FEATURES, tmp_path / "s", CFG, docs=docs)
    assert stats.n_docs == len(docs)
    for key in FEATURES:
        bf = brute_force(adapter, tc, docs, key)
        want = sorted([b for b in bf if b[0] > 0], key=lambda b: (-b[0], b[2]))[: CFG.n_top]
        top = store.top_examples(key)
        assert [ex["doc"] for ex in top] == [b[2] for b in want]
        for ex, b in zip(top, want, strict=True):
            assert ex["max_value"] == pytest.approx(b[0], abs=1e-5)
            # the window's activation at the maximum is the maximum itself
            assert ex["tokens_acts_list"][ex["max_pos"]] == pytest.approx(b[0], abs=1e-4)
            assert max(ex["tokens_acts_list"]) == pytest.approx(b[0], abs=1e-4)
            assert len(ex["tokens"]) == len(ex["tokens_acts_list"])
        rec = store.record(key)
        assert rec["n_active_tokens"] == sum(b[3] for b in bf)
        assert rec["frequency"] == pytest.approx(sum(b[3] for b in bf) / sum(b[4] for b in bf))
        assert rec["n_active_docs"] == sum(b[0] > 0 for b in bf)


def test_quantile_buckets_partition_the_rest(tiny, tmp_path):
    adapter, tc = tiny
    docs = tiny_docs(80, seed=3)
    store, _ = build_store(adapter, tc, FEATURES, tmp_path / "s", CFG, docs=docs)
    for key in FEATURES:
        rec = store.record(key)
        qs = rec["examples_quantiles"]
        if rec["n_active_docs"] <= CFG.n_top + CFG.n_quantiles:
            continue
        edges = rec["quantile_edges"]
        assert len(edges) == CFG.n_quantiles + 1 and edges == sorted(edges)
        top_min = min(ex["max_value"] for ex in qs[0]["examples"])
        assert edges[-1] <= top_min + 1e-9  # lower buckets hold only non-top documents
        top_docs = {ex["doc"] for ex in qs[0]["examples"]}
        for q in qs[1:]:
            lo, hi = q["interval"]
            assert len(q["examples"]) <= CFG.per_quantile
            for ex in q["examples"]:
                assert ex["doc"] not in top_docs
                assert lo <= ex["max_value"] <= hi
        lows = [q["examples"][0]["max_value"] for q in qs[1:]]
        assert lows == sorted(lows, reverse=True)  # buckets run from high to low


def test_resume_gives_the_same_store(tiny, tmp_path):
    adapter, tc = tiny
    docs = tiny_docs(70, seed=5)
    full, _ = build_store(adapter, tc, FEATURES, tmp_path / "full", CFG, docs=docs)
    part, stats = build_store(adapter, tc, FEATURES, tmp_path / "part", CFG, docs=docs,
                              stop_after_chunks=2)  # fmt: skip
    assert part is None and stats.n_chunks_computed == 2
    # an interrupted write leaves only a temporary file, which the restart ignores
    (tmp_path / "part" / "chunks" / "00002.tmp.npz").write_text("half")
    resumed, stats = build_store(adapter, tc, FEATURES, tmp_path / "part", CFG, docs=docs)
    assert stats.n_chunks_computed == 3  # 70 docs / 16 = 5 chunks, 2 were done
    a = json.loads((tmp_path / "full" / "store.json").read_text())
    b = json.loads((tmp_path / "part" / "store.json").read_text())
    assert a == b


def test_other_features_in_same_directory_are_refused(tiny, tmp_path):
    adapter, tc = tiny
    docs = tiny_docs(20)
    build_store(adapter, tc, FEATURES, tmp_path / "s", CFG, docs=docs)
    with pytest.raises(CltraceError, match="other features"):
        build_store(adapter, tc, FEATURES[:2], tmp_path / "s", CFG, docs=docs)


def test_one_shared_scan_gives_each_store_what_a_scan_of_its_own_gives(tiny, tmp_path):
    adapter, tc = tiny
    docs = tiny_docs(70, seed=5)
    kept, other = FEATURES, [(1, 5), (0, 2), (1, 9)]  # overlapping sets, different layers/orders
    for name, feats in (("kept", kept), ("other", other)):
        build_store(adapter, tc, feats, tmp_path / f"alone-{name}", CFG, docs=docs)
    # the second store is half done already: only its missing chunks add work for it
    build_stores(adapter, tc, [(other, tmp_path / "shared-other", False)], CFG, docs=docs,
                 stop_after_chunks=2)  # fmt: skip
    stores, stats = build_stores(adapter, tc, [(kept, tmp_path / "shared-kept", False),
                                               (other, tmp_path / "shared-other", False)],
                                 CFG, docs=docs)  # fmt: skip
    assert stats.n_chunks_computed == 5  # one pass over the 5 chunks serves both stores
    assert [s.features for s in stores] == [kept, other]
    for name in ("kept", "other"):
        alone = json.loads((tmp_path / f"alone-{name}" / "store.json").read_text())
        shared = json.loads((tmp_path / f"shared-{name}" / "store.json").read_text())
        assert shared == alone
    # a finished pair of stores needs no scan at all
    _, again = build_stores(adapter, tc, [(kept, tmp_path / "shared-kept", False),
                                          (other, tmp_path / "shared-other", False)],
                            CFG, docs=docs)  # fmt: skip
    assert again.n_chunks_computed == 0
