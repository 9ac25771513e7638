"""Rater registry: ``key -> (name, builder)``; adding a rater is adding one entry.

============  =====================================================================
lexical       offline, deterministic keyword matching for token-list descriptions;
              cannot judge concepts and overrates token-list features
llm           an OpenAI-compatible chat model; judges concepts (needs a server)
embedding     offline sentence-embedding similarity (optional extra); topical
              closeness, thresholded
============  =====================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cltrace.errors import UsageError
from cltrace.score.raters.base import Generated, Judgement, Rater, highlighted_spans
from cltrace.score.raters.lexical import LexicalRater, description_tokens


@dataclass(frozen=True)
class RaterEntry:
    """One registered rater."""

    key: str
    """Name on the command line and in ``scores.json``."""
    summary: str
    """One line for help texts."""
    build: Callable[..., Rater]
    """Builder taking keyword options (``pool``, ``client``, ``base_url``, ``model``, ...)."""


def _lexical(pool: Sequence[str] = (), seed: int = 0, **_) -> Rater:
    return LexicalRater(pool=pool, seed=seed)


def _llm(client=None, base_url=None, model=None, cache_dir=None, **_) -> Rater:
    from cltrace.score.raters.llm import LLMRater, chat_client

    if client is None:
        client = chat_client(base_url=base_url, model=model, cache_dir=cache_dir)
    return LLMRater(client)


def _embedding(pool: Sequence[str] = (), **_) -> Rater:
    from cltrace.score.raters.embedding import EmbeddingRater

    return EmbeddingRater(pool=pool)


RATERS: dict[str, RaterEntry] = {
    e.key: e
    for e in (
        RaterEntry("lexical", "offline keyword matching for token-list descriptions", _lexical),
        RaterEntry("llm", "an OpenAI-compatible chat model (judges concepts)", _llm),
        RaterEntry("embedding", "offline sentence-embedding similarity (optional)", _embedding),
    )
}


def make_rater(key: str, **options) -> Rater:
    """Build the rater registered under ``key`` (options it does not use are ignored)."""
    if key not in RATERS:
        raise UsageError(f"unknown rater {key!r}; use one of {', '.join(RATERS)}.")
    return RATERS[key].build(**options)


__all__ = [
    "RATERS",
    "Generated",
    "Judgement",
    "LexicalRater",
    "Rater",
    "RaterEntry",
    "description_tokens",
    "highlighted_spans",
    "make_rater",
]
