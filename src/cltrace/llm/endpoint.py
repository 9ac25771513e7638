"""Which LLM endpoint and model to use, checked before any work starts.

There is no implicit endpoint: a run that should talk to an LLM names the server with
``--base-url`` (or ``CLTRACE_LLM_BASE_URL``) and the model with ``--model`` (or
``CLTRACE_LLM_MODEL``). Nothing is sent anywhere the user did not choose; to use OpenAI, pass
``https://api.openai.com/v1`` explicitly.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
import urllib.request
from dataclasses import dataclass

from cltrace.errors import CltraceError, UsageError

ENV_BASE_URL = "CLTRACE_LLM_BASE_URL"
ENV_MODEL = "CLTRACE_LLM_MODEL"
ENV_KEYS = ("CLTRACE_LLM_API_KEY", "OPENAI_API_KEY")
EXAMPLE_URL = "http://127.0.0.1:8000/v1"


class EndpointDown(CltraceError):
    """The endpoint cannot be used (nothing listens, or it failed too many requests in a row);
    the stage stops (the CLI exits 1)."""


@dataclass(frozen=True)
class Endpoint:
    """A checked endpoint: ``base_url`` without a trailing slash, and the model name."""

    base_url: str
    model: str

    @property
    def display_url(self) -> str:
        """``base_url`` as shown to users (a password in the URL is hidden)."""
        return display_url(self.base_url)


def display_url(url: str) -> str:
    """``url`` with any ``user:password@`` part replaced, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"[redacted]@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def resolve_endpoint(
    base_url: str | None = None, model: str | None = None, user: str = "the LLM client"
) -> Endpoint:
    """The endpoint from the options, else the environment; a :class:`UsageError` naming
    ``user`` (e.g. "the llm explainer") when one is missing or the URL is not http(s)."""
    source = "--base-url" if base_url else ENV_BASE_URL
    url = (base_url or os.environ.get(ENV_BASE_URL) or "").strip()
    if not url:
        raise UsageError(
            f"{user} needs an endpoint; pass --base-url or set {ENV_BASE_URL} (any "
            f"OpenAI-compatible server, e.g. {EXAMPLE_URL})."
        )
    _check_url(url, source)
    name = (model or os.environ.get(ENV_MODEL) or "").strip()
    if not name:
        raise UsageError(
            f"{user} needs a model name; pass --model or set {ENV_MODEL} (the name your server "
            "serves the model under)."
        )
    return Endpoint(url.rstrip("/"), name)


def _check_url(url: str, source: str) -> None:
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a port out of range or not a number)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        shown = display_url(url) if parts is not None else "the given value"
        raise UsageError(
            f"{source} {shown!r} is not an http:// or https:// URL with a host; pass the "
            f"server's address, e.g. {EXAMPLE_URL}."
        )
    if parts.username is not None or parts.password is not None:
        # urllib cannot send URL credentials, and a URL is printed and saved: keep keys out
        raise UsageError(
            f"{source} {display_url(url)!r} holds a user name or password; pass the URL without "
            f"it and put the key in {ENV_KEYS[0]}."
        )


def probe(endpoint: Endpoint, timeout: float = 5.0) -> None:
    """Raise :class:`EndpointDown` at once if nothing accepts a TCP connection at the endpoint's
    host and port (no request is sent), so a dead endpoint is reported before minutes of model
    loading and corpus scanning rather than after. Skipped when a proxy would carry the requests:
    only the proxy can reach the server then."""
    parts = urllib.parse.urlsplit(endpoint.base_url)
    host = parts.hostname or ""
    if urllib.request.getproxies().get(parts.scheme) and not urllib.request.proxy_bypass(host):
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    where = f"the LLM endpoint {endpoint.display_url}"
    fix = f"check that the server is running and --base-url (or {ENV_BASE_URL})."
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except ConnectionRefusedError:
        raise EndpointDown(f"{where} refused the connection; {fix}") from None
    except TimeoutError:
        raise EndpointDown(
            f"{where} did not accept a connection within {timeout:g} s; {fix}"
        ) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise EndpointDown(f"{where} could not be reached ({reason}); {fix}") from None
