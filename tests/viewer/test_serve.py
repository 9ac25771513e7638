"""The viewer's server: what it serves, what it refuses, what it writes; the shipped assets."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from cltrace.report.serve import VIEWER_DIR
from tests.viewer.helpers import make_run, running, write_handmade


def request(url: str, path: str, method: str = "GET", body: bytes | None = None,
            headers: dict | None = None) -> tuple[int, bytes, dict]:  # fmt: skip
    """A raw request (``path`` sent exactly as given, no client-side normalisation)."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, data, dict(r.getheaders())


@pytest.fixture
def tree(tmp_path):
    """served/ with a graph at the top and one in a subfolder; secret.txt and outside/ beside it."""
    root = tmp_path / "served"
    write_handmade(root, "top")
    write_handmade(root / "sub", "nested")
    (root / "notes.txt").write_text("inside")
    (tmp_path / "secret.txt").write_text("SECRET")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "leak.json").write_text('{"metadata": {}, "nodes": [], "links": []}')
    return root


ESCAPES = [
    "/files/../secret.txt",
    "/files/%2e%2e/secret.txt",
    "/files/..%2fsecret.txt",
    "/files/..%2Fsecret.txt",
    "/files/%2e%2e%2fsecret.txt",
    "/files/sub/../../secret.txt",
    "/files/sub%2f..%2f..%2fsecret.txt",
    "/files/%252e%252e/secret.txt",
    "/files//etc/passwd",
    "/files/%2fetc%2fpasswd",
    "/files/" + "%2e%2e/" * 12 + "etc/passwd",
    "/files/link-out.txt",
    "/files/dir-out/leak.json",
    "/files/notes.txt%00.json",
    "/static/../serve.py",
    "/static/%2e%2e/serve.py",
]


def test_nothing_outside_the_served_folder_is_served(tree, tmp_path):
    os.symlink(tmp_path / "secret.txt", tree / "link-out.txt")
    os.symlink(tmp_path / "outside", tree / "dir-out")
    os.symlink(tree / "notes.txt", tree / "link-in.txt")
    with running(tree) as url:
        for path in ESCAPES:
            status, body, _ = request(url, path)
            assert status == 404, path
            assert b"SECRET" not in body and b"root:" not in body and b"leak" not in body
        assert request(url, "/files/notes.txt")[1] == b"inside"
        assert request(url, "/files/link-in.txt")[1] == b"inside"  # a link that stays inside
        assert request(url, "/files/sub/nested.json")[0] == 200
        index = json.loads(request(url, "/api/index")[1])
    # the graph behind a link out of the folder is not listed either
    assert index["kind"] == "folder"
    assert sorted(g["path"] for g in index["graphs"]) == ["sub/nested.json", "top.json"]
    assert {g["n_nodes"] for g in index["graphs"]} == {7}


def test_a_single_graph_file_serves_only_itself(tree):
    with running(tree / "top.json") as url:
        assert request(url, "/files/top.json")[0] == 200
        for path in ("/files/notes.txt", "/files/graph-metadata.json", "/files/sub/nested.json",
                     "/files/../served/notes.txt"):  # fmt: skip
            assert request(url, path)[0] == 404, path
        index = json.loads(request(url, "/api/index")[1])
        assert index["kind"] == "graph" and [g["path"] for g in index["graphs"]] == ["top.json"]
        # no feature files are looked up beside a single file
        assert json.loads(request(url, "/api/feature/0/7")[1])["detail"] is None


def test_pie_run_index_and_feature_card(tmp_path):
    run = tmp_path / "run"
    graph = write_handmade(run / "graphs", "g")
    descs = make_run(run, [(0, 7), (1, 3)], kept=1)
    with running(run) as url:
        index = json.loads(request(url, "/api/index")[1])
        assert index["kind"] == "pie" and index["run"]["report"] == "report.html"
        assert [g["path"] for g in index["graphs"]] == ["graphs/g.json"]
        assert [(f["layer"], f["feature"]) for f in index["run"]["kept"]] == [(0, 7)]
        card = json.loads(request(url, "/api/feature/1/3")[1])
        kept_card = json.loads(request(url, "/api/feature/0/7")[1])
        assert request(url, "/files/report.html")[0] == 200
        assert request(url, "/api/feature/x/3")[0] == 400
        assert json.loads(request(url, "/api/descriptions")[1]) == descs
    assert card["description"] == descs["1/3"] and card["kept"] is None
    assert card["scores"] == {"clarity": 0.5, "responsiveness": 0.25, "purity": None}
    assert card["detail"]["top_logits"][0]["token"] == " up"
    assert kept_card["kept"]["kept_count"] == 2
    assert graph.exists()


def _post(url, rel, body, **headers):
    host = urlsplit(url).netloc
    h = {"Content-Type": "application/json", "Host": host, **headers}
    return request(url, f"/api/qparams/{rel}", "POST", json.dumps(body).encode(), h)


def test_qparams_are_saved_into_the_graph_file_only(tree):
    path = tree / "top.json"
    before = json.loads(path.read_text())
    q = {"pinnedIds": ["0_7_0", "1_3_0"], "supernodes": [["pair", "0_7_0", "1_3_0"]],
         "linkType": "both", "clickedId": "1_3_0", "sg_pos": ""}  # fmt: skip
    with running(tree) as url:
        assert _post(url, "top.json", q)[0] == 200
        after = json.loads(path.read_text())
        assert after["qParams"] == q
        assert {k: v for k, v in after.items() if k != "qParams"} == {
            k: v for k, v in before.items() if k != "qParams"
        }
        # refused: another origin, a form post, bad qParams, files that are not graphs or lie
        # outside the folder
        assert _post(url, "top.json", q, Origin="http://evil.example")[0] == 403
        assert _post(url, "top.json", q, Host="evil.example:80")[0] == 403
        assert _post(url, "top.json", q, **{"Content-Type": "text/plain"})[0] == 415
        assert _post(url, "top.json", {"pinnedIds": "not a list"})[0] == 400
        assert _post(url, "notes.txt", q)[0] == 400
        assert _post(url, "..%2fsecret.txt", q)[0] == 400
        assert _post(url, "..%2foutside%2fleak.json", q)[0] == 400
        assert request(url, "/api/qparams/top.json")[0] == 404  # GET does not write
    assert json.loads(path.read_text())["qParams"] == q
    assert (tree.parent / "secret.txt").read_text() == "SECRET"


def test_viewer_pages_load_nothing_from_the_web():
    files = sorted(p for p in VIEWER_DIR.iterdir() if p.is_file())
    assert {p.name for p in files} >= {"index.html", "viewer.js", "viewer.css"}
    for p in files:
        text = p.read_text()
        # the one URL in the assets is the SVG namespace name, which is never fetched
        urls = set(re.findall(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s\"'`)]*", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (p.name, urls)
        assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I), p.name
        assert not re.search(r"@import|url\(\s*[\"']?(https?:)?//", text, re.I), p.name
    html = (VIEWER_DIR / "index.html").read_text()
    assert set(re.findall(r"""(?:src|href)="([^"]+)\"""", html)) == {
        "static/viewer.css",
        "static/viewer.js",
        "data:,",
    }


def test_every_response_carries_a_self_only_content_policy(tree):
    with running(tree) as url:
        for path in ("/", "/static/viewer.js", "/api/index", "/files/top.json"):
            status, _, headers = request(url, path)
            assert status == 200, path
            csp = headers["Content-Security-Policy"]
            assert "default-src 'self'" in csp and "http" not in csp
            assert "script-src 'self'" in csp or "script-src 'none'" in csp


CLTRACE = shutil.which("cltrace") or "cltrace"


def _cltrace(*args, **kw):
    return subprocess.run([CLTRACE, *args], capture_output=True, text=True, timeout=120, **kw)


def test_cli_bad_paths_are_one_line_errors(tmp_path):
    r = _cltrace("serve", str(tmp_path / "missing"))
    assert r.returncode == 1 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "x.json").write_text("{}")
    r = _cltrace("serve", str(tmp_path / "x.json"))
    assert r.returncode == 1 and "is not a graph JSON file" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = _cltrace("serve", str(tmp_path), "--port", "70000")
    assert r.returncode == 2


def test_cli_serves_until_stopped(tree):
    proc = subprocess.Popen(
        [CLTRACE, "serve", str(tree), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # a child of a background job inherits an ignored SIGINT; restore Ctrl-C
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        m = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
        assert m and "folder (2 graphs)" in line, line
        status, body, _ = request(m.group(1), "/")
        assert status == 200 and b"viewer.js" in body
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0 and out.strip() == "stopped." and err == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_port_in_use_is_a_clear_error(tree):
    with running(tree) as url:
        port = urlsplit(url).port
        r = _cltrace("serve", str(tree), "--port", str(port))
    assert r.returncode == 1 and "pass another --port" in r.stderr


def test_attribute_prints_the_serve_command(tmp_path):
    out = tmp_path / "g" / "demo.json"
    prompt = "When Mary and John went to the store, John gave a drink to"
    r = _cltrace("attribute", "--prompt", prompt, "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == f"view it: cltrace serve {out}"
    assert Path(out).exists()


def test_pie_prints_the_serve_command_and_its_run_is_served(tmp_path):
    run = tmp_path / "run"
    r = _cltrace("pie", "--n", "2", "--budgets", "5", "--methods", "random", "--random-seeds", "1",
                 "--stages", "prune", "--out", str(run))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == f"view it: cltrace serve {run}"
    kept = json.loads((run / "kept_features.json").read_text())["features"]
    with running(run) as url:
        index = json.loads(request(url, "/api/index")[1])
        assert request(url, "/files/report.html")[0] == 200
    assert index["kind"] == "pie" and index["graphs"] == []
    assert index["run"]["kept"] == kept and index["run"]["report"] == "report.html"
