"""Stage III's model passes shared across features (one batched pass per kind of text).

Scoring features one at a time runs the model once per feature on its synthetic texts (clarity)
and once more on its activating natural texts (fuzzing): hundreds of tiny forward passes. Here a
chunk of features is prepared together: every feature's synthetic texts go through the model in
one batched pass (each text once, however many features asked for it), and so do the activating
natural texts. A feature's activation on a text does not depend on which other texts share its
batch (right padding under causal attention), so the values equal the one-feature-at-a-time ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from jaxtyping import Float

from cltrace.score.activations import (
    Feature,
    TokenActivations,
    iter_token_activations,
    sequence_scores,
)
from cltrace.score.config import ScoreConfig
from cltrace.score.raters.base import Generated, Rater
from cltrace.score.sampling import detection_sample


@dataclass
class Prefetched:
    """What :func:`cltrace.score.feature.score_feature` would otherwise compute per feature."""

    generated: Generated | None
    """The rater's synthetic texts for the description (clarity); None when the caller chose
    to let each feature ask the rater itself."""
    synthetic: Float[np.ndarray, " n_syn"] | None
    """The feature's sequence score on each of them."""
    activating: list[TokenActivations]
    """Per-token activations on the feature's activating natural texts (fuzzing), in the
    order of :func:`~cltrace.score.sampling.detection_sample`."""


def prefetch(
    adapter,
    transcoder,
    rater: Rater,
    features: Sequence[Feature],
    descriptions: Sequence[str],
    texts: Sequence[str],
    natural: Float[np.ndarray, "n_features n_texts"],
    cfg: ScoreConfig,
    generate: bool = True,
) -> list[Prefetched]:
    """Synthetic texts, their scores and the fuzzing activations of every feature, from two
    batched model passes in all (``natural[j]`` is feature ``j``'s score on ``texts``).

    ``generate=False`` leaves the synthetic texts to each feature's own scoring: an LLM rater's
    requests then go out feature by feature, so a failing endpoint stops the stage after the
    features before it have been scored and saved.
    """
    kw = {"max_tokens": cfg.max_tokens, "batch_size": cfg.batch_size}
    gens = [rater.generate(d, cfg.n_generate) if generate else Generated([])
            for d in descriptions]  # fmt: skip
    union = list(dict.fromkeys(t for g in gens for t in g.texts))
    syn = (
        sequence_scores(adapter, transcoder, union, features, cfg.reduce, **kw)
        if union
        else np.zeros((len(features), 0))
    )
    col = {t: i for i, t in enumerate(union)}
    activating = [detection_sample(natural[j], cfg.n_detect, cfg.seed)[0] for j in
                  range(len(features))]  # fmt: skip
    wanted: dict[int, list[int]] = {}  # natural text -> features that need its tokens
    for j, idx in enumerate(activating):
        for i in idx.tolist():
            wanted.setdefault(int(i), []).append(j)
    order = sorted(wanted)
    per_text: dict[tuple[int, int], TokenActivations] = {}
    if order:
        sub = [texts[i] for i in order]
        for k, t in iter_token_activations(adapter, transcoder, sub, features, **kw):
            i = order[k]
            for j in wanted[i]:  # keep only the rows asked for: the full block can be large
                per_text[(i, j)] = TokenActivations(t.ids, t.acts[j : j + 1].copy())
    return [
        Prefetched(
            gens[j] if generate else None,
            (syn[j, [col[t] for t in gens[j].texts]] if gens[j].texts else np.zeros(0))
            if generate
            else None,
            [per_text[(int(i), j)] for i in activating[j].tolist()],
        )
        for j in range(len(features))
    ]
