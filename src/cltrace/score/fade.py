"""FADE's four metrics for one feature and its description (docs/METHODS.md §7).

``clarity``         synthetic texts written from the description vs all natural texts: G
``responsiveness``  natural texts rated 2 vs rated 0 (rating 1 ignored): G
``purity``          the same split: average precision (in the separating direction)
``faithfulness``    clamping the feature makes generations express the description:
                    ``max(max_alpha p(alpha) - p(0), 0) / (1 - p(0))`` with ``p`` = share rated 2

where ``G(N, P) = |2 AUROC - 1|``. Faithfulness is computed only when clarity and
responsiveness both reach the gate (0.5); otherwise it is None with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from cltrace.score.activations import Feature, sequence_scores
from cltrace.score.config import ScoreConfig
from cltrace.score.metrics import (
    NAN,
    Score,
    average_precision,
    gini,
    separation,
    strict_gini,
)
from cltrace.score.raters.base import Rater
from cltrace.score.sampling import bin_sample, top_and_random
from cltrace.score.steer import clamp_rows_hooks, generate

FAITH_BATCH = 64
"""Steered generations per batch (all clamp values of a feature share batches)."""


def responsiveness_and_purity(
    acts: Sequence[float], ratings: Sequence[int | None], rules: str = "fade"
) -> tuple[Score, Score]:
    """``(G(N, P), AP(N, P))`` with P = activations of texts rated 2 and N = rated 0 (``fade``
    rules), or N = rated 0 or 1 with a strict statistic and purity 0 without positives (``pie``
    rules, see :class:`~cltrace.score.config.ScoreConfig`)."""
    a = np.asarray(acts, dtype=float)
    r = np.asarray([-1 if v is None else v for v in ratings])
    if rules == "pie":
        pos, neg = a[r == 2], a[(r == 0) | (r == 1)]
        if pos.size == 0:
            return Score(
                NAN, "no rated text clearly expresses the description (no rating 2)"
            ), Score(0.0)
        labels = np.r_[np.zeros(neg.size, bool), np.ones(pos.size, bool)]
        return strict_gini(neg, pos), average_precision(np.r_[neg, pos], labels)
    pos, neg = a[r == 2], a[r == 0]
    if pos.size == 0:
        s = Score(NAN, "no rated text clearly expresses the description (no rating 2)")
        return s, s
    if neg.size == 0:
        s = Score(NAN, "every rated text expresses the description (no rating 0)")
        return s, s
    return separation(neg, pos)


def faithfulness_from_shares(shares: Mapping[float, float]) -> Score:
    """FADE's faithfulness from ``{alpha: share of generations rated 2}`` (needs alpha 0)."""
    if 0.0 not in shares or math.isnan(shares[0.0]):
        return Score(NAN, "no rated generations with the feature ablated (alpha 0)")
    base = shares[0.0]
    if base >= 1.0:
        return Score(NAN, "every generation already expresses the description with alpha 0")
    best = max(v for v in shares.values() if not math.isnan(v))
    return Score(max(best - base, 0.0) / (1.0 - base))


def clarity(
    adapter, transcoder, rater: Rater, feature: Feature, description: str,
    natural: Float[np.ndarray, " n"], cfg: ScoreConfig, pre=None,
) -> tuple[Score, dict, list[str]]:  # fmt: skip
    """Clarity, with ``{"n_synthetic": ...}`` and the rater's failures; ``pre`` (a
    :class:`~cltrace.score.batched.Prefetched`) supplies texts and scores computed in a batch."""
    have = pre is not None and pre.generated is not None
    gen = pre.generated if have else rater.generate(description, cfg.n_generate)
    info = {"n_synthetic": len(gen.texts)}
    if not gen.texts:
        why = f" ({gen.failures[0]})" if gen.failures else ""
        return Score(NAN, f"the rater produced no synthetic texts{why}"), info, gen.failures
    syn = (
        pre.synthetic
        if have
        else sequence_scores(adapter, transcoder, gen.texts, [feature], cfg.reduce,
                             max_tokens=cfg.max_tokens, batch_size=cfg.batch_size)[0]
    )  # fmt: skip
    info["synthetic_mean"] = float(syn.mean())
    separate = strict_gini if cfg.rules == "pie" else gini
    return separate(natural, syn), info, gen.failures


def rate_natural(
    rater: Rater, description: str, texts: Sequence[str], natural: Float[np.ndarray, " n"],
    cfg: ScoreConfig,
) -> tuple[np.ndarray, list[int | None], list[str]]:  # fmt: skip
    """Indices of the natural texts rated, their ratings, and failures.

    With ``bins`` sampling, too few non-zero ratings trigger one extra round on the
    highest-activation texts not rated yet (a sparse concept needs more positives to measure).
    """
    if cfg.sampling == "top_random":
        idx = top_and_random(natural, cfg.n_top, cfg.n_random, cfg.seed)
    else:
        idx = bin_sample(natural, cfg.n_rated, cfg.top_share, seed=cfg.seed)
    judged = rater.rate(description, [texts[i] for i in idx])
    ratings, failures = list(judged.values), list(judged.failures)
    nonzero = sum(1 for v in ratings if v)
    if cfg.sampling == "bins" and nonzero < cfg.min_nonzero and cfg.n_extra > 0:
        rated = set(idx.tolist())
        extra = [int(i) for i in np.argsort(-natural, kind="mergesort") if int(i) not in rated]
        extra = np.asarray(extra[: cfg.n_extra], dtype=int)
        if extra.size:
            more = rater.rate(description, [texts[i] for i in extra])
            idx = np.concatenate([idx, extra])
            ratings += more.values
            failures += more.failures
    return idx, ratings, failures


@dataclass
class SteerRequest:
    """One feature's steered generations for faithfulness: every prompt at every alpha."""

    feature: Feature
    prompts: list[str]
    alphas: list[float]
    """Sorted, with 0 (the feature ablated) among them."""
    peak: float
    """The feature's largest |activation| on the natural texts; row values are alpha * peak."""

    @property
    def values(self) -> Tensor:
        """Clamp value of each generation, alpha-major (all prompts at the first alpha, ...)."""
        return torch.tensor([a * self.peak for a in self.alphas for _ in self.prompts],
                            dtype=torch.float64)  # fmt: skip

    @property
    def rows(self) -> list[str]:
        return [p for _ in self.alphas for p in self.prompts]


def faithfulness_request(
    feature: Feature, texts: Sequence[str], natural: Float[np.ndarray, " n"], cfg: ScoreConfig
) -> SteerRequest | Score:
    """What faithfulness must generate for ``feature``, or its NaN score when it cannot."""
    peak = float(np.abs(natural).max()) if natural.size else 0.0
    if peak == 0.0:
        return Score(NAN, "the feature never fires on the natural texts")
    rng = np.random.default_rng(cfg.seed)
    pick = rng.choice(len(texts), size=min(cfg.n_faith_prompts, len(texts)), replace=False)
    return SteerRequest(feature, [texts[i] for i in sorted(pick)],
                        sorted(set(cfg.alphas) | {0.0}), peak)  # fmt: skip


def steered_continuations(
    adapter, transcoder, requests: Sequence[SteerRequest], cfg: ScoreConfig
) -> list[list[str]]:
    """Every request's generations from shared batches (rows of several features side by side,
    each clamping its own feature: :func:`~cltrace.score.steer.clamp_rows_hooks`); per request,
    its continuations in the order of :attr:`SteerRequest.rows`."""
    feats = [r.feature for r in requests for _ in r.rows]
    values = torch.cat([r.values for r in requests]) if requests else torch.zeros(0)
    conts = generate(
        adapter, [p for r in requests for p in r.rows], cfg.n_new_tokens, None,
        cfg.max_prompt_tokens, generation_batch(adapter, cfg, len(requests)),
        hooks_for=lambda rows: clamp_rows_hooks(transcoder, [feats[i] for i in rows],
                                                values[rows]),
    )  # fmt: skip
    out, at = [], 0
    for r in requests:
        out.append(conts[at : at + len(r.rows)])
        at += len(r.rows)
    return out


GENERATION_MEMORY = 1 << 30
"""Bytes that one batch of steered generations may hold (keys and values of every layer, the
MLP activations of a prefill, the last logits)."""


def generation_batch(adapter, cfg: ScoreConfig, n_requests: int) -> int:
    """Rows per steered-generation batch: :data:`FAITH_BATCH` per request (rows are sorted by
    prompt length, so padding stays as small as one request's own batches), at most what
    :data:`GENERATION_MEMORY` holds, never fewer than ``cfg.batch_size``."""
    hf = adapter.hf_model.config
    d_mlp = getattr(hf, "intermediate_size", None) or getattr(hf, "n_inner", None) or (
        4 * adapter.d_model)
    tokens = cfg.max_prompt_tokens + cfg.n_new_tokens
    per_row = 4 * (2 * tokens * adapter.n_layers * adapter.d_model + 2 * tokens * d_mlp
                   + adapter.W_U.shape[-1])  # fmt: skip
    fits = max(1, GENERATION_MEMORY // per_row)
    return max(cfg.batch_size, min(FAITH_BATCH * max(1, n_requests), fits))


def faithfulness_from_continuations(
    rater: Rater, description: str, request: SteerRequest, conts: Sequence[str]
) -> tuple[Score, dict, list[str]]:
    """Faithfulness from a request's generations, rated against the description."""
    shares: dict[float, float] = {}
    failures: list[str] = []
    n = len(request.prompts)
    for i, alpha in enumerate(request.alphas):
        j = rater.rate(description, conts[i * n : (i + 1) * n])
        failures += j.failures
        rated = [v for v in j.values if v is not None]
        shares[alpha] = sum(v == 2 for v in rated) / len(rated) if rated else NAN
    info = {"shares": {str(a): s for a, s in shares.items()}, "peak_activation": request.peak}
    return faithfulness_from_shares(shares), info, failures


def faithfulness(
    adapter, transcoder, rater: Rater, feature: Feature, description: str,
    texts: Sequence[str], natural: Float[np.ndarray, " n"], cfg: ScoreConfig,
) -> tuple[Score, dict, list[str]]:  # fmt: skip
    """Steered-generation faithfulness of one feature (the gates are checked by the caller)."""
    request = faithfulness_request(feature, texts, natural, cfg)
    if isinstance(request, Score):
        return request, {}, []
    conts = steered_continuations(adapter, transcoder, [request], cfg)[0]
    return faithfulness_from_continuations(rater, description, request, conts)
