"""The adapter's checks of user text: unknown words, the model's context, empty prompts."""

import pytest

from cltrace.errors import CltraceError, UsageError
from cltrace.models import ModelAdapter, load_model
from cltrace.models.adapter import describe_words
from cltrace.testing import tiny_model


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("gpt2")  # words w0 … w199, context 512


@pytest.fixture(scope="module")
def bundled():
    return load_model()  # word-level: " word" tokens, context 1,024


def test_unknown_words_of_the_tiny_tokenizer(tiny):
    assert tiny.unk_token_id == tiny.tokenizer.unk_token_id
    assert tiny.unknown_words("w1 w2 w3") == []
    # each unknown word once, in order of appearance
    assert tiny.unknown_words("w1 foo w2 bar.baz foo") == ["foo", "bar.baz"]


def test_unknown_words_without_offsets_match(tiny, monkeypatch):
    # slow tokenizers give no offsets: the words are found by re-encoding them one by one
    monkeypatch.setattr(tiny, "_offsets", lambda *_a: None)
    assert tiny.unknown_words("w1 foo w2 bar.baz foo") == ["foo", "bar.baz"]


def test_unknown_words_of_the_bundled_tokenizer(bundled):
    assert bundled.unknown_words("When Mary and John went to the store") == []
    text = "When Mary met Zyxwvut. and Jöhn went, qq"
    # pieces of one word ("J", "ö", "hn") are reported as that word; punctuation stays out
    assert bundled.unknown_words(text) == ["Zyxwvut", "Jöhn", "qq"]
    # the vocabulary holds " When" only at a sentence start without the space
    assert bundled.unknown_words("Mary said When") == ["When"]


def test_a_tokenizer_whose_unk_is_its_eos_knows_every_word(tiny):
    # byte-level BPE tokenizers (GPT-2's) call their end-of-text token "unk" but spell any text
    tok = tiny.tokenizer.__class__(
        tokenizer_object=tiny.tokenizer.backend_tokenizer, bos_token="<bos>",
        eos_token="<eos>", unk_token="<eos>",
    )  # fmt: skip
    adapter = ModelAdapter(tiny.hf_model, tok)
    assert adapter.unk_token_id is None
    assert adapter.unknown_words("w1 foo") == []


def test_context_and_length_check(tiny, bundled):
    assert (tiny.n_ctx, bundled.n_ctx) == (512, 1024)
    tiny.check_length(512)  # BOS included: exactly the context fits
    with pytest.raises(CltraceError, match="513 tokens with BOS.*is 512 tokens"):
        tiny.check_length(513)
    with pytest.raises(UsageError, match="--prompt is 1025 tokens"):
        bundled.check_length(1025, "--prompt", UsageError)


def test_check_prompt(tiny, bundled):
    assert tiny.check_prompt("w1 w2") == []
    for empty in ("", "  \n "):
        with pytest.raises(CltraceError, match="the prompt is empty"):
            tiny.check_prompt(empty)
    with pytest.raises(UsageError, match=r"--prompt has the word 'foo' .*--allow-unk"):
        tiny.check_prompt("w1 foo", "--prompt", error=UsageError)
    assert tiny.check_prompt("w1 foo w2 foo", allow_unk=True) == ["foo"]
    with pytest.raises(CltraceError, match="601 tokens with BOS.*512"):
        tiny.check_prompt(" ".join(["w1"] * 600))
    with pytest.raises(CltraceError, match="1101 tokens with BOS.*1024"):
        bundled.check_prompt("Mary" + " Mary" * 1099)
    # an unknown word is reported before the length: it is the first thing to fix
    with pytest.raises(CltraceError, match="'foo'"):
        tiny.check_prompt("foo " * 600, allow_unk=False)


def test_single_token_id_refuses_unknown_and_multi_token(tiny, bundled):
    assert tiny.single_token_id(" w5") == 9
    with pytest.raises(CltraceError, match=r"--target ' w5 w6' is 2 tokens.*single token"):
        tiny.single_token_id(" w5 w6", what="--target")
    with pytest.raises(CltraceError, match=r"answer ' zebra' is not in the vocabulary"):
        tiny.single_token_id(" zebra")
    with pytest.raises(CltraceError, match="Zyxwvut.*<unk>"):
        bundled.single_token_id(" Zyxwvut")


def test_describe_words():
    assert describe_words(["a"]) == "the word 'a'"
    assert describe_words(list("abcdefg"), limit=2) == "the words 'a', 'b' and 5 more"
