"""Edge Pruning (Bhaskar et al. 2024) and its hybrid with attribution, HAP (Gu et al. 2025).

Every edge gets a hard-concrete mask (Louizos et al. 2018) with a learnable ``log_alpha``,
initialised open. The masks are trained to keep the model's next-token distribution
(KL(full || pruned) at the answer position) while a Lagrangian term drives the expected edge
sparsity to a target that warms up linearly from 0; the two multipliers climb by gradient
ascent while the masks descend. The trained masks are made binary by keeping the edges with the
largest ``log_alpha`` in the number the learned sparsity implies, and dangling edges are dropped.

HAP first scores every edge with EAP (or EAP-IG), keeps a top fraction as the only trainable
masks and fixes all others to the corrupted value; sparsity is still counted over the whole
graph, so a target means the same thing for EP and HAP.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from cltrace.edges.context import EdgeContext
from cltrace.edges.data import kl_full_to
from cltrace.edges.evaluate import top_edges
from cltrace.edges.forward import masked_forward
from cltrace.edges.scores import score_edges
from cltrace.errors import UsageError

BETA, LEFT, RIGHT = 2.0 / 3.0, -0.1, 1.1


def sample_hard_concrete(log_alpha: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One reparameterised sample ``z in [0, 1]`` per mask."""
    u = torch.rand(log_alpha.shape, generator=generator, dtype=log_alpha.dtype)
    u = u.clamp(1e-6, 1 - 1e-6).to(log_alpha.device)
    s = torch.sigmoid((u.log() - (1 - u).log() + log_alpha) / BETA)
    return (LEFT + (RIGHT - LEFT) * s).clamp(0.0, 1.0)


def prob_open(log_alpha: Tensor) -> Tensor:
    """``P(z > 0)``, each mask's expected contribution to the number of kept edges."""
    return torch.sigmoid(log_alpha - BETA * math.log(-LEFT / RIGHT))


def deterministic_mask(log_alpha: Tensor) -> Tensor:
    return (torch.sigmoid(log_alpha) * (RIGHT - LEFT) + LEFT).clamp(0.0, 1.0)


@dataclass
class PruneConfig:
    """Settings of one Edge Pruning run."""

    sparsity: float = 0.95
    """Target fraction of edges removed (over the whole graph)."""
    steps: int = 300
    """Optimisation steps; each runs one batch (of one token length, in turn) forward and
    backward."""
    lr: float = 0.3
    """Learning rate of the masks' log-alpha (AdamW)."""
    lr_lambda: float = 1.0
    """Learning rate of the two Lagrange multipliers (gradient ascent)."""
    warmup: float = 0.5
    """Fraction of the steps over which the sparsity target rises linearly to its final value,
    from the sparsity of the initial masks (about 0 for EP, about 1 - fraction for HAP)."""
    init: float = 3.0
    """Mean initial log-alpha (open masks: P(z > 0) is about 0.99 at 3)."""
    seed: int = 0


@dataclass
class PruneResult:
    keep: Tensor
    """Bool [n_edges]: the discretised circuit, dangling edges removed."""
    log_alpha: Tensor
    learned_sparsity: float
    seconds: float
    history: list[dict] = field(default_factory=list)


def edge_prune(ctx: EdgeContext, cfg: PruneConfig, trainable: Tensor | None = None) -> PruneResult:
    """Learn a circuit at sparsity ``cfg.sparsity``; only ``trainable`` edges (default all)
    have masks, the others are always removed."""
    start = time.perf_counter()
    g = ctx.graph
    n = g.n_edges
    dev = ctx.corrupt[0].device
    dtype = ctx.corrupt[0].dtype
    sel = torch.ones(n, dtype=torch.bool) if trainable is None else trainable.bool().cpu()
    idx = sel.nonzero()[:, 0].to(dev)
    if not 0.0 <= cfg.sparsity <= 1.0:
        raise UsageError(f"--sparsity must lie in [0, 1], got {cfg.sparsity}.")
    gen = torch.Generator().manual_seed(cfg.seed)
    log_alpha = (cfg.init + 0.01 * torch.randn(len(idx), generator=gen, dtype=dtype)).to(dev)
    log_alpha.requires_grad_(True)
    lambdas = torch.zeros(2, dtype=dtype, device=dev, requires_grad=True)
    opt = torch.optim.AdamW([log_alpha], lr=cfg.lr, weight_decay=0.0)
    opt_l = torch.optim.AdamW([lambdas], lr=cfg.lr_lambda, weight_decay=0.0, maximize=True)
    warm = max(1, int(cfg.warmup * cfg.steps))
    history = []
    with torch.no_grad():  # the warm-up starts where the masks start (HAP: near 1 - fraction)
        floor = float(1.0 - prob_open(log_alpha).sum() / n)
    for step in range(cfg.steps):
        target = floor + (cfg.sparsity - floor) * min(1.0, (step + 1) / warm)
        z_sub = sample_hard_concrete(log_alpha, gen)
        z = torch.zeros(n, dtype=dtype, device=dev).index_put((idx,), z_sub)
        i = step % len(ctx.batches)
        x = masked_forward(ctx.adapter, ctx.batches[i].clean, z[None], ctx.corrupt[i])
        kl = kl_full_to(x.logits[:, :, -1], ctx.full_logprobs[i]).mean()
        sparsity = 1.0 - prob_open(log_alpha).sum() / n
        gap = sparsity - target
        loss = kl + lambdas[0] * gap + lambdas[1] * gap**2
        opt.zero_grad()
        opt_l.zero_grad()
        loss.backward()
        opt.step()
        opt_l.step()
        if step % 10 == 0 or step == cfg.steps - 1:
            history.append(
                {
                    "step": step,
                    "kl": float(kl.detach()),
                    "sparsity": float(sparsity.detach()),
                    "target": target,
                }
            )
    with torch.no_grad():
        learned = float(1.0 - prob_open(log_alpha).sum() / n)
        n_keep = min(len(idx), max(0, round((1.0 - learned) * n)))
        full_alpha = torch.full((n,), -math.inf, dtype=dtype)
        full_alpha[sel] = log_alpha.detach().cpu()
        keep = torch.zeros(n, dtype=torch.bool)
        if n_keep:
            keep[full_alpha.topk(n_keep).indices] = True
        keep = g.prune_dangling(keep)
    return PruneResult(keep, full_alpha, learned, time.perf_counter() - start, history)


def hap(
    ctx: EdgeContext,
    cfg: PruneConfig,
    fraction: float = 0.1,
    scorer: str = "eap",
    metric: str = "logit_diff",
    steps: int = 5,
) -> tuple[PruneResult, Tensor]:
    """HAP: score edges with ``scorer``, keep the top ``fraction`` as the only trainable masks,
    then Edge Pruning there. Returns the result (its seconds include the scoring) and the
    scores."""
    if not 0.0 < fraction <= 1.0:
        raise UsageError(f"--fraction must lie in (0, 1], got {fraction}.")
    if 1.0 - cfg.sparsity > fraction + 1e-9:
        raise UsageError(
            f"HAP keeps at most {fraction:.0%} of the edges but --sparsity {cfg.sparsity} asks "
            f"for {1 - cfg.sparsity:.0%}; raise --sparsity or --fraction."
        )
    start = time.perf_counter()
    scores = score_edges(ctx, scorer, metric=metric, steps=steps)
    n_sub = max(1, round(fraction * ctx.graph.n_edges))
    sub = top_edges(scores, n_sub)
    result = edge_prune(ctx, cfg, trainable=sub)
    result.seconds = time.perf_counter() - start
    return result, scores
