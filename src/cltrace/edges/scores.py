"""Edge attribution scores: EAP and EAP-IG, in a registry.

A score estimates ``m(circuit without the edge) - m(full)``: negative for an edge that helps the
metric. Every score is a gradient of the masked forward, so it costs forward and backward
passes, never one pass per edge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from cltrace.edges.context import EdgeContext
from cltrace.edges.data import Metric, get_metric
from cltrace.edges.forward import masked_forward
from cltrace.errors import UsageError


def _mean_metric(ctx: EdgeContext, metric: Metric, i: int, logits: Tensor) -> Tensor:
    """Sum over masks of the batch's metric, weighted so batches add to the dataset mean."""
    values = metric(logits[:, :, -1], ctx.batches[i], ctx.full_logprobs[i])
    return values.sum(-1).sum() / ctx.n_examples


def eap(ctx: EdgeContext, metric: str = "logit_diff") -> Tensor:
    """Edge attribution patching: ``<corrupt_u - clean_u, dm/d in_v>`` on the clean run,
    averaged over examples (summed over positions). One forward and one backward per batch."""
    if metric == "kl":
        raise UsageError("the kl metric has zero gradient on the clean run; use eap-ig with it.")
    fn = get_metric(metric)
    grad = ctx.corrupt[0].new_zeros(ctx.graph.n_edges)
    for i, b in enumerate(ctx.batches):
        z = grad.new_ones(1, ctx.graph.n_edges).requires_grad_(True)
        run = masked_forward(ctx.adapter, b.clean, z, ctx.corrupt[i])
        (g,) = torch.autograd.grad(_mean_metric(ctx, fn, i, run.logits), z)
        grad += g[0]
    return -grad


def _interpolations(steps: int) -> Tensor:
    return torch.arange(1, steps + 1, dtype=torch.float32) / steps


def eap_ig_inputs(ctx: EdgeContext, metric: str = "logit_diff", steps: int = 5) -> Tensor:
    """EAP-IG (inputs): the gradient at each reader averaged over ``steps`` runs whose
    embeddings go from corrupted to clean (``alpha = k/steps``, k = 1..steps; one step is EAP),
    times ``corrupt_u - clean_u``."""
    fn = get_metric(metric)
    g = ctx.graph
    total = ctx.corrupt[0].new_zeros(g.n_edges)
    alphas = _interpolations(steps).to(total)
    for i, b in enumerate(ctx.batches):
        emb_c, emb_x = ctx.clean[i][0], ctx.corrupt[i][0]
        emb = emb_x + alphas[:, None, None, None] * (emb_c - emb_x)
        run = masked_forward(
            ctx.adapter, b.clean, None, ctx.corrupt[i], embed_override=emb, probe=True
        )
        grads = torch.autograd.grad(_mean_metric(ctx, fn, i, run.logits), run.probes)
        delta = ctx.corrupt[i] - ctx.clean[i]  # [W, B, P, D]
        parts = []
        for block, gr in enumerate(grads):
            n_up = g.block_shapes[block][0]
            spec = "qhbpd" if gr.ndim == 5 else "bpd"
            s = torch.einsum(f"wbpd,{spec}->w{spec[:-3]}", delta[:n_up], gr)
            parts.append(s.reshape(-1))
        total += torch.cat(parts) / steps
    return total


def eap_ig_activations(
    ctx: EdgeContext,
    metric: str = "logit_diff",
    steps: int = 5,
    within: Tensor | None = None,
) -> Tensor:
    """EAP-IG (activations): the masks of the edges ``within`` (default all) go together from 0
    to 1 (midpoint rule over ``steps``) and each edge's gradient is averaged along the way. By
    completeness, the scores of ``within`` add up to ``m(without them) - m(full)`` as ``steps``
    grows."""
    fn = get_metric(metric)
    n = ctx.graph.n_edges
    dev = ctx.corrupt[0].device
    sel = torch.ones(n, dtype=torch.bool, device=dev) if within is None else within.bool().to(dev)
    total = ctx.corrupt[0].new_zeros(n)
    alphas = ((torch.arange(steps, dtype=torch.float64) + 0.5) / steps).to(total)
    for i, b in enumerate(ctx.batches):
        z = torch.where(sel, alphas[:, None], total.new_ones(n)).requires_grad_(True)
        run = masked_forward(ctx.adapter, b.clean, z, ctx.corrupt[i])
        (gr,) = torch.autograd.grad(_mean_metric(ctx, fn, i, run.logits), z)
        total += gr.sum(0) / steps
    return -total * sel


@dataclass(frozen=True)
class Scorer:
    key: str
    title: str
    fn: Callable[..., Tensor]


SCORERS: dict[str, Scorer] = {
    s.key: s
    for s in (
        Scorer("eap", "Edge attribution patching (Syed et al. 2023)", eap),
        Scorer(
            "eap-ig", "EAP with integrated gradients over inputs (Hanna et al. 2024)", eap_ig_inputs
        ),
        Scorer(
            "eap-ig-activations",
            "EAP with integrated gradients over edge activations",
            eap_ig_activations,
        ),
    )
}


def score_edges(ctx: EdgeContext, method: str = "eap", **kwargs) -> Tensor:
    if method not in SCORERS:
        raise UsageError(f"unknown edge scorer {method!r}; use one of {', '.join(SCORERS)}.")
    fn = SCORERS[method].fn
    if method == "eap":
        kwargs.pop("steps", None)
    return fn(ctx, **kwargs)
