"""A local, scriptable chat-completions server for tests (no network, no API key needed).

Usage::

    from cltrace.llm import ChatClient
    from cltrace.llm.testing import FakeChatServer, Reply, Status, Delay, RawBody, NoChoices

    with FakeChatServer(default="[EXPLANATION]: colours") as server:
        server.script(Status(429), Status(500), Reply("ok"))  # consumed one per request
        client = ChatClient(base_url=server.base_url, model="fake", backoff=0.01)
        client.complete_many([[{"role": "user", "content": "hi"}]])   # -> ["ok"]
        server.requests          # every request body received (parsed JSON), in order
        server.auth_headers      # the Authorization header of each request ("" if none)

The server binds ``127.0.0.1`` on a free port and serves ``POST <base_url>/chat/completions``
from a daemon thread; ``base_url`` is ``http://127.0.0.1:<port>/v1``.

Actions (what one request gets):

* ``Reply(content)`` or a plain ``str``: a well-formed completion whose message content is
  ``content``.
* ``Status(code, body="", retry_after=None)``: an HTTP error (e.g. 429, 500) with an optional
  ``Retry-After`` header.
* ``Delay(seconds, then)``: sleep before answering with ``then`` (default an empty ``Reply``
  of the default), to exceed a client's timeout.
* ``RawBody(text, status=200)``: the bytes as given (malformed JSON).
* ``NoChoices()``: valid JSON without ``choices``.
* ``EchoAuth(status=401, template=...)``: the request's ``Authorization`` header put into the
  answer (an error body, or the message content for status 200), as careless servers and debug
  proxies do; for tests that the key never reaches disk or output.
* a callable ``fn(request_json) -> action``: computed per request (e.g. echo the prompt).

``default`` (an action, default ``Reply("ok")``) answers when the script queue is empty;
``script(*actions)`` appends to the queue; ``reset()`` clears queue and records.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    content: str


@dataclass
class Status:
    code: int
    body: str = ""
    retry_after: float | None = None


@dataclass
class Delay:
    seconds: float
    then: Any = None


@dataclass
class RawBody:
    text: str
    status: int = 200


@dataclass
class NoChoices:
    pass


@dataclass
class EchoAuth:
    status: int = 401
    template: str = (
        '{{"error": {{"message": "Incorrect API key provided: {auth}", '
        '"received_headers": {{"Authorization": "{auth}"}}}}}}'
    )
    """Formatted with ``auth`` (the header as received); the whole body for an error status,
    the message content for 200."""


Action = Reply | Status | Delay | RawBody | NoChoices | EchoAuth | str | Callable[[dict], Any]


def completion_json(content: str, model: str = "fake") -> dict:
    """A minimal OpenAI-style chat completion object carrying ``content``."""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


class FakeChatServer:
    """See the module docstring."""

    def __init__(self, default: Action = "ok"):
        self.default = default
        self.requests: list[dict] = []
        self.auth_headers: list[str] = []
        self._queue: deque = deque()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ control
    def script(self, *actions: Action) -> None:
        with self._lock:
            self._queue.extend(actions)

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self.requests.clear()
            self.auth_headers.clear()

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "start the server first (use it as a context manager)"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> FakeChatServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802  (http.server's naming)
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except json.JSONDecodeError:
                    body = {"_raw": raw.decode("utf-8", "replace")}
                action = server._next(body, self.headers.get("Authorization", ""))
                if not self.path.endswith("/chat/completions"):
                    action = Status(404, "not found")
                try:
                    server._respond(self, action, body, self.headers.get("Authorization", ""))
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests); nothing to answer

            def log_message(self, *args):  # keep test output clean
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeChatServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ internals
    def _next(self, body: dict, auth: str) -> Action:
        with self._lock:
            self.requests.append(body)
            self.auth_headers.append(auth)
            return self._queue.popleft() if self._queue else self.default

    def _respond(
        self, handler: BaseHTTPRequestHandler, action: Action, body: dict, auth: str = ""
    ) -> None:
        while callable(action) and not isinstance(action, (Reply, Status, Delay, RawBody)):
            action = action(body)
        if isinstance(action, Delay):
            time.sleep(action.seconds)
            then = action.then if action.then is not None else self.default
            return self._respond(handler, then, body, auth)
        if isinstance(action, EchoAuth):
            text = action.template.format(auth=auth)
            if action.status != 200:
                return _send(handler, action.status, text)
            action = Reply(text)
        if isinstance(action, str):
            action = Reply(action)
        if isinstance(action, Reply):
            payload = json.dumps(completion_json(action.content, body.get("model", "fake")))
            return _send(handler, 200, payload)
        if isinstance(action, Status):
            headers = {}
            if action.retry_after is not None:
                headers["Retry-After"] = str(action.retry_after)
            return _send(handler, action.code, action.body or f"error {action.code}", headers)
        if isinstance(action, RawBody):
            return _send(handler, action.status, action.text)
        if isinstance(action, NoChoices):
            return _send(handler, 200, json.dumps({"id": "x", "object": "chat.completion"}))
        raise TypeError(f"unknown fake-server action {action!r}")


def _send(handler: BaseHTTPRequestHandler, status: int, text: str, headers=None) -> None:
    data = text.encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    handler.end_headers()
    handler.wfile.write(data)
