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
from jaxtyping import Float, Int
from torch import Tensor

from cltrace.errors import CltraceError
from cltrace.graph.nodes import Graph, NodeIndex
from cltrace.models.adapter import ModelAdapter
from cltrace.models.freeze import frozen
from cltrace.models.linear import FrozenTranspose
from cltrace.replacement import ReplacementState, build_replacement, decoder_block
from cltrace.transcoders import CrossLayerTranscoder


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


@dataclass
class LogitTargets:
    """The logit nodes: vocabulary ids (-1 for a direction), read vectors and weights."""

    tokens: Int[Tensor, " k"]
    vectors: Float[Tensor, "k d_model"]
    probs: Float[Tensor, " k"]


def salient_logits(
    adapter: ModelAdapter, logits: Float[Tensor, " d_vocab"], cfg: AttributionConfig
) -> LogitTargets:
    """The most likely tokens up to ``desired_logit_prob`` (at most ``max_n_logits``)."""
    probs = torch.softmax(logits.float(), -1)
    top_p, top_i = probs.topk(min(cfg.max_n_logits, probs.numel()))
    cut = int(torch.searchsorted(top_p.cumsum(0), torch.tensor(cfg.desired_logit_prob))) + 1
    return token_targets(adapter, top_i[:cut], probs)


def token_targets(
    adapter: ModelAdapter, ids: Int[Tensor, " k"], probs: Float[Tensor, " d_vocab"]
) -> LogitTargets:
    W_U = adapter.W_U.detach().float()
    vecs = (W_U[:, ids] - W_U.mean(1, keepdim=True)).T
    return LogitTargets(ids.long(), vecs, probs[ids])


class DirectGradients:
    """Gradients of target reads at the leaves of the frozen model (see module docstring).

    Runs :class:`~cltrace.models.linear.FrozenTranspose`: no forward pass and no autograd; a
    batch of feature targets (all at one layer) runs on the prefix of positions up to its last
    target, and only through the layers below it.
    """

    def __init__(
        self, adapter: ModelAdapter, transcoder: CrossLayerTranscoder, state: ReplacementState
    ):
        skip = None if transcoder.W_skip is None else list(transcoder.W_skip)
        self.transpose = FrozenTranspose(adapter, state.frozen, skip)

    def features(
        self, layer: int, pos: Int[Tensor, " b"], vecs: Float[Tensor, "b d"]
    ) -> tuple[Float[Tensor, "p b d"], Float[Tensor, "p b n_layers d"]]:
        """One batch row per feature target (read ``vecs[i]`` at ``mlp_in[layer, pos[i]]``);
        the outputs cover positions ``<= pos.max()``."""
        return self.transpose.backward(layer, pos, read=vecs, n_pos=int(pos.max()) + 1)

    def logits(
        self, vecs: Float[Tensor, "b d"]
    ) -> tuple[Float[Tensor, "pos b d"], Float[Tensor, "pos b n_layers d"]]:
        """One batch row per logit target (read at the final norm's output, last position)."""
        return self.transpose.backward_final(vecs)


class EdgeComputer:
    """Turns gradients at the leaves into edge rows over a fixed set of source columns.

    A feature at position ``t`` only reads the gradient at ``t``, so each source layer's
    activation-scaled decoders are packed by position, ``[pos, slots + 1, n_out * d]``; the last
    slot holds that layer's error vector at the position (it writes to its own layer only). One
    batched matmul per source layer then gives every feature's and error's edge for every target
    in the batch.
    """

    def __init__(self, transcoder: CrossLayerTranscoder, state: ReplacementState):
        self.state = state
        self.device = dev = state.resid0.device
        T = state.mlp_in.shape[1]
        a = state.active
        self.index = NodeIndex.sources(transcoder.n_layers, T, a.layer, a.position, a.feature)
        """The columns of every row: all active features, then errors, then tokens."""
        self.packed = []
        for layer in range(transcoder.n_layers):
            sel, rows = decoder_block(transcoder, state.active, layer)
            pos = state.active.position[sel]
            counts = torch.bincount(pos, minlength=T)
            starts = torch.cumsum(counts, 0) - counts
            slot = torch.arange(sel.numel(), device=dev) - torch.repeat_interleave(starts, counts)
            n_out, d = rows.shape[1], rows.shape[2]
            n_slots = int(counts.max()) if sel.numel() else 0
            packed = torch.zeros(T, n_slots + 1, n_out * d, device=dev)
            scaled = rows * state.active.value[sel, None, None]
            packed[pos, slot] = scaled.reshape(sel.numel(), n_out * d)
            packed[:, n_slots, :d] = state.errors[layer]
            self.packed.append((layer, sel, pos, slot, packed, n_out))

    @torch.no_grad()
    def rows(
        self,
        g_emb: Float[Tensor, "p b d"],
        g_out: Float[Tensor, "p b n d"],
        out: Float[Tensor, "b n_sources"] | None = None,
    ) -> Float[Tensor, "b n_sources"]:
        """Edges into each batch row's target from every active feature, error and token.

        The gradients (position-major, as ``FrozenTranspose.backward`` returns them) may cover
        only the first ``p`` positions (the rest are zero: causal attention) and only the MLP
        outputs of the first ``n`` layers (the rest are zero: no target reads them). ``out``:
        where to write the rows (overwritten; it may live on another device, e.g. CPU storage
        for rows computed on a GPU), else a new tensor on the computing device.
        """
        st, idx = self.state, self.index
        P, b, n_read, d = g_out.shape
        L, T = idx.n_layers, idx.n_pos
        target = out
        if out is None or out.device != self.device:
            out = torch.zeros(b, idx.n_sources, device=self.device)
        else:
            out.zero_()
        feat = out[:, idx.features()]
        err = out[:, idx.errors()].view(b, L, T)
        for layer, sel, pos, slot, packed, n_out in self.packed:
            k = min(n_out, n_read - layer)
            if k <= 0:
                continue
            g = g_out[:, :, layer : layer + k].reshape(P, b, k * d)
            res = torch.bmm(g, packed[:P, :, : k * d].transpose(1, 2))  # [p, b, slots + 1]
            err[:, layer, :P] = res[:, :, -1].T
            if P < T:
                m = pos < P
                sel, pos, slot = sel[m], pos[m], slot[m]
            feat[:, sel] = res[pos, :, slot].T
        out[:, idx.token_node(0) : idx.token_node(P)] = (g_emb * st.resid0[:P, None]).sum(-1).T
        if target is not None and target is not out:
            return target.copy_(out)
        return out


def _bias_values(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    state: ReplacementState,
    feat_layer: Tensor,
    feat_pos: Tensor,
    feat_id: Tensor,
    logit_vecs: Tensor,
) -> Float[Tensor, " n_targets"]:
    """Each target's value with every node zeroed: token embeddings 0, MLP outputs = b_dec."""
    L = adapter.n_layers
    cache: dict[int, Tensor] = {}
    hooks = {"resid_pre.0": lambda t: torch.zeros_like(t)}
    for layer in range(L):

        def store(t, _l=layer):
            cache[_l] = t

        def write(t, _l=layer):
            out = transcoder.b_dec[_l].to(t.dtype).expand_as(t)
            return out + transcoder.skip(_l, cache[_l]).to(t.dtype)

        hooks[f"mlp_in.{layer}"] = store
        hooks[f"mlp_out.{layer}"] = write
    final = {}
    handle = adapter.final_norm().register_forward_hook(
        lambda _m, _a, out: final.__setitem__("x", out)
    )
    try:
        with torch.no_grad(), frozen(adapter, state.frozen), adapter.hooks(hooks):
            adapter(state.tokens)
    finally:
        handle.remove()
    x = torch.stack([cache[layer][0] for layer in range(L)]).float()
    feats = encoder_pre_activations(transcoder, x, feat_layer, feat_pos, feat_id)
    logits = final["x"][0, -1].float() @ logit_vecs.T
    return torch.cat([feats, logits])


def _target_values(
    transcoder: CrossLayerTranscoder,
    state: ReplacementState,
    feat_layer: Tensor,
    feat_pos: Tensor,
    feat_id: Tensor,
    logit_vecs: Tensor,
    final_clean: Tensor,
) -> Float[Tensor, " n_targets"]:
    feats = encoder_pre_activations(transcoder, state.mlp_in, feat_layer, feat_pos, feat_id)
    return torch.cat([feats, final_clean.float() @ logit_vecs.T])


def encoder_rows(
    transcoder: CrossLayerTranscoder, layer: Tensor, feature: Tensor
) -> Float[Tensor, "n d_model"]:
    """Encoder vectors of the given (layer, feature) pairs, gathered layer by layer."""
    out = torch.zeros(layer.numel(), transcoder.d_model, device=layer.device)
    for ly in layer.unique().tolist():
        m = layer == ly
        out[m] = transcoder.W_enc[ly][feature[m]].float()
    return out


def encoder_pre_activations(
    transcoder: CrossLayerTranscoder,
    x: Float[Tensor, "n_layers pos d_model"],
    layer: Tensor,
    pos: Tensor,
    feature: Tensor,
) -> Float[Tensor, " n"]:
    """``W_enc[l][f] . x[l, pos] + b_enc[l][f]`` for each (layer, position, feature)."""
    out = (encoder_rows(transcoder, layer, feature) * x[layer, pos].float()).sum(-1)
    for ly in layer.unique().tolist():
        m = layer == ly
        out[m] += transcoder.b_enc[ly][feature[m]].float()
    return out


def _resolve_targets(
    adapter: ModelAdapter,
    state: ReplacementState,
    cfg: AttributionConfig,
    targets: list[str] | None,
    direction: Tensor | None,
) -> LogitTargets:
    last = state.logits[-1]
    if direction is not None:
        direction = torch.as_tensor(direction, dtype=torch.float32).reshape(-1)
        if direction.numel() != adapter.d_model:
            raise CltraceError(
                f"the target direction has {direction.numel()} entries but the model's d_model "
                f"is {adapter.d_model}; pass a direction in residual-stream space."
            )
        dev = adapter.device
        return LogitTargets(torch.tensor([-1]), direction[None].to(dev), torch.ones(1, device=dev))
    if targets:
        ids = torch.tensor([adapter.single_token_id(t, what="target") for t in targets])
        return token_targets(adapter, ids, torch.softmax(last, -1))
    return salient_logits(adapter, last, cfg)


def logit_difference_direction(
    adapter: ModelAdapter, answer: str | int, distractor: str | int
) -> Float[Tensor, " d_model"]:
    """Read vector of ``logit[answer] - logit[distractor]`` (a custom logit target).

    Each of ``answer`` and ``distractor`` is a single-token text or a token id (ids need no
    decoding, which need not round-trip)."""
    W_U = adapter.W_U.detach().float()
    a, d = (t if isinstance(t, int) else adapter.single_token_id(t) for t in (answer, distractor))
    return W_U[:, a] - W_U[:, d]


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
    logit_t = _resolve_targets(adapter, state, cfg, targets, direction)
    L, T = adapter.n_layers, tokens.shape[1]
    engine = DirectGradients(adapter, transcoder, state)
    edges = EdgeComputer(transcoder, state)
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
    full = limit is None or limit >= n_active
    # without a node limit every row is kept: write straight into the adjacency matrix
    adjacency = torch.empty(n_active + n_logits, n_cols) if full else None
    logit_rows_t = adjacency[n_active:] if full else torch.empty(n_logits, n_cols)
    for s in range(0, n_logits, batch):
        g_emb, g_out = engine.logits(logit_t.vectors[s : s + batch])
        edges.rows(g_emb, g_out, out=logit_rows_t[s : s + batch])

    if full:
        chosen = torch.arange(n_active)
        fill_feature_rows(chosen, adjacency[:n_active])
    else:
        chosen, feat_rows = _select_by_influence(
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
    final_clean = state.frozen.final_out[0, -1]
    graph = Graph(
        index=index,
        adjacency=adjacency,
        tokens=tokens[0].cpu(),
        activations=act.value[chosen].cpu(),
        logit_probs=logit_t.probs.float().cpu(),
        target_values=_target_values(transcoder, state, *feats, logit_t.vectors, final_clean).cpu(),
        bias_values=_bias_values(adapter, transcoder, state, *feats, logit_t.vectors).cpu(),
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


def _select_by_influence(
    fill_rows,
    logit_rows: Float[Tensor, "k n_src"],
    logit_probs: Float[Tensor, " k"],
    n_active: int,
    limit: int,
    step: int,
) -> tuple[Int[Tensor, " m"], Float[Tensor, "m n_src"]]:
    """Visit features in order of their (estimated) influence on the logits.

    Influence is recomputed from the rows visited so far every ``step`` features: the logit
    weights flow backwards through the row-normalised ``|A|`` of visited rows. Rows go into one
    preallocated buffer; influence is propagated in row blocks, so no full-size copy is made.
    """
    rows = torch.empty(limit, logit_rows.shape[1])
    norms = torch.empty(limit)
    visited = torch.empty(limit, dtype=torch.long)
    n = 0
    while n < limit:
        inf = _partial_influence(logit_rows, logit_probs, rows[:n], norms[:n], visited[:n],
                                 n_active)  # fmt: skip
        inf[visited[:n]] = -1.0
        take = min(step, limit - n)
        # sorted = (layer, position) order: the rows land in place, in few, short batches
        nxt = torch.argsort(inf, descending=True)[:take].sort().values
        fill_rows(nxt, rows[n : n + take])
        norms[n : n + take] = rows[n : n + take].abs().sum(1).clamp(min=1e-10)
        visited[n : n + take] = nxt
        n += take
    return visited, rows


def _abs_matvec(weights: Tensor, rows: Tensor, n_cols: int, block: int = 256) -> Tensor:
    """``weights @ |rows[:, :n_cols]|`` without materialising ``|rows|`` (one reused block)."""
    out = torch.zeros(n_cols)
    scratch = torch.empty(min(block, rows.shape[0]), n_cols)
    for s in range(0, rows.shape[0], block):
        part = rows[s : s + block, :n_cols]
        buf = scratch[: part.shape[0]]
        torch.abs(part, out=buf)
        out += weights[s : s + block] @ buf
    return out


def _partial_influence(logit_rows, logit_probs, feat_rows, feat_norms, visited, n_active):
    """Influence on the logits of every active feature, through the visited rows only.

    ``total = direct + (total[visited] / norms) @ |rows|``, where ``direct`` is the logits' own
    share. The visited features' totals are found first on the small ``[visited, visited]``
    block (the DAG over layers makes that iteration end), so the wide ``|rows|`` is read once.
    """
    logit_norms = logit_rows.abs().sum(1).clamp(min=1e-10)
    direct = _abs_matvec(logit_probs.float() / logit_norms, logit_rows, n_active)
    if visited.numel() == 0:
        return direct
    among = feat_rows[:, visited].abs() / feat_norms[:, None]  # [visited, visited]
    w = direct[visited].clone()
    step = w
    for _ in range(64):  # nilpotent: ends in <= n_layers steps
        step = step @ among
        if step.abs().max() < 1e-12:
            break
        w += step
    return direct + _abs_matvec(w / feat_norms, feat_rows, n_active)
