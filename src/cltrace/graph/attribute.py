"""Attribution graphs: exact direct effects on the local replacement model (docs/METHODS.md §2).

An edge ``s -> t`` is the part of target ``t``'s value (a feature's encoder pre-activation, or a
de-meaned logit) that source ``s`` contributes along direct paths: the residual stream and the
attention OV circuits with patterns and norm scales frozen, never through an MLP (the MLPs are
replaced by features and error nodes). A CLT source writes through all of its decoders.

Computation: each group of ``batch_size`` targets is one pass of the frozen model's transpose
(:class:`~cltrace.models.linear.FrozenTranspose`, no autograd) that injects each target's read
vector (its encoder row, or its unembedding column) at its own batch row, giving the gradient at
the block-0 input and at every MLP output. That gradient, dotted with a source's write, is the
edge. Because the frozen model is affine, the incoming edges of a
target plus the bias-only value (all nodes zeroed) add up to the target's value exactly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from cltrace.errors import CltraceError
from cltrace.graph.nodes import Graph, NodeIndex
from cltrace.graph.rows import DirectGradients, EdgeComputer
from cltrace.graph.selection import select_by_influence
from cltrace.graph.targets import (
    bias_values,
    encoder_rows,
    logit_difference_direction,
    resolve_targets,
    target_values,
)
from cltrace.models.adapter import ModelAdapter
from cltrace.replacement import build_replacement
from cltrace.transcoders import CrossLayerTranscoder

__all__ = ["AttributionConfig", "attribute", "logit_difference_direction"]


@dataclass
class AttributionConfig:
    """Options of :func:`attribute`."""

    max_n_logits: int = 10
    """At most this many logit nodes (the most likely next tokens)."""
    desired_logit_prob: float = 0.95
    """Take the most likely tokens until their cumulative probability reaches this."""
    max_feature_nodes: int | None = None
    """Keep at most this many feature nodes, chosen by influence on the logits (None: all)."""
    batch_size: int = 64
    """Targets per pass of the transposed frozen model (fewer when memory_budget_gb is short)."""
    memory_budget_gb: float = 2.0
    """Rough memory for one batch of targets; long prompts or big models get smaller batches."""
    zero_bos: bool = True
    """Features at position 0 are not nodes (their writes go to the error nodes)."""
    update_interval: int = 4
    """With ``max_feature_nodes``: recompute influence after this many batches of rows."""
    token_nodes: str = "cltrace"
    """What token nodes stand for. ``cltrace``: the whole block-0 input at the position (the
    token embedding plus any learned position embedding), and every error node has edges.
    ``circuit-tracer``: the token embedding only (a learned position embedding is left
    unattributed, like a bias) and the error vectors at position 0 (the BOS) unattributed, as
    circuit-tracer defines them, so its graphs and cltrace's match edge for edge. The two
    differ only on models with learned position embeddings and in the BOS errors."""

    def __post_init__(self) -> None:
        if self.token_nodes not in TOKEN_NODES:
            raise CltraceError(
                f"token_nodes {self.token_nodes!r} is not one of {', '.join(TOKEN_NODES)}; "
                "pick one of those."
            )


TOKEN_NODES = ("cltrace", "circuit-tracer")


def position_inputs(adapter: ModelAdapter, tokens: Tensor) -> Float[Tensor, "pos d_model"]:
    """The part of the block-0 input that is not the token embedding's (a learned position
    embedding; zero for rotary models): the block-0 input with the embedding's output zeroed.
    (A scale applied to the embedding, as Gemma's, stays with the token.)"""
    seen: dict[str, Tensor] = {}

    def keep(t):
        seen["x"] = t

    embed: torch.nn.Module = adapter.hf_model.get_input_embeddings()  # type: ignore[operator]
    handle = embed.register_forward_hook(lambda _m, _a, out: torch.zeros_like(out))
    try:
        with torch.no_grad(), adapter.hooks({"resid_pre.0": keep}):
            adapter(tokens)
    finally:
        handle.remove()
    return seen["x"][0].float()


@torch.no_grad()
def attribute(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    prompt: str | Tensor,
    targets: list[str] | None = None,
    direction: Tensor | None = None,
    config: AttributionConfig | None = None,
) -> Graph:
    """The attribution graph of ``prompt`` (text, with BOS prepended, or token ids).

    Logit nodes are the salient next tokens, or ``targets`` (single-token strings), or one
    custom ``direction`` in residual space (e.g. :func:`logit_difference_direction`).
    """
    cfg = config or AttributionConfig()
    t0 = time.perf_counter()
    tokens = adapter.to_tokens(prompt) if isinstance(prompt, str) else torch.as_tensor(prompt)
    tokens = tokens.reshape(1, -1).to(adapter.device)
    adapter.check_length(tokens.shape[1])  # past the context, position embeddings run out
    state = build_replacement(adapter, transcoder, tokens, slice(0, 1) if cfg.zero_bos else None)
    logit_t = resolve_targets(
        adapter, state, cfg.max_n_logits, cfg.desired_logit_prob, targets, direction
    )
    L, T = adapter.n_layers, tokens.shape[1]
    engine = DirectGradients(adapter, transcoder, state)
    kept_input, n_err = None, 0
    if cfg.token_nodes == "circuit-tracer":
        kept_input, n_err = position_inputs(adapter, tokens), 1
    token_vectors = None if kept_input is None else state.resid0 - kept_input
    edges = EdgeComputer(transcoder, state, token_vectors, n_err)
    sources = edges.index  # row layout while computing: every active feature, errors, tokens
    n_active, n_cols = sources.n_features, sources.n_sources
    batch = _batch_for(adapter, T, n_cols, cfg)
    act = state.active

    def fill_feature_rows(idx: Tensor, out: Tensor) -> None:
        """Write the rows of features ``idx`` into ``out`` (one row each, in order).

        Batches hold features of one layer in position order, so each runs on the layers below
        that one and on a short prefix of positions."""
        key = (act.layer[idx] * T + act.position[idx]).cpu()  # rows are stored on the CPU
        order = torch.argsort(key, stable=True)
        layer_of = key[order] // T
        for layer in layer_of.unique().tolist():
            group = order[layer_of == layer]
            for s in range(0, group.numel(), batch):
                where = group[s : s + batch]
                part = idx[where]
                vecs = encoder_rows(transcoder, act.layer[part], act.feature[part])
                g_emb, g_out = engine.features(layer, act.position[part], vecs)
                w0, w1 = int(where[0]), int(where[-1]) + 1
                if w1 - w0 == where.numel() and bool((where[1:] > where[:-1]).all()):
                    edges.rows(g_emb, g_out, out=out[w0:w1])  # in place, no copy
                else:
                    out[where] = edges.rows(g_emb, g_out).to(out.device)

    n_logits = logit_t.tokens.numel()
    limit = cfg.max_feature_nodes
    # without a node limit every row is kept: write straight into the adjacency matrix
    full_adjacency = None
    if limit is None or limit >= n_active:
        full_adjacency = torch.empty(n_active + n_logits, n_cols)
        logit_rows_t = full_adjacency[n_active:]
    else:
        logit_rows_t = torch.empty(n_logits, n_cols)
    for s in range(0, n_logits, batch):
        g_emb, g_out = engine.logits(logit_t.vectors[s : s + batch])
        edges.rows(g_emb, g_out, out=logit_rows_t[s : s + batch])

    if full_adjacency is not None:
        adjacency = full_adjacency
        chosen = torch.arange(n_active)
        fill_feature_rows(chosen, adjacency[:n_active])
    else:
        assert limit is not None  # narrowed above
        chosen, feat_rows = select_by_influence(
            fill_feature_rows, logit_rows_t, logit_t.probs.cpu(), n_active, limit,
            batch * cfg.update_interval,
        )  # fmt: skip
        # keep the chosen features' columns (plus all errors and tokens) before reordering the
        # rows, so no full-width copy of the selection rows is made
        order = torch.argsort(chosen)
        chosen = chosen[order]
        cols = sources.select_features(chosen)
        adjacency = torch.cat([feat_rows[:, cols][order], logit_rows_t[:, cols]])
        del feat_rows
    feats = (act.layer[chosen], act.position[chosen], act.feature[chosen])  # computing device
    index = NodeIndex(
        n_layers=L,
        n_pos=T,
        feat_layer=feats[0].cpu(),
        feat_pos=feats[1].cpu(),
        feat_id=feats[2].cpu(),
        logit_token=logit_t.tokens.cpu(),
    )
    assert state.frozen.final_out is not None  # recorded by build_replacement's clean pass
    final_clean = state.frozen.final_out[0, -1]
    graph = Graph(
        index=index,
        adjacency=adjacency,
        tokens=tokens[0].cpu(),
        activations=act.value[chosen].cpu(),
        logit_probs=logit_t.probs.float().cpu(),
        target_values=target_values(transcoder, state, *feats, logit_t.vectors, final_clean).cpu(),
        bias_values=bias_values(
            adapter, transcoder, state, *feats, logit_t.vectors, kept_input, n_err
        ).cpu(),
        prompt=prompt if isinstance(prompt, str) else "",
        str_tokens=adapter.to_str_tokens(tokens[0]),
        model_name=adapter.name,
        transcoder_name=transcoder.cfg.model_name,
        n_active_features=n_active,
    )
    graph.seconds = time.perf_counter() - t0
    return graph


def _batch_for(adapter: ModelAdapter, n_pos: int, n_cols: int, cfg: AttributionConfig) -> int:
    """Targets per batch: ``batch_size``, fewer when a batch would not fit ``memory_budget_gb``.

    Per target a batch holds its gradients at every MLP output and a few more ``[pos, d_model]``
    buffers, and its edge row (float32).
    """
    per_target = 4 * ((adapter.n_layers + 4) * n_pos * adapter.d_model + 2 * n_cols)
    fit = int(cfg.memory_budget_gb * 2**30 // max(per_target, 1))
    return max(1, min(cfg.batch_size, fit))
