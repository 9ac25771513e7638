"""Choosing feature nodes by influence when a graph keeps at most ``max_feature_nodes``.

Rows are computed in rounds: each round visits the features with the highest influence on the
logits estimated from the rows visited so far (docs/METHODS.md §2).
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor


def select_by_influence(
    fill_rows,
    logit_rows: Float[Tensor, "k n_src"],
    logit_probs: Float[Tensor, " k"],
    n_active: int,
    limit: int,
    step: int,
) -> tuple[Int[Tensor, " m"], Float[Tensor, "m n_src"]]:
    """Visit features in order of their (estimated) influence on the logits.

    Influence is recomputed from the rows visited so far every ``step`` features: the logit
    weights flow backwards through the row-normalised ``|A|`` of visited rows. Rows go into one
    preallocated buffer; influence is propagated in row blocks, so no full-size copy is made.
    """
    rows = torch.empty(limit, logit_rows.shape[1])
    norms = torch.empty(limit)
    visited = torch.empty(limit, dtype=torch.long)
    n = 0
    while n < limit:
        inf = partial_influence(logit_rows, logit_probs, rows[:n], norms[:n], visited[:n],
                                 n_active)  # fmt: skip
        inf[visited[:n]] = -1.0
        take = min(step, limit - n)
        # sorted = (layer, position) order: the rows land in place, in few, short batches
        nxt = torch.argsort(inf, descending=True)[:take].sort().values
        fill_rows(nxt, rows[n : n + take])
        norms[n : n + take] = rows[n : n + take].abs().sum(1).clamp(min=1e-10)
        visited[n : n + take] = nxt
        n += take
    return visited, rows


def _abs_matvec(weights: Tensor, rows: Tensor, n_cols: int, block: int = 256) -> Tensor:
    """``weights @ |rows[:, :n_cols]|`` without materialising ``|rows|`` (one reused block)."""
    out = torch.zeros(n_cols)
    scratch = torch.empty(min(block, rows.shape[0]), n_cols)
    for s in range(0, rows.shape[0], block):
        part = rows[s : s + block, :n_cols]
        buf = scratch[: part.shape[0]]
        torch.abs(part, out=buf)
        out += weights[s : s + block] @ buf
    return out


def partial_influence(logit_rows, logit_probs, feat_rows, feat_norms, visited, n_active):
    """Influence on the logits of every active feature, through the visited rows only.

    ``total = direct + (total[visited] / norms) @ |rows|``, where ``direct`` is the logits' own
    share. The visited features' totals are found first on the small ``[visited, visited]``
    block (the DAG over layers makes that iteration end), so the wide ``|rows|`` is read once.
    """
    logit_norms = logit_rows.abs().sum(1).clamp(min=1e-10)
    direct = _abs_matvec(logit_probs.float() / logit_norms, logit_rows, n_active)
    if visited.numel() == 0:
        return direct
    among = feat_rows[:, visited].abs() / feat_norms[:, None]  # [visited, visited]
    w = direct[visited].clone()
    step = w
    for _ in range(64):  # nilpotent: ends in <= n_layers steps
        step = step @ among
        if step.abs().max() < 1e-12:
            break
        w += step
    return direct + _abs_matvec(w / feat_norms, feat_rows, n_active)
