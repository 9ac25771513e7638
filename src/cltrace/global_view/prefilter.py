"""Global pre-filtering for local work: do TWERA's top pairs predict strong local edges?

For a task, the attribution graphs of its prompts give each feature pair ``(s, t)`` a *local
strength*: the mean over prompts of ``Σ |A[t@p', s@p]|`` over the positions where both occur.
The same features' co-activation statistics on a corpus give V, ERA and TWERA
(:mod:`cltrace.global_view.era`). :func:`compare_rankings` reports, for each global score,
precision at ``k`` (the share of its top ``k`` pairs that are among the ``k`` strongest local
pairs), the chance level of that precision, and the Spearman correlation over all pairs.

:func:`restricted_rows` computes local attribution rows only for target features in a
pre-filtered set (e.g. the endpoints of the top TWERA pairs); :func:`measure_saving` times it
against the full graph and counts how many of the strongest local pairs the set keeps.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from cltrace.global_view.era import SCORES, PairTable
from cltrace.global_view.virtual import Feature
from cltrace.graph.nodes import Graph
from cltrace.models.adapter import ModelAdapter
from cltrace.transcoders import CrossLayerTranscoder

PairKey = tuple[Feature, Feature]


def local_strengths(graphs: Sequence[Graph], n_features_per_layer: int) -> dict[PairKey, float]:
    """Mean over graphs of the summed ``|edge|`` from feature ``s`` to feature ``t`` (any
    positions); only feature-to-feature edges count."""
    F = n_features_per_layer
    total: dict[int, float] = {}
    for g in graphs:
        idx = g.index
        nf = idx.n_features
        block = g.adjacency[:nf, :nf]
        r, c = block.nonzero(as_tuple=True)
        gid = idx.feat_layer.long() * F + idx.feat_id.long()
        key = gid[c] * (10**9) + gid[r]
        uniq, inv = key.unique(return_inverse=True)
        sums = torch.zeros(uniq.numel(), dtype=torch.float64)
        sums.index_add_(0, inv, block[r, c].abs().double())
        for k, v in zip(uniq.tolist(), sums.tolist(), strict=True):
            total[k] = total.get(k, 0.0) + v
    out = {}
    n = max(len(graphs), 1)
    for k, v in total.items():
        s, t = divmod(k, 10**9)
        out[((s // F, s % F), (t // F, t % F))] = v / n
    return out


def features_of(graphs: Iterable[Graph]) -> list[Feature]:
    """Distinct ``(layer, feature)`` of the feature nodes of the graphs, sorted."""
    seen: set[Feature] = set()
    for g in graphs:
        seen.update(zip(g.index.feat_layer.tolist(), g.index.feat_id.tolist(), strict=True))
    return sorted(seen)


def rank(x: np.ndarray) -> np.ndarray:
    """Ranks starting at 1 with ties averaged (for Spearman correlation)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(x.size)
    ranks[order] = np.arange(1, x.size + 1)
    uniq, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    if uniq.size < x.size:
        sums = np.bincount(inv, weights=ranks)
        ranks = (sums / counts)[inv]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (NaN when either side is constant)."""
    ra, rb = rank(a), rank(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


@dataclass
class RankingComparison:
    """How well global scores rank the task's strong local pairs."""

    ks: list[int]
    n_universe: int
    """Pairs ``(s, t)`` of task features with ``l_s < l_t`` (what a blind guess chooses from)."""
    n_local: int
    """Pairs with a non-zero local edge."""
    precision: dict[str, dict[int, float]] = field(default_factory=dict)
    """``precision[score][k]``."""
    chance: dict[int, float] = field(default_factory=dict)
    """Expected precision at ``k`` of a random ranking: ``k / n_universe``."""
    spearman: dict[str, float] = field(default_factory=dict)
    """Rank correlation of ``|score|`` with local strength over the universe (zeros included)."""

    def to_json(self) -> dict:
        return {
            "ks": self.ks, "n_universe_pairs": self.n_universe, "n_local_pairs": self.n_local,
            "precision_at_k": {s: {str(k): v for k, v in p.items()}
                               for s, p in self.precision.items()},
            "chance_precision_at_k": {str(k): v for k, v in self.chance.items()},
            "spearman": self.spearman,
        }  # fmt: skip


def compare_rankings(
    table: PairTable, local: dict[PairKey, float], features: Sequence[Feature], ks: Sequence[int]
) -> RankingComparison:
    """Precision at each ``k`` and Spearman correlation of V, ERA and TWERA with ``local``.

    Only pairs between ``features`` with ``l_s < l_t`` count; a pair missing from ``table`` never
    co-activated and scores 0; a pair missing from ``local`` has local strength 0.
    """
    fset = set(features)
    layer_counts = np.bincount([f[0] for f in fset], minlength=1) if fset else np.zeros(1)
    n_universe = int(sum(layer_counts[i] * layer_counts[i + 1 :].sum()
                         for i in range(layer_counts.size)))  # fmt: skip
    local = {k: v for k, v in local.items() if k[0] in fset and k[1] in fset and v > 0}
    keys = table.keys()
    glob = {s: dict(zip(keys, np.abs(getattr(table, s)).tolist(), strict=True)) for s in SCORES}
    ranked_local = sorted(local, key=lambda p: (-local[p], p))
    out = RankingComparison(list(ks), n_universe, len(local))
    union = sorted(set(local) | set(keys))
    loc = np.array([local.get(p, 0.0) for p in union])
    for s in SCORES:
        ranked = sorted(glob[s], key=lambda p: (-glob[s][p], p))
        out.precision[s] = {}
        for k in ks:
            strong = set(ranked_local[:k])
            out.precision[s][k] = len(strong.intersection(ranked[:k])) / k if k else float("nan")
        # pairs in neither list are tied at zero on both sides and do not change the ordering
        # of the rest; they are left out of the correlation (documented in docs/GLOBAL.md)
        g = np.array([glob[s].get(p, 0.0) for p in union])
        out.spearman[s] = spearman(g, loc) if union else float("nan")
    out.chance = {k: k / n_universe if n_universe else float("nan") for k in ks}
    return out


def prefiltered_features(table: PairTable, n_pairs: int, by: str = "twera") -> set[Feature]:
    """Endpoints of the ``n_pairs`` strongest pairs by ``|by|``: the candidate set to keep."""
    keep: set[Feature] = set()
    for i in table.order(by)[:n_pairs]:
        keep.add(table.features[table.src[i]])
        keep.add(table.features[table.tgt[i]])
    return keep


@torch.no_grad()
def restricted_rows(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    prompt: str,
    keep: set[Feature],
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attribution rows ``[m, n_sources]`` of only the target occurrences whose feature is in
    ``keep``, and their indices among the prompt's active occurrences.

    The rows are exactly those of the full graph (same machinery, see
    :mod:`cltrace.graph.attribute`); only fewer are computed.
    """
    from cltrace.graph.attribute import DirectGradients, EdgeComputer, encoder_rows
    from cltrace.replacement import build_replacement

    tokens = adapter.to_tokens(prompt)
    state = build_replacement(adapter, transcoder, tokens)
    act = state.active
    engine = DirectGradients(adapter, transcoder, state)
    edges = EdgeComputer(transcoder, state)
    pairs = zip(act.layer.tolist(), act.feature.tolist(), strict=True)
    chosen = torch.tensor([i for i, f in enumerate(pairs) if f in keep], dtype=torch.long)
    out = torch.empty(chosen.numel(), edges.index.n_sources)
    for layer in act.layer[chosen].unique().tolist():
        where = (act.layer[chosen] == layer).nonzero().squeeze(1)
        for a in range(0, where.numel(), batch_size):
            w = where[a : a + batch_size]
            idx = chosen[w]
            vecs = encoder_rows(transcoder, act.layer[idx], act.feature[idx])
            g_emb, g_out = engine.features(layer, act.position[idx], vecs)
            out[w] = edges.rows(g_emb, g_out).cpu()
    return out, chosen


@dataclass
class Saving:
    """Cost and coverage of attribution restricted to a pre-filtered feature set."""

    n_keep_features: int
    seconds_full: float
    seconds_restricted: float
    rows_full: int
    rows_restricted: int
    strong_pairs_kept: float
    """Share of the ``k`` strongest local pairs whose two features are both in the set."""

    def to_json(self) -> dict:
        return {
            "n_keep_features": self.n_keep_features, "seconds_full": self.seconds_full,
            "seconds_restricted": self.seconds_restricted, "rows_full": self.rows_full,
            "rows_restricted": self.rows_restricted,
            "speedup": self.seconds_full / max(self.seconds_restricted, 1e-9),
            "strong_pairs_kept": self.strong_pairs_kept,
        }  # fmt: skip


def measure_saving(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    prompts: Sequence[str],
    keep: set[Feature],
    local: dict[PairKey, float],
    k: int,
) -> Saving:
    """Time full graphs and pre-filtered rows on ``prompts``; coverage of the top ``k`` pairs."""
    from cltrace.graph import attribute

    t_full = t_res = 0.0
    rows_full = rows_res = 0
    for p in prompts:
        t0 = time.perf_counter()
        g = attribute(adapter, transcoder, p)
        t_full += time.perf_counter() - t0
        rows_full += g.index.n_features
        t0 = time.perf_counter()
        rows, _ = restricted_rows(adapter, transcoder, p, keep)
        t_res += time.perf_counter() - t0
        rows_res += rows.shape[0]
    strong = sorted(local, key=lambda q: (-local[q], q))[:k]
    kept = sum(1 for s, t in strong if s in keep and t in keep) / max(len(strong), 1)
    return Saving(len(keep), t_full, t_res, rows_full, rows_res, kept)
