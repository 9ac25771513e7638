"""Contrastive eval (Ameisen, Lindsey et al. 2025, *Circuit Tracing*): which of two near-identical
prompts activates a feature?

Prompt pairs that match in structure but differ in one respect come from the task generators
(:mod:`cltrace.tasks`: a clean and a corrupted prompt of the same template). A feature active on
exactly one prompt of a pair (its maximum over the non-BOS tokens is positive on one, zero on
the other) gives one item: the rater rates both prompts against the feature's view
(:mod:`cltrace.score.sort`) and picks the higher; a tie counts half. The score is the fraction
correct; chance is 0.5.

Also here: :func:`feature_evals`, both evals for one transcoder on the bundled held-out corpus,
and (in :mod:`cltrace.pie.feature_evals`) ``evaluate_run_evals``, the ``cltrace evaluate --evals
sort,contrastive`` entry point for a PIE run.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence

import numpy as np

from cltrace.errors import CltraceError
from cltrace.models.adapter import ModelAdapter
from cltrace.score.activations import Feature
from cltrace.score.raters.base import Rater
from cltrace.score.sort import EvalResult, activity, choice_score, sort_eval, views
from cltrace.transcoders import CrossLayerTranscoder

EVALS = ("sort", "contrastive")


def contrastive_eval(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    rater: Rater,
    view_texts: Sequence[str],
    prompt_pairs: Sequence[tuple[str, str]],
    features: Sequence[Feature] | None = None,
    n_items: int = 200,
    per_pair: int = 3,
    n_top: int = 20,
    with_examples: bool | None = None,
    seed: int = 0,
) -> EvalResult:
    """Contrastive eval over up to ``n_items`` (feature, prompt pair) items, at most
    ``per_pair`` features per pair (drawn at random among those active on one prompt only)."""
    if features is None:
        features = [(ly, f) for ly in range(transcoder.n_layers)
                    for f in range(transcoder.d_features)]  # fmt: skip
    features = list(features)
    if not prompt_pairs:
        raise CltraceError("the contrastive eval needs prompt pairs; pass at least one.")
    with_examples = rater.name != "lexical" if with_examples is None else with_examples
    train = activity(adapter, transcoder, view_texts, features)
    alive = [j for j in range(len(features)) if (train.maxima[j] > 0).any()]
    feats = [features[j] for j in alive]
    if not feats:
        raise CltraceError("no feature fires on the view texts; pass more texts.")
    train_views = views(train, n_top)
    flat = [p for pair in prompt_pairs for p in pair]
    on = activity(adapter, transcoder, flat, feats).maxima > 0  # [n_feats, 2 * n_pairs]
    rng = random.Random(seed)
    order = list(range(len(prompt_pairs)))
    rng.shuffle(order)
    ra, rb, labels, failures, items = [], [], [], [], []
    used: set[Feature] = set()
    for p in order:
        if len(labels) >= n_items:
            break
        first, second = on[:, 2 * p], on[:, 2 * p + 1]
        cands = np.flatnonzero(first ^ second).tolist()
        for j in rng.sample(cands, min(per_pair, len(cands))):
            if len(labels) >= n_items:
                break
            desc = train_views[feats[j]].description(with_examples)
            r = rater.rate(desc, list(prompt_pairs[p]))
            failures += r.failures
            label = 0 if first[j] else 1
            ra.append(r.values[0])
            rb.append(r.values[1])
            labels.append(label)
            used.add(feats[j])
            items.append({"feature": f"{feats[j][0]}/{feats[j][1]}", "pair": p,
                          "active": label, "ratings": r.values})  # fmt: skip
    score, n = choice_score(ra, rb, labels)
    return EvalResult("contrastive", score, n, len(used), failures, items)


def feature_evals(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    rater: Rater,
    evals: Sequence[str] = EVALS,
    features: Sequence[Feature] | None = None,
    task: str = "ioi",
    corpus: str | os.PathLike | None = None,
    n_texts: int = 600,
    n_pairs: int = 200,
    n_prompt_pairs: int = 100,
    seed: int = 0,
    prompt_pairs: Sequence[tuple[str, str]] | None = None,
) -> dict[str, EvalResult]:
    """Sort and/or contrastive eval of one transcoder: views from one held-out draw of the
    corpus (bundled by default), sort items from a second, contrastive pairs from ``task``
    (or ``prompt_pairs``, clean and corrupted prompts)."""
    from cltrace.corpus import load_texts
    from cltrace.score.texts import HELD_OUT_SEED
    from cltrace.tasks import get_task

    bad = [e for e in evals if e not in EVALS]
    if bad:
        raise CltraceError(f"unknown eval {bad[0]!r}; use sort, contrastive or both.")
    if corpus is None:
        view_texts = load_texts(None, n_texts, HELD_OUT_SEED + 2)
        held = load_texts(None, n_texts, HELD_OUT_SEED + 3)
    else:
        texts = load_texts(corpus, 2 * n_texts, seed)
        view_texts, held = texts[0::2], texts[1::2]
    out: dict[str, EvalResult] = {}
    if "sort" in evals:
        out["sort"] = sort_eval(adapter, transcoder, rater, view_texts, held, features,
                                n_pairs=n_pairs, seed=seed)  # fmt: skip
    if "contrastive" in evals:
        if prompt_pairs is None:
            made = get_task(task).make_pairs(adapter, n_prompt_pairs, seed=seed)
            prompt_pairs = [(p.clean, p.corrupt) for p in made]
        out["contrastive"] = contrastive_eval(
            adapter, transcoder, rater, view_texts, prompt_pairs,
            features, n_items=n_pairs, seed=seed,
        )  # fmt: skip
    return out


def render_html(results: dict[str, dict]) -> str:
    """A small table page: one row per transcoder (or run), one column per eval."""
    from html import escape

    rows = []
    for name, summary in results.items():
        cells = "".join(
            f"<td>{'–' if e['score'] is None else format(e['score'], '.3f')} "
            f"({e['n_items']} items)</td>"
            for e in summary["evals"].values()
        )
        rows.append(f"<tr><th>{escape(name)}</th>{cells}</tr>")
    heads = next(iter(results.values()))["evals"].keys() if results else []
    return ("<!doctype html><meta charset='utf-8'><title>Sort and contrastive evals</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;"
            "padding:2px 8px}</style><h1>Sort and contrastive evals (chance 0.5)</h1><table>"
            "<tr><th></th>" + "".join(f"<th>{escape(h)}</th>" for h in heads) + "</tr>"
            + "".join(rows) + "</table>")  # fmt: skip
