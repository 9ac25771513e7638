"""On-disk cache of chat replies, keyed by what determines a reply and nothing secret."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cltrace.files import atomic_write_text


def cache_key(base_url: str, model: str, messages: list[dict], params: dict) -> str:
    """SHA-256 over (base_url, model, messages, params) in canonical JSON; the key is excluded
    on purpose, so a rotated API key keeps its cache."""
    blob = json.dumps(
        {"base_url": base_url, "model": model, "messages": messages, "params": params},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """One JSON file per reply under ``root/<2 hex>/<key>.json``, written atomically."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        path = self._path(key)
        try:
            return json.loads(path.read_text())["response"]
        except (OSError, json.JSONDecodeError, KeyError):
            return None  # missing or half-written: treat as a miss

    def put(self, key: str, model: str, messages: list[dict], params: dict, text: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"model": model, "messages": messages, "params": params, "response": text}
        atomic_write_text(path, json.dumps(record, ensure_ascii=False))
