"""Learned masks over feature occurrences: Edge Pruning's idea at the feature level
(docs/METHODS.md §4, beyond the papers).

For a budget ``K`` the candidates are the top ``candidate_factor * K`` units by |FAP|; every
other unit is removed outright (patched to its corrupted value through its delta writes, as in
PIE's removal patch). Each candidate ``u`` gets a hard-concrete gate ``z_u`` (Louizos et al.
2018, as in Bhaskar et al.'s Edge Pruning) and the clean prompt runs through the real model with

    y_s(t) <- y_s(t) - sum_o (1 - z_{u(o)}) * delta_o^(s)        (o at position t, z = 0 off
                                                                    the candidates)

at every MLP output, which is differentiable in the gates. The gates are trained to keep the
last-position distribution, KL(p_clean || p_masked), while a Lagrangian term drives the expected
number of open gates, ``sum_u P(z_u > 0)``, to ``K`` (its target falls linearly from the initial
count over a warm-up; the two multipliers climb by gradient ascent). Afterwards exactly the ``K``
candidates with the largest ``log_alpha`` are kept.

Cost per prompt and budget: ``steps`` forward and backward passes of the model on a batch of
``samples`` gate draws, on top of FAP's passes; the multiple is what the budget buys over
one-shot attribution. Registered as ``learned_mask``, which no default method list contains.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

from cltrace.edges.pruning import prob_open, sample_hard_concrete
from cltrace.errors import UsageError
from cltrace.models.adapter import Hook, Site
from cltrace.prune.methods import ScoreContext
from cltrace.prune.writes import CPU


@dataclass
class LearnedMaskConfig:
    """Settings of one learned-mask run (per prompt and budget)."""

    candidate_factor: int = 4
    """Candidates are the top ``candidate_factor * K`` units by |FAP|; the rest are removed."""
    steps: int = 300
    """Optimisation steps, each one batched forward and backward pass."""
    samples: int = 4
    """Hard-concrete draws per step (the batch of the pass)."""
    lr: float = 0.1
    """Adam learning rate of the gates' log-alpha."""
    lr_lambda: float = 1.0
    """Adam learning rate of the two Lagrange multipliers (gradient ascent)."""
    warmup: float = 0.5
    """Fraction of the steps over which the target count falls linearly to ``K``."""
    init: float = 1.0
    """Mean initial log-alpha: the gates start mostly open (P(z > 0) about 0.93, the
    deterministic gate 0.78); Edge Pruning's 3 (all but fully open) found worse sets on the
    bundled IOI prompts at K = 5 to 25 and on brute-forced tiny cases."""
    seed: int = 0
    """Seed of the initial jitter and the gate draws (mixed with the prompt index and K)."""

    def __post_init__(self) -> None:
        ints = {"candidate_factor": self.candidate_factor, "steps": self.steps,
                "samples": self.samples}  # fmt: skip
        for name, value in ints.items():
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"learned mask {name} must be a positive integer, got {value!r}.")
        for name in ("lr", "lr_lambda"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise UsageError(f"learned mask {name} must be a positive number, got {value!r}.")
        if not 0.0 < self.warmup <= 1.0:
            raise UsageError(f"learned mask warmup must lie in (0, 1], got {self.warmup!r}.")


@dataclass
class LearnedMask:
    """What one training run returns."""

    kept: Int[Tensor, " k"]
    """The ``min(K, n_units)`` kept units."""
    candidates: Int[Tensor, " c"]
    """The gated units (top ``candidate_factor * K`` by |FAP|, in that order)."""
    log_alpha: Float[Tensor, " c"]
    """Trained log-alpha of each candidate (empty when nothing was trained)."""
    expected_open: float
    """``sum_u P(z_u > 0)`` at the end of training."""
    seconds: float
    history: list[dict] = field(default_factory=list)
    """Every tenth step: step, KL, expected open count and its target."""


class GatedForward:
    """The real model on one prompt with every non-candidate removed and each candidate's
    removal weighted by ``1 - z``; differentiable in the gates ``z``."""

    def __init__(self, ctx: ScoreContext, candidates: Int[Tensor, " c"]):
        comps = self.comps = ctx.comps
        self.n_gates = int(candidates.numel())
        gate_of_unit = torch.full((ctx.n_units,), -1, dtype=torch.long, device=CPU)
        gate_of_unit[candidates] = torch.arange(self.n_gates, device=CPU)
        gate = gate_of_unit[ctx.groups]  # -1: a removed non-candidate
        fixed = gate < 0
        L, D = comps.adapter.n_layers, comps.adapter.d_model
        self.base = comps.patch_for(fixed[None])[0].flatten(1)  # [pos, L * D], every row's
        occ = (~fixed).nonzero().squeeze(1)
        self.gate = gate[occ]
        # per source layer: the gated occurrences (as indices into occ), a one-hot of their
        # positions and their writes into targets l.. (no zero targets before l)
        self.parts: list[tuple[int, Tensor, Tensor, Tensor]] = []
        dev = comps.device
        for src in comps.layer[occ].unique().tolist():
            at = (comps.layer[occ] == src).nonzero().squeeze(1)
            writes = comps.deltas.products(occ[at], src).flatten(1)  # [m_l, n_out * D]
            onehot = torch.zeros(comps.n_pos, at.numel(), device=dev)
            onehot[comps.position[occ[at]].to(dev), torch.arange(at.numel(), device=dev)] = 1.0
            self.parts.append((src, at, onehot, writes))
        # nothing changes before the MLP output of the earliest occurrence's layer
        self.start = int(comps.layer.min()) if comps.n else L - 1
        self.shape = (L, D)

    def patch(self, gates: Float[Tensor, "b c"]) -> Float[Tensor, "b pos n_layers d_model"]:
        """What each row takes off the MLP outputs: the non-candidates' writes plus each gated
        occurrence's write times ``1 - z``."""
        dtype = torch.promote_types(gates.dtype, self.base.dtype)  # float64 gates stay so
        removal = 1.0 - gates[:, self.gate].to(self.base.device, dtype)  # [b, m]
        out = self.base.to(dtype).expand(gates.shape[0], -1, -1).clone()
        D = self.shape[1]
        for src, at, onehot, writes in self.parts:
            gated = (onehot.to(dtype)[None] * removal[:, None, at]) @ writes.to(dtype)
            out[:, :, src * D : src * D + writes.shape[1]] += gated
        return out.unflatten(-1, self.shape)  # [b, pos, L, D]

    def logits(self, gates: Float[Tensor, "b c"]) -> Float[Tensor, "b d_vocab"]:
        """Last-position logits of the masked clean prompt, one row per gate vector (model
        dtype)."""
        comps, s0 = self.comps, self.start
        resid = comps._clean_resid()
        patch = self.patch(gates).to(resid.device)
        hidden = resid[s0] - patch[:, :, s0].to(resid.dtype)
        hooks: dict[str | Site, Hook] = {
            f"mlp_out.{s}": _minus(patch[:, :, s]) for s in range(s0 + 1, comps.adapter.n_layers)
        }
        adapter = comps.adapter
        with adapter.resume_after(s0, hidden), adapter.hooks(hooks):
            return adapter.last_logits(comps.tokens.expand(gates.shape[0], -1))

    def kl(self, gates: Float[Tensor, "b c"]) -> Float[Tensor, " b"]:
        """KL(p_clean || p_masked) in nats at the last position, per row (differentiable)."""
        logp = torch.log_softmax(self.comps.clean_logits.double(), -1)
        logq = torch.log_softmax(self.logits(gates).double(), -1)
        return (logp.exp() * (logp - logq)).sum(-1)


def _minus(patch: Tensor) -> Hook:
    return lambda t: t - patch.to(t.dtype)


def candidate_units(ctx: ScoreContext, k: int, factor: int) -> Int[Tensor, " c"]:
    """The top ``factor * k`` units by |FAP| (ties in index order)."""
    order = torch.argsort(ctx.fap.abs(), descending=True, stable=True)
    return order[: min(factor * k, order.numel())]


def lagrangian(
    log_alpha: Float[Tensor, " c"], target: float, lambdas: Float[Tensor, " 2"]
) -> Tensor:
    """``l1 * gap + l2 * gap^2`` with ``gap`` the expected open count minus ``target``, as a
    fraction of the candidates (so the multipliers' scale does not depend on K)."""
    gap = (prob_open(log_alpha).sum() - target) / log_alpha.numel()
    return lambdas[0] * gap + lambdas[1] * gap**2


def train_mask(ctx: ScoreContext, k: int, cfg: LearnedMaskConfig | None = None) -> LearnedMask:
    """Learn which ``min(k, n_units)`` units to keep on this prompt (see the module docstring).

    Deterministic for a given seed, prompt index and ``k`` on CPU.
    """
    cfg = cfg or LearnedMaskConfig()
    start_time = time.perf_counter()
    k = min(k, ctx.n_units)
    cand = candidate_units(ctx, k, cfg.candidate_factor)
    c = int(cand.numel())
    if c <= k:  # nothing to choose
        empty = torch.empty(0, device=CPU)
        return LearnedMask(cand, cand, empty, float(c), time.perf_counter() - start_time)
    gen = torch.Generator().manual_seed(cfg.seed + 7919 * ctx.prompt_index + 104729 * k)
    log_alpha = (cfg.init + 0.01 * torch.randn(c, generator=gen, device=CPU)).requires_grad_(True)
    lambdas = torch.zeros(2, requires_grad=True, device=CPU)
    opt = torch.optim.Adam([log_alpha], lr=cfg.lr)
    opt_l = torch.optim.Adam([lambdas], lr=cfg.lr_lambda, maximize=True)
    fwd = GatedForward(ctx, cand)
    with torch.no_grad():
        first = float(prob_open(log_alpha).sum())
    warm = max(1, round(cfg.warmup * cfg.steps))
    history = []
    with torch.enable_grad():
        for step in range(cfg.steps):
            target = first + (k - first) * min(1.0, (step + 1) / warm)
            z = sample_hard_concrete(log_alpha.expand(cfg.samples, c), gen)
            kl = fwd.kl(z).mean().float()
            loss = kl + lagrangian(log_alpha, target, lambdas)
            # only the masks' and multipliers' gradients: the model's weights get none
            log_alpha.grad, lambdas.grad = torch.autograd.grad(loss, [log_alpha, lambdas])
            opt.step()
            opt_l.step()
            if step % 10 == 0 or step == cfg.steps - 1:
                with torch.no_grad():
                    open_now = float(prob_open(log_alpha).sum())
                history.append({"step": step, "kl": float(kl.detach()), "open": open_now,
                                "target": target})  # fmt: skip
    la = log_alpha.detach()
    kept = cand[torch.argsort(la, descending=True, stable=True)[:k]]
    with torch.no_grad():
        expected = float(prob_open(la).sum())
    return LearnedMask(kept, cand, la, expected, time.perf_counter() - start_time, history)


def learned_select(
    ctx: ScoreContext, budgets: list[int], _seed: int = 0, cfg: LearnedMaskConfig | None = None
) -> dict[int, Tensor]:
    """One trained mask per budget (the candidates differ with K)."""
    return {k: train_mask(ctx, k, cfg).kept for k in budgets}
