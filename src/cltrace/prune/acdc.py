"""ACDC-style greedy pruning of units (docs/METHODS.md §4, [DEFAULT]).

After Conmy et al.'s ACDC, on units instead of edges: start with every unit kept; visit units
from the last layer to the first (within a layer by ascending |FAP|, so likely-unimportant units
go first); tentatively remove each and keep it removed if the last-token KL(clean || patched)
grows by less than ``tau`` relative to the current removed set. One pass serves every budget:

* the kept set is recorded when the number of kept units reaches each ``min(K, n)``, and the
  pass stops at the smallest budget;
* if the pass ends (every unit visited) with more than ``K`` units kept, the missing removals are
  the not-yet-removed units in visiting order, so every budget gets exactly ``min(K, n)`` units.

**Block approximation.** Strictly sequential greedy needs one forward pass per unit, each
depending on the last. Instead, ``block`` candidates at a time are measured in one batched pass,
each removed individually on top of the removed set as it was at the start of the block; the
block's candidates under ``tau`` are then all accepted, in visiting order. Their joint effect can
exceed what each measured alone; ``block=1`` is exact greedy. The block size is the module
constant :data:`ACDC_BLOCK` rather than ``batch_size`` so that results do not depend on a
performance knob.

Cost per prompt: about ``n_units`` patched forward rows (one per visited unit, plus one per
block that accepted something, to re-measure the current set), in ``n_units / block`` rounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Int
from torch import Tensor

from cltrace.prune.components import kl_last
from cltrace.prune.methods import ScoreContext
from cltrace.prune.resume import RowStates
from cltrace.prune.writes import CPU

ACDC_BLOCK = 128  # ~20 sequential rounds for the ~2,500 units of a bundled IOI prompt
"""Candidates measured per batched forward pass (see the module docstring)."""


@dataclass
class AcdcTrace:
    """What one greedy pass did."""

    order: Int[Tensor, " units"]
    """Visiting order."""
    accepted: list[int] = field(default_factory=list)
    """Removed units, in the order they were accepted."""
    rejected: list[int] = field(default_factory=list)
    """Visited units whose removal raised the KL by ``tau`` or more."""
    increase: dict[int, float] = field(default_factory=dict)
    """Measured KL increase of every visited unit (against the set it was measured on)."""
    kept: dict[int, Tensor] = field(default_factory=dict)
    """Kept units per budget."""


def visiting_order(ctx: ScoreContext) -> Int[Tensor, " units"]:
    """Units from the last layer to the first; within a layer by ascending |FAP|."""
    layer = torch.zeros(ctx.n_units, dtype=torch.long, device=CPU)
    layer[ctx.groups] = ctx.comps.layer  # a pooled feature's occurrences share one layer
    by_abs = torch.argsort(ctx.fap.abs(), stable=True)
    return by_abs[torch.argsort(-layer[by_abs], stable=True)]


def acdc_run(
    ctx: ScoreContext,
    budgets: list[int],
    tau: float | None = None,
    block: int = ACDC_BLOCK,
) -> AcdcTrace:
    """One greedy pass; ``trace.kept[K]`` holds ``min(K, n_units)`` units for each budget."""
    tau = ctx.config.acdc_tau if tau is None else tau
    comps, n = ctx.comps, ctx.n_units
    trace = AcdcTrace(order=visiting_order(ctx))
    counts = {min(k, n) for k in budgets}
    stop = min(counts) if counts else n
    removed = torch.zeros(n, dtype=torch.bool, device=CPU)
    by_count: dict[int, Tensor] = {}
    if n in counts:
        by_count[n] = torch.arange(n, device=CPU)
    base_kl, stale = 0.0, False  # KL of the current removed set (nothing removed: exactly 0)
    state: RowStates | None = None  # the current removed set's patched run
    pos = 0
    while pos < n and n - len(trace.accepted) > stop:
        cand = trace.order[pos : pos + block].tolist()
        pos += len(cand)
        if stale:  # each candidate row resumes from the removed set's run
            logits, state = comps.record_removals(removed[None, ctx.groups])
            base_kl, stale = float(kl_last(comps.clean_logits, logits)[0]), False
        rows = removed.expand(len(cand), -1).clone()
        rows[torch.arange(len(cand), device=CPU), torch.tensor(cand, device=CPU)] = True
        bases = None if state is None else torch.zeros(len(cand), dtype=torch.long, device=CPU)
        logits = comps.run_removals(rows[:, ctx.groups], ctx.config.batch_size, bases, state)
        kls = kl_last(comps.clean_logits, logits).tolist()
        for c, kl in zip(cand, kls, strict=True):
            if n - len(trace.accepted) <= stop:
                break
            trace.increase[c] = kl - base_kl
            if kl - base_kl < tau:
                removed[c] = True
                trace.accepted.append(c)
                stale = True
                left = n - len(trace.accepted)
                if left in counts:
                    by_count[left] = (~removed).nonzero().squeeze(1)
            else:
                trace.rejected.append(c)
    # budgets the tau rule did not reach: remove further units in visiting order
    pending = [int(u) for u in trace.order if not removed[u]]
    for count in counts - set(by_count):
        extra = removed.clone()
        more = pending[: n - len(trace.accepted) - count]
        extra[torch.tensor(more, dtype=torch.long, device=CPU)] = True
        by_count[count] = (~extra).nonzero().squeeze(1)
    trace.kept = {k: by_count[min(k, n)] for k in budgets}
    return trace


def acdc_select(ctx: ScoreContext, budgets: list[int], _seed: int = 0) -> dict[int, Tensor]:
    return acdc_run(ctx, budgets).kept
