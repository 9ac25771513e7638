"""The LLM path of stages II and III from the command line, when the endpoint is missing, wrong,
dead, refusing or leaking the key, and when the run directory is damaged.

Every failure must exit with the right code and one ``error:`` line, and leave the earlier
output of the run (WeightLens descriptions, lexical scores) exactly as it was. The run directory
is built once per module with ``cltrace pie`` plus a lexical ``cltrace evaluate`` and copied per
test; the LLM commands use stage II's default store options, so they reuse the stored
activations and a failed run has nothing to rebuild.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import socket
import time
from pathlib import Path

import pytest

from cltrace.files import RunLock
from cltrace.llm.testing import EchoAuth, FakeChatServer, Reply, Status
from tests.cli.conftest import expect_error, snapshot, tiny_opts

SECRET = "sk-cltrace-test-key-never-stored-0123456789"
FAST_FAIL_S = 30
"""Wall-clock bound (s) for a command against a dead endpoint, process start and model load
included; without the circuit breaker the LLM rater kept retrying for minutes."""
STORE = ["--corpus", "bundled"]
"""The corpus ``cltrace pie`` stored the tiny model's activations from (named, since the tiny
model is not the bundled one); naming it again keeps the run's stores valid."""
PROGRESS_FILES = re.compile(r"^(llm_cache/.*|scores(_random)?\.partial\.json)$")
"""Files a failed LLM run may add: cached replies and stage III's resumable progress."""


@pytest.fixture(scope="module")
def base(cli, tiny, tmp_path_factory) -> Path:
    """A finished run (stage I, WeightLens stage II, lexical stage III) and a small corpus."""
    root = tmp_path_factory.mktemp("llm-faults")
    rng = random.Random(0)
    docs = [" ".join(f"w{rng.randrange(40)}" for _ in range(rng.randint(3, 9))) for _ in range(40)]
    (root / "corpus.txt").write_text("\n".join(docs) + "\n")
    run = root / "run"
    done = cli("pie", *tiny_opts(tiny), "--data", tiny / "pairs.json", "--budgets", "2,4",
               "--methods", "fap,random", "--stages", "prune,interpret", "--out", run,
               "--force", *STORE)  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = cli("evaluate", "--run", run, "--corpus", root / "corpus.txt", "--variant", "pie")
    assert done.returncode == 0, done.stderr
    assert (run / "descriptions.json").exists() and (run / "scores.json").exists()
    return root


@pytest.fixture
def run(base, tmp_path) -> Path:
    """A private copy of the finished run."""
    return Path(shutil.copytree(base / "run", tmp_path / "run"))


@pytest.fixture
def corpus(base) -> Path:
    return base / "corpus.txt"


@pytest.fixture
def server():
    with FakeChatServer(default=Reply("[EXPLANATION]: w-words")) as s:
        yield s


def interpret_llm(cli, run: Path, *opts, env=None, explainer="llm"):
    return cli("interpret", "--run", run, "--explainer", explainer, *STORE, *opts, env=env)


def evaluate_llm(cli, run: Path, corpus: Path, *opts, env=None):
    return cli("evaluate", "--run", run, "--rater", "llm", "--corpus", corpus, "--variant", "pie",
               *opts, env=env)  # fmt: skip


def closed_port_url() -> str:
    """An endpoint nobody listens on: a port the OS just handed out and that is free again."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def assert_intact(run: Path, before: dict[str, bytes], allow_progress: bool = False) -> None:
    """Every earlier file is byte-identical; nothing new except (if allowed) progress files."""
    after = snapshot(run)
    for name, data in before.items():
        assert after.get(name) == data, f"{name} changed or vanished"
    new = sorted(set(after) - set(before))
    if allow_progress:
        new = [n for n in new if not PROGRESS_FILES.match(n)]
    assert not new, new


def assert_key_absent(run: Path, done, key: str = SECRET) -> None:
    """The key is in no file under the run directory and in neither output stream."""
    assert key not in done.stdout and key not in done.stderr
    for path in run.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path


def n_kept(run: Path) -> int:
    return len(json.loads((run / "kept_features.json").read_text())["features"])


# ------------------------------------------------------------------ no endpoint, bad endpoint
def test_interpret_llm_without_an_endpoint_fails_before_any_work(cli, run):
    before = snapshot(run)
    done = interpret_llm(cli, run)
    expect_error(done, 2, "the llm explainer needs an endpoint", "--base-url",
                 "CLTRACE_LLM_BASE_URL", "OpenAI-compatible")  # fmt: skip
    assert "stage II" not in done.stdout  # nothing was scanned or explained
    assert_intact(run, before)


def test_circuitlens_llm_without_a_model_fails_before_any_work(cli, run, server):
    before = snapshot(run)
    done = interpret_llm(cli, run, "--base-url", server.base_url, explainer="circuitlens_llm")
    expect_error(done, 2, "the circuitlens_llm explainer needs a model name", "--model",
                 "CLTRACE_LLM_MODEL")  # fmt: skip
    assert not server.requests
    assert_intact(run, before)


def test_evaluate_llm_without_an_endpoint_fails_before_any_work(cli, run, corpus):
    before = snapshot(run)
    done = evaluate_llm(cli, run, corpus, "--model", "m")
    expect_error(done, 2, "the llm rater needs an endpoint", "--base-url",
                 "CLTRACE_LLM_BASE_URL")  # fmt: skip
    assert_intact(run, before)


@pytest.mark.parametrize(
    "command,url",
    [("interpret", "ftp://127.0.0.1/v1"), ("evaluate", "127.0.0.1:8000/v1")],
)
def test_base_url_without_http_scheme_is_a_usage_error(cli, run, corpus, command, url):
    before = snapshot(run)
    if command == "interpret":
        done = interpret_llm(cli, run, "--base-url", url, "--model", "m")
    else:
        done = evaluate_llm(cli, run, corpus, "--base-url", url, "--model", "m")
    expect_error(done, 2, f"--base-url '{url}' is not an http:// or https:// URL",
                 "http://127.0.0.1:8000/v1")  # fmt: skip
    assert_intact(run, before)


def test_bad_base_url_from_the_environment_names_the_variable(cli, run):
    before = snapshot(run)
    env = {"CLTRACE_LLM_BASE_URL": "file:///etc/passwd", "CLTRACE_LLM_MODEL": "m"}
    done = interpret_llm(cli, run, env=env)
    expect_error(done, 2, "CLTRACE_LLM_BASE_URL 'file:///etc/passwd' is not an http")
    assert_intact(run, before)


# ------------------------------------------------------------------ dead or refusing endpoint
def test_interpret_on_a_closed_port_fails_fast(cli, run):
    before = snapshot(run)
    url = closed_port_url()
    t0 = time.perf_counter()
    done = interpret_llm(cli, run, "--base-url", url, "--model", "m")
    assert time.perf_counter() - t0 < FAST_FAIL_S
    # found by the probe before the model is loaded (the breaker's own case is a unit test)
    expect_error(done, 1, f"the LLM endpoint {url} refused the connection",
                 "check that the server is running")  # fmt: skip
    assert "described" not in done.stdout
    assert_intact(run, before)


def test_evaluate_on_a_closed_port_fails_fast(cli, run, corpus):
    before = snapshot(run)
    url = closed_port_url()
    t0 = time.perf_counter()
    done = evaluate_llm(cli, run, corpus, env={"CLTRACE_LLM_BASE_URL": url,
                                               "CLTRACE_LLM_MODEL": "m"})  # fmt: skip
    assert time.perf_counter() - t0 < FAST_FAIL_S
    expect_error(done, 1, f"the LLM endpoint {url} refused the connection", "--base-url")
    assert_intact(run, before)


def test_interpret_401_echoing_the_key_fails_and_stores_no_key(cli, run, server):
    server.default = EchoAuth(401)
    before = snapshot(run)
    env = {"CLTRACE_LLM_API_KEY": SECRET}
    done = interpret_llm(cli, run, "--base-url", server.base_url, "--model", "m", env=env)
    expect_error(done, 1, "rejected the API key (HTTP 401) 3 times in a row",
                 "CLTRACE_LLM_API_KEY")  # fmt: skip
    assert server.auth_headers and all(h == f"Bearer {SECRET}" for h in server.auth_headers)
    assert len(server.requests) <= n_kept(run)  # 401 is never retried
    assert_key_absent(run, done)
    assert_intact(run, before)


def test_evaluate_401_echoing_the_key_fails_and_stores_no_key(cli, run, corpus, server):
    server.default = EchoAuth(401)
    before = snapshot(run)
    env = {"OPENAI_API_KEY": SECRET}
    done = evaluate_llm(cli, run, corpus, "--base-url", server.base_url, "--model", "m", env=env)
    expect_error(done, 1, "rejected the API key (HTTP 401)")
    assert server.auth_headers[0] == f"Bearer {SECRET}"
    assert_key_absent(run, done)
    assert_intact(run, before)


def test_interpret_403_fails(cli, run, server):
    server.default = Status(403, "forbidden")
    before = snapshot(run)
    done = interpret_llm(cli, run, "--base-url", server.base_url, "--model", "m")
    expect_error(done, 1, f"the LLM endpoint {server.base_url} rejected the API key (HTTP 403)")
    assert_intact(run, before)


def test_evaluate_404_names_the_path_it_asked_for(cli, run, corpus, server):
    server.default = Status(404, "no such model")
    before = snapshot(run)
    done = evaluate_llm(cli, run, corpus, "--base-url", server.base_url, "--model", "m")
    expect_error(done, 1, "answered HTTP 404", f"{server.base_url}/chat/completions",
                 "--base-url")  # fmt: skip
    assert_intact(run, before)


def test_interpret_on_an_always_500_endpoint_is_bounded_and_fails(cli, run, server):
    # the server asks for quick retries, so the bound shows without waiting out the backoff
    server.default = Status(500, "internal error", retry_after=0.01)
    before = snapshot(run)
    t0 = time.perf_counter()
    done = interpret_llm(cli, run, "--base-url", server.base_url, "--model", "m")
    assert time.perf_counter() - t0 < FAST_FAIL_S
    expect_error(done, 1, "failed 3 requests in a row with HTTP 500", "each tried 4 times")
    assert 3 * 4 <= len(server.requests) <= 4 * n_kept(run)  # 1 try + 3 retries per request
    assert_intact(run, before)


def test_interpret_on_an_endpoint_that_rejects_every_request_fails(cli, run, server):
    # 400 is about one request, so it never trips the breaker; answering none still fails
    server.default = Status(400, "bad request")
    before = snapshot(run)
    done = interpret_llm(cli, run, "--base-url", server.base_url, "--model", "m")
    expect_error(done, 1, f"the LLM endpoint {server.base_url} answered none of",
                 "HTTP 400")  # fmt: skip
    assert_intact(run, before)


# ------------------------------------------------------------------ earlier output survives
def _then(n_ok: int, ok, fail):
    """Answer the first ``n_ok`` requests with ``ok``, the rest with ``fail``."""
    seen = []

    def action(body):
        seen.append(1)
        return (ok(body) if callable(ok) else ok) if len(seen) <= n_ok else fail

    return action


def test_llm_interpret_failing_mid_run_keeps_weightlens_descriptions(cli, run, server):
    server.default = _then(2, Reply("[EXPLANATION]: w-words"), Status(401, "revoked"))
    descriptions = (run / "descriptions.json").read_bytes()
    before = snapshot(run)
    done = interpret_llm(cli, run, "--base-url", server.base_url, "--model", "m",
                         "--concurrency", "1")  # fmt: skip
    expect_error(done, 1, "rejected the API key (HTTP 401) 3 times in a row")
    assert len(server.requests) == 2 + 3  # two answers, then three refusals trip the breaker
    assert (run / "descriptions.json").read_bytes() == descriptions
    entries = json.loads(descriptions).values()
    assert all(e["explainer"].startswith("weightlens") for e in entries)
    assert_intact(run, before, allow_progress=True)  # the two answers are cached


def test_llm_evaluate_failing_mid_run_keeps_earlier_scores(cli, run, corpus, server):
    from tests.score.test_raters import _answer

    server.default = _then(3, _answer, Status(403, "quota gone"))
    scores = (run / "scores.json").read_bytes()
    before = snapshot(run)
    done = evaluate_llm(cli, run, corpus, "--base-url", server.base_url, "--model", "m")
    expect_error(done, 1, "rejected the API key (HTTP 403)")
    assert len(server.requests) > 3
    assert (run / "scores.json").read_bytes() == scores
    assert all(v["rater"] == "lexical" for v in json.loads(scores).values())
    assert_intact(run, before, allow_progress=True)


def test_reply_echoing_the_key_is_stored_redacted(cli, run, server):
    server.default = EchoAuth(200, "[EXPLANATION]: w-words (you sent {auth})")
    env = {"CLTRACE_LLM_API_KEY": SECRET}
    done = interpret_llm(cli, run, "--base-url", server.base_url, "--model", "m",
                         "--no-compare-random", env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    descs = json.loads((run / "descriptions.json").read_text())
    assert all(e["explainer"] == "llm" for e in descs.values())
    assert any("Bearer [redacted]" in e["description"] for e in descs.values())
    assert_key_absent(run, done)


# ------------------------------------------------------------------ damaged run directory
def test_corrupt_kept_features_is_one_line(cli, run):
    (run / "kept_features.json").write_text('{"features": [')
    before = snapshot(run)
    done = cli("interpret", "--run", run, *STORE)
    expect_error(done, 1, "kept_features.json is not valid JSON", f"cltrace pie --out {run}")
    assert_intact(run, before)


def test_corrupt_descriptions_is_one_line(cli, run, corpus):
    (run / "descriptions.json").write_text("{oops")
    before = snapshot(run)
    done = cli("evaluate", "--run", run, "--corpus", corpus)
    expect_error(done, 1, "descriptions.json is not valid JSON", "run stage II to write it",
                 f"cltrace interpret --run {run}")  # fmt: skip
    assert_intact(run, before)


@pytest.mark.parametrize("command", ["interpret", "evaluate"])
def test_corrupt_config_is_one_line(cli, run, corpus, command):
    (run / "config.json").write_text("not json at all")
    before = snapshot(run)
    extra = ["--corpus", corpus] if command == "evaluate" else []
    done = cli(command, "--run", run, *extra)
    expect_error(done, 1, "config.json is not valid JSON", "new --out")
    assert_intact(run, before)


@pytest.mark.parametrize("command", ["interpret", "evaluate"])
def test_missing_run_directory_is_one_line_and_not_created(cli, tmp_path, command):
    missing = tmp_path / "no-such-run"
    done = cli(command, "--run", missing)
    expect_error(done, 1, f"run directory {missing} does not exist", "--out of cltrace pie")
    assert not missing.exists()


def test_interpret_without_kept_features_asks_for_stage_one(cli, run):
    (run / "kept_features.json").unlink()
    before = snapshot(run)
    done = cli("interpret", "--run", run, *STORE)
    expect_error(done, 1, "has no kept_features.json", "run stage I first")
    assert_intact(run, before)


def test_run_directory_in_use_is_refused(cli, run, corpus):
    before = snapshot(run)
    with RunLock(run, command="cltrace test holder"):
        done = cli("evaluate", "--run", run, "--corpus", corpus)
    expect_error(done, 1, "is in use by another cltrace process", "cltrace test holder")
    assert_intact(run, before)
