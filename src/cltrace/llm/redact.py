"""Keeping the API key out of everything cltrace stores or prints.

Servers echo what they were sent: a 401 body may quote the ``Authorization`` header, a debug
proxy may put it in the reply text. :func:`redact` removes the key itself wherever it occurs and,
in error bodies, anything shaped like a credential (``Bearer <token>``, ``Authorization: ...``,
``"api_key": "..."``), so no failure detail, cached reply or description can carry it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[redacted]"
MIN_SECRET_LEN = 4
"""Shorter "secrets" are not searched for: replacing every ``ab`` in a reply would mangle it
and a key that short protects nothing anyway."""

_ECHOES = (
    # "Bearer sk-..." (a header value quoted in prose or JSON)
    re.compile(r"(?i)(\bbearer\s+)[^\s\"',;}\]]+"),
    # "Authorization: xyz" / "authorization": "xyz" (any scheme, or none)
    re.compile(r"(?i)(\bauthorization[\"']?\s*[:=]\s*[\"']?)(?!bearer\s)[^\s\"',;}\]]+"),
    # "api_key": "xyz", api-key=xyz, x-api-key: xyz
    re.compile(r"(?i)(\bapi[_-]?key[\"']?\s*[:=]\s*[\"']?)[^\s\"',;}\]]+"),
)


def redact(text: str, secrets: Iterable[str | None] = (), echoes: bool = True) -> str:
    """``text`` with every secret (and, if ``echoes``, every credential-shaped value) replaced
    by ``[redacted]``.

    Use ``echoes=False`` for model output, where "Bearer tokens" may be ordinary prose; error
    bodies get both.
    """
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LEN}, key=len,
                         reverse=True):  # fmt: skip
        text = text.replace(secret, REDACTED)
    if echoes:
        for pattern in _ECHOES:
            text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text
