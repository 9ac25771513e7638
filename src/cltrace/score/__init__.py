"""Stage III: how well a description matches its feature (FADE, detection, fuzzing).

Metrics (docs/METHODS.md §7): clarity, responsiveness, purity and faithfulness from FADE,
plus Eleuther-style detection and fuzzing; all separation statistics are computed in numpy
(:mod:`cltrace.score.metrics`) and every undefined case is NaN with a reason.

Raters (:mod:`cltrace.score.raters`) differ in what they can judge:

* ``lexical`` (default, offline, deterministic): a text gets 2 if it contains one of the
  description's tokens as a whole word, 1 for a stem or near-spelling match, else 0; its
  "synthetic" texts are pool sentences holding those tokens plus templates. It suits the token
  lists WeightLens writes, cannot judge concepts, and overrates token-list features (any text
  with the token counts, whatever the context).
* ``llm``: an OpenAI-compatible chat model generates and rates, as in FADE; it judges concepts.
  Malformed replies are recorded as failures, never guessed.
* ``embedding`` (optional extra ``cltrace[embedding]``): cosine similarity of sentence
  embeddings, thresholded into 0/1/2; topical closeness, not entailment.

The PIE run-directory entry point is :func:`cltrace.pie.stage3.evaluate_run`.
"""

from cltrace.score.activations import pool, sequence_scores, token_activations
from cltrace.score.config import ScoreConfig
from cltrace.score.feature import METRICS, FeatureScores, score_feature
from cltrace.score.metrics import (
    Score,
    auroc,
    average_precision,
    balanced_accuracy,
    gini,
    separation,
)
from cltrace.score.raters import RATERS, Rater, make_rater

__all__ = [
    "METRICS",
    "RATERS",
    "FeatureScores",
    "Rater",
    "Score",
    "ScoreConfig",
    "auroc",
    "average_precision",
    "balanced_accuracy",
    "gini",
    "make_rater",
    "pool",
    "score_feature",
    "separation",
    "sequence_scores",
    "token_activations",
]
