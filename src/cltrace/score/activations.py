"""Feature activations on texts: per token, and pooled to one score per sequence.

The model runs on the texts, what the features read is taken (``mlp_in.<layer>``, or
``resid_mid.<layer>`` for such transcoders), and the CLT's own activation function (JumpReLU
with its real thresholds, ReLU or TopK) gives the feature values, i.e. the hook and activation
the transcoder was trained with (PIE's helper used the residual stream after the
block and a plain ReLU; see docs/METHODS.md §40).

Texts are batched by token length and right-padded. Under causal attention no real token can
see a later padding token, so padded rows give exactly the single-text values and no attention
mask is needed. The BOS position is dropped: its activations are an attention-sink artefact,
not a property of the text (the replacement model zeroes it for the same reason).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float

from cltrace.errors import CltraceError
from cltrace.interpret.features import encode_subset, mlp_inputs
from cltrace.models.adapter import ModelAdapter
from cltrace.replacement import input_kind
from cltrace.transcoders import CrossLayerTranscoder

Feature = tuple[int, int]
"""A transcoder feature ``(layer, index)``."""

REDUCTIONS = ("fade", "max")
DECIMALS = 4
"""Sequence scores are rounded to this many decimals: the same text scored in two batches of
different shapes differs in the last float bits, and the rank statistics (clarity, ...) must
see such values as the tie they are, whichever batch computed them."""


@dataclass
class TokenActivations:
    """Per-token activations of several features on one text (BOS excluded)."""

    ids: list[int]
    """Token ids of the text as scored (after truncation, without BOS)."""
    acts: Float[np.ndarray, "n_features pos"]
    """Feature values at each of those tokens."""


def tokenize(adapter: ModelAdapter, texts: Sequence[str], max_tokens: int) -> list[list[int]]:
    """Token ids with BOS, cut to ``max_tokens`` (BOS included)."""
    if max_tokens < 2:
        raise CltraceError(f"max_tokens={max_tokens} leaves no text token; pass at least 2.")
    return [adapter.encode(t)[:max_tokens] for t in texts]


def _batches(lengths: Sequence[int], batch_size: int, max_batch_tokens: int) -> list[list[int]]:
    """Indices grouped by similar length (sorted), each group within both limits."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    groups: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        # sorted ascending, so the newest text is the longest of its group
        if cur and (len(cur) >= batch_size or (len(cur) + 1) * lengths[i] > max_batch_tokens):
            groups.append(cur)
            cur = []
        cur.append(i)
    if cur:
        groups.append(cur)
    return groups


def iter_token_activations(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    texts: Sequence[str],
    features: Sequence[Feature],
    max_tokens: int = 128,
    batch_size: int = 16,
    max_batch_tokens: int = 4096,
) -> Iterator[tuple[int, TokenActivations]]:
    """``(text index, activations)`` pairs, batch by batch, in length order (not text order)."""
    if not features:
        raise CltraceError("no features to score; pass at least one (layer, feature).")
    for layer, f in features:
        if not (0 <= layer < transcoder.n_layers and 0 <= f < transcoder.d_features):
            raise CltraceError(
                f"feature {layer}/{f} does not exist; the transcoder has layers "
                f"0..{transcoder.n_layers - 1} with features 0..{transcoder.d_features - 1}."
            )
    by_layer: dict[int, list[int]] = {}
    for j, (layer, _) in enumerate(features):
        by_layer.setdefault(layer, []).append(j)
    rows = tokenize(adapter, texts, max_tokens)
    pad = adapter.tokenizer.pad_token_id
    pad = adapter.bos_token_id if pad is None else int(pad)
    for group in _batches([len(r) for r in rows], batch_size, max_batch_tokens):
        width = max(len(rows[i]) for i in group)
        tokens = torch.full((len(group), width), pad, dtype=torch.long)
        for b, i in enumerate(group):
            tokens[b, : len(rows[i])] = torch.tensor(rows[i])
        acts = torch.zeros(len(group), width, len(features))
        with torch.no_grad():
            # an all-ones mask only silences transformers' padding warning: with causal attention
            # no real token sees the right padding, masked or not
            tokens = tokens.to(adapter.device)
            x = mlp_inputs(adapter, tokens, list(by_layer), torch.ones_like(tokens),
                           input_kind(transcoder))
            for layer, cols in by_layer.items():
                ids = [features[j][1] for j in cols]
                vals = encode_subset(transcoder, layer, x[layer], ids)
                acts[:, :, cols] = vals.float().cpu()
        for b, i in enumerate(group):
            n = len(rows[i])
            yield i, TokenActivations(rows[i][1:], acts[b, 1:n].T.numpy().copy())


def token_activations(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    texts: Sequence[str],
    features: Sequence[Feature],
    **kw,
) -> list[TokenActivations]:
    """Per-token activations of every feature on every text, in the order of ``texts``."""
    out: list[TokenActivations | None] = [None] * len(texts)
    for i, t in iter_token_activations(adapter, transcoder, texts, features, **kw):
        out[i] = t
    return out  # type: ignore[return-value]


def pool(acts: Float[np.ndarray, "n_features pos"], reduce: str) -> Float[np.ndarray, " n"]:
    """One score per feature: ``fade`` = the signed value at the largest |activation| (FADE),
    ``max`` = the largest value (PIE's variant); 0 for a text with no token."""
    if reduce not in REDUCTIONS:
        raise CltraceError(f"unknown reduction {reduce!r}; use one of {', '.join(REDUCTIONS)}.")
    if acts.shape[1] == 0:
        return np.zeros(acts.shape[0])
    if reduce == "max":
        return np.round(acts.max(axis=1).astype(np.float64), DECIMALS)
    at = np.abs(acts).argmax(axis=1)
    return np.round(acts[np.arange(acts.shape[0]), at].astype(np.float64), DECIMALS)


def sequence_scores(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    texts: Sequence[str],
    features: Sequence[Feature],
    reduce: str = "fade",
    **kw,
) -> Float[np.ndarray, "n_features n_texts"]:
    """Per-sequence activation of each feature on each text (see :func:`pool`)."""
    if not texts:
        return np.zeros((len(features), 0))
    # pooled batch by batch so that per-token values of a large corpus are never all held
    out = np.zeros((len(features), len(texts)))
    for i, t in iter_token_activations(adapter, transcoder, texts, features, **kw):
        out[:, i] = pool(t.acts, reduce)
    return out
