"""FActP: exact single-occurrence activation patching (docs/METHODS.md §4, [DEFAULT]).

The non-linearised counterpart of FAP: a unit's score is its measured removal effect
``M({u}) = m(clean) - m(clean with u removed)`` from a real patched forward pass. Exact effects are
bought for the top ``factp_cap`` units by |FAP| only; they are ranked first by |M({u})|, and every
other unit follows in |FAP| order (so a budget beyond the cap keeps all measured units).

Cost per prompt: the FAP passes plus ``min(factp_cap, n_units)`` patched forward rows, batched
``batch_size`` at a time. Single effects are shared with FAP-Synergy through
``ctx.extras["single_effect"]``, so running both on one context measures each unit once.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from cltrace.prune.methods import ScoreContext
from cltrace.prune.writes import CPU


def single_effects(ctx: ScoreContext, units: Int[Tensor, " c"]) -> Float[Tensor, " c"]:
    """``M({u})`` for each unit, measured once per context and cached."""
    cache: dict[int, float] = ctx.extras.setdefault("single_effect", {})
    need = [int(u) for u in units if int(u) not in cache]
    if need:
        effects = ctx.removal_effect([torch.tensor([u], device=CPU) for u in need])
        cache.update(zip(need, effects.tolist(), strict=True))
    return torch.tensor([cache[int(u)] for u in units], dtype=torch.float32, device=CPU)


def factp_effects(ctx: ScoreContext) -> tuple[Int[Tensor, " c"], Float[Tensor, " c"]]:
    """The top ``factp_cap`` units by |FAP| (in that order) and their exact effects."""
    cap = min(ctx.config.factp_cap, ctx.n_units)
    top = torch.argsort(ctx.fap.abs(), descending=True, stable=True)[:cap]
    return top, single_effects(ctx, top)


def factp_order(ctx: ScoreContext) -> Int[Tensor, " units"]:
    """All units: measured ones by |M({u})|, then the rest by |FAP|."""
    top, effects = factp_effects(ctx)
    head = top[torch.argsort(effects.abs(), descending=True, stable=True)]
    rest = torch.argsort(ctx.fap.abs(), descending=True, stable=True)[top.numel() :]
    return torch.cat([head, rest])


def factp_select(ctx: ScoreContext, budgets: list[int], _seed: int = 0) -> dict[int, Tensor]:
    order = factp_order(ctx)
    return {k: order[: min(k, order.numel())] for k in budgets}
