"""Detection and fuzzing scores (the simulation-free checks of Eleuther's auto-interp).

``detection``  held-out examples, half where the feature fires (spread over its activation
               quantiles) and half where it never does; the rater says whether each matches the
               description. Score = balanced accuracy (chance 0.5).
``fuzzing``    each activating example shown twice: once with the tokens where the feature
               fires strongly marked, once with as many tokens marked at random; the rater says
               whether the marks fit the description. Score = balanced accuracy (chance 0.5).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from jaxtyping import Float

from cltrace.score.activations import Feature, token_activations
from cltrace.score.config import ScoreConfig
from cltrace.score.metrics import NAN, Score, balanced_accuracy
from cltrace.score.raters.base import MARK_CLOSE, MARK_OPEN, Rater
from cltrace.score.sampling import detection_sample


def _balanced(values: Sequence[int | None], truth: Sequence[bool]) -> Score:
    kept = [(bool(v), t) for v, t in zip(values, truth, strict=True) if v is not None]
    if not kept:
        return Score(NAN, "the rater judged none of the examples")
    pred, tr = zip(*kept, strict=True)
    return balanced_accuracy(pred, tr)


def detection(
    rater: Rater, description: str, texts: Sequence[str], natural: Float[np.ndarray, " n"],
    cfg: ScoreConfig,
) -> tuple[Score, list[str]]:  # fmt: skip
    act, silent = detection_sample(natural, cfg.n_detect, cfg.seed)
    if act.size == 0:
        return Score(NAN, "the feature never fires on the natural texts"), []
    if silent.size == 0:
        return Score(NAN, "the feature fires on every natural text (no negative examples)"), []
    idx = np.concatenate([act, silent])
    j = rater.detect(description, [texts[i] for i in idx])
    truth = [True] * act.size + [False] * silent.size
    return _balanced(j.values, truth), j.failures


def token_pieces(tokenizer, ids: Sequence[int]) -> list[str]:
    """The text each token adds, so that ``"".join(pieces)`` is the decoded text."""
    pieces, prev = [], ""
    for k in range(len(ids)):
        cur = tokenizer.decode(list(ids[: k + 1]))
        # decoding is prefix-stable for whole tokens; a split multi-byte character is not
        pieces.append(cur[len(prev) :] if cur.startswith(prev) else tokenizer.decode([ids[k]]))
        prev = cur
    return pieces


def render_marked(pieces: Sequence[str], marked: set[int]) -> str:
    """Join token pieces, wrapping marked ones in ``<<`` ``>>`` (leading spaces kept outside)."""
    out = []
    for k, p in enumerate(pieces):
        if k in marked and p.strip():
            lead = p[: len(p) - len(p.lstrip())]
            out.append(f"{lead}{MARK_OPEN}{p.strip()}{MARK_CLOSE}")
        else:
            out.append(p)
    return "".join(out)


def fuzzing(
    adapter, transcoder, rater: Rater, feature: Feature, description: str,
    texts: Sequence[str], natural: Float[np.ndarray, " n"], cfg: ScoreConfig,
    activating: Sequence | None = None,
) -> tuple[Score, list[str]]:  # fmt: skip
    """``activating``: the per-token activations on the activating texts, when computed in a
    batch with other features' (see :mod:`cltrace.score.batched`)."""
    act, _ = detection_sample(natural, cfg.n_detect, cfg.seed)
    if act.size == 0:
        return Score(NAN, "the feature never fires on the natural texts"), []
    rng = np.random.default_rng(cfg.seed + 1)
    per = activating if activating is not None else token_activations(
        adapter, transcoder, [texts[i] for i in act], [feature], max_tokens=cfg.max_tokens,
        batch_size=cfg.batch_size)  # fmt: skip
    right, wrong = [], []
    for t in per:
        a = np.abs(t.acts[0])
        if a.size < 2 or a.max() == 0:
            continue
        true = set(np.flatnonzero(a >= cfg.highlight_share * a.max()).tolist())
        others = np.setdiff1d(np.arange(a.size), sorted(true))
        if others.size == 0:
            continue  # every token is marked: no wrong marking to compare with
        # as many random marks as true ones, avoiding the true tokens where possible
        fake = set(rng.choice(others, size=min(len(true), others.size), replace=False).tolist())
        pieces = token_pieces(adapter.tokenizer, t.ids)
        right.append(render_marked(pieces, true))
        wrong.append(render_marked(pieces, fake))
    if not right:
        return Score(NAN, "no activating example has tokens to mark and tokens to leave"), []
    j = rater.judge_highlights(description, right + wrong)
    return _balanced(j.values, [True] * len(right) + [False] * len(wrong)), j.failures
