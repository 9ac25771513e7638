"""The targets of an attribution graph: its logit nodes and every target's value.

A target is a feature's encoder pre-activation at one position, or a logit node (a de-meaned
vocabulary column, or a custom residual direction). Its value is computed twice: on the clean
replacement model, and with every node zeroed (the bias-only value); the incoming edges of a target
add up to the difference (docs/METHODS.md §2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from cltrace.errors import CltraceError
from cltrace.models.adapter import Hook, ModelAdapter, Site
from cltrace.models.freeze import frozen
from cltrace.replacement import ReplacementState
from cltrace.transcoders import CrossLayerTranscoder


@dataclass
class LogitTargets:
    """The logit nodes: vocabulary ids (-1 for a direction), read vectors and weights."""

    tokens: Int[Tensor, " k"]
    vectors: Float[Tensor, "k d_model"]
    probs: Float[Tensor, " k"]


def salient_logits(
    adapter: ModelAdapter,
    logits: Float[Tensor, " d_vocab"],
    max_n_logits: int,
    desired_logit_prob: float,
) -> LogitTargets:
    """The most likely tokens up to ``desired_logit_prob`` (at most ``max_n_logits``)."""
    probs = torch.softmax(logits.float(), -1)
    top_p, top_i = probs.topk(min(max_n_logits, probs.numel()))
    cut = int(torch.searchsorted(top_p.cumsum(0), torch.tensor(desired_logit_prob))) + 1
    return token_targets(adapter, top_i[:cut], probs)


def token_targets(
    adapter: ModelAdapter, ids: Int[Tensor, " k"], probs: Float[Tensor, " d_vocab"]
) -> LogitTargets:
    W_U = adapter.W_U.detach().float()
    vecs = (W_U[:, ids] - W_U.mean(1, keepdim=True)).T
    return LogitTargets(ids.long(), vecs, probs[ids])


def resolve_targets(
    adapter: ModelAdapter,
    state: ReplacementState,
    max_n_logits: int,
    desired_logit_prob: float,
    targets: list[str] | None,
    direction: Tensor | None,
) -> LogitTargets:
    """The logit nodes: one custom ``direction``, the given single-token ``targets``, or the
    salient next tokens."""
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
    return salient_logits(adapter, last, max_n_logits, desired_logit_prob)


def logit_difference_direction(
    adapter: ModelAdapter, answer: str | int, distractor: str | int
) -> Float[Tensor, " d_model"]:
    """Read vector of ``logit[answer] - logit[distractor]`` (a custom logit target).

    Each of ``answer`` and ``distractor`` is a single-token text or a token id (ids need no
    decoding, which need not round-trip)."""
    W_U = adapter.W_U.detach().float()
    a, d = (t if isinstance(t, int) else adapter.single_token_id(t) for t in (answer, distractor))
    return W_U[:, a] - W_U[:, d]


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


def target_values(
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


def bias_values(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    state: ReplacementState,
    feat_layer: Tensor,
    feat_pos: Tensor,
    feat_id: Tensor,
    logit_vecs: Tensor,
    kept_input: Float[Tensor, "pos d_model"] | None = None,
    unattributed_error_positions: int = 0,
) -> Float[Tensor, " n_targets"]:
    """Each target's value with every node zeroed: token embeddings 0, MLP outputs = b_dec.

    What no node stands for stays: ``kept_input`` (the block-0 input that is not a token
    node's, e.g. learned position embeddings) and the error vectors of the first
    ``unattributed_error_positions`` positions."""
    L = adapter.n_layers
    cache: dict[int, Tensor] = {}

    def block0(t):
        return torch.zeros_like(t) if kept_input is None else kept_input.to(t)[None].expand_as(t)

    hooks: dict[str | Site, Hook] = {"resid_pre.0": block0}
    n_err = unattributed_error_positions
    for layer in range(L):

        def store(t, _l=layer):
            cache[_l] = t

        def write(t, _l=layer):
            out = transcoder.b_dec[_l].to(t.dtype).expand_as(t)
            out = out + transcoder.skip(_l, cache[_l]).to(t.dtype)
            if n_err:
                out = out.clone()
                out[:, :n_err] += state.errors[_l][:n_err].to(t.dtype)
            return out

        hooks[f"{state.input_kind}.{layer}"] = store
        hooks[f"mlp_out.{layer}"] = write
    final: dict[str, Tensor] = {}
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
    logits = final["x"][0, -1].float().to(logit_vecs.device) @ logit_vecs.T  # a device map
    return torch.cat([feats, logits])
