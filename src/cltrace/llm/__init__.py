"""LLM access shared by interpretation (stage II) and scoring (stage III).

:class:`ChatClient` talks to any OpenAI-compatible chat-completions endpoint. There is no default
endpoint: name it with options or ``CLTRACE_LLM_BASE_URL`` / ``CLTRACE_LLM_MODEL`` (for OpenAI,
pass ``https://api.openai.com/v1`` explicitly), and put the key in ``CLTRACE_LLM_API_KEY`` (or
``OPENAI_API_KEY``). :mod:`cltrace.llm.testing` has a local fake server for tests.
"""

from cltrace.llm.client import (
    ChatClient,
    EndpointDown,
    LLMError,
    LLMFailure,
    Message,
    parse_reply,
)
from cltrace.llm.endpoint import Endpoint, probe, resolve_endpoint
from cltrace.llm.redact import redact

__all__ = [
    "ChatClient",
    "Endpoint",
    "EndpointDown",
    "LLMError",
    "LLMFailure",
    "Message",
    "parse_reply",
    "probe",
    "redact",
    "resolve_endpoint",
]
