"""Cheap measurements of each attention head's role on IOI prompts (the roles of Wang et al.
2022's IOI circuit in GPT-2 small).

On prompts that name the indirect object (IO) once and the subject (S) twice (S1, then S2),
with the answer read at the last position, every head gets:

* ``attn_io`` and ``attn_s``: its attention from the last position to IO and to S (S1 plus S2).
  A head that gives the names together at least :data:`READER_MIN` of that attention is a
  *name reader* (name movers, and the negative name movers that write against the name they
  read, are such heads in GPT-2 small).
* ``dup_token``: its attention from S2 to S1 (duplicate-token heads).
* ``logit_effect``: the change of the logit difference (IO minus S) when the head's output is
  replaced by its output on the corrupted prompt; negative when the head helps the answer.
  ``effect_io`` and ``effect_s`` split it: the change of the log-probability of IO and of S.
* ``s_inhibition``: with the head's output so replaced, the mean change of the later name
  readers' attention to S; positive when the head keeps them off S, as S-inhibition heads keep
  the name movers (``None`` when no name reader sits in a later layer).

Replacing a head's output is the masked forward with every outgoing edge of the head removed;
one batch of mask rows (the clean run plus one row per head) gives all the heads at once, and
the attention patterns are read inside that same pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from cltrace.edges.context import EdgeContext
from cltrace.edges.data import PairBatch
from cltrace.edges.forward import masked_forward
from cltrace.models.attention import pattern_hooks
from cltrace.models.families import get_path

READER_MIN = 0.3
"""Least attention from the last position to the names (IO plus S) of a name reader."""
DUP_MIN = 0.3
"""Least S2-to-S1 attention for the ``duplicate-token-like`` label."""
S_INHIBITION_MIN = 0.05
"""Least rise of the later name readers' attention to S, when the head is patched, for the
``s-inhibition-like`` label."""
SUPPRESS_MIN = 0.1
"""Least rise of S's log-probability, when the head is patched, for a name reader to
count as suppressing that name."""


@dataclass
class NamePositions:
    """Token positions of the names in a batch's clean prompts."""

    valid: Tensor
    """Bool [batch]: IO occurs exactly once and S exactly twice."""
    io: Tensor
    s1: Tensor
    s2: Tensor


def name_positions(batch: PairBatch) -> NamePositions:
    """Where the first answer (IO) and the first wrong answer (S) sit in the clean prompts."""
    tok = batch.clean
    io_m = tok == batch.answers[:, :1]
    s_m = tok == batch.wrong[:, :1]
    p = tok.shape[1]
    idx = torch.arange(p, device=tok.device).expand_as(tok)
    valid = (io_m.sum(1) == 1) & (s_m.sum(1) == 2)
    io = torch.where(io_m, idx, 0).max(1).values
    s1 = torch.where(s_m, idx, p - 1).min(1).values
    s2 = torch.where(s_m, idx, 0).max(1).values
    return NamePositions(valid, io, s1, s2)


@dataclass
class HeadRoles:
    """Role measurements, each ``[n_layers, n_heads]``, means over ``n_examples`` prompts."""

    n_examples: int
    attn_io: Tensor
    attn_s: Tensor
    dup_token: Tensor
    logit_effect: Tensor
    effect_io: Tensor
    effect_s: Tensor
    s_inhibition: Tensor
    """NaN where no name reader sits in a later layer."""

    @property
    def readers(self) -> Tensor:
        """Bool [n_layers, n_heads]: heads that attend from the last position to the names."""
        return self.attn_io + self.attn_s >= READER_MIN

    def labels(self, layer: int, head: int) -> list[str]:
        """Role names: ``duplicate-token-like``; ``name-mover-like`` (a name reader attending to
        IO more than to S whose patching lowers the logit difference); ``s-suppression-like``
        (a name reader attending to S more than to IO whose patching raises S's
        log-probability by at least :data:`SUPPRESS_MIN`); ``s-inhibition-like``."""
        out = []
        if self.dup_token[layer, head] >= DUP_MIN:
            out.append("duplicate-token-like")
        reader = bool(self.readers[layer, head])
        io_first = bool(self.attn_io[layer, head] > self.attn_s[layer, head])
        if reader and io_first and self.logit_effect[layer, head] < 0:
            out.append("name-mover-like")
        if reader and not io_first and self.effect_s[layer, head] >= SUPPRESS_MIN:
            out.append("s-suppression-like")
        s_inh = float(self.s_inhibition[layer, head])
        if math.isfinite(s_inh) and s_inh >= S_INHIBITION_MIN:
            out.append("s-inhibition-like")
        return out

    def head(self, layer: int, head: int) -> dict:
        """One head's numbers (rounded to 4 places) and labels, as JSON."""
        s_inh = float(self.s_inhibition[layer, head])
        return {
            "attn_io": round(float(self.attn_io[layer, head]), 4),
            "attn_s": round(float(self.attn_s[layer, head]), 4),
            "dup_token": round(float(self.dup_token[layer, head]), 4),
            "logit_effect": round(float(self.logit_effect[layer, head]), 4),
            "effect_io": round(float(self.effect_io[layer, head]), 4),
            "effect_s": round(float(self.effect_s[layer, head]), 4),
            "s_inhibition": round(s_inh, 4) if math.isfinite(s_inh) else None,
            "roles": self.labels(layer, head),
        }

    def to_json(self, heads: list[str] | None = None) -> dict:
        """``{"n_examples", "readers", "heads": {"a{l}.h{h}": {...}}}``, for ``heads`` (names)
        or every head."""
        n_layers, n_heads = self.attn_io.shape
        names = {f"a{lay}.h{h}": (lay, h) for lay in range(n_layers) for h in range(n_heads)}
        chosen = list(names) if heads is None else [h for h in heads if h in names]
        readers = [n for n, (lay, h) in names.items() if self.readers[lay, h]]
        return {
            "n_examples": self.n_examples,
            "readers": readers,
            "heads": {n: self.head(*names[n]) for n in chosen},
        }


def _gather_last(x: Tensor, index: Tensor) -> Tensor:
    """``x[..., index]`` along the last axis, ``index`` [batch] broadcast over ``x``'s
    ``[mask, batch, head, pos]``."""
    m, b, h, _ = x.shape
    return x.gather(-1, index.view(1, b, 1, 1).expand(m, b, h, 1))[..., 0]


def _run_rows(ctx: EdgeContext, i: int, rows: Tensor, pos: NamePositions):
    """One masked pass of batch ``i`` per mask row; returns per row and example the log-probs
    of IO and S ``[m, b]`` and the attention numbers ``[m, b, layer, head]``."""
    adapter, batch = ctx.adapter, ctx.batches[i]
    m, b = rows.shape[0], batch.size
    found: dict[int, tuple[Tensor, Tensor, Tensor]] = {}

    def make_hook(layer: int):
        def hook(pattern: Tensor) -> None:
            pat = pattern.detach().float().reshape(m, b, *pattern.shape[1:])  # [m, b, H, P, P]
            last = pat[:, :, :, -1, :]
            io = _gather_last(last, pos.io)
            s = _gather_last(last, pos.s1) + _gather_last(last, pos.s2)
            h, p = pat.shape[2], pat.shape[3]
            from_s2 = pat.gather(3, pos.s2.view(1, b, 1, 1, 1).expand(m, b, h, 1, p))[:, :, :, 0]
            found[layer] = (io, s, _gather_last(from_s2, pos.s1))

        return hook

    installed = []
    try:
        for layer in range(adapter.n_layers):
            hooks = pattern_hooks(get_path(adapter.block(layer), adapter.family.attn))
            fn = make_hook(layer)
            hooks.append(fn)
            installed.append((hooks, fn))
        with torch.no_grad():
            run = masked_forward(adapter, batch.clean, rows, ctx.corrupt[i])
    finally:
        for hooks, fn in installed:
            hooks.remove(fn)
    logp = torch.log_softmax(run.logits[:, :, -1].double(), -1)
    lp_io = logp.gather(-1, batch.answers[None, :, :1].expand(m, -1, -1))[..., 0]
    lp_s = logp.gather(-1, batch.wrong[None, :, :1].expand(m, -1, -1))[..., 0]
    stacked = [torch.stack([found[lay][k] for lay in range(adapter.n_layers)], 2) for k in range(3)]
    return lp_io, lp_s, *stacked


def head_roles(ctx: EdgeContext, chunk: int = 17) -> HeadRoles | None:
    """Measure every head's role on the context's clean prompts; ``None`` unless every prompt
    names IO (its first answer) once and S (its first wrong answer) twice. ``chunk`` mask rows
    run in one pass."""
    g = ctx.graph
    n_layers, n_heads = g.n_layers, g.n_heads
    positions = [name_positions(b) for b in ctx.batches]
    if not positions or not all(bool(p.valid.all()) for p in positions):
        return None
    n_rows = 1 + n_layers * n_heads
    masks = torch.ones(n_rows, g.n_edges, dtype=ctx.corrupt[0].dtype)
    for layer in range(n_layers):
        for head in range(n_heads):
            masks[1 + layer * n_heads + head, g.edge_writer == g.head_writer(layer, head)] = 0
    masks = masks.to(ctx.corrupt[0].device)
    sums = [torch.zeros(n_rows, n_layers, n_heads, dtype=torch.float64) for _ in range(3)]
    lp_sums = torch.zeros(2, n_rows, dtype=torch.float64)
    for i, pos in enumerate(positions):
        for start in range(0, n_rows, chunk):
            lp_io, lp_s, io, s, dup = _run_rows(ctx, i, masks[start : start + chunk], pos)
            stop = start + io.shape[0]
            lp_sums[0, start:stop] += lp_io.sum(1).cpu()
            lp_sums[1, start:stop] += lp_s.sum(1).cpu()
            for acc, part in zip(sums, (io, s, dup), strict=True):
                acc[start:stop] += part.sum(1).double().cpu()
    n = ctx.n_examples
    io, s, dup = (acc / n for acc in sums)
    d_io, d_s_lp = ((lp[1:] - lp[0]).view(n_layers, n_heads) for lp in lp_sums / n)
    roles = HeadRoles(
        n_examples=n,
        attn_io=io[0],
        attn_s=s[0],
        dup_token=dup[0],
        logit_effect=d_io - d_s_lp,
        effect_io=d_io,
        effect_s=d_s_lp,
        s_inhibition=torch.full((n_layers, n_heads), math.nan, dtype=torch.float64),
    )
    readers = roles.readers
    d_s = (s[1:] - s[0]).view(n_layers, n_heads, n_layers, n_heads)
    for layer in range(n_layers):
        later = readers.clone()
        later[: layer + 1] = False
        if later.any():
            roles.s_inhibition[layer] = d_s[layer][:, later].mean(-1)
    return roles


__all__ = [
    "DUP_MIN",
    "READER_MIN",
    "SUPPRESS_MIN",
    "S_INHIBITION_MIN",
    "HeadRoles",
    "NamePositions",
    "head_roles",
    "name_positions",
]
