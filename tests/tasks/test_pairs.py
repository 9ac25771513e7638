import json

import pytest

from cltrace.errors import CltraceError
from cltrace.tasks import PromptPair, check_pairs, parse_pairs, read_pairs, write_pairs

GOOD = PromptPair(
    clean="When Mary and John went to the store, John gave a book to",
    corrupt="When Alice and Bob went to the store, Tom gave a book to",
    answers=(" Mary",),
    wrong_answers=(" John",),
)


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_round_trip(tmp_path, suffix):
    other = PromptPair("a b", "c d", (" x", " y"), (" z",))
    path = write_pairs(tmp_path / f"pairs{suffix}", [GOOD, other])
    assert read_pairs(path).pairs == [GOOD, other]


def test_json_keeps_optional_keys(tmp_path):
    path = tmp_path / "p.json"
    obj = {"prompts": [GOOD.to_json()], "seq_labels": ["a", "b"], "word_idxs": {"IO": [2]}}
    path.write_text(json.dumps(obj))
    pair_set = read_pairs(path)
    assert pair_set.extra == {"seq_labels": ["a", "b"], "word_idxs": {"IO": [2]}}
    write_pairs(tmp_path / "q.json", pair_set)
    assert json.loads((tmp_path / "q.json").read_text()) == obj


def test_single_jsonl_line_and_string_answer():
    line = json.dumps({**GOOD.to_json(), "answers": " Mary"})
    assert parse_pairs(line).pairs == [GOOD]


def _error(tmp_path, text, name="bad.jsonl", encoder=None) -> str:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(CltraceError) as info:
        pairs = read_pairs(path).pairs
        check_pairs(pairs, encoder, str(path))
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    return message


def test_missing_field_names_index(tmp_path):
    bad = {k: v for k, v in GOOD.to_json().items() if k != "wrong_answers"}
    text = json.dumps(GOOD.to_json()) + "\n" + json.dumps(bad) + "\n"
    message = _error(tmp_path, text)
    assert "pair 1" in message and "wrong_answers" in message


def test_malformed_json_names_index(tmp_path):
    text = json.dumps(GOOD.to_json()) + "\n" + '{"clean": "x",\n'
    assert "pair 1" in _error(tmp_path, text)


def test_prompts_not_a_list(tmp_path):
    assert "prompts" in _error(tmp_path, '{"prompts": 3}', name="bad.json")


def test_unequal_lengths_names_index(tmp_path, tiny_adapter):
    corrupt = "When Alice went to the store, Tom gave a book to"
    short = PromptPair(GOOD.clean, corrupt, GOOD.answers, GOOD.wrong_answers)
    text = json.dumps({"prompts": [GOOD.to_json(), GOOD.to_json(), short.to_json()]})
    message = _error(tmp_path, text, "bad.json", tiny_adapter)
    assert "pair 2" in message and "token lengths" in message


def test_multi_token_answer_names_index(tmp_path, tiny_adapter):
    bad = PromptPair(GOOD.clean, GOOD.corrupt, (" Mary Ann",), GOOD.wrong_answers)
    message = _error(tmp_path, json.dumps(bad.to_json()), encoder=tiny_adapter)
    assert "pair 0" in message and "2 tokens" in message


def test_unknown_answer_is_reported(tmp_path, tiny_adapter):
    bad = PromptPair(GOOD.clean, GOOD.corrupt, (" Zebedee",), GOOD.wrong_answers)
    assert "vocabulary" in _error(tmp_path, json.dumps(bad.to_json()), encoder=tiny_adapter)


def test_missing_file(tmp_path):
    with pytest.raises(CltraceError, match="cannot read"):
        read_pairs(tmp_path / "nope.json")


# ---------------------------------------------------------------- files that are not pairs


def _read_error(path) -> str:
    with pytest.raises(CltraceError) as info:
        read_pairs(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    return message


def test_random_bytes_are_not_utf8_text(tmp_path):
    path = tmp_path / "noise.json"
    path.write_bytes(bytes(range(256)) * 64)
    assert "is not UTF-8 text" in _read_error(path)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ('{"pairs": []}', 'JSON object without a "prompts" list'),
        ("42", "holds a JSON number"),
        ('"clean"', "holds a JSON string"),
        ("null", "holds a JSON null"),
        ("  \n", "is empty"),
    ],
)
def test_json_that_is_not_pairs_says_what_it_is(tmp_path, content, fragment):
    path = tmp_path / "p.json"
    path.write_text(content)
    message = _read_error(path)
    assert fragment in message and "not valid JSON" not in message
    assert "FORMATS" not in message


def test_a_byte_order_mark_is_allowed(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"prompts": [GOOD.to_json()]}).encode())
    assert read_pairs(path).pairs == [GOOD]


def test_a_directory_is_not_a_pair_file(tmp_path):
    assert "is a directory" in _read_error(tmp_path)


def test_one_pretty_printed_pair_is_a_file_of_one_pair(tmp_path):
    path = tmp_path / "one.json"
    path.write_text(json.dumps(GOOD.to_json(), indent=2))
    assert read_pairs(path).pairs == [GOOD]


# ---------------------------------------------------------------- pairs the tokenizer refuses


def _check_error(pairs, tiny_adapter, **kw) -> str:
    with pytest.raises(CltraceError) as info:
        check_pairs(pairs, tiny_adapter, "p.json", **kw)
    assert "\n" not in str(info.value)
    return str(info.value)


def _with(**fields) -> PromptPair:
    return PromptPair(**{**GOOD.__dict__, **fields})


def test_unknown_words_name_pair_and_prompt(tiny_adapter):
    clean = GOOD.clean.replace("store", "Zyxwvut")
    message = _check_error([GOOD, _with(clean=clean)], tiny_adapter)
    assert "p.json: pair 1's clean prompt" in message and "'Zyxwvut'" in message
    assert "--allow-unk" in message
    corrupt = GOOD.corrupt.replace("book", "qqq")
    message = _check_error([_with(corrupt=corrupt)], tiny_adapter)
    assert "pair 0's corrupt prompt" in message and "'qqq'" in message


def test_allow_unk_warns_once_for_the_file(tiny_adapter):
    a = _with(clean=GOOD.clean.replace("store", "Zyxwvut"))
    b = _with(corrupt=GOOD.corrupt.replace("book", "qqq"))
    with pytest.warns(UserWarning) as caught:
        check_pairs([a, GOOD, b, a], tiny_adapter, "p.json", allow_unk=True)
    assert len(caught) == 1
    text = str(caught[0].message)
    assert "3 pair(s) of p.json" in text and "'Zyxwvut', 'qqq'" in text and "<unk>" in text


def test_unknown_answer_is_refused_with_index(tiny_adapter):
    message = _check_error([GOOD, _with(wrong_answers=(" Zyxwvut",))], tiny_adapter)
    assert "pair 1's wrong answer ' Zyxwvut' is not in the vocabulary" in message
    # an unknown word is refused even with allow_unk: an answer must be a real token
    message = _check_error([_with(answers=(" Zyxwvut",))], tiny_adapter, allow_unk=True)
    assert "pair 0's answer" in message


def test_too_long_and_empty_prompts_name_the_pair(tiny_adapter):
    # the fixture's model has a 128-position context
    long = _with(clean=" ".join(["Mary"] * 130), corrupt=" ".join(["John"] * 130))
    message = _check_error([GOOD, long], tiny_adapter)
    assert "pair 1's clean prompt is 131 tokens with BOS" in message and "128 tokens" in message
    message = _check_error([_with(clean=" ")], tiny_adapter)
    assert "pair 0's clean prompt is empty" in message


def test_generators_skip_pairs_the_checks_refuse(tiny_adapter):
    from cltrace.tasks.pairs import pair_problem

    assert pair_problem(GOOD, tiny_adapter) is None
    problem = pair_problem(_with(clean=GOOD.clean.replace("store", "Zyxwvut")), tiny_adapter)
    assert "'Zyxwvut'" in problem


# ---------------------------------------------------------------- writing


def test_write_pairs_refuses_a_folder_under_a_file_and_a_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("keep")
    with pytest.raises(CltraceError, match="is a file"):
        write_pairs(blocker / "p.json", [GOOD])
    with pytest.raises(CltraceError, match="is a directory"):
        write_pairs(tmp_path, [GOOD])
    assert blocker.read_text() == "keep"


def test_failed_write_keeps_the_earlier_file(tmp_path, monkeypatch):
    import cltrace.files

    path = write_pairs(tmp_path / "p.json", [GOOD])
    before = path.read_bytes()

    def fail(*_a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cltrace.files.os, "replace", fail)
    with pytest.raises(OSError):
        write_pairs(path, [GOOD, GOOD])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json"]  # no temporary left
