"""Supernodes: round trip through graph JSON, coarsening by brute force, clustering, and
supernode interventions against member-by-member patching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cltrace.errors import CltraceError
from cltrace.global_view.supernode_patch import patch_supernodes, supernode_interventions
from cltrace.graph import attribute, graph_document
from cltrace.graph.export import load_graph_json, write_graph_json
from cltrace.graph.supernodes import (
    SUPERNODE_TYPE,
    Supernode,
    auto_supernodes,
    average_linkage,
    coarsen,
    read_supernodes,
    save_supernodes,
)
from cltrace.interventions import Intervention, constrained_patch, iterative_patch
from cltrace.testing import random_transcoder, tiny_model
from tests.interventions.helpers import PROMPT, demeaned


@pytest.fixture(scope="module")
def setup():
    adapter = tiny_model("gpt2", n_layers=3)
    tc = random_transcoder(adapter, d_features=16).requires_grad_(False)
    g = attribute(adapter, tc, PROMPT)
    return adapter, tc, g, graph_document(g, "tiny")


def _features(doc):
    return [n.node_id for n in doc.nodes if n.feature_type == "cross layer transcoder"]


def test_supernodes_round_trip_through_graph_json(setup, tmp_path):
    _, _, _, doc = setup
    feats = _features(doc)
    sns = [Supernode("first", feats[:3]), Supernode("second", feats[5:7])]
    path = write_graph_json(doc, tmp_path)
    save_supernodes(path, sns)
    back = load_graph_json(path)
    assert back.qParams.supernodes == [["first", *feats[:3]], ["second", *feats[5:7]]]
    assert read_supernodes(back) == sns
    with pytest.raises(CltraceError, match="not in the graph"):
        save_supernodes(path, [Supernode("bad", ["0_999_1"])])
    with pytest.raises(CltraceError, match="in supernodes"):
        save_supernodes(path, [Supernode("a", feats[:2]), Supernode("b", feats[1:3])])


def test_coarsening_sums_member_edges_and_influence(setup):
    _, _, _, doc = setup
    feats = _features(doc)
    rng = np.random.default_rng(0)
    pick = rng.permutation(len(feats))
    sns = [Supernode("a", [feats[i] for i in pick[:4]]),
           Supernode("b", [feats[i] for i in pick[4:9]])]  # fmt: skip
    out = coarsen(doc, sns)
    group = {m: f"SN_{k}" for k, sn in enumerate(sns, 1) for m in sn.members}
    assert len(out.nodes) == len(doc.nodes) - 9 + 2
    want: dict = {}
    for link in doc.links:  # brute force: map every endpoint, add up
        s, t = group.get(link["source"], link["source"]), group.get(link["target"], link["target"])
        if not (s == t and s.startswith("SN_")):
            want[(s, t)] = want.get((s, t), 0.0) + link["weight"]
    got = {(x["source"], x["target"]): x["weight"] for x in out.links}
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-12)
    by_id = {n.node_id: n for n in doc.nodes}
    for k, sn in enumerate(sns, 1):
        node = next(n for n in out.nodes if n.node_id == f"SN_{k}")
        assert node.feature_type == SUPERNODE_TYPE and node.clerp == sn.name
        assert node.influence == pytest.approx(sum(by_id[m].influence for m in sn.members))
        assert node.activation == pytest.approx(sum(by_id[m].activation for m in sn.members))


def test_average_linkage_on_a_handmade_matrix():
    sim = np.array([
        [1.0, 0.9, 0.1, 0.0],
        [0.9, 1.0, 0.2, 0.1],
        [0.1, 0.2, 1.0, 0.6],
        [0.0, 0.1, 0.6, 1.0],
    ])  # fmt: skip
    assert average_linkage(sim, threshold=0.8) == [[0, 1], [2], [3]]
    assert average_linkage(sim, threshold=0.5) == [[0, 1], [2, 3]]
    assert average_linkage(sim, n_groups=1) == [[0, 1, 2, 3]]
    # at the last step the average between {0,1} and {2,3} is (0.1+0+0.2+0.1)/4 = 0.1
    assert average_linkage(sim, threshold=0.11) == [[0, 1], [2, 3]]


def test_auto_supernodes_group_a_feature_across_positions(setup):
    _, tc, _, doc = setup
    # occurrences of one feature at several positions have identical decoders (cosine 1)
    by_feat: dict = {}
    for n in doc.nodes:
        if n.feature_type == "cross layer transcoder":
            by_feat.setdefault((n.layer, n.feature), []).append(n.node_id)
    repeated = {k: v for k, v in by_feat.items() if len(v) > 1}
    assert repeated
    sns = auto_supernodes(doc, transcoder=tc, threshold=0.999)
    groups = sorted(sorted(sn.members) for sn in sns)
    assert groups == sorted(sorted(v) for v in repeated.values())
    assert len(auto_supernodes(doc, transcoder=tc, threshold=None, n_groups=3)) <= 3


def test_supernode_intervention_equals_member_by_member_patching(setup):
    adapter, tc, g, doc = setup
    feats = _features(doc)[:4]
    sn = Supernode("group", feats)
    members = supernode_interventions(sn, scale=-1.0)
    assert len(members) == 4
    L = adapter.n_layers
    for mode, fn in (("constrained", constrained_patch), ("iterative", iterative_patch)):
        joint = patch_supernodes(adapter, tc, PROMPT, sn, scale=-1.0, mode=mode)
        listed = fn(adapter, tc, PROMPT, members)
        torch.testing.assert_close(joint.logits, listed.logits, rtol=0, atol=0)
    # constrained patching over the whole frozen model is linear: the supernode's effect is the
    # sum of the members' single effects
    joint = patch_supernodes(adapter, tc, PROMPT, sn, scale=-1.0, layers=(0, L - 1))
    total = demeaned(adapter, joint.logits) - demeaned(adapter, joint.clean_logits)
    single = sum(
        demeaned(adapter, r.logits) - demeaned(adapter, r.clean_logits)
        for r in (constrained_patch(adapter, tc, PROMPT, [iv], layers=(0, L - 1))
                  for iv in members)
    )  # fmt: skip
    assert total.abs().max() > 1e-3
    torch.testing.assert_close(total, single, rtol=1e-4, atol=1e-5)


def test_non_feature_members_cannot_be_patched():
    with pytest.raises(CltraceError, match="not a feature node"):
        supernode_interventions(Supernode("x", ["E_5_1"]), scale=0.0)
    assert isinstance(
        supernode_interventions(Supernode("x", ["1_3_2"]), scale=0.0)[0], Intervention
    )
