"""Usage errors: one line, exit 2, no traceback, through the installed console script."""

import pytest

from tests.cli.conftest import error_line, expect_error


def test_no_arguments_prints_help_and_exits_2(cli):
    done = cli()
    assert done.returncode == 2
    assert "Usage" in done.stderr + done.stdout and "Traceback" not in done.stderr


def test_bare_group_prints_help_and_exits_2(cli):
    done = cli("tasks")
    assert done.returncode == 2
    assert "make" in done.stdout + done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["pie", "--bogus"], ["--bogus", "cltrace pie --help"]),
        (["attribute", "--out", "g.json"], ["--prompt", "cltrace attribute --help"]),
        (["pie", "--n", "abc"], ["--n", "integer"]),
        (["pie", "--n", "0"], ["--n", "greater than or equal to 1"]),
        (["nosuch"], ["nosuch", "cltrace --help"]),
        (["tasks", "make", "--task", "ioi"], ["--out"]),
        (["attribute", "--prompt", "x", "--out", "g.json", "--batch-size", "0"], ["--batch-size"]),
        (["interpret", "--run", "r", "--explainer", "weightlenz"], ["'weightlenz'", "weightlens"]),
        (["evaluate", "--run", "r", "--rater", "lexcal"], ["'lexcal'", "lexical"]),
        (["evaluate", "--run", "r", "--variant", "fadee"], ["'fadee'", "pie-fade"]),
        (["tasks", "make", "--task", "ioi", "--out", "p.json", "--split", "test"], ["--split"]),
        (["tasks", "eval"], ["--task", "--data"]),
    ],
)
def test_parse_errors_are_one_line_exit_2(cli, tmp_path, args, fragments):
    done = cli(*args, cwd=tmp_path)
    expect_error(done, 2, *fragments)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_version(cli):
    done = cli("--version")
    assert done.returncode == 0 and done.stdout.startswith("cltrace ")


def test_debug_flag_shows_the_traceback(cli, tmp_path):
    done = cli("--debug", "tasks", "eval", "--data", tmp_path / "missing.json")
    assert done.returncode != 0 and "Traceback" in done.stderr
    plain = cli("tasks", "eval", "--data", tmp_path / "missing.json")
    assert plain.returncode == 1 and "missing.json" in error_line(plain)


def test_debug_environment_variable_shows_the_traceback(cli, tmp_path):
    done = cli("tasks", "eval", "--data", tmp_path / "missing.json", env={"CLTRACE_DEBUG": "1"})
    assert done.returncode != 0 and "Traceback" in done.stderr
