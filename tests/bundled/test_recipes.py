"""The four-tasks corpus recipe: mix, reproducibility, held-out combinations, year pieces."""

import re
from collections import Counter
from itertools import combinations

import pytest
import torch

from cltrace.bundled import CorpusConfig, TrainConfig, build_tokenizer, generate_corpus
from cltrace.bundled.corpus import generate_documents
from cltrace.bundled.recipes import docstring_run, held_out_args
from cltrace.bundled.tokenizer import DIGIT_PAIR_PATTERN, split_pieces
from cltrace.errors import UsageError
from cltrace.models import ModelAdapter, load_model
from cltrace.tasks import get_task, split_of
from cltrace.tasks.docstring import N_ARGS
from cltrace.tasks.greater_than import NOUNS
from cltrace.tasks.words import NAMES

N_DOCS = 4000


@pytest.fixture(scope="module")
def docs():
    return generate_documents(CorpusConfig.four_tasks(n_docs=N_DOCS, seed=0))


@pytest.fixture(scope="module")
def adapter(docs):
    """A tiny random GPT-2 over the recipe's tokenizer: enough to generate task pairs."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = build_tokenizer([t for _, t in docs], pattern=DIGIT_PAIR_PATTERN)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=16, n_layer=1, n_head=2,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
    torch.manual_seed(0)
    return ModelAdapter(GPT2LMHeadModel(cfg), tok, name="tiny-four")


def words_of(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z]+|[0-9]{2}", text))


def test_reproducible_from_seed_and_old_recipe_untouched():
    cfg = CorpusConfig.four_tasks(n_docs=500, seed=3)
    assert generate_corpus(cfg) == generate_corpus(cfg)
    assert generate_corpus(cfg) != generate_corpus(CorpusConfig.four_tasks(n_docs=500, seed=4))
    # the two-tasks default still draws the same documents as before the recipes existed
    old = generate_corpus(CorpusConfig(n_docs=300, seed=0))
    assert not any(" lasted from the year " in d for d in old)
    assert old[:3] == generate_corpus(CorpusConfig(n_docs=3, seed=0))


def test_mix_holds_every_task_and_filler(docs):
    kinds = Counter(kind for kind, _ in docs)
    shares = {k: kinds[k] / N_DOCS for k in ("ioi", "docstring", "induction", "greater_than")}
    cfg = CorpusConfig.four_tasks()
    expected = (cfg.ioi_share, cfg.docstring_share, cfg.induction_share, cfg.greater_than_share)
    for share, want in zip(shares.values(), expected, strict=True):
        assert abs(share - want) < 0.03
    filler = N_DOCS - sum(kinds[k] for k in shares)
    assert kinds["years"] > 0 and filler > 0.15 * N_DOCS


def test_tokenizer_cuts_years_into_two_digit_pieces(adapter):
    assert split_pieces(" 1732 to 1705", DIGIT_PAIR_PATTERN) == [" 17", "32", " to", " 17", "05"]
    # every ending is one known token, as the greater_than task checks
    for yy in range(100):
        ids = adapter.encode(f" 17{yy:02d}", prepend_bos=False)
        assert adapter.tokenizer.convert_ids_to_tokens(ids) == [" 17", f"{yy:02d}"]


@pytest.mark.parametrize("task", ["ioi", "docstring", "induction", "greater_than"])
def test_eval_combinations_never_occur_together_in_training(docs, adapter, task):
    pairs = get_task(task).make_pairs(adapter, 60, seed=0)
    texts = [words_of(text) for _, text in docs]
    for pair in pairs:
        clean = pair.clean
        if task == "ioi":
            held = {pair.answers[0].strip(), pair.wrong_answers[0].strip()}
        elif task == "docstring":
            held = set(re.match(r"def \w+\(self, (.*)\):", clean).group(1).split(", "))
        elif task == "induction":
            words = clean.split()
            held = set(words[: words.index(words[0], 1)])
        else:
            held = {clean.split()[1], clean.split(" to ")[0][-2:]}
        assert split_of(held) == "eval"
        if task == "greater_than":  # nouns and endings all recur; only the start pair is held out
            assert not any(noun_and_start(kind, text) == held for kind, text in docs), held
        else:
            assert not any(held <= doc for doc in texts), (task, held)


def noun_and_start(kind: str, text: str) -> set[str] | None:
    """The (event noun, start-year ending) a greater-than sentence or year filler shows."""
    noun = next((w for w in re.findall(r"[a-z]+", text) if w in NOUNS), None)
    year = re.search(r" \d\d(\d\d)", text)
    if kind == "greater_than" or (kind == "years" and noun and year):
        return {noun, year.group(1)}
    return None


def test_training_combinations_lie_on_the_train_side(docs):
    for kind, text in docs:
        names = [w for w in re.findall(r"[A-Za-z]+", text) if w in NAMES]
        assert all(split_of(p) == "train" for p in combinations(set(names), 2)), text
        if kind == "docstring":
            args = re.match(r"def \w+\(self, (.*)\):", text).group(1).split(", ")
            assert held_out_args(args, "train")
            assert all(split_of(s) == "train" for s in combinations(args, N_ARGS))
        if kind == "greater_than":
            noun, start = text.split()[1], text.split(" to ")[0][-2:]
            assert noun in NOUNS and split_of([noun, start]) == "train"


def test_docstring_runs_cannot_be_solved_by_counting():
    """After two documented arguments, the next is the third argument only when the run starts
    at the first; reading the last documented name always gives the answer."""
    import random

    rng = random.Random(0)
    third, after_last = 0, 0
    cases = 0
    for _ in range(2000):
        text = docstring_run(rng)
        args = re.match(r"def \w+\(self, (.*)\):", text).group(1).split(", ")
        documented = re.findall(r":param (\w+):", text)
        assert documented == args[args.index(documented[0]) :][: len(documented)]  # a run
        if len(documented) >= 3:
            cases += 1
            third += documented[2] == args[2]
            after_last += documented[2] == args[args.index(documented[1]) + 1]
    assert after_last == cases and 0.2 < third / cases < 0.5


def test_recipe_presets():
    cfg = TrainConfig.recipe("four-tasks", seed=5)
    assert cfg.seed == 5 and cfg.pieces == "digit-pairs" and cfg.corpus.recipe == "four-tasks"
    assert TrainConfig.recipe("two-tasks") == TrainConfig()
    with pytest.raises(UsageError, match="unknown recipe"):
        TrainConfig.recipe("three-tasks")
    with pytest.raises(UsageError, match="unknown corpus recipe"):
        generate_corpus(CorpusConfig(n_docs=2, recipe="nope"))


def test_stale_docstrings_document_only_names_outside_the_signature():
    import random

    rng = random.Random(1)
    stale = 0
    for _ in range(400):
        text = docstring_run(rng, stale=0.5)
        args = re.match(r"def \w+\(self, (.*)\):", text).group(1).split(", ")
        documented = re.findall(r":param (\w+):", text)
        inside = [d in args for d in documented]
        assert all(inside) or not any(inside)  # a run of the signature, or stale throughout
        if not any(inside):
            stale += 1
            assert len(args) == N_ARGS and 1 <= len(documented) <= 3
            assert held_out_args(args + documented, "train")
    assert 150 < stale < 250


@pytest.mark.slow
def test_four_tasks_training_is_reproducible_and_reads_years(tmp_path):
    from dataclasses import replace

    from transformers import AutoModelForCausalLM

    from cltrace.bundled import train_model

    tiny = replace(
        TrainConfig.recipe("four-tasks", seed=2), steps=6, batch_size=8, warmup_steps=2,
        n_layers=1, d_model=32, n_heads=2, n_ctx=128, long_every=0,
        corpus=CorpusConfig.four_tasks(n_docs=600),
    )  # fmt: skip
    a = train_model(tmp_path / "a", tiny, progress=False)
    b = train_model(tmp_path / "b", tiny, progress=False)
    wa = AutoModelForCausalLM.from_pretrained(a).state_dict()
    wb = AutoModelForCausalLM.from_pretrained(b).state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    adapter = load_model(a)
    assert adapter.tokenizer.convert_ids_to_tokens(adapter.encode(" 1732", prepend_bos=False)) == [
        " 17", "32",
    ]  # fmt: skip


def test_new_answer_weights_mark_what_only_the_task_predicts():
    from cltrace.bundled.train import _answer_weights

    # bos w1 w2 w3 | w1 w2 w3 . eos: w2 and w3 of the repeat can be copied, the repeated w1 not
    induction = [1, 10, 11, 12, 10, 11, 12, 5, 2]
    assert _answer_weights("induction", induction, None, 4.0) == [
        0.0, 1.0, 1.0, 1.0, 1.0, 4.0, 4.0, 1.0, 1.0,
    ]  # fmt: skip
    years = [1, 30, 31, 17, 40, 32, 17, 41, 5, 2]  # ... 17 YY . eos
    assert _answer_weights("greater_than", years, None, 3.0)[-3] == 3.0
    assert sum(_answer_weights("greater_than", years, None, 3.0)) == 3.0 + 8  # BOS 0, rest 1


def test_cli_names_an_unknown_recipe(tmp_path):
    import subprocess

    res = subprocess.run(
        ["cltrace", "train", "model", "--recipe", "nope", "--out", str(tmp_path / "m")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "unknown recipe 'nope'; use one of two-tasks, four-tasks." in res.stderr
    assert not (tmp_path / "m").exists()


def test_corpus_loader_reads_a_recipe_by_name():
    from cltrace.corpus import load_texts

    want = generate_corpus(CorpusConfig.four_tasks(n_docs=50, seed=3))
    assert load_texts("bundled:four-tasks", 50, 3) == want
    assert load_texts("bundled:two-tasks", 50, 3) == load_texts("bundled", 50, 3)
    with pytest.raises(UsageError, match="unknown recipe 'x'"):
        load_texts("bundled:x", 5, 0)
