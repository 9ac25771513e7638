"""``cltrace serve``: a local web server for the graph viewer (static files shipped in
``cltrace/report/viewer``), standard library only.

It serves one graph file, a folder of graphs, or a PIE run directory, and nothing outside that
path: every file request is resolved (symbolic links followed) and refused unless it lands
inside. The pages load no script, style or font from anywhere but this server (the
Content-Security-Policy header says so to the browser), so the viewer works with the network
off. The one write is ``qParams`` (pinned nodes, supernodes) of a graph file under the path.
"""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import ValidationError

from cltrace.errors import CltraceError
from cltrace.files import atomic_write_text
from cltrace.graph.export import GraphFile, QParams

VIEWER_DIR = Path(__file__).resolve().parent / "viewer"
STATIC = {  # the only files of the package this server hands out
    "viewer.js": "text/javascript; charset=utf-8",
    "viewer.css": "text/css; charset=utf-8",
}
TYPES = {
    ".json": "application/json",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".jsonl": "text/plain; charset=utf-8",
}
# the viewer: scripts and connections only to this server; the run's files (report.html) may
# carry inline styles, never scripts from elsewhere
CSP_VIEWER = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'"
)
CSP_FILES = (
    "default-src 'self'; script-src 'none'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'"
)
# files of a PIE run that are never graphs (skipped without reading)
RUN_FILES = {"config.json", "results.json", "kept_features.json", "graph-metadata.json",
             "interpret_config.json", "interpret_cost.json", "scores_summary.json"}  # fmt: skip
SKIP_DIRS = {"features", "activations", "activations_random", "__pycache__"}
MAX_GRAPHS = 500
MAX_BODY = 4 << 20


_SEEN: dict[tuple[str, int, int], dict | None] = {}  # (path, mtime, size) -> _is_graph


def _is_graph(path: Path) -> dict | None:
    """The metadata of ``path`` when it is a graph file (``metadata``, ``nodes``, ``links``);
    remembered per file version, since graphs with every edge run to many megabytes."""
    try:
        st = path.stat()
    except OSError:
        return None
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _SEEN:
        _SEEN[key] = _read_graph_meta(path)
    return _SEEN[key]


def _read_graph_meta(path: Path) -> dict | None:
    try:
        with path.open("rb") as f:
            head = f.read(4096)
        if b'"metadata"' not in head and b'"nodes"' not in head:
            return None
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not {"metadata", "nodes", "links"} <= data.keys():
        return None
    meta = data["metadata"] if isinstance(data["metadata"], dict) else {}
    return {"slug": meta.get("slug", path.stem), "prompt": meta.get("prompt", ""),
            "scan": meta.get("scan", ""), "n_nodes": len(data["nodes"]),
            "n_links": len(data["links"])}  # fmt: skip


class Served:
    """What ``cltrace serve PATH`` shows: the kind of PATH, its graphs, and the PIE run's files."""

    def __init__(self, path: str | os.PathLike):
        p = Path(path)
        if not p.exists():
            raise CltraceError(
                f"{p} does not exist; pass a graph file, a folder of graphs or a PIE run directory."
            )
        self.path = p
        self.root = p.resolve()
        if self.root.is_file():
            if _is_graph(self.root) is None:
                raise CltraceError(
                    f"{p} is not a graph JSON file; pass a file written by cltrace attribute "
                    "(or circuit-tracer), a folder of them or a PIE run directory."
                )
            self.kind = "graph"
        elif (self.root / "config.json").is_file() and (
            (self.root / "results.json").is_file() or (self.root / "records.jsonl").is_file()
        ):
            self.kind = "pie"
        else:
            self.kind = "folder"

    # -- files ---------------------------------------------------------------------------

    def resolve(self, rel: str) -> Path | None:
        """The file ``rel`` names under the served path, or None when it is missing or lies
        outside (after following symbolic links)."""
        if "\x00" in rel:
            return None
        if self.kind == "graph":
            return self.root if rel == self.root.name else None
        try:
            target = (self.root / rel).resolve()
        except (OSError, RuntimeError):
            return None
        if not target.is_relative_to(self.root) or not target.is_file():
            return None
        return target

    def rel(self, path: Path) -> str:
        return path.name if self.kind == "graph" else path.relative_to(self.root).as_posix()

    def graphs(self) -> list[dict]:
        if self.kind == "graph":
            return [{"path": self.root.name, **(_is_graph(self.root) or {})}]
        found = []
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
            for name in sorted(files):
                if not name.endswith(".json") or name in RUN_FILES:
                    continue
                if name.startswith(("descriptions", "scores")):
                    continue
                path = Path(folder) / name
                if self.resolve(self.rel(path)) is None:  # a link out of the tree
                    continue
                meta = _is_graph(path)
                if meta is not None:
                    found.append({"path": self.rel(path), **meta})
                if len(found) >= MAX_GRAPHS:
                    return found
        return found

    def _json(self, name: str) -> Any:
        path = self.resolve(name) if self.kind != "graph" else None
        if path is None:
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def index(self) -> dict:
        """What the viewer loads first: the served path's kind, its graphs, the run's files."""
        out: dict[str, Any] = {"kind": self.kind, "name": self.path.name or str(self.path),
                               "graphs": self.graphs(), "run": None}  # fmt: skip
        if self.kind == "pie":
            kept = self._json("kept_features.json") or {}
            cfg = self._json("config.json") or {}
            out["run"] = {
                "task": cfg.get("task"),
                "method": kept.get("method"),
                "budget": kept.get("budget"),
                "kept": kept.get("features", []),
                "report": "report.html" if self.resolve("report.html") else None,
                "has_descriptions": self.resolve("descriptions.json") is not None,
                "has_scores": self.resolve("scores.json") is not None,
            }
        return out

    def descriptions(self) -> dict[str, str]:
        """``"layer/feature" -> description`` of every feature the run's stage II described."""
        descs = self._json("descriptions.json")
        if not isinstance(descs, dict):
            return {}
        return {k: str(v.get("description") or "") for k, v in descs.items() if isinstance(v, dict)}

    def feature(self, layer: int, feature: int) -> dict:
        """The feature card's data from the run's files (whatever of them exist)."""
        key = f"{layer}/{feature}"
        descs = self._json("descriptions.json") or {}
        scores = self._json("scores.json") or {}
        kept = self._json("kept_features.json") or {}
        entry = descs.get(key) if isinstance(descs, dict) else None
        score = scores.get(key) if isinstance(scores, dict) else None
        from cltrace.score.feature import METRICS

        return {
            "layer": layer,
            "feature": feature,
            "description": (entry or {}).get("description") or "",
            "explainer": (entry or {}).get("explainer"),
            "scores": {m: score.get(m) for m in METRICS if m in score} if score else None,
            "kept": next(
                (
                    f
                    for f in kept.get("features", [])
                    if f.get("layer") == layer and f.get("feature") == feature
                ),
                None,
            ),  # fmt: skip
            "detail": self._json(f"features/{layer}_{feature}.json"),
        }

    def save_qparams(self, rel: str, body: bytes) -> dict:
        """Replace ``qParams`` of the graph file ``rel``; the rest of the file is kept as is."""
        path = self.resolve(rel)
        if path is None or _is_graph(path) is None:
            raise CltraceError(f"{rel} is not a graph file under the served path.")
        try:
            qp = QParams.model_validate(json.loads(body))
            data = json.loads(path.read_text())
            data["qParams"] = qp.model_dump()
            GraphFile.model_validate(data)
        except (ValueError, ValidationError) as exc:
            first = str(exc).splitlines()[0]
            raise CltraceError(f"qParams for {rel} are not valid ({first}).") from None
        atomic_write_text(path, json.dumps(data, indent=1))
        return data["qParams"]


class Handler(BaseHTTPRequestHandler):
    served: Served
    server_version = "cltrace-serve"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if os.environ.get("CLTRACE_SERVE_LOG"):
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, ctype: str, csp: str = CSP_VIEWER) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", csp)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data: Any, status: int = 200) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _error(self, status: int, text: str) -> None:
        self._json({"error": text}, status)

    def _route(self) -> tuple[str, str]:
        raw = urlsplit(self.path).path
        if not raw.startswith("/"):
            return "", ""
        parts = raw.split("/", 2)
        return parts[1], unquote(parts[2]) if len(parts) > 2 else ""

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        head, rest = self._route()
        try:
            if head in ("", "index.html"):
                body = (VIEWER_DIR / "index.html").read_bytes()
                return self._send(200, body, "text/html; charset=utf-8")
            if head == "static" and rest in STATIC:
                return self._send(200, (VIEWER_DIR / rest).read_bytes(), STATIC[rest])
            if head == "api" and rest == "index":
                return self._json(self.served.index())
            if head == "api" and rest == "descriptions":
                return self._json(self.served.descriptions())
            if head == "api" and rest.startswith("feature/"):
                layer, _, feature = rest.removeprefix("feature/").partition("/")
                if not (layer.isdigit() and feature.isdigit()):
                    return self._error(400, "feature ids are /api/feature/LAYER/FEATURE")
                return self._json(self.served.feature(int(layer), int(feature)))
            if head == "files":
                path = self.served.resolve(rest)
                if path is None:
                    return self._error(404, "no such file under the served path")
                ctype = TYPES.get(path.suffix.lower(), "application/octet-stream")
                return self._send(200, path.read_bytes(), ctype, CSP_FILES)
        except OSError as exc:
            return self._error(500, f"cannot read a file ({exc.strerror})")
        self._error(404, "not found")

    def do_POST(self) -> None:
        head, rest = self._route()
        if head != "api" or not rest.startswith("qparams/"):
            return self._error(404, "not found")
        # another web page cannot post here: browsers send a JSON body cross-origin only
        # after a preflight this server never answers, and the Host must be this server's
        host = self.headers.get("Host", "")
        origin = self.headers.get("Origin")
        here = f"{self.server.server_address[0]}:{self.server.server_address[1]}"
        port = self.server.server_address[1]
        local = {here, f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"}
        if host not in local or (origin and urlsplit(origin).netloc not in local):
            return self._error(403, "requests from other sites are refused")
        if not self.headers.get("Content-Type", "").startswith("application/json"):
            return self._error(415, "send the qParams as application/json")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self._error(413, "request too large")
        try:
            saved = self.served.save_qparams(rest.removeprefix("qparams/"), self.rfile.read(length))
        except CltraceError as exc:
            return self._error(400, str(exc))
        except OSError as exc:
            return self._error(500, f"cannot write the graph file ({exc.strerror})")
        self._json({"qParams": saved})


def make_server(path: str | os.PathLike, host: str = "127.0.0.1", port: int = 8765):
    """A ready (not yet running) server for ``path``; ``port=0`` picks a free port."""
    served = Served(path)
    handler = type("BoundHandler", (Handler,), {"served": served})
    try:
        return ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise CltraceError(
            f"cannot listen on {host}:{port} ({exc.strerror}); pass another --port (0 picks a "
            "free one)."
        ) from None


def served_url(server) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/"
