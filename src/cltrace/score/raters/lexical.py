"""An offline, deterministic rater for token-level descriptions (such as WeightLens' token lists).

Rating: 2 if the text contains one of the description's tokens as a whole word (any case), 1 if
it contains a near match (same crude stem, or a spelling within a small edit distance), else 0.
Generation: pool sentences that contain a description token as a whole word, plus a few
templated sentences built around each token.

It knows nothing of meaning: a description such as "names of people" is reduced to its content
words, so it judges concept descriptions poorly, and it rates a token-list feature highly
whenever the tokens occur, whatever the context. Treat its scores as an upper bound for
token-level descriptions and use the LLM rater for concepts.
"""

from __future__ import annotations

import difflib
import random
import re
from collections.abc import Sequence
from functools import lru_cache

from cltrace.score.raters.base import Generated, Judgement, Rater

_QUOTED = re.compile(r"'([^']+)'|\"([^\"]+)\"|`([^`]+)`")
_WORD = re.compile(r"\w+")
_STOPWORDS = frozenset(
    "a an the of to in on at for and or but is are was were be been this that these those it its "
    "with as by from about into token tokens word words feature fires activates on such like "
    "e.g i.e text texts mentions mention related".split()
)
_SUFFIXES = ("ingly", "ings", "ing", "edly", "ed", "es", "ers", "er", "ly", "s")

TEMPLATES: tuple[str, ...] = (
    "{t}",
    "Here is {t} again.",
    "They said {t}, and then {t} once more.",
)
"""Sentences the lexical rater adds to its synthetic set, one per template and token."""


def description_tokens(description: str) -> list[str]:
    """The tokens a description names.

    Quoted items (``'x'``, ``"x"``, backticks) win; else a comma- or semicolon-separated list of
    short items; else the description's content words (stopwords dropped).
    """
    quoted = [next(g for g in m if g) for m in _QUOTED.findall(description)]
    items = [q.strip() for q in quoted]
    if not any(items):
        body = (
            description.split(":", 1)[1]
            if description.lower().startswith("tokens:")
            else (description)
        )
        parts = [p.strip() for p in re.split(r"[,;]", body)]
        if len(parts) > 1 and all(len(p.split()) <= 2 for p in parts if p):
            items = parts
        else:
            items = [w for w in _WORD.findall(body) if w.lower() not in _STOPWORDS]
    seen: dict[str, None] = {}
    for it in items:
        if it and it.lower() not in {s.lower() for s in seen}:
            seen[it] = None
    return list(seen)


def stem(word: str) -> str:
    """Lower case minus one common English suffix (kept at three letters or more)."""
    w = word.lower()
    for suf in _SUFFIXES:
        if w.endswith(suf) and len(w) - len(suf) >= 3:
            return w[: -len(suf)]
    return w


@lru_cache(maxsize=4096)
def _whole_word(token: str) -> re.Pattern:
    # Tokens made only of punctuation have no word boundary; match them anywhere.
    if not _WORD.search(token):
        return re.compile(re.escape(token))
    return re.compile(r"(?<!\w)" + re.escape(token) + r"(?!\w)", re.IGNORECASE)


def lexical_rating(tokens: Sequence[str], text: str) -> int:
    """2 for a whole-word match of any token, 1 for a stem or near-spelling match, else 0."""
    words, stems = _words_and_stems(text)
    if any(_matches_whole_word(t, text, words) for t in tokens):
        return 2
    for t in tokens:
        tl = t.lower()
        if not _WORD.search(tl):
            continue
        if stem(tl) in stems:
            return 1
        if len(tl) >= 4 and any(_near_spelling(tl, w) for w in words):
            return 1
    return 0


def _matches_whole_word(token: str, text: str, words: frozenset[str]) -> bool:
    """Whether ``token`` occurs in ``text`` as a whole word, case-insensitively. An ASCII word
    token in an ASCII text does exactly when it is one of the text's lower-cased words (a set
    lookup instead of a regular-expression scan); anything else is searched."""
    if token.isascii() and text.isascii() and _ASCII_WORD.fullmatch(token):
        return token.lower() in words
    return _whole_word(token).search(text) is not None


_ASCII_WORD = re.compile(r"[A-Za-z0-9_]+")


@lru_cache(maxsize=65536)
def _words_and_stems(text: str) -> tuple[frozenset[str], frozenset[str]]:
    # a feature's rated texts overlap heavily with other features', so each is split once
    words = frozenset(w.lower() for w in _WORD.findall(text))
    return words, frozenset(stem(w) for w in words)


@lru_cache(maxsize=1 << 18)
def _near_spelling(token: str, word: str) -> bool:
    # difflib is the slow part of rating; a corpus has few distinct words, so pairs repeat
    return abs(len(word) - len(token)) <= 2 and (
        difflib.SequenceMatcher(None, token, word).ratio() >= 0.85
    )


class LexicalRater(Rater):
    """Keyword matching against the description's tokens; ``pool`` supplies synthetic texts."""

    name = "lexical"

    def __init__(self, pool: Sequence[str] = (), seed: int = 0, per_request: int = 2):
        self.pool = list(pool)
        """Texts that :meth:`generate` may choose from (kept apart from the natural set)."""
        self.seed = seed
        self.per_request = per_request
        """Pool sentences returned per generation request (FADE's calls each return a list)."""

    def generate(self, description: str, n_requests: int) -> Generated:
        tokens = [t.strip() for t in description_tokens(description) if t.strip()]
        if not tokens:
            return Generated([], [f"no tokens found in description {description!r}"])
        hits = [s for s in self.pool
                if any(_matches_whole_word(t, s, _words_and_stems(s)[0]) for t in tokens)]
        # seeded by the description so that each feature's sample is reproducible on its own
        rng = random.Random(f"{self.seed}:{description}")
        rng.shuffle(hits)
        texts = hits[: self.per_request * n_requests]
        texts += [tpl.format(t=t) for t in tokens for tpl in TEMPLATES]
        return Generated(list(dict.fromkeys(texts)))

    def rate(self, description: str, texts: Sequence[str]) -> Judgement:
        tokens = [t.strip() for t in description_tokens(description) if t.strip()]
        if not tokens:
            return Judgement(
                [None] * len(texts), [f"no tokens found in description {description!r}"]
            )
        return Judgement([lexical_rating(tokens, t) for t in texts])
