"""Doc-String prompts (Heimersheim & Janiak 2023), in the layout of docs/METHODS.md §4.

The prompt is a method signature with four arguments and a docstring that has documented the
first two; it stops at the third ``:param``, so the answer is the third argument name. The
distractor is one of the other three argument names. The "random doc" corruption replaces the
argument names in the docstring's ``:param`` lines with other words, removing the order cue while
keeping the signature and every token position.
"""

from __future__ import annotations

import random

from cltrace.tasks.pairs import Encoder, PromptPair, pair_problem, require_count
from cltrace.tasks.split import Split, sample_combination
from cltrace.tasks.words import ARG_WORDS, DOC_WORDS, FUNCTION_NAMES

N_ARGS = 4
"""Arguments after ``self`` in every task prompt."""


def signature(fn: str, args: list[str]) -> str:
    return f"def {fn}(self, {', '.join(args)}):\n"


def docstring_prompt(
    fn: str, args: list[str], doc_args: list[str], summary: str, descriptions: list[str]
) -> str:
    """Signature with ``args``; the docstring documents ``doc_args`` (two of them) then stops.

    ``descriptions`` gives one two-word text per documented argument.
    """
    lines = [signature(fn, args), f'    """{summary}\n', "\n"]
    for name, text in zip(doc_args, descriptions, strict=True):
        lines.append(f"    :param {name}: {text}\n")
    lines.append("    :param")
    return "".join(lines)


def two_doc_words(rng: random.Random) -> str:
    """Two docstring words, as every description line uses."""
    return " ".join(rng.sample(DOC_WORDS, 2))


def method_text(
    rng: random.Random, fn: str, args: list[str], header: str, documented: list[str]
) -> str:
    """A method ``fn(self, *args)`` whose docstring has ``header`` and one ``:param`` line per
    ``documented`` argument, sometimes a ``:return`` line, and a return statement."""
    lines = [signature(fn, args), f'    """{header}\n', "\n"]
    lines += [f"    :param {a}: {two_doc_words(rng)}\n" for a in documented]
    if rng.random() < 0.5:
        lines.append(f"    :return: {two_doc_words(rng)}\n")
    lines.append('    """\n')
    lines.append(f"    return self.{rng.choice(args)}\n")
    return "".join(lines)


def sample_docstring_code(rng: random.Random, split: Split = "train") -> str:
    """A complete method with a docstring documenting every argument, for a training corpus.

    Uses 2 to 4 arguments; a 4-argument tuple always comes from ``split``, and shorter tuples
    cannot contain a held-out 4-tuple, so the eval combinations never occur in training.
    """
    n_args = rng.choice((2, 3, 4, 4, 4, 4))
    if n_args == N_ARGS:
        args = sample_combination(rng, ARG_WORDS, n_args, split)
    else:
        args = rng.sample(ARG_WORDS, n_args)
    fn = rng.choice(FUNCTION_NAMES)
    header = two_doc_words(rng)
    documented = list(args)
    if len(args) > 2 and rng.random() < 0.4:
        # Skipping one argument means the next :param is "the argument after the last one
        # documented", which must be read from the names; always documenting every argument in
        # order would let a model count :param lines instead.
        documented.pop(rng.randrange(len(args) - 1))
    return method_text(rng, fn, args, header, documented)


def make_docstring_pairs(
    encoder: Encoder, n: int, seed: int = 0, split: Split = "eval"
) -> list[PromptPair]:
    """``n`` Doc-String pairs with random-doc corruption.

    The argument 4-tuple is drawn from ``split`` (default: tuples the bundled model never trained
    on). Pairs with multi-token answers or unequal clean/corrupt lengths are skipped. The result
    depends only on ``seed`` and the tokenizer.
    """
    rng = random.Random(seed)
    pairs: list[PromptPair] = []
    for _ in range(50 * n + 100):
        if len(pairs) == n:
            break
        args = sample_combination(rng, ARG_WORDS, N_ARGS, split)
        fn = rng.choice(FUNCTION_NAMES)
        summary = two_doc_words(rng)
        descriptions = [two_doc_words(rng), two_doc_words(rng)]
        fresh = rng.sample([w for w in ARG_WORDS if w not in args], 2)
        distractor = rng.choice([args[0], args[1], args[3]])
        pair = PromptPair(
            clean=docstring_prompt(fn, args, args[:2], summary, descriptions),
            corrupt=docstring_prompt(fn, args, fresh, summary, descriptions),
            answers=(f" {args[2]}",),
            wrong_answers=(f" {distractor}",),
        )
        if pair_problem(pair, encoder) is None:
            pairs.append(pair)
    require_count("Doc-String", pairs, n)
    return pairs
