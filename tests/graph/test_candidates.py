"""Attribution restricted to candidate features (a pre-filtered set): exactly the candidates'
occurrences become nodes, and their rows are the full graph's rows on the kept columns."""

import pytest
import torch

from cltrace.errors import CltraceError
from cltrace.graph import AttributionConfig, attribute
from cltrace.testing import random_transcoder, tiny_model


def _keys(index):
    return list(zip(index.feat_layer.tolist(), index.feat_pos.tolist(), index.feat_id.tolist(),
                    strict=True))  # fmt: skip


def test_candidate_rows_equal_the_full_graph_rows():
    adapter = tiny_model("gpt2", n_layers=3)
    tc = random_transcoder(adapter, d_features=24, seed=1)
    prompt = "w4 w8 w15 w16 w23 w42"
    full = attribute(adapter, tc, prompt)
    fk = _keys(full.index)
    pairs = sorted({(l_, f) for l_, _, f in fk})
    candidates = frozenset(pairs[::3])
    part = attribute(adapter, tc, prompt, config=AttributionConfig(candidates=candidates))
    pk = _keys(part.index)
    assert pk == [k for k in fk if (k[0], k[2]) in candidates] and pk
    rows = [fk.index(k) for k in pk] + list(range(len(fk), full.adjacency.shape[0]))
    n_tail = full.adjacency.shape[1] - len(fk)  # errors and tokens, in the same order
    cols = [fk.index(k) for k in pk] + list(range(len(fk), len(fk) + n_tail))
    torch.testing.assert_close(part.adjacency, full.adjacency[rows][:, cols])
    torch.testing.assert_close(part.target_values[: len(pk)], full.target_values[rows[: len(pk)]])


def test_candidates_and_a_node_limit_exclude_each_other():
    with pytest.raises(CltraceError, match="pass one of them"):
        AttributionConfig(candidates=frozenset({(0, 1)}), max_feature_nodes=5)
