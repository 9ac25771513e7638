"""Where interpretation examples come from: the bundled corpus, a text file, or an HF dataset."""

from __future__ import annotations

from cltrace.corpus import BUNDLED, load_texts

__all__ = ["BUNDLED", "load_corpus"]


def load_corpus(source: str | None, n_docs: int, seed: int = 1) -> list[str]:
    """Up to ``n_docs`` documents.

    ``None`` or ``"bundled"``: the bundled synthetic corpus (seed 1 by default, so the documents
    differ from the seed-0 stream the bundled model was trained on). An existing file: one
    document per non-empty line (a literal ``\\n`` is a newline, so a one-line document can
    hold code). ``hf:<name>[:<split>]``: a Hugging Face dataset's ``text`` column (needs the
    optional ``datasets`` package).
    """
    return load_texts(source, n_docs, seed, unescape_newlines=True)
