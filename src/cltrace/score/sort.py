"""Sort eval (Ameisen, Lindsey et al. 2025, *Circuit Tracing*): can a rater tell two features apart?

Two features are shown to the rater through their *views*: the tokens they fire on most and
their strongest examples (with the top token marked). Held-out texts that activate exactly one
of the two are then sorted: the rater rates each text against both views and the text goes to
the view with the higher rating; a tie counts half. The score is the fraction sorted correctly;
chance is 0.5.

The raters of :mod:`cltrace.score.raters` judge texts against a description, so a view is
rendered as a description: the lexical rater reads the quoted top tokens, an LLM rater also
reads the marked examples.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cltrace.errors import CltraceError
from cltrace.models.adapter import ModelAdapter
from cltrace.score.activations import Feature, token_activations
from cltrace.score.raters.base import MARK_CLOSE, MARK_OPEN, Rater
from cltrace.transcoders import CrossLayerTranscoder


@dataclass
class FeatureView:
    """What a rater is shown of one feature."""

    feature: Feature
    top_tokens: list[str]
    """Distinct tokens at each top example's maximum, strongest first."""
    examples: list[str]
    """Top examples with the maximum token marked ``<<...>>``."""

    def description(self, with_examples: bool = False, n_tokens: int = 5) -> str:
        """The view as a description a rater judges texts against."""
        toks = ", ".join(repr(t.strip()) for t in self.top_tokens[:n_tokens] if t.strip())
        text = f"Fires on the tokens {toks}."
        if with_examples and self.examples:
            text += " Strongest examples:\n" + "\n".join(f"- {e}" for e in self.examples)
        return text


@dataclass
class Activity:
    """Per-text maxima and top tokens of several features (``[n_features, n_texts]``)."""

    features: list[Feature]
    texts: list[str]
    maxima: np.ndarray
    top_token: list[list[str]]
    """``top_token[j][i]``: the token where feature ``j`` peaks on text ``i``."""
    marked: list[list[str]]


def activity(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    texts: Sequence[str],
    features: Sequence[Feature],
    max_tokens: int = 64,
) -> Activity:
    """Each feature's maximum over each text's tokens (BOS excluded) and where it peaks."""
    acts = token_activations(adapter, transcoder, texts, features, max_tokens=max_tokens)
    n_f, n_t = len(features), len(texts)
    maxima = np.zeros((n_f, n_t))
    top = [[""] * n_t for _ in range(n_f)]
    marked = [[""] * n_t for _ in range(n_f)]
    for i, ta in enumerate(acts):
        if ta.acts.shape[1] == 0:
            continue
        pieces = adapter.to_str_tokens(ta.ids)
        at = ta.acts.argmax(1)
        maxima[:, i] = ta.acts.max(1)
        for j in range(n_f):
            if maxima[j, i] > 0:
                p = int(at[j])
                top[j][i] = pieces[p]
                marked[j][i] = ("".join(pieces[:p]) + MARK_OPEN + pieces[p] + MARK_CLOSE
                                + "".join(pieces[p + 1 :])).strip()  # fmt: skip
    return Activity(list(features), list(texts), maxima, top, marked)


def views(act: Activity, n_top: int = 20, n_examples: int = 5) -> dict[Feature, FeatureView]:
    """Each feature's view from its ``n_top`` strongest texts."""
    out = {}
    for j, f in enumerate(act.features):
        order = [i for i in np.argsort(-act.maxima[j], kind="mergesort")[:n_top]
                 if act.maxima[j, i] > 0]  # fmt: skip
        toks = list(dict.fromkeys(act.top_token[j][i] for i in order))
        out[f] = FeatureView(f, toks, [act.marked[j][i] for i in order[:n_examples]])
    return out


def choice_credit(rating_a: int | None, rating_b: int | None, label: int) -> float | None:
    """1 if the rating of the right side (``label`` 0 = a, 1 = b) is higher, 0 if lower, 0.5
    for a tie; None when a rating is missing."""
    if rating_a is None or rating_b is None:
        return None
    if rating_a == rating_b:
        return 0.5
    return float((rating_a > rating_b) == (label == 0))


def choice_score(
    ratings_a: Sequence[int | None], ratings_b: Sequence[int | None], labels: Sequence[int]
) -> tuple[float, int]:
    """Mean credit over the items that have both ratings, and how many those are.

    Flipping every label turns each credit ``c`` into ``1 - c``, so with labels drawn at random
    the expected score is exactly 0.5 whatever the ratings.
    """
    credits = [choice_credit(a, b, y) for a, b, y in zip(ratings_a, ratings_b, labels,
                                                          strict=True)]  # fmt: skip
    ok = [c for c in credits if c is not None]
    return (float(np.mean(ok)) if ok else float("nan")), len(ok)


@dataclass
class EvalResult:
    """Score of a sort or contrastive eval."""

    name: str
    score: float
    """Fraction correct (ties count half); chance 0.5."""
    n_items: int
    n_groups: int
    """Feature pairs (sort) or features (contrastive) that contributed items."""
    failures: list[str] = field(default_factory=list)
    items: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        """JSON-ready, with an undefined score (no items) as None."""
        items = [{k: _finite(v) for k, v in it.items()} for it in self.items]
        return {"eval": self.name, "score": _finite(self.score), "n_items": self.n_items,
                "n_groups": self.n_groups, "failures": self.failures[:20],
                "items": items}  # fmt: skip


def _finite(x):
    return None if isinstance(x, float) and not np.isfinite(x) else x


def sort_eval(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    rater: Rater,
    view_texts: Sequence[str],
    held_out_texts: Sequence[str],
    features: Sequence[Feature] | None = None,
    n_pairs: int = 200,
    n_held_out: int = 10,
    n_top: int = 20,
    with_examples: bool | None = None,
    seed: int = 0,
) -> EvalResult:
    """Sort eval over ``n_pairs`` random pairs of ``features`` (default: every feature).

    Views come from ``view_texts``; ``held_out_texts`` supply up to ``n_held_out`` texts per
    feature of a pair that activate it and not the other. Features that fire on fewer than two
    view texts or never on a held-out text alone are not paired. ``with_examples`` (default: for
    raters other than ``lexical``) adds the marked examples to each view.
    """
    if features is None:
        features = [(ly, f) for ly in range(transcoder.n_layers)
                    for f in range(transcoder.d_features)]  # fmt: skip
    features = list(features)
    if len(features) < 2:
        raise CltraceError("the sort eval needs at least two features; pass more.")
    with_examples = rater.name != "lexical" if with_examples is None else with_examples
    train = activity(adapter, transcoder, view_texts, features)
    alive = [j for j in range(len(features)) if (train.maxima[j] > 0).sum() >= 2]
    if len(alive) < 2:
        raise CltraceError(
            "fewer than two features fire on the view texts; pass more texts or other features."
        )
    feats = [features[j] for j in alive]
    train_views = views(train, n_top)
    held = activity(adapter, transcoder, held_out_texts, feats)
    on = held.maxima > 0
    rng = random.Random(seed)
    labels, ra, rb, failures, items = [], [], [], [], []
    n_groups = 0
    tries = 0
    while n_groups < n_pairs and tries < 20 * n_pairs:
        tries += 1
        a, b = rng.sample(range(len(feats)), 2)
        only_a = np.flatnonzero(on[a] & ~on[b]).tolist()
        only_b = np.flatnonzero(on[b] & ~on[a]).tolist()
        if not only_a or not only_b:
            continue
        picks = [(i, 0) for i in rng.sample(only_a, min(n_held_out, len(only_a)))]
        picks += [(i, 1) for i in rng.sample(only_b, min(n_held_out, len(only_b)))]
        texts = [held_out_texts[i] for i, _ in picks]
        da = train_views[feats[a]].description(with_examples)
        db = train_views[feats[b]].description(with_examples)
        ja, jb = rater.rate(da, texts), rater.rate(db, texts)
        failures += ja.failures + jb.failures
        labels += [y for _, y in picks]
        ra += ja.values
        rb += jb.values
        s, n = choice_score(ja.values, jb.values, [y for _, y in picks])
        items.append({"a": f"{feats[a][0]}/{feats[a][1]}", "b": f"{feats[b][0]}/{feats[b][1]}",
                      "score": s, "n": n})  # fmt: skip
        n_groups += 1
    score, n = choice_score(ra, rb, labels)
    return EvalResult("sort", score, n, n_groups, failures, items)
