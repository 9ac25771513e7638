"""All stage-III scores of one feature and its description."""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

import numpy as np
from jaxtyping import Float

from cltrace.score import eleuther, fade
from cltrace.score.activations import Feature
from cltrace.score.config import ScoreConfig
from cltrace.score.metrics import NAN, Score
from cltrace.score.raters.base import Rater

METRICS: tuple[str, ...] = (
    "clarity",
    "responsiveness",
    "purity",
    "faithfulness",
    "detection",
    "fuzzing",
)
MAX_FAILURES_KEPT = 20


@dataclass
class FeatureScores:
    """One feature's line in ``scores.json``."""

    values: dict[str, float | None]
    """Each of :data:`METRICS`; NaN where undefined, None where not computed (faithfulness
    below the gates)."""
    reasons: dict[str, str]
    """Why a metric is NaN or None, per metric."""
    rater: str
    """The rater key."""
    description: str = ""
    """The description scored."""
    info: dict = field(default_factory=dict)
    """Sample counts and intermediate values (synthetic set size, ratings, shares per alpha)."""
    failures: list[str] = field(default_factory=list)
    """The rater's failures (first few), so malformed replies are visible."""

    def to_json(self) -> dict:
        vals = {
            k: None if v is None or (isinstance(v, float) and math.isnan(v)) else v
            for k, v in self.values.items()
        }
        return {
            **vals,
            "reasons": self.reasons,
            "rater": self.rater,
            "description": self.description,
            "info": self.info,
            "n_failures": len(self.failures),
            "failures": self.failures[:MAX_FAILURES_KEPT],
        }


def unscored(rater: str, reason: str, description: str = "") -> FeatureScores:
    """Every metric NaN for the same reason (no description, feature never fires, ...)."""
    return FeatureScores({m: NAN for m in METRICS}, {m: reason for m in METRICS}, rater,
                         description)  # fmt: skip


def score_feature(
    adapter,
    transcoder,
    rater: Rater,
    rater_key: str,
    feature: Feature,
    description: str,
    texts: Sequence[str],
    natural: Float[np.ndarray, " n"],
    cfg: ScoreConfig,
    pre=None,
) -> FeatureScores:
    """Clarity, responsiveness, purity, faithfulness, detection and fuzzing of one feature.

    ``natural`` holds the feature's sequence score on each of ``texts`` (computed once for all
    features by the caller); ``pre`` (:class:`~cltrace.score.batched.Prefetched`) holds this
    feature's synthetic texts and activations when the caller computed them for many features
    in shared passes.
    """
    steps = score_feature_steps(adapter, transcoder, rater, rater_key, feature, description,
                                texts, natural, cfg, pre)  # fmt: skip
    return run_feature_steps(adapter, transcoder, [steps], cfg)[0]


def run_feature_steps(
    adapter,
    transcoder,
    steps: Sequence[Generator[fade.SteerRequest, list[str], FeatureScores]],
    cfg: ScoreConfig,
) -> list[FeatureScores]:
    """Run :func:`score_feature_steps` generators together: every steered generation they ask
    for is made in shared batches (:func:`~cltrace.score.fade.steered_continuations`); their
    scores, in order."""
    done: dict[int, FeatureScores] = {}
    waiting: dict[int, fade.SteerRequest] = {}
    for i, gen in enumerate(steps):
        try:
            waiting[i] = next(gen)
        except StopIteration as stop:
            done[i] = stop.value
    if waiting:
        conts = fade.steered_continuations(adapter, transcoder, list(waiting.values()), cfg)
        for i, c in zip(waiting, conts, strict=True):
            try:
                steps[i].send(c)
            except StopIteration as stop:
                done[i] = stop.value
            else:
                raise RuntimeError("score_feature_steps asked for more than one set of "
                                   "generations")  # fmt: skip
    return [done[i] for i in range(len(steps))]


def score_feature_steps(
    adapter,
    transcoder,
    rater: Rater,
    rater_key: str,
    feature: Feature,
    description: str,
    texts: Sequence[str],
    natural: Float[np.ndarray, " n"],
    cfg: ScoreConfig,
    pre=None,
) -> Generator[fade.SteerRequest, list[str], FeatureScores]:
    """:func:`score_feature` as a generator that hands its steered generations to the caller:
    when faithfulness is due it yields a :class:`~cltrace.score.fade.SteerRequest` and expects
    the continuations sent back; it returns the :class:`FeatureScores`. A caller scoring many
    features generates all their requests in shared batches
    (:func:`~cltrace.score.fade.steered_continuations`)."""
    if not description.strip():
        return unscored(rater_key, "no description", description)
    scores: dict[str, Score | None] = {}
    info: dict = {}
    failures: list[str] = []

    scores["clarity"], clar_info, fails = fade.clarity(
        adapter, transcoder, rater, feature, description, natural, cfg, pre
    )
    info.update(clar_info)
    failures += fails

    idx, ratings, fails = fade.rate_natural(rater, description, texts, natural, cfg)
    failures += fails
    scores["responsiveness"], scores["purity"] = fade.responsiveness_and_purity(
        natural[idx], ratings, cfg.rules
    )
    counts = {r: sum(1 for v in ratings if v == r) for r in (0, 1, 2)}
    info.update(n_rated=len(idx), ratings=counts,
                n_unrated=sum(1 for v in ratings if v is None))  # fmt: skip

    clar, resp = scores["clarity"], scores["responsiveness"]
    if not cfg.faithfulness:
        scores["faithfulness"] = None
        skip = "faithfulness is switched off in this configuration"
    elif clar.ok and resp.ok and clar.value >= cfg.gate and resp.value >= cfg.gate:
        request = fade.faithfulness_request(feature, texts, natural, cfg)
        if isinstance(request, Score):
            scores["faithfulness"], faith_info, fails = request, {}, []
        else:
            conts = yield request
            scores["faithfulness"], faith_info, fails = fade.faithfulness_from_continuations(
                rater, description, request, conts
            )
        info["faithfulness"] = faith_info
        failures += fails
    else:
        scores["faithfulness"] = None
        skip = (
            f"skipped: needs clarity and responsiveness >= {cfg.gate}, got "
            f"{clar.value:.3f} and {resp.value:.3f}"
        )

    scores["detection"], fails = eleuther.detection(rater, description, texts, natural, cfg)
    failures += fails
    scores["fuzzing"], fails = eleuther.fuzzing(
        adapter,
        transcoder,
        rater,
        feature,
        description,
        texts,
        natural,
        cfg,
        pre.activating if pre is not None else None,
    )
    failures += fails

    values: dict[str, float | None] = {}
    reasons: dict[str, str] = {}
    for m in METRICS:
        s = scores[m]
        if s is None:
            values[m], reasons[m] = None, skip
        else:
            values[m] = s.value
            if s.reason:
                reasons[m] = s.reason
    return FeatureScores(values, reasons, rater_key, description, info, failures)
