"""Greater-than prompts, after Hanna et al. 2023 (docs/METHODS.md §4).

"The war lasted from the year 1732 to the year 17": a model that has the behaviour puts its
probability on two-digit endings greater than the start year's (33..99). Answers are every
ending ``YY' > YY``, wrong answers every ``YY' <= YY``, and the behaviour is measured by the
probability difference (``prob_diff``: answer mass minus wrong mass). The corruption sets the
start year's ending to ``01``, after which almost every ending is greater, so the clean
preference for ``> YY`` has no cue left.

The task needs a tokenizer that cuts a year into a two-digit prefix and a two-digit ending
(`` 17`` + ``32``), as GPT-2's does; :func:`make_greater_than_pairs` checks that and says so.
"""

from __future__ import annotations

import random

from cltrace.errors import CltraceError
from cltrace.tasks.pairs import Encoder, PromptPair, pair_problem, require_count
from cltrace.tasks.split import Split, split_of

NOUNS: tuple[str, ...] = (
    "war", "expedition", "siege", "voyage", "journey", "reign", "drought", "famine",
    "conflict", "campaign", "occupation", "dynasty", "revolt", "strike", "trial",
)  # fmt: skip
"""Events with a duration, as in the original task's templates."""

TEMPLATE = "The {noun} lasted from the year {century}{start:02d} to the year {century}"
CENTURY = "17"
YEARS = range(2, 99)
"""Start-year endings: both the answer and the wrong set are non-empty."""
CORRUPT_START = 1


def ending(yy: int) -> str:
    """The two-digit token of a year ending (``7`` -> ``"07"``)."""
    return f"{yy:02d}"


def greater_than_prompt(noun: str, start: int, century: str = CENTURY) -> str:
    return TEMPLATE.format(noun=noun, century=century, start=start)


def check_year_tokens(encoder: Encoder, century: str = CENTURY) -> None:
    """Raise unless the tokenizer reads `` 17YY`` as `` 17`` then ``YY`` for every ending."""
    prefix = encoder.encode(f" {century}", prepend_bos=False)
    for yy in range(100):
        try:
            tok = encoder.single_token_id(ending(yy))
        except Exception:
            tok = None
        if tok is None or encoder.encode(f" {century}{ending(yy)}", prepend_bos=False) != [
            *prefix,
            tok,
        ]:
            raise CltraceError(
                f"the greater_than task needs a tokenizer that reads a year such as "
                f"{century}{ending(yy)} as '{century}' then '{ending(yy)}' (GPT-2's does); this "
                "model's tokenizer does not, so use another task or model."
            )


def make_greater_than_pairs(
    encoder: Encoder, n: int, seed: int = 0, split: Split = "eval"
) -> list[PromptPair]:
    """``n`` greater-than pairs (see the module docstring); depends only on ``seed`` and the
    tokenizer. A (noun, start year) combination belongs to one split."""
    check_year_tokens(encoder)
    rng = random.Random(seed)
    pairs: list[PromptPair] = []
    for _ in range(50 * n + 100):
        if len(pairs) == n:
            break
        noun, start = rng.choice(NOUNS), rng.choice(YEARS)
        if split != "any" and split_of([noun, ending(start)]) != split:
            continue
        pair = PromptPair(
            clean=greater_than_prompt(noun, start),
            corrupt=greater_than_prompt(noun, CORRUPT_START),
            answers=tuple(ending(y) for y in range(start + 1, 100)),
            wrong_answers=tuple(ending(y) for y in range(0, start + 1)),
        )
        if pair_problem(pair, encoder) is None:
            pairs.append(pair)
    require_count("greater_than", pairs, n)
    return pairs


def sample_greater_than_sentence(rng: random.Random, split: Split = "train") -> str:
    """One complete sentence with an end year after the start year, for a training corpus."""
    for _ in range(10_000):
        noun, start = rng.choice(NOUNS), rng.choice(YEARS)
        if split == "any" or split_of([noun, ending(start)]) == split:
            end = rng.randint(start + 1, 99)
            return f"{greater_than_prompt(noun, start)}{ending(end)}."
    raise RuntimeError("no greater-than combination found")
