"""Shared pieces of the intervention tests: tiny setups and de-meaned pre-softcap logits."""

from __future__ import annotations

import torch

from cltrace.interventions.spec import clean_state
from cltrace.testing import random_transcoder, resid_mid_transcoder, tiny_model

PROMPT = "w3 w8 w1 w3 w8 w9"


def make(family: str, n_layers: int = 3, kind: str = "clt", skip: bool = False, d: int = 24):
    """``kind``: ``clt``, ``plt`` (per-layer), or ``clt_resid_mid`` (a CLT reading
    ``hook_resid_mid``, the residual stream before the MLP's norm)."""
    adapter = tiny_model(family, n_layers=n_layers)
    if kind == "clt_resid_mid":
        return adapter, resid_mid_transcoder(adapter, d_features=d, skip=skip)
    tc = random_transcoder(adapter, d_features=d, cross_layer=kind == "clt", skip=skip)
    return adapter, tc


def pre_softcap(adapter, logits: torch.Tensor) -> torch.Tensor:
    """Undo Gemma-2's final soft-capping (the one non-linearity after the final norm)."""
    cap = adapter.final_logit_softcap
    z = logits.double()
    return cap * torch.atanh(z / cap) if cap else z


def demeaned(adapter, logits: torch.Tensor) -> torch.Tensor:
    """De-meaned pre-softcap logits of the last position (what graph logit nodes measure)."""
    z = pre_softcap(adapter, logits[-1])
    return z - z.mean()


def active_occurrence(adapter, tc, layer: int, rank: int = 0, position: int | None = None):
    """(position, feature, value) of an active feature of ``layer`` (not at BOS)."""
    state = clean_state(adapter, tc, adapter.to_tokens(PROMPT))
    act = state.active
    m = (act.layer == layer) & (act.position > 0)
    if position is not None:
        m &= act.position == position
    idx = m.nonzero().squeeze(1)
    order = act.value[idx].abs().argsort(descending=True)
    i = int(idx[order[rank]])
    return int(act.position[i]), int(act.feature[i]), float(act.value[i])
