"""Where PIE's patched rows start: batches by start, and recorded runs to resume from
(docs/METHODS.md §4).

A removal of occurrences ``R`` changes nothing before the MLP output of its earliest layer and
its earliest position, so :meth:`PairComponents.run_removals` starts each row there from the
clean run; :func:`start_batches` groups rows by that start. A row that removes ``B ∪ R`` can
start in the same way from the recorded run of ``B`` alone: up to the earliest layer and
position of ``R`` the two runs are the same. FAP-Synergy's pairs ``{c, p}`` and ACDC's "current
set plus one unit" rows are such rows: recorded once, the shared part costs nothing more.

:class:`RowStates` holds what such a start needs: the residual stream after every block, every
layer's attention keys and values over the whole prompt (None where the model cannot resume
mid-prompt), and the last-position logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from cltrace.prune.writes import CPU


@dataclass
class RowStates:
    """Recorded patched runs of one prompt (row ``i`` removed ``masks[i]``)."""

    masks: Bool[Tensor, "r n"]
    logits: Float[Tensor, "r d_vocab"]
    resid: Float[Tensor, "r n_layers pos d_model"]
    """Residual stream after each block (model dtype). At the last block only the last
    position is exact (no later block reads the others, so they are not computed)."""
    keys_values: list[tuple[Tensor, Tensor]] | None
    """Per layer, keys and values ``[r, heads, pos, d_head]``; None where the clean run's
    are (the model cannot resume mid-prompt)."""

    @staticmethod
    def cat(parts: list[RowStates]) -> RowStates:
        kv = parts[0].keys_values
        return RowStates(
            torch.cat([p.masks for p in parts]),
            torch.cat([p.logits for p in parts]),
            torch.cat([p.resid for p in parts]),
            None
            if kv is None
            else [
                (torch.cat([p.keys_values[i][0] for p in parts]),  # type: ignore[index]
                 torch.cat([p.keys_values[i][1] for p in parts]))  # type: ignore[index]
                for i in range(len(kv))
            ],  # fmt: skip
        )


def per_row_bytes(resid: Tensor, keys_values: list[tuple[Tensor, Tensor]] | None) -> int:
    """Bytes one recorded row takes (residual stream, keys and values)."""
    kv = sum(k[0].nbytes + v[0].nbytes for k, v in keys_values or [])
    return resid.nbytes + kv


class RowOrigins:
    """Where each row of a :meth:`PairComponents.run_removals` call starts from: the clean
    run, or a recorded row (``bases[i] >= 0``)."""

    def __init__(
        self,
        clean_logits: Float[Tensor, " d_vocab"],
        resid: Float[Tensor, "n_layers pos d_model"],
        keys_values: list[tuple[Tensor, Tensor]] | None,
        states: RowStates | None,
        bases: Int[Tensor, " b"] | None,
        n_rows: int,
    ):
        if bases is not None and states is None:
            raise ValueError("bases need the recorded states they index")
        self.clean_logits, self.clean_resid, self.clean_kv = clean_logits, resid, keys_values
        self.states = states
        self.bases = torch.full((n_rows,), -1, device=CPU) if bases is None else bases.long()
        self.any_base = bool((self.bases >= 0).any())
        self._patches: dict[int, Tensor] = {}

    def _per_row(self, rows: Int[Tensor, " k"], clean: Tensor, recorded, copy: bool = False):
        """``clean`` (rows first) for the rows without a base, ``recorded(states, bases)`` for
        the others; ``clean`` itself, not a copy, when no row has a base unless ``copy``."""
        base = self.bases[rows]
        has = base >= 0
        if not bool(has.any()):
            return clean.clone() if copy else clean
        assert self.states is not None
        out = clean.clone()
        out[has] = recorded(self.states, base[has])
        return out

    def masks(self, rows: Int[Tensor, " k"], n: int) -> Bool[Tensor, "k n"]:
        """What each row's base already removes."""
        zeros = torch.zeros(rows.numel(), n, dtype=torch.bool, device=CPU)
        return self._per_row(rows, zeros, lambda st, i: st.masks[i])

    def logits(self) -> Float[Tensor, "b d_vocab"]:
        """Each row's base logits (a copy, for the caller to fill)."""
        rows = torch.arange(self.bases.numel(), device=CPU)
        clean = self.clean_logits.expand(rows.numel(), -1)
        return self._per_row(rows, clean, lambda st, i: st.logits[i], copy=True)

    def resid(self, rows: Int[Tensor, " k"], layer: int, t: int) -> Float[Tensor, "k pos d"]:
        """Each row's base residual stream after block ``layer``, positions ``t..``."""
        clean = self.clean_resid[layer, t:].expand(rows.numel(), -1, -1)
        return self._per_row(rows, clean, lambda st, i: st.resid[i, layer, t:])

    def full_resid(self, rows: Int[Tensor, " k"]) -> Float[Tensor, "k n_layers pos d"]:
        """Each row's base residual stream after every block (a copy)."""
        clean = self.clean_resid.expand(rows.numel(), -1, -1, -1)
        return self._per_row(rows, clean, lambda st, i: st.resid[i], copy=True)

    def keys_values(
        self, rows: Int[Tensor, " k"], t: int | None = None
    ) -> list[tuple[Tensor, Tensor]] | None:
        """Each row's base keys and values (positions ``..t`` when given); batch 1 when every
        row has the same base."""
        kv = self.clean_kv
        base = self.bases[rows]
        if kv is None or not bool((base >= 0).any()):
            return kv
        assert self.states is not None and self.states.keys_values is not None
        end = kv[0][0].shape[-2] if t is None else t
        if bool((base == base[0]).all()):
            i = int(base[0])
            return [(k[i : i + 1, :, :end], v[i : i + 1, :, :end])
                    for k, v in self.states.keys_values]  # fmt: skip
        index = base + 1  # 0: the clean run
        return [
            (torch.cat([ck[:, :, :end], sk[:, :, :end]])[index],
             torch.cat([cv[:, :, :end], sv[:, :, :end]])[index])
            for (ck, cv), (sk, sv) in zip(kv, self.states.keys_values, strict=True)
        ]  # fmt: skip

    def patch(
        self, rows: Int[Tensor, " k"], patch_for: Callable[[Tensor], Tensor]
    ) -> Tensor | None:
        """The patch each row's base removes (``patch_for`` of its mask); None when every row
        starts from the clean run. One base shared by all rows is computed once."""
        base = self.bases[rows]
        if not bool((base >= 0).any()):
            return None
        assert self.states is not None
        if bool((base == base[0]).all()):
            i = int(base[0])
            if i not in self._patches:
                self._patches = {i: patch_for(self.states.masks[i : i + 1])}
            return self._patches[i]
        return patch_for(self.masks(rows, self.states.masks.shape[1]))


class Recorder:
    """Builds the :class:`RowStates` of a :meth:`PairComponents.record_removals` call, batch
    by batch: a row's state is its base's, overwritten where the row's own pass ran."""

    def __init__(self, origins: RowOrigins, masks: Bool[Tensor, "b n"]):
        rows = torch.arange(masks.shape[0], device=CPU)
        self.states = RowStates(
            masks.clone(),
            origins.logits(),
            origins.full_resid(rows),
            origins.keys_values(rows),
        )
        if self.states.keys_values is not None:  # batch 1 when every row starts clean
            b = masks.shape[0]
            self.states.keys_values = [(k.expand(b, -1, -1, -1).clone(),
                                        v.expand(b, -1, -1, -1).clone())
                                       for k, v in self.states.keys_values]  # fmt: skip

    def write(
        self,
        rows: Int[Tensor, " k"],
        layer: int,
        t: int,
        logits: Float[Tensor, "k d_vocab"],
        hidden: Float[Tensor, "k pos d"],
        resid_post: dict[int, Tensor],
        keys_values: list[tuple[Tensor, Tensor] | None] | None,
    ) -> None:
        """One batch that started after block ``layer`` at position ``t``."""
        st = self.states
        st.logits[rows] = logits
        st.resid[rows, layer, t:] = hidden.to(st.resid.dtype)
        for s, x in resid_post.items():
            st.resid[rows, s, t:] = x.to(st.resid.dtype)
        if st.keys_values is None or keys_values is None:
            return
        for s, kv in enumerate(keys_values):
            if s > layer and kv is not None:
                st.keys_values[s][0][rows] = kv[0]
                st.keys_values[s][1][rows] = kv[1]


MERGE_COST = 256
"""A patched pass costs about as much fixed work as this many row-position-blocks of compute
(bundled model, one thread: ~4 ms against ~13 us), so a group of rows joins the batch before it,
computed from that batch's start, when that adds no more compute than this."""


def start_batches(
    layers: Int[Tensor, " r"], starts: Int[Tensor, " r"], rows: Int[Tensor, " r"],
    batch_size: int, n_layers: int, n_pos: int,
) -> list[tuple[int, int, Tensor]]:  # fmt: skip
    """``(start layer, start position, rows)`` batches of patched passes. Rows are grouped by
    where they start, in (layer, position) order; a group joins the batch before it when the
    compute that adds (it and the batch's rows started at the earlier of the two starts) is at
    most :data:`MERGE_COST`. A batch may start earlier than any of its rows: their patch is zero
    there, so the result is the same."""

    def cost(n: int, layer: int, t: int) -> int:
        return n * (n_pos - t) * (n_layers - 1 - layer)

    order = sorted(range(rows.numel()), key=lambda i: (int(layers[i]), int(starts[i])))
    batches: list[list] = []  # [layer, t, rows]
    i = 0
    while i < len(order):
        layer, t = int(layers[order[i]]), int(starts[order[i]])
        j = i
        while j < len(order) and (int(layers[order[j]]), int(starts[order[j]])) == (layer, t):
            j += 1
        group = [int(rows[k]) for k in order[i:j]]
        i = j
        if batches and len(batches[-1][2]) + len(group) <= batch_size:
            bl, bt, brows = batches[-1]  # bl <= layer
            nt = min(bt, t)
            extra = (cost(len(brows), bl, nt) - cost(len(brows), bl, bt)
                     + cost(len(group), bl, nt) - cost(len(group), layer, t))  # fmt: skip
            if extra <= MERGE_COST:
                batches[-1] = [bl, nt, brows + group]
                continue
        for k in range(0, len(group), batch_size):
            batches.append([layer, t, group[k : k + batch_size]])
    return [(layer, t, torch.tensor(r, dtype=torch.long, device=CPU)) for layer, t, r in batches]
