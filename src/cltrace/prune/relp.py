"""CLT-RelP: FAP with relevance-propagation coefficients instead of direct-path gradients.

PIE's CLT-RelP baseline (docs/METHODS.md §4, after PIE's ``pie/pruning/relp.py``) scores an
occurrence as ``sum_s <delta_o^(s), rho_s(t_o)>`` where ``rho_s`` is the metric's gradient at the
layer-``s`` MLP output taken through a model with attention patterns and every norm scale frozen
and with the LRP identity and half rules inside the real MLPs (:mod:`cltrace.models.relp`).
Unlike FAP's ``direct`` gradient, relevance flows through every downstream MLP.

Cost per prompt: one frozen-state forward pass plus one forward and one backward pass.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from cltrace.models.freeze import frozen, record_frozen
from cltrace.models.relp import lrp_mlps
from cltrace.prune.components import PairComponents, fap_scores


def relp_gradients(comps: PairComponents) -> Float[Tensor, "n_layers pos d_model"]:
    """``rho_s(t)``: the RelP coefficient of the metric at every MLP output of the clean run."""
    adapter = comps.adapter
    sites = adapter.sites("mlp_out")
    state = record_frozen(adapter, comps.tokens)
    with torch.enable_grad(), frozen(adapter, state), lrp_mlps(adapter):
        # the cache is installed after the LRP hooks, so it holds the tensors that carry them
        with adapter.cache(sites, detach=False) as c:
            logits = adapter(comps.tokens)
        m = comps.metric(logits[0, -1].float())
        grads = torch.autograd.grad(m, [c[s] for s in sites], allow_unused=True)
    return torch.stack(
        [
            torch.zeros_like(c[s][0]) if g is None else g[0]
            for s, g in zip(sites, grads, strict=True)
        ]
    ).float()


def relp_scores(comps: PairComponents) -> Float[Tensor, " n"]:
    """``S_RelP(o) = sum_s <delta_o^(s), rho_s(t_o)>`` per occurrence."""
    return fap_scores(comps, relp_gradients(comps))
