"""The induction and greater-than generators: structure, corruption, splits, tokenizer checks."""

import random

import pytest
import torch

from cltrace.bundled.tokenizer import DIGIT_PAIR_PATTERN, build_tokenizer
from cltrace.errors import CltraceError
from cltrace.models import ModelAdapter
from cltrace.tasks import get_task, make_greater_than_pairs, make_induction_pairs, split_of
from cltrace.tasks.greater_than import NOUNS, sample_greater_than_sentence
from cltrace.tasks.induction import MAX_LEN, MIN_LEN


def test_induction_answer_follows_the_first_occurrence(tiny_adapter):
    pairs = make_induction_pairs(tiny_adapter, 40, seed=2)
    assert pairs == make_induction_pairs(tiny_adapter, 40, seed=2)
    for pair in pairs:
        words = pair.clean.split()
        answer, wrong = pair.answers[0].strip(), pair.wrong_answers[0].strip()
        # the clean prompt is seq + seq[:k] with distinct words: the repeat starts at the
        # second occurrence of the first word
        n = words.index(words[0], 1)
        seq, k = words[:n], len(words) - n
        assert MIN_LEN <= n <= MAX_LEN and 1 <= k < n and words[n:] == seq[:k]
        assert len(set(seq)) == n and answer == seq[k] and wrong in seq and wrong != answer
        assert split_of(seq) == "eval"
        corrupt = pair.corrupt.split()
        assert corrupt[n:] == words[n:]  # the repeat is kept
        assert not set(corrupt[:n]) & set(seq)  # the first occurrence is gone
        assert len(tiny_adapter.encode(pair.clean)) == len(tiny_adapter.encode(pair.corrupt))


@pytest.fixture(scope="module")
def year_adapter():
    """A tiny random GPT-2 over a tokenizer that cuts years into two-digit pieces."""
    from transformers import GPT2Config, GPT2LMHeadModel

    rng = random.Random(0)
    texts = [sample_greater_than_sentence(rng, "any") for _ in range(3000)]
    texts.append(" ".join(f"17{y:02d}" for y in range(100)))  # every ending once
    tok = build_tokenizer(texts, pattern=DIGIT_PAIR_PATTERN)
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=16, n_layer=1, n_head=2,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
    return ModelAdapter(GPT2LMHeadModel(cfg), tok, name="tiny-years")


def test_greater_than_sets_split_the_endings_at_the_start_year(year_adapter):
    pairs = make_greater_than_pairs(year_adapter, 30, seed=1)
    assert get_task("greater-than").metric == "prob_diff"
    for pair in pairs:
        start = int(pair.clean.split(" to ")[0][-2:])
        assert {int(a) for a in pair.answers} == set(range(start + 1, 100))
        assert {int(w) for w in pair.wrong_answers} == set(range(0, start + 1))
        assert pair.corrupt.split(" to ")[0].endswith("1701")
        assert pair.clean.split(" to ")[1] == pair.corrupt.split(" to ")[1] == "the year 17"
        noun = pair.clean.split()[1]
        assert noun in NOUNS and split_of([noun, f"{start:02d}"]) == "eval"
        assert len(year_adapter.encode(pair.clean)) == len(year_adapter.encode(pair.corrupt))


def test_greater_than_refuses_a_tokenizer_that_keeps_years_whole(tiny_adapter):
    with pytest.raises(CltraceError, match="reads a year such as"):
        make_greater_than_pairs(tiny_adapter, 3)
