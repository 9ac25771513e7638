"""Bad user input through the installed ``cltrace``: one line, the right exit code, nothing lost.

The tiny model's tokenizer knows ``w0 … w199`` only, and its context is 512 positions, so
``foo`` is an unknown word and 600 words are too long. Every case runs in its own directory and
checks, by a snapshot, that the failed command changed nothing in it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.cli.conftest import expect_error, snapshot, tiny_opts

LONG = " ".join(["w1"] * 600)  # 601 tokens with BOS; the tiny model's context is 512


def _pair(clean="w1 w2 w3", corrupt="w4 w5 w6", answers=(" w7",), wrong=(" w8",)) -> dict:
    return {"clean": clean, "corrupt": corrupt, "answers": list(answers),
            "wrong_answers": list(wrong)}  # fmt: skip


def _pairs_file(directory: Path, *pairs: dict, name: str = "pairs.json") -> Path:
    path = directory / name
    path.write_text(json.dumps({"prompts": [_pair(), *pairs]}))
    return path


def _warnings(done) -> list[str]:
    return [ln for ln in done.stderr.splitlines() if ln.startswith("warning:")]


def _unchanged(cli, directory: Path, *args, code: int, fragments: tuple[str, ...]) -> str:
    """Run a command that must fail, and show it left ``directory`` exactly as it was."""
    before, paths = snapshot(directory), sorted(directory.rglob("*"))
    done = cli(*args, cwd=directory)
    line = expect_error(done, code, *fragments)
    assert snapshot(directory) == before  # every file whole and unchanged
    assert sorted(directory.rglob("*")) == paths  # no new file or folder, not even empty
    return line


# ---------------------------------------------------------------- attribute --prompt / --target


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--prompt", "w1 foo w2"], ("--prompt has the word 'foo'", "--allow-unk")),
        (
            ["--prompt", "w1 w2", "--target", " zebra"],
            ("--target ' zebra' is not in the vocabulary", "<unk>"),
        ),
        (
            ["--prompt", "w1 w2", "--target", "w3", "--target", " w1 w2"],
            ("--target ' w1 w2' is 2 tokens", "single token"),
        ),
        (["--prompt", ""], ("--prompt is empty",)),
        (["--prompt", "  \t "], ("--prompt is empty",)),
        (["--prompt", LONG], ("--prompt is 601 tokens with BOS", "context", "512 tokens")),
    ],
    ids=["unknown-word", "unknown-target", "multi-token-target", "empty", "whitespace", "long"],
)
def test_attribute_refuses_text_the_model_cannot_use(cli, tiny, tmp_path, extra, fragments):
    out = tmp_path / "graphs" / "g.json"
    done = cli("attribute", *tiny_opts(tiny), *extra, "--out", out)
    expect_error(done, 2, *fragments)
    assert done.stdout == ""  # no graph was computed
    assert list(tmp_path.iterdir()) == []  # the graph folder made up front is gone again


def test_attribute_allow_unk_warns_once_and_writes_the_graph(cli, tiny, tmp_path):
    out = tmp_path / "g.json"
    done = cli("attribute", *tiny_opts(tiny), "--prompt", "w1 foo w2 foo", "--out", out,
               "--allow-unk", "--max-feature-nodes", "4")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert _warnings(done) == [
        "warning: --prompt has the word 'foo' that the tokenizer does not know; unknown words "
        "are read as <unk>."
    ]
    assert json.loads(out.read_text())["metadata"]["prompt_tokens"][2] == "<unk>"


def test_attribute_keeps_an_existing_graph_folder_on_a_bad_target(cli, tiny, tmp_path):
    # an earlier run's files (their content does not matter: the command must not touch them)
    (tmp_path / "old.json").write_text('{"metadata": {"slug": "old"}}')
    (tmp_path / "graph-metadata.json").write_text('{"graphs": [{"slug": "old"}]}')
    _unchanged(cli, tmp_path, "attribute", *tiny_opts(tiny), "--prompt", "w1 w2", "--target",
               " zebra", "--out", tmp_path / "new.json", code=2,
               fragments=("--target ' zebra'",))  # fmt: skip


def test_attribute_out_under_a_file_fails_before_any_work(cli, tiny, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    out = tmp_path / "notes.txt" / "g.json"
    line = _unchanged(
        cli,
        tmp_path,
        "attribute",
        *tiny_opts(tiny),
        "--prompt",
        "w1 w2",
        "--out",
        out,
        code=1,
        fragments=("notes.txt is a file", "pass another path"),
    )
    assert "graph folder" in line


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory no one may create folders in, root included."""
    if os.geteuid() == 0:
        # root ignores permission bits; sysfs refuses new folders to every user, root included
        if not Path("/sys/kernel").is_dir():
            pytest.skip("running as root without sysfs: no read-only place root cannot write")
        yield Path("/sys")
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        yield ro
        ro.chmod(0o755)  # so pytest can remove it


def test_attribute_out_in_a_read_only_dir_fails_before_any_work(cli, tiny, read_only_dir):
    out = read_only_dir / "cltrace-graphs" / "g.json"
    done = cli("attribute", *tiny_opts(tiny), "--prompt", "w1 w2", "--out", out)
    expect_error(done, 1, "cannot create the graph folder", "pass a path you can write to")
    assert done.stdout == "" and not out.parent.exists()


# ---------------------------------------------------------------- pair files: tasks eval / pie


@pytest.mark.parametrize(
    ("pair", "fragments"),
    [
        (_pair(clean="w1 foo w3"), ("pair 1's clean prompt has the word 'foo'", "--allow-unk")),
        (_pair(corrupt="w4 w5 bar"), ("pair 1's corrupt prompt has the word 'bar'",)),
        (_pair(answers=(" zebra",)), ("pair 1's answer ' zebra' is not in the vocabulary",)),
        (_pair(wrong=(" w8 w9",)), ("pair 1's wrong answer ' w8 w9' is 2 tokens",)),
        (_pair(corrupt="w4 w5"), ("pair 1 has clean and corrupt prompts of different token",)),
        (
            _pair(clean=LONG, corrupt=LONG),
            ("pair 1's clean prompt is 601 tokens with BOS", "512 tokens"),
        ),
        (_pair(clean=" "), ("pair 1's clean prompt is empty",)),
    ],
    ids=[
        "unknown-clean",
        "unknown-corrupt",
        "unk-answer",
        "multi-token-answer",
        "unequal",
        "too-long",
        "empty-clean",
    ],  # fmt: skip
)
def test_tasks_eval_names_the_file_pair_and_prompt(cli, tiny, tmp_path, pair, fragments):
    path = _pairs_file(tmp_path, pair)
    _unchanged(cli, tmp_path, "tasks", "eval", "--model", tiny / "model", "--data", path,
               code=1, fragments=(str(path), *fragments))  # fmt: skip


def test_tasks_eval_allow_unk_warns_once_and_scores(cli, tiny, tmp_path):
    path = _pairs_file(tmp_path, _pair(clean="w1 foo w3"), _pair(corrupt="foo w5 bar"))
    done = cli("tasks", "eval", "--model", tiny / "model", "--data", path, "--allow-unk",
               "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    (warning,) = _warnings(done)
    assert f"2 pair(s) of {path} hold the words 'foo', 'bar'" in warning
    assert json.loads(done.stdout)["n"] == 3


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        (os.urandom(10 * 1024 * 1024), ("is not UTF-8 text", "write pairs as JSON or JSONL")),
        (b'{"pairs": [{"clean": "w1"}]}', ('is a JSON object without a "prompts" list',)),
        (b"3.5", ("holds a JSON number, not prompt pairs",)),
        (b'"w1 w2"', ("holds a JSON string, not prompt pairs",)),
        (b"", ("is empty", "docs/PAIR_FILES.md")),
    ],
    ids=["random-bytes", "no-prompts", "number", "string", "empty"],
)
def test_a_file_that_is_not_pairs_is_one_sentence(cli, tiny, tmp_path, content, fragments):
    path = tmp_path / "pairs.json"
    path.write_bytes(content)
    line = _unchanged(cli, tmp_path, "tasks", "eval", "--model", tiny / "model", "--data", path,
                      code=1, fragments=(str(path), *fragments))  # fmt: skip
    assert "not valid JSON" not in line and "FORMATS" not in line


def test_a_directory_or_missing_file_as_pairs(cli, tiny, tmp_path):
    (tmp_path / "pairs").mkdir()
    _unchanged(cli, tmp_path, "tasks", "eval", "--data", tmp_path / "pairs", code=1,
               fragments=("pairs is a directory, not a pair file",))  # fmt: skip
    _unchanged(cli, tmp_path, "tasks", "eval", "--data", tmp_path / "nope.json", code=1,
               fragments=("cannot read the pair file", "nope.json", "No such file"))  # fmt: skip


def test_pie_refuses_an_unknown_word_before_making_its_run_directory(cli, tiny, tmp_path):
    path = _pairs_file(tmp_path, _pair(corrupt="w4 bar w6"))
    run = tmp_path / "run"
    _unchanged(cli, tmp_path, "pie", *tiny_opts(tiny), "--data", path, "--out", run,
               "--corpus", "bundled", code=1,
               fragments=(str(path), "pair 1's corrupt prompt has the word 'bar'"))  # fmt: skip


def test_pie_allow_unk_warns_once_and_runs(cli, tiny, tmp_path):
    path = _pairs_file(tmp_path, _pair(clean="w1 foo w3"))
    done = cli("pie", *tiny_opts(tiny), "--data", path, "--out", tmp_path / "run", "--allow-unk",
               "--stages", "prune", "--budgets", "2", "--methods", "fap", "--force")  # fmt: skip
    assert done.returncode == 0, done.stderr
    # one warning for the unknown word (the other says --force went on without a behaviour)
    (warning,) = [w for w in _warnings(done) if "--force" not in w]
    assert "the word 'foo'" in warning
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["n_prompts"] == 2


# ---------------------------------------------------------------- tasks make --out


def test_tasks_make_out_under_a_file(cli, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    _unchanged(cli, tmp_path, "tasks", "make", "--task", "ioi", "--n", "2", "--out",
               tmp_path / "notes.txt" / "pairs.json", code=1,
               fragments=("notes.txt is a file", "pass another path"))  # fmt: skip


def test_tasks_make_out_a_directory(cli, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.json").write_text("{}")
    _unchanged(
        cli,
        tmp_path,
        "tasks",
        "make",
        "--task",
        "ioi",
        "--n",
        "2",
        "--out",
        tmp_path / "out",
        code=1,
        fragments=("out is a directory", "out/pairs.json"),
    )


def test_tasks_eval_metric_choice_and_refusals(cli, tmp_path):
    done = cli("tasks", "eval", "--task", "ioi", "--n", "6", "--metric", "prob-diff", "--json")
    assert done.returncode == 0, done.stderr
    rec = json.loads(done.stdout)
    assert rec["metric"] == "prob_diff" and 0.0 <= rec["mean_metric"] <= 1.0
    assert rec["top1_accuracy"] <= 1.0 and rec["n"] == 6
    expect_error(cli("tasks", "eval", "--task", "ioi", "--metric", "accuracy"), 2,
                 "unknown metric", "prob_diff")  # fmt: skip
    # the bundled word-level tokenizer keeps years whole: one sentence says so
    expect_error(cli("tasks", "make", "--task", "greater_than", "--n", "4", "--out",
                     tmp_path / "gt.json"), 1, "greater_than", "tokenizer")  # fmt: skip
