"""The one corpus loader behind transcoders, interpret and score: each caller's sources."""

import sys

import pytest

from cltrace.corpus import load_texts
from cltrace.errors import CltraceError
from cltrace.interpret.corpus import load_corpus
from cltrace.score.texts import load_texts as score_texts
from cltrace.transcoders.data import load_texts as transcoder_texts


def test_every_caller_draws_the_same_bundled_documents():
    a = load_texts(None, 4, 5)
    assert len(a) == 4 and a == transcoder_texts("bundled", 4, 5) == load_corpus(None, 4, 5)
    assert a == score_texts(None, 4, 5) and a != load_texts(None, 4, 6)


def test_files_lists_and_escapes(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("def f():\\n    pass\n\n b \nc\n")
    assert transcoder_texts(str(f), 2, 0) == ["def f():\\n    pass", "b"]
    assert load_corpus(str(f), 2) == ["def f():\n    pass", "b"]
    assert score_texts(f, 1, 0) == ["def f():\\n    pass", "b", "c"]  # a file is read whole
    assert score_texts(["x", " ", "y"], 1, 0) == ["x", "y"]  # so is a list


@pytest.mark.parametrize("load", [load_corpus, lambda s, n: score_texts(s, n, 0)])
def test_a_missing_file_is_one_sentence(tmp_path, load):
    with pytest.raises(CltraceError, match=r"does not exist; pass a text file") as e:
        load(str(tmp_path / "nope.txt"), 3)
    assert str(e.value).count(". ") == 0 and str(e.value).endswith(".")


def test_datasets_need_the_optional_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    for call in (lambda: load_corpus("hf:some/set", 3), lambda: transcoder_texts("a/b", 3, 0)):
        with pytest.raises(CltraceError, match="pip install datasets"):
            call()
    with pytest.raises(CltraceError, match="does not exist"):
        load_corpus("a/b", 3)  # a bare name is a missing file to interpret
    with pytest.raises(CltraceError, match="holds no text"):
        score_texts([" "], 3, 0)


class _FakeDatasets:
    """Stands in for the optional ``datasets`` package: an endless stream of rows, counted."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.rows_read = 0

    def load_dataset(self, name, split, streaming):
        self.calls.append((name, split, streaming))

        def stream():
            i = 0
            while True:  # endless: a loader that does not stop at n would never return
                self.rows_read += 1
                yield {"id": i, "text": f"text {i}", "body": f"body {i}" if i % 2 else " "}
                i += 1

        return stream()


def test_datasets_are_streamed_by_split_and_column(monkeypatch):
    fake = _FakeDatasets()
    monkeypatch.setitem(sys.modules, "datasets", fake)
    assert load_corpus("hf:org/set", 2) == ["text 0", "text 1"]
    assert load_corpus("hf:org/set:validation:body", 2) == ["body 1", "body 3"]
    assert score_texts("hf:org/set::body", 3, 0) == ["body 1", "body 3", "body 5"]
    assert fake.calls == [("org/set", "train", True), ("org/set", "validation", True),
                          ("org/set", "train", True)]  # fmt: skip
    assert fake.rows_read == 2 + 4 + 6  # only as many rows as it took
    with pytest.raises(CltraceError, match=r"has no column 'txt' \(it has id, text, body\)"):
        load_corpus("hf:org/set:train:txt", 2)
