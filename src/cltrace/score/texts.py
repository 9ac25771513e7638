"""The natural texts stage III scores descriptions on: a held-out draw of the bundled corpus by
default, or the user's corpus."""

from __future__ import annotations

import os
from collections.abc import Sequence

HELD_OUT_SEED = 7919
"""Seed of the default natural corpus; the bundled model was trained on seed 0."""
N_NATURAL = 2000
"""Documents in the default natural corpus (and in the lexical rater's generation pool)."""


def load_texts(corpus: str | os.PathLike | Sequence[str] | None, n: int, seed: int) -> list[str]:
    """Natural texts: a list as given, a text file (one text per non-empty line), or ``n`` of a
    streamed ``hf:NAME[:SPLIT[:COLUMN]]`` dataset; for None or ``bundled``, ``n`` held-out
    documents of the bundled synthetic corpus drawn with ``seed``."""
    from pathlib import Path

    from cltrace.corpus import load_texts as load

    whole = corpus is not None and (
        not isinstance(corpus, (str, os.PathLike)) or Path(corpus).expanduser().is_file()
    )  # a user's file or list is read whole; a generated or streamed corpus is cut at n
    return load(corpus, None if whole else n, seed)
