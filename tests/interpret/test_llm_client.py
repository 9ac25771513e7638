"""The chat client against the local fake server: success, cache, retries, failures, secrecy,
the required endpoint and the circuit breaker."""

import asyncio
import socket
import time

import pytest

from cltrace.errors import UsageError
from cltrace.llm import ChatClient, EndpointDown, LLMFailure, probe, redact, resolve_endpoint
from cltrace.llm.redact import REDACTED
from cltrace.llm.testing import Delay, EchoAuth, FakeChatServer, NoChoices, RawBody, Reply, Status

MSG = [{"role": "user", "content": "describe"}]
SECRET = "sk-test-do-not-leak-1234"


@pytest.fixture
def server():
    with FakeChatServer(default="fine") as s:
        yield s


def _client(server, **kw):
    opts = dict(base_url=server.base_url, model="fake", backoff=0.01, timeout=2.0)
    return ChatClient(**{**opts, **kw})


def test_success_sends_model_params_and_key(server, monkeypatch):
    monkeypatch.setenv("CLTRACE_LLM_API_KEY", SECRET)
    server.script(Reply("hello there"))
    out = _client(server).complete_many([MSG], temperature=0.2, max_tokens=16)
    assert out == ["hello there"]
    req = server.requests[0]
    assert req["model"] == "fake" and req["temperature"] == 0.2 and req["max_tokens"] == 16
    assert req["messages"] == MSG
    assert server.auth_headers[0] == f"Bearer {SECRET}"


def test_env_configures_base_url_and_model(server, monkeypatch):
    monkeypatch.setenv("CLTRACE_LLM_BASE_URL", server.base_url)
    monkeypatch.setenv("CLTRACE_LLM_MODEL", "env-model")
    c = ChatClient()
    assert c.complete_many([MSG]) == ["fine"]
    assert server.requests[0]["model"] == "env-model"


def test_cache_hit_makes_no_second_request_and_never_stores_key(server, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    c = _client(server, cache_dir=tmp_path / "cache")
    assert c.complete_many([MSG]) == ["fine"]
    c2 = _client(server, cache_dir=tmp_path / "cache")
    assert c2.complete_many([MSG]) == ["fine"]
    assert len(server.requests) == 1 and c2.n_cache_hits == 1
    files = list((tmp_path / "cache").rglob("*"))
    assert any(f.suffix == ".json" for f in files)
    for f in files:
        if f.is_file():
            assert SECRET not in f.read_text()
    assert SECRET not in repr(c)


def test_429_then_success_is_retried(server):
    server.script(Status(429, retry_after=0.01), Reply("after retry"))
    c = _client(server)
    assert c.complete_many([MSG]) == ["after retry"]
    assert len(server.requests) == 2 and c.n_requests == 2


def test_500_until_failure_is_recorded(server):
    server.script(*[Status(500)] * 10)
    out = _client(server, max_retries=2).complete_many([MSG, MSG])
    for f in out:
        assert isinstance(f, LLMFailure)
        assert f.reason == "http_status" and f.status == 500 and f.attempts == 3
    assert len(server.requests) == 6


def test_non_retryable_4xx_fails_at_once(server):
    server.script(Status(401, "bad key"))
    (f,) = _client(server).complete_many([MSG])
    assert isinstance(f, LLMFailure) and f.status == 401 and len(server.requests) == 1


def test_timeout_is_recorded(server):
    server.script(Delay(1.5), Delay(1.5))
    (f,) = _client(server, timeout=0.3, max_retries=1).complete_many([MSG])
    assert isinstance(f, LLMFailure) and f.reason == "timeout" and f.attempts == 2


def test_connection_error_is_recorded():
    with FakeChatServer() as s:
        url = s.base_url
    (f,) = ChatClient(base_url=url, model="m", max_retries=1, backoff=0.01).complete_many([MSG])
    assert isinstance(f, LLMFailure) and f.reason in ("connection", "timeout")


@pytest.mark.parametrize(
    "action,reason",
    [(RawBody("{not json"), "malformed"), (NoChoices(), "malformed"), (Reply("  "), "empty")],
)
def test_malformed_and_missing_content_are_failures(server, action, reason):
    server.script(action)
    out = _client(server).complete_many([MSG])
    assert isinstance(out[0], LLMFailure) and out[0].reason == reason


def test_many_requests_keep_order_under_concurrency(server):
    server.default = lambda body: Reply(body["messages"][0]["content"].upper())
    msgs = [[{"role": "user", "content": f"m{i}"}] for i in range(12)]
    out = _client(server, concurrency=3).complete_many(msgs)
    assert out == [f"M{i}" for i in range(12)]


# ------------------------------------------------------------------ no implicit endpoint
@pytest.fixture
def no_env(monkeypatch):
    """No endpoint or model in the environment, and no proxy (the probe would defer to it)."""
    for name in ("CLTRACE_LLM_BASE_URL", "CLTRACE_LLM_MODEL", "http_proxy", "HTTP_PROXY",
                 "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


def test_no_endpoint_is_a_usage_error_and_nothing_is_sent(no_env):
    with pytest.raises(UsageError, match="needs an endpoint; pass --base-url or set CLTRACE_LLM"):
        ChatClient(model="m")


def test_no_model_is_a_usage_error(no_env, server):
    with pytest.raises(UsageError, match="needs a model name; pass --model or set CLTRACE_LLM"):
        ChatClient(base_url=server.base_url)
    assert not server.requests


@pytest.mark.parametrize("url", ["ftp://host/v1", "127.0.0.1:8000/v1", "http://", "http://h:x/v1"])
def test_bad_url_is_a_usage_error(no_env, url):
    with pytest.raises(UsageError, match="is not an http:// or https:// URL"):
        ChatClient(base_url=url, model="m")


def test_credentials_in_the_url_are_refused_without_being_echoed(no_env):
    with pytest.raises(UsageError, match="holds a user name or password") as info:
        ChatClient(base_url="http://user:hunter22@127.0.0.1:9/v1", model="m")
    assert "hunter22" not in str(info.value) and "CLTRACE_LLM_API_KEY" in str(info.value)


# ------------------------------------------------------------------ circuit breaker
def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_closed_port_trips_the_breaker_within_seconds():
    url = _closed_port_url()
    c = ChatClient(base_url=url, model="m", backoff=0.05)
    t0 = time.perf_counter()
    with pytest.raises(EndpointDown, match="refused the connection 3 times in a row") as info:
        c.complete_many([MSG] * 20)
    assert time.perf_counter() - t0 < 5
    assert url in str(info.value) and "--base-url" in str(info.value)
    # queued conversations were never sent: at most one wave beyond the limit
    assert c.n_requests <= 3 + c.concurrency
    with pytest.raises(EndpointDown):  # and it stays open
        c.complete_many([MSG])


@pytest.mark.parametrize("status", [401, 403, 404])
def test_refusing_statuses_are_not_retried_and_trip_the_breaker(server, status):
    server.default = Status(status, "nope")
    c = _client(server, concurrency=1)
    with pytest.raises(EndpointDown, match=f"HTTP {status}") as info:
        c.complete_many([MSG] * 10)
    assert len(server.requests) == 3  # one request each, no retries
    if status == 404:
        assert "/chat/completions" in str(info.value)
    else:
        assert "CLTRACE_LLM_API_KEY" in str(info.value)


def test_always_500_is_bounded_and_trips_the_breaker(server):
    server.default = Status(500, "boom")
    c = _client(server, concurrency=1, max_retries=2)
    with pytest.raises(EndpointDown, match="failed 3 requests in a row with HTTP 500"):
        c.complete_many([MSG] * 10)
    assert len(server.requests) == 3 * 3  # 3 requests x (1 + 2 retries)


def test_isolated_failures_on_a_working_endpoint_are_only_recorded(server):
    server.script(Status(401), RawBody("{not json"), Status(404), Reply("ok 1"), Status(403))
    c = _client(server, concurrency=1)
    out = c.complete_many([MSG] * 7)
    assert [isinstance(o, LLMFailure) for o in out] == [True, True, True, False, True, False,
                                                         False]  # fmt: skip
    c.check_answered()  # some answers came: no error


def test_endpoint_that_answers_nothing_usable_fails_check_answered(server):
    server.default = Status(400, "bad request")
    c = _client(server)
    out = c.complete_many([MSG] * 5)
    assert all(isinstance(o, LLMFailure) for o in out)  # 400 is per request: no trip
    with pytest.raises(EndpointDown, match="answered none of 5 request"):
        c.check_answered()


def test_endpoint_down_propagates_from_inside_a_running_loop():
    c = ChatClient(base_url=_closed_port_url(), model="m", backoff=0.01)

    async def in_notebook():
        return c.complete_many([MSG] * 6)

    with pytest.raises(EndpointDown):
        asyncio.run(in_notebook())


# ------------------------------------------------------------------ key redaction
def test_echoed_key_in_a_401_body_is_redacted(server, monkeypatch):
    monkeypatch.setenv("CLTRACE_LLM_API_KEY", SECRET)
    server.script(EchoAuth(401))
    (f,) = _client(server).complete_many([MSG])
    assert isinstance(f, LLMFailure) and f.status == 401
    assert SECRET not in str(f) and REDACTED in f.detail
    assert server.auth_headers[0] == f"Bearer {SECRET}"  # it was sent, just never kept


def test_echoed_key_in_a_long_error_body_is_redacted_before_truncation(server, monkeypatch):
    monkeypatch.setenv("CLTRACE_LLM_API_KEY", SECRET)
    # the key straddles the detail's cut: cutting before redacting would leave a prefix
    server.script(Status(400, "x" * 190 + f" key={SECRET}"))
    (f,) = _client(server).complete_many([MSG])
    assert SECRET[:8] not in f.detail


def test_echoed_key_in_a_reply_is_redacted_before_caching(server, monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    server.script(EchoAuth(200, "[EXPLANATION]: you sent {auth}"))
    c = _client(server, cache_dir=tmp_path / "cache")
    (text,) = c.complete_many([MSG])
    assert text == f"[EXPLANATION]: you sent Bearer {REDACTED}"
    for f in (tmp_path / "cache").rglob("*.json"):
        assert SECRET not in f.read_text()


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer abc.def-123",
        '{"headers": {"authorization": "Bearer abc.def-123"}}',
        '{"Authorization": "abc.def-123"}',
        "api_key=abc.def-123",
        '{"x-api-key": "abc.def-123"}',
    ],
)
def test_credential_echoes_are_redacted_without_knowing_the_key(text):
    out = redact(text)
    assert "abc.def-123" not in out and REDACTED in out


def test_redaction_leaves_ordinary_replies_alone():
    assert redact("Bearer tokens and keys", ["sk-zz"], echoes=False) == "Bearer tokens and keys"
    assert redact("ab ab", ["ab"]) == "ab ab"  # too short to be a key


# ------------------------------------------------------------------ probe before the work
def test_probe_reports_a_closed_port_without_sending_anything(no_env):
    url = _closed_port_url()
    with pytest.raises(EndpointDown, match="refused the connection; check that the server"):
        probe(resolve_endpoint(url, "m"))


def test_probe_passes_a_listening_server_and_sends_no_request(server):
    probe(resolve_endpoint(server.base_url, "m"))
    assert not server.requests


def test_probe_reports_an_unknown_host(no_env):
    with pytest.raises(EndpointDown, match="could not be reached"):
        probe(resolve_endpoint("http://no-such-host.invalid:8000/v1", "m"))


def test_probe_leaves_proxied_endpoints_to_the_proxy(no_env, monkeypatch):
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:3128")
    monkeypatch.setenv("no_proxy", "")
    probe(resolve_endpoint(_closed_port_url(), "m"))  # no error: only the proxy can tell
