"""Running a circuit (every edge outside it patched) and measuring it against the full model."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from cltrace.edges.context import EdgeContext
from cltrace.edges.data import get_metric, kl_full_to
from cltrace.edges.forward import masked_forward


@dataclass
class CircuitScore:
    metric: float
    """Mean metric of the circuit."""
    kl: float
    """Mean KL(full || circuit) at the last position."""
    accuracy: float
    """Fraction of examples whose first answer beats the first wrong answer."""


@torch.no_grad()
def run_circuit(ctx: EdgeContext, keep: Tensor, metric: str = "logit_diff") -> CircuitScore:
    """Measure the circuit ``keep`` (bool or 0/1 [n_edges])."""
    fn = get_metric(metric)
    ld = get_metric("logit_diff")
    dtype = keep.dtype if keep.is_floating_point() else ctx.corrupt[0].dtype
    z = keep.to(dtype).reshape(1, -1).to(ctx.corrupt[0].device)
    m = kl = acc = 0.0
    for i, b in enumerate(ctx.batches):
        x = masked_forward(ctx.adapter, b.clean, z, ctx.corrupt[i]).logits[:, :, -1]
        m += float(fn(x, b, ctx.full_logprobs[i]).sum())
        kl += float(kl_full_to(x, ctx.full_logprobs[i]).sum())
        acc += float((ld(x, b, ctx.full_logprobs[i]) > 0).float().sum())
    n = ctx.n_examples
    return CircuitScore(m / n, kl / n, acc / n)


def faithfulness(circuit: float, full: float, empty: float) -> float:
    """``(m(C) - m(empty)) / (m(full) - m(empty))``: 0 for the empty circuit, 1 for the full."""
    if full == empty:
        return float("nan")
    return (circuit - empty) / (full - empty)


@dataclass
class Evaluation:
    n_edges: int
    n_edges_total: int
    faithfulness: float
    kl: float
    accuracy: float
    metric: float
    metric_full: float
    metric_empty: float


def evaluate_circuit(ctx: EdgeContext, keep: Tensor, metric: str = "logit_diff") -> Evaluation:
    n = ctx.graph.n_edges
    full = run_circuit(ctx, torch.ones(n), metric)
    empty = run_circuit(ctx, torch.zeros(n), metric)
    c = run_circuit(ctx, keep, metric)
    return Evaluation(
        n_edges=int(keep.bool().sum()),
        n_edges_total=n,
        faithfulness=faithfulness(c.metric, full.metric, empty.metric),
        kl=c.kl,
        accuracy=c.accuracy,
        metric=c.metric,
        metric_full=full.metric,
        metric_empty=empty.metric,
    )


def top_edges(scores: Tensor, n_keep: int, prune: bool = True, graph=None) -> Tensor:
    """The ``n_keep`` edges of largest ``|score|`` (bool mask), dangling edges then dropped."""
    keep = torch.zeros(scores.numel(), dtype=torch.bool)
    if n_keep > 0:
        keep[scores.detach().abs().cpu().topk(min(n_keep, scores.numel())).indices] = True
    if prune and graph is not None:
        keep = graph.prune_dangling(keep)
    return keep


BUDGETS: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
"""Edge budgets of a faithfulness curve, as fractions of the graph's edges (0.1% ... 100%)."""


def curve_areas(budgets, values) -> tuple[float, float]:
    """``(CPR, CMD)`` of a faithfulness curve: the trapezoid areas under ``f`` and under
    ``|1 - f|`` over the fraction of edges kept, divided by the budget range (so a curve that
    is 1 everywhere has CPR 1 and CMD 0)."""
    x = torch.tensor([float(b) for b in budgets], dtype=torch.float64)
    f = torch.tensor([float(v) for v in values], dtype=torch.float64)
    span = float(x[-1] - x[0])
    if span <= 0:
        raise ValueError("a curve needs at least two distinct budgets")
    cpr = float(torch.trapezoid(f, x)) / span
    cmd = float(torch.trapezoid((1 - f).abs(), x)) / span
    return cpr, cmd


@dataclass
class Curve:
    budgets: list[float]
    n_edges: list[int]
    faithfulness: list[float]
    kl: list[float]
    cpr: float
    cmd: float


def faithfulness_curve(
    ctx: EdgeContext, scores: Tensor, budgets=BUDGETS, metric: str = "logit_diff"
) -> Curve:
    """Faithfulness and KL of the top-|score| circuit at each budget (no dangling pruning, so
    each circuit has exactly its budget's edge count)."""
    n = ctx.graph.n_edges
    full = run_circuit(ctx, torch.ones(n), metric).metric
    empty = run_circuit(ctx, torch.zeros(n), metric).metric
    counts, faith, kls = [], [], []
    for b in budgets:
        keep = top_edges(scores, max(0, min(n, round(b * n))), prune=False)
        c = run_circuit(ctx, keep, metric)
        counts.append(int(keep.sum()))
        faith.append(faithfulness(c.metric, full, empty))
        kls.append(c.kl)
    cpr, cmd = curve_areas(budgets, faith)
    return Curve(list(budgets), counts, faith, kls, cpr, cmd)
