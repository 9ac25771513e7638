"""The viewer in a real browser: Playwright driving headless Chromium from the system packages.

Chromium comes from the distribution (``apt-get install chromium``; CI installs it where it is
missing); set ``CLTRACE_CHROMIUM`` to use another executable. The graph is the bundled model's,
written by ``cltrace attribute``, inside a folder laid out like a PIE run so feature cards have
descriptions, scores, examples and logits. A screenshot is kept in the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.viewer.helpers import feature_keys, make_run, running

PROMPT = "When Mary and John went to the store, John gave a drink to"


def chromium() -> str | None:
    for name in (os.environ.get("CLTRACE_CHROMIUM"), "chromium", "chromium-browser"):
        if name and (found := shutil.which(name)):
            return found
    return None


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        chromium() is None,
        reason="no Chromium executable (apt-get install chromium, or set CLTRACE_CHROMIUM)",
    ),
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("viewer") / "run"
    graph = run / "graphs" / "mary.json"
    cltrace = shutil.which("cltrace") or "cltrace"
    r = subprocess.run([cltrace, "attribute", "--prompt", PROMPT, "--out", str(graph)],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    descs = make_run(run, feature_keys(graph), kept=3)
    return run, graph, descs


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium(), headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, run_dir):
    run, _, _ = run_dir
    with running(run) as url:
        pg = browser.new_page(viewport={"width": 1400, "height": 900})
        requests: list[str] = []
        errors: list[str] = []
        pg.on("request", lambda r: requests.append(r.url))
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(url)
        pg.wait_for_selector("#graph g.node")
        yield pg, url
        # every request the page made went to the viewer's own server
        assert requests and all(r.startswith(url) or r.startswith("data:") for r in requests)
        assert errors == []
        pg.close()


def shown(pg) -> int:
    return pg.locator("#graph g.node").count()


def test_renders_every_node_and_opens_a_feature_card(page, run_dir, tmp_path):
    pg, _ = page
    _, graph, descs = run_dir
    doc = json.loads(graph.read_text())
    assert shown(pg) == len(doc["nodes"]) > 0
    assert pg.locator("#graph path.edge").count() == len(doc["links"])
    kinds = {n["feature_type"] for n in doc["nodes"]}
    assert pg.locator("#graph g.node.embedding").count() == len(doc["metadata"]["prompt_tokens"])
    assert "logit" in kinds and pg.locator("#graph g.node.logit").count() >= 1
    # embeddings at the bottom, logits at the top
    y = lambda sel: pg.locator(sel).first.bounding_box()["y"]  # noqa: E731
    assert y("#graph g.node.logit") < y("#graph g.node.feature") < y("#graph g.node.embedding")
    kept = pg.locator("#graph g.node.feature.kept").count()
    assert kept >= 1

    node = pg.locator("#graph g.node.feature").first
    node_id = node.get_attribute("data-id")
    layer, feature, _ = (int(x) for x in node_id.split("_"))
    node.click()
    pg.wait_for_selector("#card .description")
    assert pg.inner_text("#card .description") == descs[f"{layer}/{feature}"]
    card = pg.inner_text("#card")
    assert "activation on this prompt" in card and "Top activating examples" in card
    assert "clarity" in card and '" up"' in card and '" down"' in card
    assert pg.locator("#card .example span").count() == 3
    shot = tmp_path / "viewer.png"
    pg.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def test_threshold_sliders_hide_nodes_and_edges(page, run_dir):
    pg, _ = page
    _, graph, _ = run_dir
    doc = json.loads(graph.read_text())
    always = sum(n["feature_type"] in ("embedding", "logit") for n in doc["nodes"])
    t = 0.5
    expected = always + sum(
        n["feature_type"] not in ("embedding", "logit") and n["influence"] <= t
        for n in doc["nodes"]
    )
    assert expected < len(doc["nodes"])
    pg.locator("#node-threshold").fill(str(t))
    assert shown(pg) == expected
    pg.locator("#node-threshold").fill("0")
    assert shown(pg) == always
    pg.locator("#node-threshold").fill("1")
    edges = pg.locator("#graph path.edge").count()
    pg.locator("#edge-threshold").fill("0.5")
    top = max(abs(lk["weight"]) for lk in doc["links"])
    assert (
        pg.locator("#graph path.edge").count()
        == sum(abs(lk["weight"]) >= 0.5 * top for lk in doc["links"])
        < edges
    )


def test_pinned_nodes_become_a_supernode_saved_in_the_file(page, run_dir):
    pg, _ = page
    _, graph, _ = run_dir
    ids = [pg.locator("#graph g.node.feature").nth(i).get_attribute("data-id") for i in (0, 1)]
    for node_id in ids:
        pg.locator(f'#graph g.node[data-id="{node_id}"]').click()
        pg.locator("#pin-button").click()
    assert pg.locator("#graph g.node.pinned").count() == 2
    pg.locator("#supernode-name").fill("says Mary")
    pg.locator("#group-button").click()
    assert pg.locator("#graph g.supernode").count() == 1
    # the same pins again make no second group: a node is in one supernode at most
    pg.locator("#group-button").click()
    expect(pg.locator("#save-status")).to_contain_text("in no supernode yet")
    assert pg.locator("#graph g.supernode").count() == 1
    pg.locator("#save-button").click()
    expect(pg.locator("#save-status")).to_have_text("saved")
    q = json.loads(graph.read_text())["qParams"]
    assert q["supernodes"] == [["says Mary", *ids]]
    from cltrace.graph.export import load_graph_json
    from cltrace.graph.supernodes import read_supernodes

    saved = read_supernodes(load_graph_json(graph))  # the supernode tools read it back
    assert [(sn.name, list(sn.members)) for sn in saved] == [("says Mary", ids)]
    assert q["pinnedIds"] == ids and q["clickedId"] == ids[1]
    # a reload shows what was saved
    pg.reload()
    pg.wait_for_selector("#graph g.supernode")
    assert pg.locator("#graph g.node.pinned").count() == 2


def test_pie_run_links_its_report(page, run_dir):
    pg, url = page
    _, _, descs = run_dir
    first = pg.locator("#kept-list li").first
    layer, feature = first.inner_text().split()[:2]
    assert descs[f"{layer[1:]}/{feature[1:]}"] in first.inner_text()
    node = pg.locator("#graph g.node.feature").first
    node.hover()
    node_id = node.get_attribute("data-id")
    assert descs["/".join(node_id.split("_")[:2])] in pg.inner_text("#tooltip")
    href = pg.locator("#report-link").get_attribute("href")
    assert href == "files/report.html" and pg.locator("#report-link").is_visible()
    assert pg.locator("#kept-list li").count() == 3
    pg.goto(url + href)
    assert "PIE report" in pg.inner_text("body")


def test_graph_file_alone(browser, run_dir):
    _, graph, _ = run_dir
    with running(graph) as url:
        pg = browser.new_page()
        pg.goto(url)
        pg.wait_for_selector("#graph g.node")
        assert shown(pg) == len(json.loads(Path(graph).read_text())["nodes"])
        assert pg.locator("#run").is_hidden()
        pg.close()


def test_reads_circuit_tracers_own_file(browser, tmp_path):
    src = Path(__file__).parents[1] / "graph" / "data" / "circuit_tracer_reference.json"
    graph = tmp_path / "ct.json"
    shutil.copy(src, graph)
    doc = json.loads(graph.read_text())
    with running(graph) as url:
        pg = browser.new_page()
        pg.goto(url)
        pg.wait_for_selector("#graph g.node")
        assert shown(pg) == len(doc["nodes"])
        assert pg.locator("#graph path.edge").count() == len(doc["links"])
        feature = next(n for n in doc["nodes"] if n["feature_type"] == "cross layer transcoder")
        node_id = feature["node_id"]
        pg.locator(f'#graph g.node[data-id="{node_id}"]').click()
        layer, index, _ = feature["node_id"].split("_")
        assert pg.inner_text("#card h2") == f"L{layer} F{index}"
        pg.close()


def test_shows_a_coarsened_graph(browser, run_dir, tmp_path):
    """A graph whose supernodes were merged into single nodes (cltrace supernodes) renders its
    merged nodes with their names."""
    from cltrace.graph.export import graph_json_text, load_graph_json
    from cltrace.graph.supernodes import Supernode, coarsen

    _, graph, _ = run_dir
    doc = load_graph_json(graph)
    doc.qParams.supernodes = []
    feats = [n.node_id for n in doc.nodes if n.feature_type == "cross layer transcoder"][:3]
    coarse = coarsen(doc, [Supernode("three features", feats)])
    path = tmp_path / "coarse.json"
    path.write_text(graph_json_text(coarse))
    with running(path) as url:
        pg = browser.new_page()
        pg.goto(url)
        pg.wait_for_selector("#graph g.node")
        assert shown(pg) == len(coarse.nodes) == len(doc.nodes) - 2
        merged = pg.locator("#graph g.node.supernode")
        assert merged.count() == 1 and merged.text_content() == "three features"
        merged.click()
        assert "supernode: three features (3 nodes)" in pg.inner_text("#card h2")
        pg.close()
