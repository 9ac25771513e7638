"""The Neuronpedia upload helper, offline: what the client is asked to send, nothing sent."""

from __future__ import annotations

import gzip
import json

import pytest

from cltrace.errors import CltraceError
from cltrace.graph.export import graph_document, write_graph_json
from cltrace.graph.upload import upload_graph, upload_payload
from tests.graph.handmade import handmade_graph

neuronpedia = pytest.importorskip("neuronpedia", reason="pip install 'cltrace[neuronpedia]'")


def test_upload_sends_the_graph_through_the_clients_three_steps(tmp_path, monkeypatch):
    from neuronpedia.requests import graph_request
    from neuronpedia.requests.base_request import NPRequest

    path = write_graph_json(graph_document(handmade_graph(), "hand", scan="my-clt"), tmp_path)
    calls: list[tuple] = []

    def send(self, method, uri, json=None, **_kw):
        calls.append((method, self.endpoint, uri, json))
        if uri == "signed-put":
            return {"url": "https://upload.invalid/put", "putRequestId": "req-1"}
        if uri == "save-to-db":
            return {"url": "https://neuronpedia.invalid/g"}
        return {"id": "1", "modelId": "gemma-2-2b", "slug": "hand-v2", "promptTokens": ["w1"],
                "prompt": "w1", "titlePrefix": "", "url": "https://x.invalid/j.json"}  # fmt: skip

    class Put:
        status_code = 200
        text = ""

    puts: list[bytes] = []

    def put(url, data=None, headers=None):
        puts.append(data)
        assert headers == {"Content-Encoding": "gzip"}
        return Put()

    monkeypatch.setattr(NPRequest, "send_request", send)
    monkeypatch.setattr(graph_request.requests, "put", put)
    meta = upload_graph(path, model_id="gemma-2-2b", slug="hand-v2", api_key="test-key")
    assert meta.model_id == "gemma-2-2b" and meta.slug == "hand-v2"
    sent = json.loads(gzip.decompress(puts[0]))
    original = json.loads(path.read_text())
    assert sent["metadata"]["scan"] == "gemma-2-2b" and sent["metadata"]["slug"] == "hand-v2"
    assert sent["nodes"] == original["nodes"] and sent["links"] == original["links"]
    assert [c[2] for c in calls] == ["signed-put", "save-to-db", "gemma-2-2b/hand-v2"]
    assert calls[0][3] == {"filename": "hand-v2.json", "contentLength": len(puts[0]),
                           "contentType": "application/json"}  # fmt: skip
    assert calls[1][3] == {"putRequestId": "req-1"}
    assert json.loads(path.read_text()) == original  # the file itself is not changed


def test_upload_refuses_what_is_not_a_graph_or_has_no_key(tmp_path, monkeypatch):
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    with pytest.raises(CltraceError, match="not valid"):
        upload_payload(bad)
    path = write_graph_json(graph_document(handmade_graph(), "hand", scan="my-clt"), tmp_path)
    assert json.loads(upload_payload(path)) == json.loads(path.read_text())  # nothing overridden
    monkeypatch.delenv("NEURONPEDIA_API_KEY", raising=False)
    monkeypatch.setattr(neuronpedia, "get_api_key", lambda: None, raising=False)
    with pytest.raises(CltraceError, match="NEURONPEDIA_API_KEY"):
        upload_graph(path)
