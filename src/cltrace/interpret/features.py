"""Activations of a chosen list of features, computed without encoding the whole dictionary.

Interpretation cost must scale with the number of features explained (K), not with the
dictionary: for JumpReLU and ReLU transcoders only the chosen encoder rows are multiplied. TopK
needs every pre-activation of a token (membership depends on the others), so it encodes the
layer fully and then selects.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from cltrace.models.adapter import ModelAdapter
from cltrace.replacement import input_kind
from cltrace.transcoders import CrossLayerTranscoder
from cltrace.transcoders.activations import ACTIVATIONS

FeatureKey = tuple[int, int]
"""(layer, feature index within the layer)."""


@torch.no_grad()
def mlp_inputs(
    adapter: ModelAdapter,
    tokens: Int[Tensor, "batch pos"],
    layers: Sequence[int],
    attention_mask: Tensor | None = None,
    kind: str = "mlp_in",
) -> dict[int, Float[Tensor, "batch pos d_model"]]:
    """What the features of the given layers read (float32): the MLP inputs, or for
    ``kind="resid_mid"`` the residual stream before the MLP's norm
    (:func:`cltrace.replacement.input_kind` of the transcoder); the forward pass stops at the
    deepest one."""
    layers = sorted(set(int(x) for x in layers))
    with adapter.cache([f"{kind}.{layer}" for layer in layers]) as cache:
        adapter.run_until(tokens.to(adapter.device), f"{kind}.{layers[-1]}", attention_mask)
    return {layer: cache[f"{kind}.{layer}"].float() for layer in layers}


def encode_subset(
    transcoder: CrossLayerTranscoder,
    layer: int,
    x: Float[Tensor, "... D"],
    ids: Int[Tensor, " n"] | Sequence[int],
) -> Float[Tensor, "... n"]:
    """Activations of features ``ids`` of ``layer``; equals ``transcoder.encode(...)[..., ids]``.

    JumpReLU and ReLU act per feature, so only the chosen encoder rows are applied; TopK
    competes over all features of the layer, so the whole layer is encoded first.
    """
    ids = ids if isinstance(ids, Tensor) else list(ids)
    idx = torch.as_tensor(ids, dtype=torch.long, device=transcoder.W_enc[layer].device)
    cfg = transcoder.cfg
    if cfg.activation == "topk":
        return transcoder.encode(layer, x)[..., idx]
    w = transcoder.W_enc[layer][idx]
    pre = x.to(w.dtype) @ w.T + transcoder.b_enc[layer][idx]
    thr = transcoder.threshold[layer][idx] if transcoder.threshold is not None else None
    return ACTIVATIONS[cfg.activation](pre, thr, cfg.k)


@torch.no_grad()
def feature_activations(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    tokens: Int[Tensor, "batch pos"],
    features: Sequence[FeatureKey],
) -> Float[Tensor, "batch pos K"]:
    """Activations of each listed feature at every position, in the order of ``features``."""
    layers = sorted({f[0] for f in features})
    x = mlp_inputs(adapter, tokens, layers, kind=input_kind(transcoder))
    return encode_features(transcoder, x, features)


def encode_features(
    transcoder: CrossLayerTranscoder,
    x: dict[int, Tensor],
    features: Sequence[FeatureKey],
) -> Float[Tensor, "batch pos K"]:
    """Activations of ``features`` from the transcoder inputs ``x`` (by layer, ``[batch, pos,
    d]``). The result for a list does not depend on what else was computed from the same ``x``,
    so one model pass can serve several feature lists bit for bit."""
    layers = sorted({f[0] for f in features})
    # gathered on the CPU in float32 whatever the model's device and dtype: stores and scores
    # are written from here
    cpu = torch.device("cpu")
    out = (torch.zeros(*x[layers[0]].shape[:2], len(features), device=cpu) if layers
           else torch.zeros(0, device=cpu))  # fmt: skip
    for layer in layers:
        cols = [j for j, f in enumerate(features) if f[0] == layer]
        ids = torch.tensor([features[j][1] for j in cols])
        out[..., cols] = encode_subset(transcoder, layer, x[layer], ids).float().cpu()
    return out


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int) -> Int[Tensor, "batch pos"]:
    """Right-pad token lists; causal attention keeps real positions unaffected by the padding."""
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [pad_id] * (width - len(r)) for r in rows], dtype=torch.long)
