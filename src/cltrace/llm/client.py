"""An OpenAI-compatible chat-completions client: async, bounded concurrency, retries, disk cache.

Only the standard library is used (``urllib`` in worker threads driven by ``asyncio``), so the
client adds no dependency. The API key is read from the environment (``CLTRACE_LLM_API_KEY``,
falling back to ``OPENAI_API_KEY``) at construction and only ever sent in the ``Authorization``
header: it is not part of the cache key and not in ``repr``, and it is redacted from every
reply and error body before anything is cached, stored in a failure or raised, because servers
echo it back (:mod:`cltrace.llm.redact`).

A dead or refusing endpoint stops the run instead of turning every feature into a recorded
failure: after ``max_consecutive_failures`` requests in a row that could not connect, timed out,
were refused (401, 403, 404) or ran out of retries on 5xx, the client raises
:class:`EndpointDown` (a :class:`~cltrace.errors.CltraceError`) and sends nothing more.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cltrace.llm.cache import ResponseCache, cache_key
from cltrace.llm.endpoint import (
    ENV_KEYS,
    EndpointDown,
    display_url,
    resolve_endpoint,
)
from cltrace.llm.redact import redact

BREAKER_STATUSES = frozenset({401, 403, 404})
"""HTTP statuses that say the endpoint (or the key) is wrong, not this one request: never
retried, and counted towards the circuit breaker."""
ERROR_BODY_BYTES = 4096
"""How much of an error body is read; it is redacted whole, then cut to ``ERROR_DETAIL_CHARS``
(cutting first could split the key and leave a prefix the redaction no longer recognises)."""
ERROR_DETAIL_CHARS = 200

Message = dict[str, str]
"""One chat message: ``{"role": "system" | "user" | "assistant", "content": "..."}``."""


@dataclass(frozen=True)
class LLMFailure:
    """Why a request produced no text (returned by :meth:`ChatClient.complete_many`)."""

    reason: str
    """``timeout``, ``connection``, ``http_status``, ``malformed`` or ``empty``."""
    detail: str = ""
    """A short human-readable explanation (never contains the API key)."""
    status: int | None = None
    """The last HTTP status for ``http_status`` failures."""
    attempts: int = 1
    """How many HTTP requests were made before giving up."""

    def __str__(self) -> str:
        code = f" {self.status}" if self.status is not None else ""
        return f"{self.reason}{code} after {self.attempts} attempt(s): {self.detail}"


class LLMError(Exception):
    """Raised by :meth:`ChatClient.complete`; carries the :class:`LLMFailure`."""

    def __init__(self, failure: LLMFailure):
        super().__init__(str(failure))
        self.failure = failure


class _Retryable(Exception):
    def __init__(self, reason: str, detail: str, status: int | None = None, wait: float = 0.0):
        super().__init__(detail)
        self.reason, self.detail, self.status, self.wait = reason, detail, status, wait


class _Breaker:
    """Counts requests in a row that failed for endpoint-wide reasons; trips at ``limit``.

    Any reply from the server that is not such a failure (a completion, a malformed body, a
    400) shows the endpoint is alive and resets the count; 429s and single 5xx attempts neither
    count nor reset (they are retried, and only a request that runs out of retries counts).
    """

    def __init__(self, limit: int):
        self.limit = max(1, int(limit))
        self.count = 0
        self.tripped: str | None = None  # the message once tripped

    def ok(self) -> None:
        if self.tripped is None:
            self.count = 0

    def fail(self, failure: LLMFailure, url: str, tries: int) -> None:
        if self.tripped is not None:
            return
        self.count += 1
        if self.count >= self.limit:
            self.tripped = _down_message(failure, url, self.count, tries)


def _down_message(f: LLMFailure, url: str, n: int, tries: int) -> str:
    """One sentence naming the endpoint, what went wrong ``n`` times in a row, and the fix."""
    where = f"the LLM endpoint {url}"
    if f.reason == "connection":
        if "refused" in f.detail.lower():
            return (f"{where} refused the connection {n} times in a row; check that the server "
                    "is running and --base-url (or CLTRACE_LLM_BASE_URL).")  # fmt: skip
        return (f"{where} could not be reached {n} times in a row ({f.detail}); check that the "
                "server is running and --base-url (or CLTRACE_LLM_BASE_URL).")  # fmt: skip
    if f.reason == "timeout":
        return (f"{where} did not answer {n} requests in a row ({f.detail}); check that the "
                "server is up and not overloaded.")  # fmt: skip
    if f.status in (401, 403):
        return (f"{where} rejected the API key (HTTP {f.status}) {n} times in a row; set "
                f"{ENV_KEYS[0]} (or {ENV_KEYS[1]}) to a key this server accepts.")  # fmt: skip
    if f.status == 404:
        return (f"{where} answered HTTP 404 for {url}/chat/completions {n} times in a row; check "
                "--base-url (it usually ends in /v1) and --model.")  # fmt: skip
    return (f"{where} failed {n} requests in a row with HTTP {f.status} (each tried {tries} "
            "times); check the server's log or try again later.")  # fmt: skip


class ChatClient:
    """Chat completions against ``{base_url}/chat/completions``.

    ``base_url`` and ``model`` default to ``$CLTRACE_LLM_BASE_URL`` / ``$CLTRACE_LLM_MODEL``;
    with neither there is no default (a :class:`~cltrace.errors.UsageError`), so nothing is
    ever sent to a server the user did not name. At most ``concurrency`` requests are in
    flight; each waits at most ``timeout`` seconds; 429, 5xx, timeouts and connection errors
    are retried up to ``max_retries`` times with exponential backoff (``backoff * 2**attempt``
    seconds plus jitter, or the server's ``Retry-After`` if shorter than 60 s); 401, 403 and
    404 are not retried. After ``max_consecutive_failures`` endpoint-wide failures in a row
    (see :class:`_Breaker`) every call raises :class:`EndpointDown`. Successful replies are
    cached under ``cache_dir`` (None: no cache) by a hash of (base_url, model, messages,
    params).

    Counters for cost reports: ``n_calls`` (complete() calls), ``n_requests`` (HTTP requests
    sent, retries included), ``n_cache_hits``, ``n_answered`` (calls that got text, cache hits
    included); ``last_failure`` is the most recent :class:`LLMFailure`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        concurrency: int = 4,
        timeout: float = 60.0,
        max_retries: int = 3,
        cache_dir: str | Path | None = None,
        backoff: float = 1.0,
        max_consecutive_failures: int = 3,
    ):
        endpoint = resolve_endpoint(base_url, model)
        self.base_url = endpoint.base_url
        self.model = endpoint.model
        self.concurrency = max(1, int(concurrency))
        self.timeout = float(timeout)
        self.max_retries = max(0, int(max_retries))
        self.backoff = float(backoff)
        self.cache = ResponseCache(cache_dir) if cache_dir is not None else None
        # Held in memory only; see the module docstring.
        self.__key = next((os.environ[k] for k in ENV_KEYS if os.environ.get(k)), None)
        self.__secrets = (self.__key,) if self.__key else ()
        self.n_calls = 0
        self.n_requests = 0
        self.n_cache_hits = 0
        self.n_answered = 0
        self.last_failure: LLMFailure | None = None
        self._breaker = _Breaker(max_consecutive_failures)
        self._lock = threading.Lock()
        self._sem: asyncio.Semaphore | None = None
        self._sem_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return (
            f"ChatClient(base_url={self.display_url!r}, model={self.model!r}, "
            f"concurrency={self.concurrency}, timeout={self.timeout}, "
            f"max_retries={self.max_retries}, cache={self.cache is not None})"
        )

    @property
    def has_api_key(self) -> bool:
        return self.__key is not None

    @property
    def display_url(self) -> str:
        """``base_url`` as shown in messages (a password in it is hidden)."""
        return display_url(self.base_url)

    def redact(self, text: str, echoes: bool = True) -> str:
        """``text`` without the key (see :func:`cltrace.llm.redact.redact`)."""
        return redact(text, self.__secrets, echoes=echoes)

    def check_answered(self) -> None:
        """Raise :class:`EndpointDown` if calls were made and not one got a usable reply: a
        stage must not report success (or replace earlier output) on an endpoint that answered
        nothing, even when its failures (e.g. 400 for every request) did not trip the breaker."""
        if self.n_calls and not self.n_answered:
            last = str(self.last_failure)[:ERROR_DETAIL_CHARS] if self.last_failure else "none"
            raise EndpointDown(
                f"the LLM endpoint {self.display_url} answered none of {self.n_calls} "
                f"request(s) usefully (last failure: {last}); check --base-url, --model and the "
                "server's log."
            )

    # ------------------------------------------------------------------ async API
    async def complete(
        self,
        messages: Sequence[Message],
        temperature: float = 0.2,
        max_tokens: int = 256,
        **params,
    ) -> str:
        """The assistant's reply text; raises :class:`LLMError` when no valid reply came and
        :class:`EndpointDown` once the endpoint has failed too often in a row."""
        params = {"temperature": temperature, "max_tokens": max_tokens, **params}
        messages = [dict(m) for m in messages]
        self._count("n_calls")
        key = cache_key(self.base_url, self.model, messages, params)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self._count("n_cache_hits")
                self._count("n_answered")
                # a cache written before redaction existed may still hold an echoed key
                return self.redact(hit, echoes=False)
        body = json.dumps({"model": self.model, "messages": messages, **params}).encode()
        async with self._semaphore():
            try:
                text = await self._with_retries(body)
            except LLMError as exc:
                self.last_failure = exc.failure
                raise
        self._count("n_answered")
        if self.cache is not None:
            self.cache.put(key, self.model, messages, params, text)
        return text

    def _check_breaker(self) -> None:
        if self._breaker.tripped is not None:
            raise EndpointDown(self._breaker.tripped)

    async def _with_retries(self, body: bytes) -> str:
        attempt = 0
        while True:
            attempt += 1
            self._check_breaker()
            try:
                text = await self._request_once(body)
            except _Retryable as exc:
                failure = LLMFailure(exc.reason, self.redact(exc.detail), exc.status, attempt)
                if exc.reason in ("connection", "timeout"):
                    self._breaker.fail(failure, self.display_url, attempt)
                if attempt > self.max_retries:
                    if exc.reason == "http_status" and exc.status != 429:
                        self._breaker.fail(failure, self.display_url, attempt)
                    self._check_breaker()
                    raise LLMError(failure) from None
                self._check_breaker()
                delay = self.backoff * 2 ** (attempt - 1) * (1 + 0.25 * random.random())
                if 0 < exc.wait < 60:
                    delay = exc.wait
                await asyncio.sleep(delay)
            except LLMError as exc:
                f = exc.failure
                failure = LLMFailure(f.reason, self.redact(f.detail), f.status, attempt)
                if f.status in BREAKER_STATUSES:
                    self._breaker.fail(failure, self.display_url, attempt)
                    self._check_breaker()
                else:
                    self._breaker.ok()  # the server answered: it is alive
                raise LLMError(failure) from None
            else:
                self._breaker.ok()
                return text

    async def _request_once(self, body: bytes) -> str:
        self._count("n_requests")
        try:
            # The socket timeout ends the worker thread; wait_for is a backstop for a server that
            # trickles bytes slower than the socket timeout notices.
            status, raw = await asyncio.wait_for(
                asyncio.to_thread(self._post, body), self.timeout + 1.0
            )
        except (asyncio.TimeoutError, TimeoutError):
            raise _Retryable("timeout", f"no reply within {self.timeout:g} s") from None
        except (_Retryable, LLMError):
            raise
        except (urllib.error.URLError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, (TimeoutError, socket.timeout)):
                raise _Retryable("timeout", f"no reply within {self.timeout:g} s") from None
            raise _Retryable("connection", f"{type(exc).__name__}: {reason}") from None
        # the reply text is model output: only the key itself is removed, not prose that
        # merely looks like a credential
        text = self.redact(raw.decode("utf-8", "replace"), echoes=False)
        return parse_reply(status, text.encode())

    def _post(self, body: bytes) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"}
        if self.__key:
            headers["Authorization"] = f"Bearer {self.__key}"
        req = urllib.request.Request(
            f"{self.base_url}/chat/completions", data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status = exc.code
            text = self.redact(exc.read()[:ERROR_BODY_BYTES].decode("utf-8", "replace"))
            detail = f"HTTP {status}: {text[:ERROR_DETAIL_CHARS]}"
            if status == 429 or status >= 500:
                wait = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
                raise _Retryable("http_status", detail, status, wait) from None
            raise LLMError(LLMFailure("http_status", detail, status)) from None

    def _semaphore(self) -> asyncio.Semaphore:
        # A semaphore belongs to one event loop; complete_many starts a fresh loop per call.
        loop = asyncio.get_running_loop()
        if self._sem is None or self._sem_loop is not loop:
            self._sem, self._sem_loop = asyncio.Semaphore(self.concurrency), loop
        return self._sem

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    # ------------------------------------------------------------------ sync API
    def complete_many(
        self, list_of_messages: Sequence[Sequence[Message]], **params
    ) -> list[str | LLMFailure]:
        """Reply text or :class:`LLMFailure` per conversation, in order; never raises for one
        failed request, but raises :class:`EndpointDown` once the endpoint is down (the
        requests still queued are then not sent)."""

        async def one(msgs):
            try:
                return await self.complete(msgs, **params)
            except LLMError as exc:
                return exc.failure

        async def run_all():
            # every task is awaited to its end (queued ones fail fast once the breaker trips), so
            # none is left to raise while asyncio.run shuts the loop down
            results = await asyncio.gather(
                *(one(m) for m in list_of_messages), return_exceptions=True
            )
            for r in results:
                if isinstance(r, BaseException):
                    raise r
            return results

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(run_all())
        # Called from inside a running loop (a notebook): run ours in a helper thread, and hand
        # its exception (EndpointDown) back to the caller.
        out: list = []

        def work():
            try:
                out.append((True, asyncio.run(run_all())))
            except BaseException as exc:  # noqa: BLE001  (re-raised in the caller's thread)
                out.append((False, exc))

        t = threading.Thread(target=work)
        t.start()
        t.join()
        ok, value = out[0]
        if not ok:
            raise value
        return value


def parse_reply(status: int, raw: bytes) -> str:
    """The first choice's message content; :class:`LLMError` for anything else."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        snippet = raw[:80].decode("utf-8", "replace")
        raise LLMError(LLMFailure("malformed", f"reply is not JSON: {snippet!r}", status)) from None
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise LLMError(
            LLMFailure("malformed", "reply has no choices[0].message.content", status)
        ) from None
    if not isinstance(content, str):
        raise LLMError(LLMFailure("malformed", "message content is not a string", status))
    if not content.strip():
        raise LLMError(LLMFailure("empty", "message content is empty", status))
    return content


def _retry_after(value: str | None) -> float:
    try:
        return float(value) if value else 0.0
    except ValueError:
        return 0.0
