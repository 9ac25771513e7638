"""Induction prompts: a random word sequence, then its beginning again (docs/METHODS.md §4).

The clean prompt is a sequence of 6 to 12 distinct words, followed by its first ``k`` words
again (``1 <= k < len``); the answer is the word that followed them the first time, ``seq[k]``,
and the wrong answer is another word of the sequence. Only copying from the first occurrence can
predict the answer. The corruption replaces the first occurrence by other random words of the
same length, so the repeat has nothing to copy (the model can only guess) while every position
and the answer tokens stay the same. Words are drawn from the task word pools and kept only if
they are one token (with a leading space) in the given tokenizer.
"""

from __future__ import annotations

import random

from cltrace.tasks.pairs import Encoder, PromptPair, pair_problem, require_count
from cltrace.tasks.split import Split, split_of
from cltrace.tasks.words import ARG_WORDS, DOC_WORDS, NAMES, OBJECTS, PLACES

MIN_LEN = 6
MAX_LEN = 12
"""Length range of the random word sequence."""

WORD_POOL: tuple[str, ...] = tuple(dict.fromkeys(NAMES + PLACES + OBJECTS + ARG_WORDS + DOC_WORDS))
"""Candidate words (deduplicated, in a fixed order)."""


def single_token_words(encoder: Encoder, pool: tuple[str, ...] = WORD_POOL) -> list[str]:
    """The words of ``pool`` that are one known token with a leading space."""
    out = []
    for word in pool:
        try:
            encoder.single_token_id(f" {word}")
        except Exception:  # the tokenizer splits it or does not know it
            continue
        out.append(word)
    return out


def sample_sequence(rng: random.Random, pool: list[str], split: Split) -> list[str]:
    """Distinct random words whose (unordered) set lies on ``split``."""
    for _ in range(10_000):
        words = rng.sample(pool, rng.randint(MIN_LEN, MAX_LEN))
        if split == "any" or split_of(words) == split:
            return words
    raise RuntimeError(f"no {split} word sequence found in a pool of {len(pool)} words")


def induction_text(words: list[str], k: int) -> str:
    """``words`` then its first ``k`` words again (no trailing answer)."""
    return " " + " ".join(words) + " " + " ".join(words[:k])


def sample_induction_text(rng: random.Random, pool: list[str], split: Split = "train") -> str:
    """One complete repeated sequence (the whole sequence, then a prefix of it and its next
    word) for a training corpus."""
    words = sample_sequence(rng, pool, split)
    k = rng.randint(1, len(words) - 1)
    return induction_text(words, k + 1) + "."


def make_induction_pairs(
    encoder: Encoder, n: int, seed: int = 0, split: Split = "eval"
) -> list[PromptPair]:
    """``n`` induction pairs (see the module docstring); depends only on ``seed`` and the
    tokenizer. Sequences are drawn from ``split`` (default: sets the bundled corpus holds out).

    The split is decided per word *set*; a longer training sequence can still contain an eval
    set, which for independent random draws has a chance of about 4e-8 per pair of sequences.
    """
    pool = single_token_words(encoder)
    if len(pool) < 2 * MAX_LEN:
        require_count("induction", [], n)
    # A stream of its own: seeded with the bare integer, the first draws repeated those of a
    # corpus generated with the same seed, so a few eval sequences sat inside training ones.
    rng = random.Random(f"induction-pairs-{seed}")
    pairs: list[PromptPair] = []
    for _ in range(50 * n + 100):
        if len(pairs) == n:
            break
        words = sample_sequence(rng, pool, split)
        k = rng.randint(1, len(words) - 1)
        others = [w for w in pool if w not in words]
        fresh = rng.sample(others, len(words))
        wrong = rng.choice([w for i, w in enumerate(words) if i != k])
        pair = PromptPair(
            clean=induction_text(words, k),
            corrupt=" " + " ".join(fresh) + " " + " ".join(words[:k]),
            answers=(f" {words[k]}",),
            wrong_answers=(f" {wrong}",),
        )
        if pair_problem(pair, encoder) is None:
            pairs.append(pair)
    require_count("induction", pairs, n)
    return pairs
