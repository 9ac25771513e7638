"""Run the installed ``cltrace`` console script in a subprocess, so the real parser runs.

``cli`` runs one command line and returns the finished process; ``expect_error`` asserts the
contract every failure keeps: the exit code, exactly one ``error:`` line on stderr containing the
given fragments, and no traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cltrace.tasks import write_pairs
from cltrace.testing import save_tiny_assets
from tests.pie.test_run import PAIRS

CLTRACE = shutil.which("cltrace")


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLTRACE_LLM", "OPENAI_"))}
    env.pop("CLTRACE_DEBUG", None)
    env.update({"CLTRACE_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                "COLUMNS": "200", "NO_COLOR": "1"})  # fmt: skip
    env.update(extra or {})
    return env


@pytest.fixture(scope="session")
def cli():
    """``cli(*args, env={...}, cwd=..., timeout=...)`` runs ``cltrace args...``."""
    assert CLTRACE, "the cltrace console script is not installed (pip install -e .)"

    def run(*args, env=None, cwd=None, timeout=300, input=None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [CLTRACE, *map(str, args)], capture_output=True, text=True, timeout=timeout,
            env=_env(env), cwd=cwd, input=input, stdin=None if input is not None else
            subprocess.DEVNULL,
        )  # fmt: skip

    return run


def error_line(done: subprocess.CompletedProcess) -> str:
    """The one ``error:`` line of a failed run (asserts there is exactly one, no traceback)."""
    assert "Traceback" not in done.stderr, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, done.stderr
    return lines[0]


def expect_error(done: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    """Assert ``done`` failed with ``code`` and one error line holding every fragment."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    line = error_line(done)
    for frag in fragments:
        assert frag.lower() in line.lower(), (frag, line)
    _log_case(done, line)
    return line


def _log_case(done: subprocess.CompletedProcess, line: str) -> None:
    """With ``CLTRACE_CLI_CASES=FILE``, append the command, exit code and message of each case
    (the list of cases and messages a release note quotes comes from a real run)."""
    log = os.environ.get("CLTRACE_CLI_CASES")
    if log:
        args = [Path(a).name if os.sep in str(a) else str(a) for a in done.args[1:]]
        with open(log, "a", encoding="utf-8") as f:
            f.write(
                json.dumps(
                    {
                        "test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0],
                        "args": args,
                        "code": done.returncode,
                        "line": line,
                    }
                )
                + "\n"
            )


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    """A saved tiny GPT-2 (word tokenizer ``w0 … w199``), a random CLT and a 4-pair file."""
    root = tmp_path_factory.mktemp("cli-tiny")
    save_tiny_assets(root, "gpt2", d_features=16)
    write_pairs(root / "pairs.json", PAIRS)
    return root


def tiny_opts(root: Path) -> list[str]:
    return ["--model", str(root / "model"), "--transcoder", str(root / "clt")]


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (relative path -> bytes), to show nothing was lost."""
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != ".lock"}  # fmt: skip
