"""Upload a graph file to Neuronpedia through its own client (the ``neuronpedia`` package,
``pip install cltrace[neuronpedia]``); nothing else in cltrace talks to the network.

Neuronpedia files a graph under ``metadata.scan``, which it reads as one of its model ids
(``gemma-2-2b``, ``llama3.1-8b``, ...), and ``metadata.slug``, which must be new for that model.
cltrace writes the transcoder's name in ``scan``, so pass ``model_id`` to file it under the
Neuronpedia model it belongs to. The API key comes from ``api_key`` or the
``NEURONPEDIA_API_KEY`` environment variable, as the client reads it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cltrace.errors import CltraceError
from cltrace.graph.export import load_graph_json

LIMIT_BYTES = 100 * 1024 * 1024  # the client's own limit on one upload


def upload_payload(path: str | Path, model_id: str | None = None, slug: str | None = None) -> str:
    """The JSON text that :func:`upload_graph` sends: the graph file, validated, with
    ``metadata.scan`` set to ``model_id`` and ``metadata.slug`` to ``slug`` when given."""
    load_graph_json(path)  # one clear sentence when the file is not a graph
    data: dict[str, Any] = json.loads(Path(path).read_text())
    if model_id:
        data["metadata"]["scan"] = model_id
    if slug:
        data["metadata"]["slug"] = slug
    text = json.dumps(data)
    if len(text.encode()) > LIMIT_BYTES:
        raise CltraceError(
            f"{path} is {len(text.encode()) / 2**20:.0f} MB, over Neuronpedia's 100 MB limit; "
            "write it with a lower --node-threshold or --edge-threshold."
        )
    return text


def upload_graph(
    path: str | Path,
    model_id: str | None = None,
    slug: str | None = None,
    api_key: str | None = None,
):
    """Upload the graph file ``path`` to Neuronpedia; returns the client's ``NPGraphMetadata``
    (its ``url`` opens the graph there)."""
    text = upload_payload(path, model_id, slug)
    try:
        from neuronpedia.requests.graph_request import GraphRequest
    except ImportError:
        raise CltraceError(
            "uploading needs the neuronpedia package; install it with pip install "
            "'cltrace[neuronpedia]'."
        ) from None
    try:
        request = GraphRequest(api_key=api_key)
    except Exception as exc:  # the client's NPKeyMissingError
        raise CltraceError(
            f"no Neuronpedia API key ({type(exc).__name__}); pass api_key or set "
            "NEURONPEDIA_API_KEY."
        ) from None
    return request.upload(text)
