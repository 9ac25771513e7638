"""Document samplers of the ``four-tasks`` corpus recipe.

The ``two-tasks`` recipe (IOI, Doc-String and filler) let a model pass Doc-String by counting
``:param`` lines and never showed it a repeated word sequence or a year. The ``four-tasks``
recipe adds what the four circuit tasks need, each drawn only from *train* combinations
(:mod:`cltrace.tasks.split`), so every task prompt of the ``eval`` split is unseen:

- ``docstring``: the documented arguments are a contiguous run of the signature that often starts
  after the first argument, so the next ``:param`` is "the argument after the last one
  documented" and counting lines no longer predicts it.
- ``induction``: a sequence of 6-12 distinct words of the task pool, then its beginning again.
- ``greater_than``: "The war lasted from the year 17YY to the year 17ZZ." with ZZ > YY.
- ``years``: filler with years of every ending, so each two-digit token is known.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from itertools import combinations

from cltrace.bundled.filler import FILLER_KINDS
from cltrace.tasks.docstring import N_ARGS, method_text, two_doc_words
from cltrace.tasks.greater_than import CENTURY, NOUNS, ending, greater_than_prompt
from cltrace.tasks.induction import WORD_POOL, sample_sequence
from cltrace.tasks.split import Split, split_of
from cltrace.tasks.words import ARG_WORDS, FUNCTION_NAMES, NAMES

DOC_START_AT_FIRST = 0.15
"""Share of training docstrings whose documented run starts at the first argument (the task
prompt's layout); the others start at a random later argument. With 0.15, the third documented
argument is the third of the signature in about a third of the methods that document three, so
counting ``:param`` lines predicts it badly and reading the last documented name predicts it
always."""


def held_out_args(args: list[str], split: Split) -> bool:
    """True when every ``N_ARGS``-subset of ``args`` lies on ``split``, so no task tuple of the
    other split hides inside a longer training signature."""
    if split == "any" or len(args) < N_ARGS:
        return True
    return all(split_of(sub) == split for sub in combinations(args, N_ARGS))


def sample_arguments(rng: random.Random, n_args: int, split: Split) -> list[str]:
    """``n_args`` distinct argument names whose ``N_ARGS``-subsets all lie on ``split``."""
    for _ in range(10_000):
        args = rng.sample(ARG_WORDS, n_args)
        if held_out_args(args, split):
            return args
    raise RuntimeError(f"no {split} argument tuple of length {n_args} found")


def docstring_run(rng: random.Random, split: Split = "train", stale: float = 0.0) -> str:
    """A method whose docstring documents a contiguous run ``args[start:stop]``.

    With probability ``stale`` the docstring is stale instead: it documents one to three names
    that are not in the signature (as after a rename), so the next ``:param`` is not a
    signature argument either. A model then learns that the signature's order says nothing
    once the documented names do not match it.
    """
    if stale and rng.random() < stale:  # no draw at 0, so such corpora stay as they were
        return _stale_docstring(rng, split)
    n_args = rng.choice((4, 5, 5))
    args = sample_arguments(rng, n_args, split)
    start = 0 if rng.random() < DOC_START_AT_FIRST else rng.randrange(1, n_args)
    stop = rng.randint(start + 1, n_args)
    return _method(rng, args, args[start:stop])


def _stale_docstring(rng: random.Random, split: Split) -> str:
    """A 4-argument method documenting 1-3 other names; every ``N_ARGS``-subset of all the
    argument names in it lies on ``split``."""
    args = sample_arguments(rng, N_ARGS, split)
    for _ in range(10_000):
        old = rng.sample([w for w in ARG_WORDS if w not in args], rng.randint(1, 3))
        if held_out_args(args + old, split):
            return _method(rng, args, old)
    raise RuntimeError("no stale docstring found")


def _method(rng: random.Random, args: list[str], documented: list[str]) -> str:
    fn = rng.choice(FUNCTION_NAMES)
    return method_text(rng, fn, args, two_doc_words(rng), documented)


def no_eval_combination(words: list[str], split: Split = "train") -> bool:
    """True when every pair of names and every ``N_ARGS``-subset of argument names among
    ``words`` lies on ``split``: a document holding them cannot show an IOI name pair or a
    Doc-String tuple of the other split together."""
    if split == "any":
        return True
    names = [w for w in words if w in NAMES]
    args = [w for w in words if w in ARG_WORDS]
    return all(split_of(p) == split for p in combinations(names, 2)) and held_out_args(args, split)


def induction_repeat(rng: random.Random, split: Split = "train") -> str:
    """A random sequence of task-pool words, then its first ``k + 1`` words again and a full
    stop (``1 <= k < len``). The word set lies on ``split``, and so do the name pairs and
    argument tuples inside it (:func:`no_eval_combination`)."""
    for _ in range(10_000):
        words = sample_sequence(rng, list(WORD_POOL), split)
        if no_eval_combination(words, split):
            break
    else:
        raise RuntimeError("no induction sequence found")
    k = rng.randint(1, len(words) - 1)
    return " " + " ".join(words) + " " + " ".join(words[: k + 1]) + "."


def greater_than_sentence(rng: random.Random, split: Split = "train") -> str:
    """ "The {noun} lasted from the year 17YY to the year 17ZZ." with ``ZZ`` uniform above
    ``YY``; ``YY`` runs over 00..98, and (noun, YY) lies on ``split``."""
    for _ in range(10_000):
        noun, start = rng.choice(NOUNS), rng.randrange(0, 99)
        if split == "any" or split_of([noun, ending(start)]) == split:
            return f"{greater_than_prompt(noun, start)}{ending(rng.randint(start + 1, 99))}."
    raise RuntimeError("no greater-than combination found")


def years(rng: random.Random) -> str:
    """Filler that names single years of every two-digit ending (and other centuries); an event
    noun comes only with an ending it may have in a train greater-than prompt."""
    century = CENTURY if rng.random() < 0.7 else rng.choice(("15", "16", "18", "19"))
    yy = ending(rng.randrange(100))
    nouns = [n for n in NOUNS if split_of([n, yy]) == "train"]
    year = f"{century}{yy}"
    forms = (
        f"{rng.choice(NAMES)} was born in {year}.",
        f"The {rng.choice(nouns)} began in the year {year}.",
        f"In {year}, the {rng.choice(nouns)} ended.",
        f"The town was built in the year {year}.",
    )
    return rng.choice(forms)


def people(rng: random.Random) -> str:
    """The ``people`` filler, with a name pair of the train split."""
    while True:
        text = FILLER_KINDS["people"](rng)
        if no_eval_combination(re.findall(r"[A-Za-z]+", text)):
            return text


FOUR_TASKS_FILLER: dict[str, Callable[[random.Random], str]] = {
    **FILLER_KINDS,
    "people": people,
    "years": years,
}
"""Filler kinds of the ``four-tasks`` recipe."""
