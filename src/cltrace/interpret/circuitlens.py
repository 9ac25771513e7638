"""CircuitLens (docs/METHODS.md §6, reconstructed): explain a feature by *why* it fires.

Per activating context (sampled across the store's quantile buckets): the exact direct-path
attribution of the feature's pre-activation at its activating position to every input token and
every upstream feature occurrence, on the local replacement model (docs/METHODS.md §2; one frozen
forward and one
backward per sample, through :mod:`cltrace.graph.attribute`'s machinery). Samples are
represented by their attribution over (upstream feature ids, relative token offsets), normalised
to unit L1, and clustered by cosine distance; each cluster is one mechanism. A cluster is
described by the input tokens most responsible for the activation and by the tokens the feature
promotes among the model's likely next tokens in those contexts.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from cltrace.graph.rows import DirectGradients, EdgeComputer
from cltrace.interpret.features import FeatureKey
from cltrace.interpret.render import quote_tokens
from cltrace.replacement import build_replacement


@dataclass
class CircuitLensConfig:
    """Options of CircuitLens."""

    n_samples: int = 24
    """Activating contexts per feature, taken round-robin across the quantile buckets."""
    distance_threshold: float = 0.6
    """Cosine distance at which average-linkage clustering stops merging."""
    max_clusters: int = 4
    """Clusters described per feature (largest first)."""
    min_cluster_size: int = 2
    """Smaller clusters are left undescribed (unless no cluster is this large)."""
    n_tokens: int = 5
    """Responsible input tokens listed per cluster."""
    n_promoted: int = 5
    """Promoted tokens listed per cluster."""
    plausible_top_k: int = 20
    """Output analysis looks at the model's this many most likely next tokens per sample."""


@dataclass
class Sample:
    """One attributed activating context."""

    tokens: list[str]
    """Context tokens without BOS; the feature is read at the last one."""
    vector: dict[tuple, float]
    """Signed attribution per ("f", layer, feature) and ("t", offset) key."""
    responsibility: list[float]
    """Per context token: its token edge plus the edges of upstream features at its position."""
    effects: dict[int, float]
    """Direct logit effect (activation x decoder . W_U, de-meaned) on plausible next tokens."""
    activation: float


def pick_samples(record: dict, n: int) -> list[dict]:
    """Round-robin over buckets (top first), so weaker activation modes are represented."""
    buckets = [list(q["examples"]) for q in record["examples_quantiles"]]
    out: list[dict] = []
    while len(out) < n and any(buckets):
        for b in buckets:
            if b and len(out) < n:
                out.append(b.pop(0))
    return out


def attribute_sample(adapter, transcoder, key: FeatureKey, example: dict, top_k: int):
    """Attribution of the feature's pre-activation at the example's maximum (None if the
    truncated context no longer activates it)."""
    layer, feat = key
    ids = example["ids"][: example["max_pos"] + 1]
    tokens = torch.tensor([[adapter.bos_token_id, *ids]], device=adapter.device)
    state = build_replacement(adapter, transcoder, tokens)
    T = tokens.shape[1]
    with torch.no_grad():
        act = transcoder.encode(layer, state.mlp_in[layer, T - 1])[feat].item()
    if act <= 0:
        return None
    read = transcoder.W_enc[layer][feat].detach().float()[None]
    engine = DirectGradients(adapter, transcoder, state)
    g_emb, g_out = engine.features(layer, torch.tensor([T - 1], device=read.device), read)
    edges = EdgeComputer(transcoder, state)
    row = edges.rows(g_emb, g_out)[0].detach().float().cpu().numpy()  # numpy has no bfloat16
    a, idx = state.active, edges.index
    vector: dict[tuple, float] = defaultdict(float)
    resp = np.zeros(T)
    layers, feats, positions = a.layer.tolist(), a.feature.tolist(), a.position.cpu().numpy()
    feat_row = row[idx.features()]
    for i in np.flatnonzero(feat_row):
        vector[("f", layers[i], feats[i])] += float(row[i])
    np.add.at(resp, positions, feat_row)
    tok_edges = row[idx.tokens()]
    for p in range(1, T):
        vector[("t", p - (T - 1))] += float(tok_edges[p])
    resp += tok_edges
    with torch.no_grad():
        dec = transcoder.decoder_rows(layer, torch.tensor([feat]))[0].float().sum(0)
        logit_dir = dec.to(adapter.W_U.device) @ adapter.W_U.float()
    logit_dir = logit_dir - logit_dir.mean()
    likely = state.logits[T - 1].topk(min(top_k, state.logits.shape[-1])).indices
    effects = {int(t): act * float(logit_dir[t]) for t in likely}
    return Sample(adapter.to_str_tokens(ids), dict(vector), resp[1:].tolist(), effects, act)


def cluster(vectors: list[dict], threshold: float) -> list[int]:
    """Cluster label per sample: average-linkage cosine clustering (scipy), or a greedy
    leader clustering with the same threshold when scipy is missing."""
    keys = sorted({k for v in vectors for k in v}, key=str)
    if len(vectors) < 2 or not keys:
        return [0] * len(vectors)
    col = {k: j for j, k in enumerate(keys)}
    X = np.zeros((len(vectors), len(keys)))
    for i, v in enumerate(vectors):
        for k, w in v.items():
            X[i, col[k]] = w
    X /= np.maximum(np.abs(X).sum(1, keepdims=True), 1e-12)  # unit L1 per sample
    unit = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    try:
        from scipy.cluster.hierarchy import fcluster, linkage
        from scipy.spatial.distance import pdist

        dist = np.clip(pdist(unit, "cosine"), 0.0, 2.0)
        return (fcluster(linkage(dist, "average"), threshold, "distance") - 1).tolist()
    except ImportError:
        centres: list[np.ndarray] = []
        labels = []
        for u in unit:
            d = [1 - float(u @ c / max(np.linalg.norm(c), 1e-12)) for c in centres]
            if d and min(d) < threshold:
                labels.append(int(np.argmin(d)))
                centres[labels[-1]] = centres[labels[-1]] + u
            else:
                labels.append(len(centres))
                centres.append(u.copy())
        return labels


def describe_clusters(adapter, samples: list[Sample], labels: list[int], cfg: CircuitLensConfig):
    """Per kept cluster: size, responsible tokens, promoted tokens, its samples."""
    groups: dict[int, list[Sample]] = defaultdict(list)
    for s, lab in zip(samples, labels, strict=True):
        groups[lab].append(s)
    ordered = sorted(groups.values(), key=len, reverse=True)
    kept = [g for g in ordered if len(g) >= cfg.min_cluster_size] or ordered[:1]
    out = []
    for g in kept[: cfg.max_clusters]:
        resp: dict[str, float] = defaultdict(float)
        effect: dict[int, list[float]] = defaultdict(list)
        for s in g:
            norm = max(sum(abs(r) for r in s.responsibility), 1e-12)
            for tok, r in zip(s.tokens, s.responsibility, strict=True):
                if r > 0:
                    resp[tok] += r / norm
            for t, e in s.effects.items():
                effect[t].append(e)
        tokens = sorted(resp, key=lambda t: -resp[t])[: cfg.n_tokens]
        mean_eff = {t: float(np.mean(v)) for t, v in effect.items()}
        promoted = [t for t in sorted(mean_eff, key=lambda t: -mean_eff[t]) if mean_eff[t] > 0]
        out.append({
            "size": len(g), "responsible_tokens": tokens,
            "promoted": adapter.to_str_tokens(promoted[: cfg.n_promoted]), "samples": g,
        })  # fmt: skip
    return out


def offline_description(clusters: list[dict], n_samples: int) -> str:
    parts = []
    for c in clusters:
        text = (
            f"[{c['size']}/{n_samples} contexts] driven by {quote_tokens(c['responsible_tokens'])}"
        )
        if c["promoted"]:
            text += f"; promotes {quote_tokens(c['promoted'])}"
        parts.append(text)
    return " | ".join(parts)


def cluster_messages(c: dict, n_examples: int = 12) -> list[dict[str, str]]:
    """LLM prompt for one cluster: contexts with their causally responsible tokens marked."""
    from cltrace.interpret.llm_explainer import MARKER
    from cltrace.interpret.render import marked_text

    lines = []
    for i, s in enumerate(c["samples"][:n_examples]):
        ex = {"tokens": s.tokens, "tokens_acts_list": [max(r, 0.0) for r in s.responsibility]}
        lines.append(f"{i + 1}. {marked_text(ex).strip()}")
    system = (
        "You study the internals of a language model. Each excerpt below ends at a token where "
        "one hidden unit responds. Spans in << >> are the earlier tokens that most strongly "
        "cause the response (from a causal attribution), not where the unit fires. Explain what "
        "input pattern makes the unit respond at the final token, and, if it helps, what the "
        "unit then pushes the model to predict. Do not discuss the markers. End with one line:\n"
        f"{MARKER} <a concise description>"
    )
    user = "Excerpts:\n" + "\n".join(lines)
    if c["promoted"]:
        user += f"\n\nIn these contexts the unit raises the odds of: {quote_tokens(c['promoted'])}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]
