"""Virtual weights between transcoder features through the residual stream.

A feature ``s`` of layer ``l_s`` writes its decoder ``W_dec^{l_s -> l}[s]`` into the MLP output of
every layer ``l`` it reaches; a feature ``t`` of a later layer ``l_t`` reads its MLP input with
encoder row ``W_enc^{l_t}[t]``. Along the residual stream alone (no attention, no MLP, norms
ignored) the writes of ``s`` that ``t`` can see are those into layers ``l_s .. l_t - 1``, so

    V[s, t] = < sum_{l_s <= l < l_t} W_dec^{l_s -> l}[s] , W_enc^{l_t}[t] >

(the "virtual weight" of Ameisen, Lindsey et al. 2025, *Circuit Tracing*). A per-layer
transcoder set is the special case where only ``W_dec^{l -> l}`` exists: every later target
sees the same single write.

Nothing here forms the ``F x F`` matrix of the whole dictionary. Decoder rows are read in
blocks (lazily from disk where the transcoder is lazy) and reduced to top-k lists at once, so
time grows with ``(features asked about) x (dictionary)`` and memory with the block size.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from cltrace.errors import CltraceError
from cltrace.transcoders import CrossLayerTranscoder

Feature = tuple[int, int]
"""A feature ``(layer, index within the layer)``."""


def check_features(transcoder: CrossLayerTranscoder, features: Iterable[Feature]) -> list[Feature]:
    """The features as ``(int, int)`` tuples, each checked to exist in ``transcoder``."""
    out = []
    for layer, f in features:
        layer, f = int(layer), int(f)
        if not (0 <= layer < transcoder.n_layers and 0 <= f < transcoder.d_features):
            raise CltraceError(
                f"feature {layer}/{f} does not exist; the transcoder has layers "
                f"0..{transcoder.n_layers - 1} with features 0..{transcoder.d_features - 1}."
            )
        out.append((layer, f))
    return out


@torch.no_grad()
def prefix_writes(
    transcoder: CrossLayerTranscoder, layer: int, ids: Int[Tensor, " n"]
) -> Float[Tensor, "n n_after d_model"]:
    """``out[i, j]``: the summed writes of feature ``ids[i]`` of ``layer`` that a feature of
    layer ``layer + 1 + j`` reads, for ``j = 0 .. L - 2 - layer`` (float32)."""
    rows = transcoder.decoder_rows(layer, torch.as_tensor(ids, dtype=torch.long)).float()
    n_after = transcoder.n_layers - 1 - layer
    csum = rows.cumsum(1)  # [n, n_out, D]: writes into layers layer .. layer + j
    # a target of layer layer + 1 + j sees writes into layer .. layer + j; a PLT stops at j = 0
    j = torch.arange(n_after).clamp(max=rows.shape[1] - 1)
    return csum[:, j] if n_after > 0 else csum[:, :0]


def _encoders(transcoder: CrossLayerTranscoder, layer: int, ids: Tensor) -> Tensor:
    w = transcoder.W_enc[layer]
    return w[ids.to(w.device)].float()


@torch.no_grad()
def virtual_weights(
    transcoder: CrossLayerTranscoder, sources: Sequence[Feature], targets: Sequence[Feature]
) -> Float[Tensor, "n_sources n_targets"]:
    """Dense ``V[s, t]`` for two (small) lists of features; 0 where ``l_t <= l_s``."""
    sources = check_features(transcoder, sources)
    targets = check_features(transcoder, targets)
    out = torch.zeros(len(sources), len(targets))
    s_layer = torch.tensor([s[0] for s in sources], dtype=torch.long)
    t_layer = torch.tensor([t[0] for t in targets], dtype=torch.long)
    s_id = torch.tensor([s[1] for s in sources], dtype=torch.long)
    t_id = torch.tensor([t[1] for t in targets], dtype=torch.long)
    for ls in s_layer.unique().tolist():
        si = (s_layer == ls).nonzero().squeeze(1)
        writes = prefix_writes(transcoder, ls, s_id[si]).cpu()
        for lt in range(ls + 1, transcoder.n_layers):
            ti = (t_layer == lt).nonzero().squeeze(1)
            if ti.numel() == 0:
                continue
            enc = _encoders(transcoder, lt, t_id[ti]).cpu()
            out[si[:, None], ti[None, :]] = writes[:, lt - ls - 1] @ enc.T
    return out


@torch.no_grad()
def pair_virtual_weights(
    transcoder: CrossLayerTranscoder, pairs: Sequence[tuple[Feature, Feature]], block: int = 4096
) -> Float[Tensor, " n_pairs"]:
    """``V`` of each ``(source, target)`` pair, computed pair by pair (no matrix).

    Cost grows with the number of pairs: used on the pairs that co-activate in a corpus.
    """
    out = torch.zeros(len(pairs))
    if not pairs:
        return out
    p = torch.tensor([[s[0], s[1], t[0], t[1]] for s, t in pairs], dtype=torch.long)
    check_features(transcoder, [(int(a), int(b)) for a, b in p[:, :2].unique(dim=0).tolist()])
    check_features(transcoder, [(int(a), int(b)) for a, b in p[:, 2:].unique(dim=0).tolist()])
    for ls in p[:, 0].unique().tolist():
        for lt in p[:, 2].unique().tolist():
            if lt <= ls:
                continue
            sel = ((p[:, 0] == ls) & (p[:, 2] == lt)).nonzero().squeeze(1)
            for a in range(0, sel.numel(), block):
                part = sel[a : a + block]
                uniq, inv = p[part, 1].unique(return_inverse=True)
                w = prefix_writes(transcoder, ls, uniq)[:, lt - ls - 1].cpu()[inv]
                e = _encoders(transcoder, lt, p[part, 3]).cpu()
                out[part] = (w * e).sum(-1)
    return out


@dataclass
class TopPairs:
    """For each query feature, its ``k`` strongest partners by virtual weight."""

    queries: list[Feature]
    partner_layer: Int[Tensor, "n k"]
    """-1 where a query has fewer than ``k`` partners (e.g. a target in layer 0)."""
    partner_id: Int[Tensor, "n k"]
    weight: Float[Tensor, "n k"]
    """Signed ``V``; NaN in empty slots."""

    def as_records(self, direction: str) -> list[dict]:
        """One JSON-ready record per query: ``{"feature": "l/f", direction: [...]}``."""
        recs = []
        for i, (layer, f) in enumerate(self.queries):
            partners = [
                {"feature": f"{int(pl)}/{int(pi)}", "weight": float(w)}
                for pl, pi, w in zip(
                    self.partner_layer[i], self.partner_id[i], self.weight[i], strict=True
                )  # fmt: skip
                if int(pl) >= 0
            ]
            recs.append({"feature": f"{layer}/{f}", direction: partners})
        return recs


class _TopK:
    """Running top-k by |value| per row, merged block by block."""

    def __init__(self, n: int, k: int):
        self.k = k
        self.score = torch.full((n, k), -1.0)
        self.value = torch.full((n, k), float("nan"))
        self.layer = torch.full((n, k), -1, dtype=torch.long)
        self.ident = torch.full((n, k), -1, dtype=torch.long)

    def merge(self, rows: Tensor, values: Tensor, layer: int, ids: Tensor) -> None:
        """``values[r, j]``: weight of partner ``ids[j]`` (of ``layer``) for row ``rows[r]``."""
        k = min(self.k, values.shape[1])
        top_v, top_j = values.abs().topk(k, dim=1)
        cand_s = torch.cat([self.score[rows], top_v], 1)
        cand_v = torch.cat([self.value[rows], values.gather(1, top_j)], 1)
        cand_l = torch.cat([self.layer[rows], torch.full_like(top_j, layer)], 1)
        cand_i = torch.cat([self.ident[rows], ids[top_j]], 1)
        best = cand_s.topk(self.k, dim=1).indices
        self.score[rows] = cand_s.gather(1, best)
        self.value[rows] = cand_v.gather(1, best)
        self.layer[rows] = cand_l.gather(1, best)
        self.ident[rows] = cand_i.gather(1, best)

    def result(self, queries: list[Feature]) -> TopPairs:
        empty = self.score < 0
        self.layer[empty], self.ident[empty] = -1, -1
        self.value[empty] = float("nan")
        return TopPairs(queries, self.layer, self.ident, self.value)


@torch.no_grad()
def top_sources(
    transcoder: CrossLayerTranscoder, targets: Sequence[Feature], k: int = 10, block: int = 1024
) -> TopPairs:
    """The ``k`` sources of largest ``|V[s, t]|`` for each target ``t``, over the whole dictionary.

    Source decoders are read ``block`` features at a time (from disk for a lazy transcoder);
    memory is ``O(block * L * d_model + len(targets) * k)``.
    """
    targets = check_features(transcoder, targets)
    top = _TopK(len(targets), k)
    t_layer = torch.tensor([t[0] for t in targets], dtype=torch.long)
    t_id = torch.tensor([t[1] for t in targets], dtype=torch.long)
    F = transcoder.d_features
    for ls in range(transcoder.n_layers - 1):
        later = (t_layer > ls).nonzero().squeeze(1)
        if later.numel() == 0:
            continue
        encs = {lt: _encoders(transcoder, lt, t_id[t_layer == lt]).cpu() for lt in
                t_layer[later].unique().tolist()}  # fmt: skip
        for a in range(0, F, block):
            ids = torch.arange(a, min(a + block, F))
            writes = prefix_writes(transcoder, ls, ids).cpu()
            for lt, enc in encs.items():
                rows = (t_layer == lt).nonzero().squeeze(1)
                top.merge(rows, enc @ writes[:, lt - ls - 1].T, ls, ids)
    return top.result(targets)


@torch.no_grad()
def top_targets(
    transcoder: CrossLayerTranscoder, sources: Sequence[Feature], k: int = 10, block: int = 4096
) -> TopPairs:
    """The ``k`` targets of largest ``|V[s, t]|`` for each source ``s``, over the whole dictionary.

    Only the sources' own decoder rows are read; encoders are scanned ``block`` rows at a time.
    """
    sources = check_features(transcoder, sources)
    top = _TopK(len(sources), k)
    s_layer = torch.tensor([s[0] for s in sources], dtype=torch.long)
    s_id = torch.tensor([s[1] for s in sources], dtype=torch.long)
    F = transcoder.d_features
    for ls in s_layer.unique().tolist():
        rows = (s_layer == ls).nonzero().squeeze(1)
        writes = prefix_writes(transcoder, ls, s_id[rows]).cpu()
        for lt in range(ls + 1, transcoder.n_layers):
            for a in range(0, F, block):
                ids = torch.arange(a, min(a + block, F))
                enc = _encoders(transcoder, lt, ids).cpu()
                top.merge(rows, writes[:, lt - ls - 1] @ enc.T, lt, ids)
    return top.result(sources)
