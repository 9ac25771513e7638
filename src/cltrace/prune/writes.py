"""Delta writes of one prompt's occurrences, built from decoder rows when a patch needs them.

An occurrence ``o = (l, t, f)`` with coefficient ``c_o`` (``a_clean - a_corrupt``, or ``a_clean``
under the ``zero_features`` policy) writes ``c_o * W_dec^{l->s}[f]`` into every MLP output
``s >= l`` (docs/METHODS.md §4). A dense ``[n, n_layers, d_model]`` table of these writes holds
mostly nothing new: for a CLT the targets before ``l`` are zeros (about half of it), and a feature
active at many positions repeats its decoder row once per position. On Gemma-2-2B that is about
240 KB per occurrence in float32. :class:`DeltaWrites` keeps instead each occurrence's layer,
position, feature and coefficient, and takes decoder rows from the transcoder when a product is
needed: a gather from the decoders in memory, or a read through the lazy decoders' row cache
(bounded in bytes) when they stay on disk. So what a prompt holds beyond its bookkeeping is
bounded by the two constants below, whatever the prompt's length or the transcoder's width.

What the scorers need is built on demand, in float32, each product ``c_o * row`` rounded exactly
as the dense table rounded it:

* :meth:`DeltaWrites.block`: the dense writes of a bounded set of occurrences (FAP's chunks);
* :meth:`DeltaWrites.add_rows`: a few occurrences' writes added into a patch (single and pair
  removals);
* :meth:`DeltaWrites.group`: the writes of one (position, source layer) group, without the zero
  targets, for removals of many occurrences; groups are kept up to :data:`GROUP_CACHE_BYTES` and
  rebuilt past it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

CPU = torch.device("cpu")
"""Where occurrence bookkeeping lives (indices, activations, masks, scores: one entry per
occurrence or unit, read back by Python-side selection), whatever the model's device."""
BLOCK_BYTES = 64 * 2**20
"""Most bytes of one dense block of writes that :meth:`DeltaWrites.scores` builds at a time
(the whole prompt on the bundled model; a few hundred occurrences on Gemma-2-2B)."""
GROUP_CACHE_BYTES = 256 * 2**20
"""Most bytes of (position, source layer) groups of writes kept between patches; the groups past
it are rebuilt from the decoder rows on every use."""


@dataclass
class DeltaWrites:
    """The delta writes of ``n`` occurrences as coefficients times decoder rows.

    Bookkeeping (one entry per occurrence) lives on the CPU; decoder rows and everything built
    from them on ``device``.
    """

    layer: Int[Tensor, " n"]
    """Source layer of each occurrence (ascending: occurrences are sorted by layer first)."""
    position: Int[Tensor, " n"]
    coef: Float[Tensor, " n"]
    """The occurrence's coefficient (float32)."""
    feature: Int[Tensor, " n"]
    decoder_rows: Callable[[int, Tensor], Tensor]
    """``decoder_rows(layer, feature_ids) -> [m, n_out, d_model]``: the transcoder's
    :meth:`~cltrace.transcoders.CrossLayerTranscoder.decoder_rows` (eager or lazy)."""
    n_layers: int
    d_model: int
    device: torch.device
    _groups: dict[int, Tensor] = field(default_factory=dict, repr=False)
    _group_bytes: int = 0
    _order: Tensor | None = field(default=None, repr=False)
    _group_of: Tensor | None = field(default=None, repr=False)
    _spans_list: list[tuple[int, int, int, int]] = field(default_factory=list, repr=False)

    @classmethod
    def build(
        cls,
        transcoder,
        layer: Int[Tensor, " n"],
        position: Int[Tensor, " n"],
        feature: Int[Tensor, " n"],
        coef: Float[Tensor, " n"],
        device: torch.device,
    ) -> DeltaWrites:
        """The writes of occurrences of ``transcoder`` (a
        :class:`~cltrace.transcoders.CrossLayerTranscoder`, eager or with lazy decoders); reads
        nothing yet."""
        L, D = transcoder.n_layers, transcoder.d_model
        return cls(layer, position, coef.float(), feature, transcoder.decoder_rows, L, D,
                   torch.device(device))  # fmt: skip

    @property
    def n(self) -> int:
        return int(self.layer.numel())

    @property
    def nbytes(self) -> int:
        """Bytes held: bookkeeping and the cached groups (decoder rows belong to the
        transcoder and its row cache)."""
        return 4 * 8 * self.n + self._group_bytes

    def products(self, idx: Int[Tensor, " m"], src: int) -> Float[Tensor, "m n_out d_model"]:
        """``c_o * W_dec^{src->.}[f_o]`` of occurrences ``idx`` (all of layer ``src``) into
        targets ``src ..``, float32."""
        coef = self.coef[idx].to(self.device)
        with torch.no_grad():  # decoders are read, never trained through a patch
            rows = self.decoder_rows(src, self.feature[idx]).to(self.device).float()
        return coef[:, None, None] * rows

    def block(self, idx: Int[Tensor, " m"]) -> Float[Tensor, "m n_layers d_model"]:
        """Dense writes of occurrences ``idx``: zero before each one's source layer, float32,
        equal bit for bit to the rows of a dense table built by the same products."""
        out = torch.zeros(idx.numel(), self.n_layers, self.d_model, device=self.device)
        lay = self.layer[idx]
        for src in lay.unique().tolist():
            at = (lay == src).nonzero().squeeze(1)
            values = self.products(idx[at], src)
            out[at.to(self.device), src : src + values.shape[1]] = values
        return out

    def scores(self, grads: Float[Tensor, "n_layers pos d_model"]) -> Float[Tensor, " n"]:
        """``sum_s <delta_o^(s), g_s(t_o)>`` per occurrence (FAP's form), on the CPU.

        Computed in blocks of at most :data:`BLOCK_BYTES` with the dense formula, so each
        occurrence's sum runs over the same ``n_layers * d_model`` terms in the same order as a
        sum over the whole dense table: the scores are identical to it, not only close.
        """
        per = 4 * self.n_layers * self.d_model
        step = max(1, BLOCK_BYTES // per)
        grads = grads.to(self.device)
        out = torch.zeros(self.n, dtype=torch.float32, device=CPU)
        for a in range(0, self.n, step):
            idx = torch.arange(a, min(self.n, a + step), device=CPU)
            g = grads[:, self.position[idx].to(self.device)].permute(1, 0, 2)  # [m, L, D]
            out[idx] = (self.block(idx) * g).sum((1, 2)).float().cpu()
        return out

    def add_rows(
        self,
        out: Float[Tensor, "b pos n_layers d_model"],
        rows: Int[Tensor, " k"],
        occ: Int[Tensor, " k"],
    ) -> None:
        """``out[rows[i], t(occ[i])] += delta_{occ[i]}`` for each ``i``, in order (rows of one
        source layer at a time; occurrences are sorted by layer, so every element of ``out``
        receives its terms in the order of ``occ``)."""
        lay = self.layer[occ]
        for src in lay.unique().tolist():
            at = (lay == src).nonzero().squeeze(1)
            r, o = rows[at], occ[at]
            index = (r.to(self.device), self.position[o].to(self.device))
            values = self.products(o, src)
            out[:, :, src : src + values.shape[1]].index_put_(index, values, accumulate=True)

    def _spans(
        self,
    ) -> tuple[Int[Tensor, " n"], Int[Tensor, " n"], list[tuple[int, int, int, int]]]:
        """Occurrences ordered by (position, source layer) (stably: by index within a group),
        the group of each in that order, and each group's ``(position, layer, start, end)``
        in that order (computed once)."""
        if self._order is None:
            key = self.position * self.n_layers + self.layer
            self._order = torch.argsort(key, stable=True)
            keys, counts = torch.unique_consecutive(key[self._order], return_counts=True)
            self._group_of = torch.repeat_interleave(torch.arange(keys.numel(), device=CPU), counts)
            ends = torch.cumsum(counts, 0).tolist()
            self._spans_list = [
                (int(k) // self.n_layers, int(k) % self.n_layers, e - int(c), e)
                for k, c, e in zip(keys.tolist(), counts.tolist(), ends, strict=True)
            ]
        assert self._group_of is not None
        return self._order, self._group_of, self._spans_list

    def group(self, g: int) -> Float[Tensor, "m n_out_d"]:
        """The writes of group ``g`` (:meth:`_spans`) into targets from its layer on,
        flattened to ``[m, n_out * d_model]`` (float32); kept while the cache has room."""
        hit = self._groups.get(g)
        if hit is not None:
            return hit
        order, _, spans = self._spans()
        _, src, a, e = spans[g]
        found = self.products(order[a:e], src).flatten(1)
        size = found.numel() * found.element_size()
        if self._group_bytes + size <= GROUP_CACHE_BYTES:
            self._groups[g] = found
            self._group_bytes += size
        return found

    def patch(
        self, masks: Bool[Tensor, "b n"], n_pos: int
    ) -> Float[Tensor, "b pos n_layers d_model"]:
        """Summed writes of each mask's occurrences per position and target layer: a few
        occurrences per row are added one by one, more with one small matmul per (position,
        source layer) group that a mask touches."""
        b, L, D = masks.shape[0], self.n_layers, self.d_model
        out = torch.zeros(b, n_pos, L, D, device=self.device)
        rows, occ = masks.nonzero(as_tuple=True)
        if rows.numel() <= 4 * b:  # a few occurrences per row (single and pair effects)
            self.add_rows(out, rows, occ)
            return out
        order, group_of, spans = self._spans()
        weights = masks.T[order].float().to(self.device)  # [n, b]: each group's rows contiguous
        used = torch.zeros(len(spans), device=CPU).index_add_(
            0, group_of, masks.any(0)[order].float()
        )
        flat = out.view(b, n_pos, L * D)
        for g in used.nonzero().squeeze(1).tolist():
            t, src, a, e = spans[g]
            w = self.group(g)
            flat[:, t, src * D : src * D + w.shape[1]] += weights[a:e].T @ w
        return out
