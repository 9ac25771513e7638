"""Behaviour retention of kept sets (docs/METHODS.md §5).

For a kept set ``K`` the removed set is ``R = O \\ K``; the clean prompt runs through the real
model with ``R`` removed (``P(R)``). Per prompt: last-token KL(p_clean || p_K), whether the top
prediction changed, the logit difference, faithfulness ``(m(P(R)) - m_null) / (m_clean -
m_null)`` and completeness ``(m(P(K)) - m_null) / (m_clean - m_null)`` with ``m_null`` the metric
with every occurrence removed (NaN when the denominator is ~0).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from cltrace.prune.components import kl_last
from cltrace.prune.methods import ScoreContext


@dataclass
class Retention:
    """Behaviour retention of one kept set on one prompt."""

    method: str
    budget: int
    seed: int
    n_kept: int
    kl: float
    pred_changed: bool
    logit_diff: float
    faithfulness: float
    completeness: float

    def to_json(self) -> dict:
        return asdict(self)


def _ratio(num: float, den: float) -> float:
    return num / den if abs(den) > 1e-6 else math.nan


def evaluate_kept(
    ctx: ScoreContext, kept: dict[tuple[str, int, int], Tensor]
) -> tuple[list[Retention], dict]:
    """Retention of every kept set ``{(method, K, seed): unit indices}`` on this prompt.

    All patched passes (two per set, plus the all-removed one) run batched. Also returns the
    prompt's reference values (clean and all-removed metric).
    """
    keys = list(kept)
    n_units = ctx.n_units
    everything = torch.arange(n_units)
    sets = []
    for key in keys:
        mask = torch.ones(n_units, dtype=torch.bool)
        mask[kept[key]] = False
        sets.append(mask.nonzero().squeeze(1))  # removed = the rest
        sets.append(kept[key])  # removed = the kept set (completeness)
    sets.append(everything)
    logits = ctx.comps.run_removals(ctx.unit_masks(sets), ctx.config.batch_size)
    comps = ctx.comps
    m = comps.metric(logits)
    m_clean, m_null = comps.m_clean, float(m[-1])
    kls = kl_last(comps.clean_logits, logits)
    top = int(comps.clean_logits.argmax())
    out = []
    for i, (method, budget, seed) in enumerate(keys):
        r = 2 * i
        out.append(
            Retention(
                method=method,
                budget=budget,
                seed=seed,
                n_kept=int(kept[keys[i]].numel()),
                kl=float(kls[r]),
                pred_changed=int(logits[r].argmax()) != top,
                logit_diff=float(m[r]),
                faithfulness=_ratio(float(m[r]) - m_null, m_clean - m_null),
                completeness=_ratio(float(m[r + 1]) - m_null, m_clean - m_null),
            )
        )
    ref = {"m_clean": m_clean, "m_null": m_null, "kl_null": float(kls[-1]), "n_units": n_units}
    return out, ref
