"""Documents for training, interpretation and scoring: one loader for every corpus source."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from cltrace.errors import CltraceError

BUNDLED = "bundled"


def load_texts(
    source: str | os.PathLike | Sequence[str] | None,
    n_docs: int | None,
    seed: int,
    *,
    bare_dataset_names: bool = False,
    unescape_newlines: bool = False,
) -> list[str]:
    """Up to ``n_docs`` documents (all of a file or list for ``None``) from ``source``.

    ``None``, ``""`` or ``"bundled"``: ``n_docs`` documents of the bundled synthetic corpus drawn
    with ``seed``; ``"bundled:<recipe>"`` those of another recipe (``four-tasks``). A list of
    strings: its non-empty ones. An existing text file: one document per non-empty line
    (:func:`cltrace.files.read_text_lines`); ``unescape_newlines`` turns literal ``\\n`` into
    newlines, so a one-line document can hold code. ``hf:<name>[:<split>[:<column>]]``
    (or, with ``bare_dataset_names``, any name that is not a file): a Hugging Face dataset's
    ``column`` (default ``text``, else its first string column), train split by default,
    streamed so only ``n_docs`` rows are read (needs the optional ``datasets`` package).
    """
    generated = source is None or (isinstance(source, str) and source in ("", BUNDLED))
    if generated or (isinstance(source, str) and source.startswith(f"{BUNDLED}:")):
        if n_docs is None:
            raise CltraceError(
                "the bundled corpus is generated: give n_docs, its number of documents."
            )
        from cltrace.bundled.corpus import CorpusConfig, generate_corpus

        if generated:
            return generate_corpus(CorpusConfig(n_docs=n_docs, seed=seed))
        from cltrace.bundled.train import TrainConfig

        name = str(source).split(":", 1)[1]
        recipe = TrainConfig.recipe(name).corpus  # names the recipe if unknown
        return generate_corpus(replace(recipe, n_docs=n_docs, seed=seed))
    assert source is not None  # the generated corpus returned above
    if not isinstance(source, (str, os.PathLike)):
        texts = [t for t in source if t.strip()]
        if not texts:
            raise CltraceError("the corpus list holds no text; pass at least one document.")
        return texts[:n_docs]
    if isinstance(source, str) and source.startswith("hf:"):
        return _hf_texts(source[3:], n_docs)
    path = Path(source).expanduser()
    if path.is_file():
        from cltrace.files import read_text_lines

        texts = read_text_lines(path)[:n_docs]
        return [t.replace("\\n", "\n") for t in texts] if unescape_newlines else texts
    if bare_dataset_names:
        return _hf_texts(str(source), n_docs)
    raise CltraceError(
        f"corpus file {source} does not exist; pass a text file with one document per line, "
        "'bundled', or 'hf:<dataset>'."
    )


def _hf_texts(spec: str, n_docs: int | None) -> list[str]:
    try:
        import datasets  # optional: not a cltrace dependency
    except ImportError:
        raise CltraceError(
            f"corpus {spec!r} is not a file, and reading Hugging Face datasets needs the optional "
            "'datasets' package; pip install datasets, or pass a text file."
        ) from None
    name, _, rest = spec.partition(":")
    split, _, column = rest.partition(":")
    try:
        ds = datasets.load_dataset(name, split=split or "train", streaming=True)
        docs = []
        for row in ds:
            if column and column not in row:
                raise CltraceError(
                    f"dataset {name!r} has no column {column!r} (it has {', '.join(row)}); "
                    f"pass hf:{name}:{split or 'train'}:COLUMN with one of those."
                )
            text = row[column] if column else (
                row.get("text") or next((v for v in row.values() if isinstance(v, str)), "")
            )  # fmt: skip
            text = text if isinstance(text, str) else ""
            if text.strip():
                docs.append(text)
            if n_docs is not None and len(docs) >= n_docs:
                break
    except CltraceError:
        raise
    except Exception as exc:  # datasets raises many types for a bad name or no network
        raise CltraceError(
            f"could not read dataset {name!r} ({type(exc).__name__}); check the name and the "
            "network, or pass a text file with one document per line."
        ) from exc
    return docs


def check_corpus_fits(source: str | None, model: str | None, option: str = "--corpus") -> None:
    """Refuse to default to the bundled synthetic corpus for a model other than the bundled one.

    ``source`` is the corpus the user named (None: none); ``model`` the model they named (None:
    the bundled model). The bundled corpus is written in the bundled model's vocabulary, so for
    any other model cltrace asks for a corpus instead of falling back to it silently; naming
    ``bundled`` explicitly still works (tiny test models share that vocabulary).
    """
    from pathlib import Path

    from cltrace.errors import UsageError
    from cltrace.paths import BUNDLED_MODEL_DIR

    if source is not None or model is None:
        return
    given = Path(model).expanduser()
    if given.exists() and given.resolve() == BUNDLED_MODEL_DIR.resolve():
        return
    raise UsageError(
        f"model {model!r} is not the bundled model, so the bundled synthetic corpus does not fit "
        f"it; pass {option} FILE (one document per line) or {option} hf:NAME[:SPLIT[:COLUMN]] "
        f"({option} bundled to use it anyway)."
    )
