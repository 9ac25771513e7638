"""The local replacement model of one prompt (docs/METHODS.md §1).

For a prompt, the real model's attention patterns and norm scales are frozen, and each MLP
output ``y_l`` is written as the transcoder's reconstruction plus an error node::

    y_l(t) = sum_{l' <= l} sum_f a_{l',f}(t) W_dec^{l'->l}[f]  +  b_dec_l  +  W_skip_l x_l(t)
             + e_l(t)

so the local model reproduces the real logits exactly, and every quantity downstream is an
affine function of the token embeddings, feature activations and errors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from cltrace.errors import CltraceError
from cltrace.models.adapter import ModelAdapter
from cltrace.models.freeze import FrozenState, record_frozen
from cltrace.transcoders import CrossLayerTranscoder, SparseActivations, check_compatible
from cltrace.transcoders.bind import bind_transcoder
from cltrace.transcoders.hooknames import hook_site

INPUT_KINDS = ("mlp_in", "resid_mid")
"""Adapter sites a replacement model's features can read (see :func:`input_kind`)."""


@dataclass
class ReplacementState:
    """Everything a local replacement model of one prompt needs, computed once."""

    tokens: Int[Tensor, "1 pos"]
    frozen: FrozenState
    resid0: Float[Tensor, "pos d_model"]
    """Residual stream entering block 0 (token embeddings, plus position embeddings if any)."""
    mlp_in: Float[Tensor, "n_layers pos d_model"]
    """What the features (and a skip connection) read at each layer: the MLP's input after its
    norm, or for a ``hook_resid_mid`` transcoder the residual stream before it (``input_kind``)."""
    mlp_out: Float[Tensor, "n_layers pos d_model"]
    active: SparseActivations
    """Active feature occurrences, ordered by (layer, position, feature)."""
    feature_out: Float[Tensor, "n_layers pos d_model"]
    """What the active features write into each MLP output (no bias, no skip)."""
    skip_out: Float[Tensor, "n_layers pos d_model"]
    errors: Float[Tensor, "n_layers pos d_model"]
    """Real MLP output minus the transcoder's full output (features, bias, skip)."""
    logits: Float[Tensor, "pos d_vocab"]
    input_kind: str = "mlp_in"
    """The adapter site ``mlp_in`` holds (see :func:`input_kind`)."""


def input_kind(transcoder: CrossLayerTranscoder) -> str:
    """The adapter site kind the features are encoded from: ``mlp_in`` (after the MLP's norm)
    or ``resid_mid`` (the residual stream before it, ``hook_resid_mid`` transcoders)."""
    return hook_site(transcoder.cfg.feature_input_hook).kind


def check_sites(transcoder: CrossLayerTranscoder, adapter: ModelAdapter | None = None) -> str:
    """cltrace's replacement model needs features that read ``mlp_in`` or ``resid_mid`` and
    write ``mlp_out``; returns the input site kind (:func:`input_kind`).

    With ``adapter``, a transcoder reading the norm before its weight (``ln2.hook_normalized``)
    is first bound to the model (:func:`~cltrace.transcoders.bind.bind_transcoder`)."""
    if adapter is not None:
        bind_transcoder(transcoder, adapter)
    cfg = transcoder.cfg
    src, dst = hook_site(cfg.feature_input_hook), hook_site(cfg.feature_output_hook)
    if src.kind not in INPUT_KINDS or src.pre_affine or dst.kind != "mlp_out":
        raise CltraceError(
            f"the transcoder reads {cfg.feature_input_hook!r} and writes "
            f"{cfg.feature_output_hook!r}, but attribution needs features that read the MLP "
            "input (after its norm, or the residual stream before it) and write the MLP output; "
            "use such a transcoder."
        )
    return src.kind


def active_occurrences(
    transcoder: CrossLayerTranscoder,
    mlp_in: Float[Tensor, "n_layers pos d_model"],
    zero_positions: slice | None = slice(0, 1),
) -> SparseActivations:
    """Active (layer, position, feature) occurrences, layer by layer (never densely over all).

    ``zero_positions`` (default: the BOS position) are zeroed: they are never nodes, and their
    writes go into the error nodes.
    """
    layers, positions, features, values = [], [], [], []
    n_pos = mlp_in.shape[1]
    for layer in range(transcoder.n_layers):
        acts = transcoder.encode(layer, mlp_in[layer])
        if zero_positions is not None:
            acts[zero_positions] = 0
        pos, feat = acts.nonzero(as_tuple=True)
        layers.append(torch.full_like(pos, layer))
        positions.append(pos)
        features.append(feat)
        values.append(acts[pos, feat].float())
    return SparseActivations(
        torch.cat(layers),
        torch.cat(positions),
        torch.cat(features),
        torch.cat(values),
        (transcoder.n_layers, n_pos, transcoder.d_features),
    )


def decoder_block(
    transcoder: CrossLayerTranscoder, active: SparseActivations, layer: int
) -> tuple[Int[Tensor, " n"], Float[Tensor, "n n_out d_model"]]:
    """Indices (into ``active``) of layer ``layer``'s occurrences and their decoder rows."""
    sel = (active.layer == layer).nonzero().squeeze(1)
    if sel.numel() == 0:
        return sel, torch.zeros(0, transcoder.n_out(layer), transcoder.d_model)
    ids, inverse = torch.unique(active.feature[sel], return_inverse=True)
    rows = transcoder.decoder_rows(layer, ids).float()
    return sel, rows[inverse]


def feature_writes(
    transcoder: CrossLayerTranscoder, active: SparseActivations, values: Tensor | None = None
) -> Float[Tensor, "n_layers pos d_model"]:
    """Sum of ``value * decoder`` of the given occurrences into every MLP output."""
    n_layers, n_pos, _ = active.shape
    values = active.value if values is None else values
    out = torch.zeros(n_layers, n_pos, transcoder.d_model, device=active.value.device)
    for layer in range(n_layers):
        sel, rows = decoder_block(transcoder, active, layer)
        if sel.numel() == 0:
            continue
        writes = values[sel, None, None] * rows  # [n, n_out, D]
        for k in range(rows.shape[1]):
            out[layer + k].index_add_(0, active.position[sel], writes[:, k])
    return out


@torch.no_grad()
def build_replacement(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    tokens: Int[Tensor, "1 pos"],
    zero_positions: slice | None = slice(0, 1),
) -> ReplacementState:
    """Run the prompt once and decompose every MLP output into features, bias, skip and error."""
    check_compatible(transcoder, adapter, names=False)  # loading already warned
    kind = check_sites(transcoder, adapter)
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.shape[0] != 1:
        raise CltraceError("build a replacement model from one prompt (batch size 1).")
    sites = ["resid_pre.0", *adapter.sites(kind), *adapter.sites("mlp_out")]
    frozen = record_frozen(adapter, tokens, sites)
    c, logits = frozen.cache, frozen.logits[0].float()
    L = adapter.n_layers
    mlp_in = torch.stack([c[f"{kind}.{layer}"][0] for layer in range(L)]).float()
    mlp_out = torch.stack([c[f"mlp_out.{layer}"][0] for layer in range(L)]).float()
    active = active_occurrences(transcoder, mlp_in, zero_positions)
    feature_out = feature_writes(transcoder, active)
    skip_out = torch.stack([transcoder.skip(layer, mlp_in[layer]).float() for layer in range(L)])
    bias = torch.stack([transcoder.b_dec[layer].float() for layer in range(L)])[:, None]
    errors = mlp_out - feature_out - skip_out - bias
    return ReplacementState(
        tokens=tokens,
        frozen=frozen,
        resid0=c["resid_pre.0"][0].float(),
        mlp_in=mlp_in,
        mlp_out=mlp_out,
        active=active,
        feature_out=feature_out,
        skip_out=skip_out,
        errors=errors,
        logits=logits,
        input_kind=kind,
    )
