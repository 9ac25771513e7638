"""PIE stage I selection methods as registry entries (docs/METHODS.md §4).

A method turns one prompt pair's :class:`ScoreContext` and a list of budgets into kept sets
(indices of *units*: occurrences, or position-pooled features with ``unit="feature"``). Adding a
method is adding one :class:`Method` to :data:`METHODS` with :func:`register`.
"""

from __future__ import annotations

import math
import random as pyrandom
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from cltrace.errors import CltraceError, UsageError
from cltrace.prune.components import (
    GRAD_MODES,
    POLICIES,
    PairComponents,
    fap_scores,
    metric_gradients,
)
from cltrace.prune.resume import RowStates
from cltrace.prune.writes import CPU
from cltrace.transcoders import CrossLayerTranscoder

STATE_BYTES = 256 * 2**20
"""Recorded patched runs a prompt keeps for pair effects to resume from (see
:mod:`cltrace.prune.resume`); beyond it, pairs start from the clean run."""

UNITS = ("occurrence", "feature")
"""What a budget counts: (layer, position, feature) occurrences, or features pooled over
positions."""


@dataclass
class PruneConfig:
    """Options of stage I (scoring, selection); saved with every run."""

    budgets: tuple[int, ...] = (50, 100, 200, 400, 800)
    """Budgets K (units kept per prompt)."""
    policy: str = "corrupted_prompt"
    """Removal policy: ``corrupted_prompt`` (interchange) or ``zero_features``."""
    grad_mode: str = "direct"
    """FAP gradient: ``direct`` (frozen attention/norms, MLPs detached) or ``full``."""
    unit: str = "occurrence"
    """``occurrence`` (layer, position, feature) or ``feature`` (pooled over positions)."""
    lambda_syn: float = 3.0
    """FAP-Synergy weight of the synergy boost (0 gives exactly FAP)."""
    boundary_percent: float = 25.0
    """FAP-Synergy band width as a percent of K."""
    boundary_cap: int = 32
    """FAP-Synergy: at most this many band candidates."""
    partners: int = 32
    """FAP-Synergy: strongest core units used as partners."""
    partners_per_candidate: int = 8
    """FAP-Synergy: partners sampled per candidate."""
    syn_seed: int = 0
    """FAP-Synergy seed (the sampler uses ``syn_seed + 1337`` mixed with the prompt index)."""
    signal_gamma: float = 0.1
    """FAP-Signal: share of K reserved for each sign."""
    random_seeds: int = 3
    """Seeds of the random baseline."""
    factp_cap: int = 2000
    """FActP: exact patching for the top units by |FAP| only."""
    acdc_tau: float = 1e-3
    """ACDC-style greedy: a removal is kept if last-token KL grows by less than this."""
    batch_size: int = 512
    """Patched forward passes per batch (fewer for long prompts or wide models)."""
    metric: str | None = None
    """Behaviour metric FAP and the measured-effect methods use (:data:`cltrace.tasks.METRICS`);
    None: the task's default (``logit_diff``; ``prob_diff`` for greater-than)."""

    def __post_init__(self) -> None:
        if self.metric is not None:
            from cltrace.tasks.metrics import get_metric

            self.metric = get_metric(self.metric).key  # usage error naming the choices
        # checked on construction, so a typo fails before a run directory is written
        choices = {"policy": POLICIES, "grad_mode": GRAD_MODES, "unit": UNITS}
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed:
                flag = "--" + name.replace("_", "-")
                raise UsageError(f"unknown {flag} {value!r}; use one of {', '.join(allowed)}.")
        if not self.budgets or any(int(k) != k or k < 1 for k in self.budgets):
            raise UsageError(
                f"--budgets must be positive integers, got {list(self.budgets)}; "
                "pass e.g. --budgets 50,100,200."
            )
        floats = {"lambda_syn": self.lambda_syn, "boundary_percent": self.boundary_percent,
                  "signal_gamma": self.signal_gamma, "acdc_tau": self.acdc_tau}  # fmt: skip
        for name, value in floats.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise UsageError(
                    f"--{name.replace('_', '-')} must be a finite number >= 0, got {value!r}; "
                    "pass e.g. the default."
                )
        if self.signal_gamma > 0.5:
            raise UsageError(
                f"--signal-gamma is {self.signal_gamma}, but each sign's share of K can be at "
                "most 0.5; pass a value in [0, 0.5]."
            )
        ints = {"random_seeds": self.random_seeds, "batch_size": self.batch_size,
                "boundary_cap": self.boundary_cap, "partners": self.partners,
                "partners_per_candidate": self.partners_per_candidate,
                "factp_cap": self.factp_cap}  # fmt: skip
        for name, value in ints.items():
            if not isinstance(value, int) or value < 1:
                raise UsageError(
                    f"--{name.replace('_', '-')} must be a positive integer, got {value!r}."
                )


@dataclass
class ScoreContext:
    """One prompt pair's components plus lazily computed shared quantities."""

    comps: PairComponents
    transcoder: CrossLayerTranscoder
    config: PruneConfig
    prompt_index: int = 0
    extras: dict = field(default_factory=dict)
    """Scratch space for methods (cached scores)."""

    @cached_property
    def groups(self) -> Int[Tensor, " n"]:
        """Unit id of every occurrence."""
        c = self.comps
        if self.config.unit == "occurrence":
            return torch.arange(c.n, device=CPU)
        if self.config.unit == "feature":
            key = c.layer * self.transcoder.d_features + c.feature
            return torch.unique(key, return_inverse=True)[1]
        raise CltraceError(f"unknown unit {self.config.unit!r}; use 'occurrence' or 'feature'.")

    @cached_property
    def n_units(self) -> int:
        return int(self.groups.max()) + 1 if self.comps.n else 0

    def pool(self, per_occurrence: Float[Tensor, " n"]) -> Float[Tensor, " units"]:
        """Sum an occurrence-level quantity over each unit."""
        out = torch.zeros(self.n_units, device=CPU)
        return out.index_add_(0, self.groups, per_occurrence.float())

    def unit_masks(self, sets: list[Tensor]) -> Bool[Tensor, "b n"]:
        """Occurrence masks of sets of units."""
        masks = torch.zeros(len(sets), self.n_units, dtype=torch.bool, device=CPU)
        for i, s in enumerate(sets):
            masks[i, s] = True
        return masks if self.config.unit == "occurrence" else masks[:, self.groups]

    def removal_effect(self, sets: list[Tensor]) -> Float[Tensor, " b"]:
        """``M(S)`` for each set of units (real patched forward passes, batched)."""
        return self.comps.removal_effect(self.unit_masks(sets), self.config.batch_size)

    def recorded_effects(self, units: list[int]) -> Float[Tensor, " b"]:
        """``M({u})`` for each unit, keeping the patched runs (up to :data:`STATE_BYTES`) so
        that :meth:`pair_effects` can resume from them."""
        comps = self.comps
        masks = self.unit_masks([torch.tensor([u], device=CPU) for u in units])
        per_row = max(1, comps.state_bytes_per_row())
        known: dict[int, int] = self.extras.setdefault("state_row", {})
        room = max(0, (STATE_BYTES - per_row * len(known)) // per_row)
        logits = comps.clean_logits.new_zeros(0, comps.clean_logits.numel())
        if room:
            logits, states = comps.record_removals(masks[:room], self.config.batch_size)
            old = self.extras.get("states")
            known.update({u: len(known) + i for i, u in enumerate(units[:room])})
            self.extras["states"] = states if old is None else RowStates.cat([old, states])
        if len(units) > room:
            logits = torch.cat([logits, comps.run_removals(masks[room:], self.config.batch_size)])
        return comps.effect(logits)

    def pair_effects(self, pairs: list[tuple[int, int]]) -> Float[Tensor, " b"]:
        """``M({u, v})`` for each pair; a pair resumes from the recorded run of whichever of
        its units leaves the other the least to compute (:meth:`recorded_effects`)."""
        known: dict[int, int] = self.extras.get("state_row", {})
        masks = self.unit_masks([torch.tensor(p, device=CPU) for p in pairs])
        if not known:
            return self.comps.removal_effect(masks, self.config.batch_size)
        cost = self._unit_costs({u for p in pairs for u in p})
        bases = []
        for u, v in pairs:
            options = [(cost[other], known[base]) for base, other in ((u, v), (v, u))
                       if base in known]  # fmt: skip
            bases.append(min(options)[1] if options else -1)
        base_rows = torch.tensor(bases, device=CPU)
        return self.comps.removal_effect(masks, self.config.batch_size, base_rows,
                                         self.extras["states"])  # fmt: skip

    def _unit_costs(self, units: set[int]) -> dict[int, int]:
        """Blocks times positions a patched pass of each unit alone computes."""
        c = self.comps
        masks = self.unit_masks([torch.tensor([u], device=CPU) for u in sorted(units)])
        layer = torch.where(masks, c.layer, c.adapter.n_layers).amin(1)
        t = torch.where(masks, c.position, c.n_pos).amin(1)
        cost = (c.n_pos - t) * (c.adapter.n_layers - 1 - layer)
        return dict(zip(sorted(units), cost.tolist(), strict=True))

    @cached_property
    def gradients(self) -> Float[Tensor, "n_layers pos d_model"]:
        return metric_gradients(self.comps, self.transcoder, self.config.grad_mode)

    @cached_property
    def fap(self) -> Float[Tensor, " units"]:
        return self.pool(fap_scores(self.comps, self.gradients))


Selector = Callable[[ScoreContext, list[int], int], dict[int, Int[Tensor, " k"]]]


@dataclass(frozen=True)
class Method:
    """A registered stage-I method."""

    key: str
    """Name used in configs, tables and files."""
    title: str
    """Human-readable name."""
    select: Selector
    """``select(ctx, budgets, seed) -> {K: kept unit indices}``."""
    randomized: bool = False
    """Run once per seed (``PruneConfig.random_seeds``) and average."""


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    METHODS[method.key] = method
    return method


def get_method(key: str) -> Method:
    key = key.replace("-", "_")  # fap-synergy and fap_synergy name the same method
    if key not in METHODS:
        raise UsageError(f"unknown method {key!r}; use one of {', '.join(METHODS)}.")
    return METHODS[key]


def top_by_abs(scores: Float[Tensor, " u"], budgets: list[int]) -> dict[int, Tensor]:
    """Keep the top K units by |score| for every budget (ties in index order)."""
    order = torch.argsort(scores.abs(), descending=True, stable=True)
    return {k: order[: min(k, order.numel())] for k in budgets}


def score_method(key: str, title: str, score: Callable[[ScoreContext], Tensor]) -> Method:
    """A method that ranks units by |score| (most baselines)."""
    return register(Method(key, title, lambda ctx, budgets, _seed: top_by_abs(score(ctx), budgets)))


# ---------------------------------------------------------------------------- FAP and friends
score_method("fap", "FAP", lambda ctx: ctx.fap)
score_method("act_mag", "Activation magnitude", lambda ctx: ctx.pool(ctx.comps.a_clean.abs()))


def _random(ctx: ScoreContext, budgets: list[int], seed: int) -> dict[int, Tensor]:
    g = torch.Generator().manual_seed(1000 * seed + ctx.prompt_index)
    order = torch.randperm(ctx.n_units, generator=g, device=CPU)
    return {k: order[: min(k, order.numel())] for k in budgets}


register(Method("random", "Random (active set)", _random, randomized=True))


def signal_select(scores: Tensor, k: int, gamma: float) -> Tensor:
    """FAP-Signal (docs/METHODS.md §4): the top floor(gamma K) positive and negative units, rest by
    |S|."""
    n = scores.numel()
    k = min(k, n)
    n_sign = int(gamma * k)
    pos = torch.argsort(scores, descending=True, stable=True)[:n_sign]
    pos = pos[scores[pos] > 0]
    neg = torch.argsort(scores, stable=True)[:n_sign]
    neg = neg[scores[neg] < 0]
    keep = torch.zeros(n, dtype=torch.bool, device=CPU)
    keep[pos] = True
    keep[neg] = True
    for i in torch.argsort(scores.abs(), descending=True, stable=True).tolist():
        if int(keep.sum()) >= k:
            break
        keep[i] = True
    return keep.nonzero().squeeze(1)


register(
    Method(
        "fap_signal",
        "FAP-Signal",
        lambda ctx, budgets, _s: {
            k: signal_select(ctx.fap, k, ctx.config.signal_gamma) for k in budgets
        },
    )
)


def synergy_select(ctx: ScoreContext, scores: Tensor, k: int, lam: float) -> Tensor:
    """FAP-Synergy boundary reranking (docs/METHODS.md §4), with pair effects from real patched
    passes."""
    return synergy_select_budgets(ctx, scores, [k], lam)[k]


def synergy_select_budgets(
    ctx: ScoreContext, scores: Tensor, budgets: list[int], lam: float
) -> dict[int, Tensor]:
    """:func:`synergy_select` for every budget at once: the single effects every budget needs
    are measured in one batched call, then the pair effects of all budgets in another (a pair
    drawn for two budgets is measured once)."""
    cfg = ctx.config
    n = scores.numel()
    order = torch.argsort(scores.abs(), descending=True, stable=True)
    plans, out = {}, {}
    for k in dict.fromkeys(budgets):
        kk = min(k, n)
        h = round(cfg.boundary_percent / 100 * kk * 0.5)
        core = order[: kk - h]
        band = order[kk - h : min(n, kk + h)][: cfg.boundary_cap]
        if h == 0 or band.numel() == 0 or lam == 0:
            out[k] = order[:kk]
        else:
            plans[k] = (kk, core, band, core[: cfg.partners])
    single = ctx.extras.setdefault("single_effect", {})
    need = [int(u) for _, _, band, partners in plans.values()
            for u in torch.cat([partners, band]) if int(u) not in single]  # fmt: skip
    need = list(dict.fromkeys(need))
    if need:
        single.update(zip(need, ctx.recorded_effects(need).tolist(), strict=True))
    owners: dict[int, list[tuple[int, int]]] = {}
    for k, (kk, _, band, partners) in plans.items():
        rng = pyrandom.Random(cfg.syn_seed + 1337 + 7919 * ctx.prompt_index + kk)
        owners[k] = []
        for c in band.tolist():
            drawn = rng.sample(partners.tolist(),
                               min(cfg.partners_per_candidate, partners.numel()))  # fmt: skip
            owners[k] += [(c, p) for p in drawn if single[p] > 0 and single[c] > 0]
    pairs = list(dict.fromkeys(pair for k in plans for pair in owners[k]))
    joint = dict(zip(pairs, ctx.pair_effects(pairs).tolist(), strict=True)) if pairs else {}
    for k, (kk, core, band, partners) in plans.items():
        out[k] = _synergy_keep(scores, order, kk, core, band, partners, single,
                               [(c, p, joint[(c, p)]) for c, p in owners[k]], lam)  # fmt: skip
    return out


def _synergy_keep(scores, order, k, core, band, partners, single, measured, lam) -> Tensor:
    """The kept set of one budget from the single and pair effects (``measured``: ``(candidate,
    partner, joint effect)``)."""
    base_scale = max(float(scores[order[:k]].abs().median()), 1e-6)
    partner_eff = [single[int(p)] for p in partners]
    partner_scale = (
        max(statistics.median([abs(e) for e in partner_eff]), 1e-6) if partner_eff else 1e-6
    )
    syn: dict[int, list[float]] = {c: [] for c in band.tolist()}
    for c, p, m in measured:
        syn[c].append(m - single[c] - single[p])
    boosted = []
    for c in band.tolist():
        stat = statistics.median(syn[c]) if syn[c] else 0.0
        boosted.append(
            float(scores[c].abs()) / base_scale + lam * max(0.0, stat) / (partner_scale + 1e-6)
        )
    take = k - core.numel()
    by_boost = torch.argsort(torch.tensor(boosted, device=CPU), descending=True, stable=True)
    best = band[by_boost[:take]]
    keep = torch.cat([core, best])
    if keep.numel() < k:
        kept = set(keep.tolist())
        rest = [u for u in order.tolist() if u not in kept]
        more = torch.tensor(rest[: k - keep.numel()], dtype=torch.long, device=CPU)
        keep = torch.cat([keep, more])
    return keep


register(
    Method(
        "fap_synergy",
        "FAP-Synergy",
        lambda ctx, budgets, _s: synergy_select_budgets(ctx, ctx.fap, budgets,
                                                        ctx.config.lambda_syn),  # fmt: skip
    )
)
