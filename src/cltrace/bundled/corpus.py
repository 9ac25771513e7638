"""The synthetic training corpus of the bundled model.

A seeded mix of task documents (drawn only from *train* combinations, see
:mod:`cltrace.tasks.split`) and varied filler text. Two recipes:

- ``two-tasks``: complete IOI sentences, complete Doc-String methods and filler (the first
  bundled model's corpus, kept so that model stays reproducible);
- ``four-tasks``: IOI, Doc-String methods that must be read by argument name, repeated random
  word sequences (induction) and "from the year 17YY to the year 17ZZ" sentences (greater-than),
  plus filler that also names years (:mod:`cltrace.bundled.recipes`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from cltrace.bundled.filler import FILLER_KINDS
from cltrace.bundled.recipes import (
    FOUR_TASKS_FILLER,
    docstring_run,
    greater_than_sentence,
    induction_repeat,
)
from cltrace.errors import UsageError
from cltrace.tasks.docstring import sample_docstring_code
from cltrace.tasks.ioi import sample_ioi_sentence

RECIPES = ("two-tasks", "four-tasks")
"""Corpus recipes by name."""


@dataclass(frozen=True)
class CorpusConfig:
    """What the corpus is made of."""

    n_docs: int = 60_000
    """Number of documents (one sentence group, method or snippet each)."""
    ioi_share: float = 0.45
    """Fraction of documents that are IOI sentences."""
    docstring_share: float = 0.2
    """Fraction that are Doc-String methods."""
    seed: int = 0
    """Seed of the document stream; the same seed gives the same corpus."""
    recipe: str = "two-tasks"
    """``two-tasks`` or ``four-tasks`` (see the module docstring)."""
    induction_share: float = 0.0
    """Fraction of repeated word sequences (``four-tasks`` only)."""
    greater_than_share: float = 0.0
    """Fraction of greater-than sentences (``four-tasks`` only); the rest of the documents is
    filler, spread evenly over the recipe's filler kinds."""
    stale_docstrings: float = 0.0
    """Fraction of ``four-tasks`` Doc-String methods whose docstring documents names that are not
    in the signature (:func:`cltrace.bundled.recipes.docstring_run`)."""

    @classmethod
    def four_tasks(cls, n_docs: int = 80_000, seed: int = 0) -> CorpusConfig:
        """The ``four-tasks`` mix."""
        return cls(
            n_docs=n_docs, seed=seed, recipe="four-tasks", ioi_share=0.25,
            docstring_share=0.22, induction_share=0.18, greater_than_share=0.12,
            stale_docstrings=0.15,
        )  # fmt: skip


def _samplers(
    cfg: CorpusConfig,
) -> tuple[list[tuple[str, Callable[[random.Random], str]]], list[tuple[str, Callable]]]:
    """``(task samplers in share order, filler kinds)`` of a recipe."""
    recipe = cfg.recipe
    if recipe == "two-tasks":
        return [
            ("ioi", lambda rng: sample_ioi_sentence(rng, "train")),
            ("docstring", lambda rng: sample_docstring_code(rng, "train")),
        ], list(FILLER_KINDS.items())
    if recipe == "four-tasks":
        return [
            ("ioi", lambda rng: sample_ioi_sentence(rng, "train")),
            ("docstring", lambda rng: docstring_run(rng, "train", cfg.stale_docstrings)),
            ("induction", lambda rng: induction_repeat(rng, "train")),
            ("greater_than", lambda rng: greater_than_sentence(rng, "train")),
        ], list(FOUR_TASKS_FILLER.items())
    raise UsageError(f"unknown corpus recipe {recipe!r}; use one of {', '.join(RECIPES)}.")


def generate_documents(cfg: CorpusConfig) -> list[tuple[str, str]]:
    """``cfg.n_docs`` ``(kind, text)`` pairs in a reproducible order; kind is a task name
    (``ioi``, ``docstring``, ``induction``, ``greater_than``) or a filler kind."""
    tasks, filler_kinds = _samplers(cfg)
    shares = [cfg.ioi_share, cfg.docstring_share, cfg.induction_share, cfg.greater_than_share]
    rng = random.Random(cfg.seed)
    docs = []
    for _ in range(cfg.n_docs):
        u, edge = rng.random(), 0.0
        for (kind, make), share in zip(tasks, shares, strict=False):
            edge += share  # cumulative, as the first corpus compared u with ioi + docstring
            if u < edge:
                docs.append((kind, make(rng)))
                break
        else:
            kind, make = rng.choice(filler_kinds)
            docs.append((kind, make(rng)))
    return docs


def generate_corpus(cfg: CorpusConfig) -> list[str]:
    """The texts of :func:`generate_documents`."""
    return [text for _, text in generate_documents(cfg)]
