"""interpret_run on a tiny PIE run directory: files, report table, random comparison, CLI."""

import json

import pytest

from cltrace.interpret.store import StoreConfig
from cltrace.llm.testing import FakeChatServer, Reply, Status
from cltrace.pie import PieConfig, run_pie
from cltrace.pie.stage2 import InterpretConfig, interpret_run, update_cost_scores
from cltrace.prune import PruneConfig
from cltrace.tasks import PromptPair, write_pairs
from cltrace.testing import save_tiny_assets
from tests.interpret.conftest import tiny_docs

PAIRS = [
    PromptPair("w1 w2 w3 w4 w2 w5", "w6 w7 w3 w4 w7 w5", (" w2",), (" w7",)),
    PromptPair("w8 w9 w3 w4 w9 w5", "w10 w11 w3 w4 w11 w5", (" w9",), (" w11",)),
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("interp")
    save_tiny_assets(root, "gpt2", d_features=16)
    write_pairs(root / "pairs.json", PAIRS)
    (root / "corpus.txt").write_text("\n".join(tiny_docs(40)) + "\n")
    cfg = PieConfig(
        data=str(root / "pairs.json"), model=str(root / "model"), transcoder=str(root / "clt"),
        methods=("fap", "random"), random_sweep=(16,), n_boot=50, interpret_budget=4,
        interpret_method="fap", prune=PruneConfig(budgets=(2, 4), random_seeds=1),
    )  # fmt: skip
    run_pie(cfg, root / "run", force=True)
    return root


def _cfg(root, explainer="weightlens", **kw):
    store = StoreConfig(corpus=str(root / "corpus.txt"), n_docs=40, chunk_docs=20, n_top=6,
                        n_quantiles=2, per_quantile=2)  # fmt: skip
    return InterpretConfig(explainer=explainer, store=store, **kw)


def test_weightlens_run_writes_descriptions_details_cost_and_report(run_dir):
    run = run_dir / "run"
    descs = interpret_run(run, config=_cfg(run_dir))
    kept = json.loads((run / "kept_features.json").read_text())["features"]
    on_disk = json.loads((run / "descriptions.json").read_text())
    assert on_disk == json.loads(json.dumps(descs))
    assert set(on_disk) == {f"{f['layer']}/{f['feature']}" for f in kept}
    for entry in on_disk.values():
        assert entry["explainer"].startswith("weightlens")
        assert entry["description"] or entry["failure"]
        for html in entry["examples_html"]:
            assert "<script" not in html
    f0 = kept[0]
    detail = json.loads((run / "features" / f"{f0['layer']}_{f0['feature']}.json").read_text())
    assert {"index", "examples_quantiles", "top_logits", "bottom_logits"} <= set(detail)
    assert detail["index"] == f0["feature"]
    cost = json.loads((run / "interpret_cost.json").read_text())
    assert cost["kept"]["n_features"] == len(kept)
    assert cost["random"]["n_features"] == min(len(kept), cost["active_set_size"])
    assert (run / "descriptions_random.json").exists()
    html = (run / "report.html").read_text()
    assert "Kept features" in html and "<span class='hl'>" in html
    first = next(e for e in on_disk.values() if e["description"])
    from html import escape

    assert escape(first["description"]) in html


def test_stage_three_scores_are_added_to_the_cost_file(run_dir):
    run = run_dir / "run"
    if not (run / "interpret_cost.json").exists():
        interpret_run(run, config=_cfg(run_dir))
    (run / "scores_random.json").write_text(json.dumps({"0/1": {"clarity": 0.5, "id": "x"}}))
    cost = update_cost_scores(run)
    assert cost["scores"]["random"]["clarity"] == 0.5
    (run / "scores_random.json").unlink()


def test_llm_run_records_failures_without_crashing(run_dir, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir / "run", run)
    with FakeChatServer(default=Reply("Reasoning.\n[EXPLANATION]: the w-words")) as server:
        server.script(Status(400, "bad request"))
        descs = interpret_run(
            run, explainer="llm",
            config=_cfg(run_dir, base_url=server.base_url, llm_model="fake",
                        compare_random=False),
        )  # fmt: skip
        assert server.requests[0]["temperature"] == 0.2
        assert server.requests[0]["max_tokens"] == 256
        assert "<<" in server.requests[0]["messages"][1]["content"]
    entries = list(descs.values())
    assert sum(1 for e in entries if e["failure"]) >= 1
    assert any(e["description"] == "the w-words" for e in entries)
    cost = json.loads((run / "interpret_cost.json").read_text())
    assert cost["kept"]["llm_calls"] == len(server.requests)


def test_circuitlens_run_describes_clusters(run_dir, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir / "run", run)
    descs = interpret_run(run, explainer="circuitlens",
                          config=_cfg(run_dir, compare_random=False, max_features=3))  # fmt: skip
    assert len(descs) == 3
    for e in descs.values():
        assert e["explainer"] == "circuitlens"
        if e["description"]:
            assert "driven by" in e["description"]
            assert e["details"]["clusters"]


def test_cli_interpret(run_dir, tmp_path, monkeypatch):
    import shutil

    from typer.testing import CliRunner

    from cltrace.cli import app

    run = tmp_path / "run"
    shutil.copytree(run_dir / "run", run)
    res = CliRunner().invoke(app, ["interpret", "--run", str(run), "--corpus",
                                   str(run_dir / "corpus.txt"), "--n-docs", "30",
                                   "--no-compare-random", "--max-features", "2"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert len(json.loads((run / "descriptions.json").read_text())) == 2
    res = CliRunner().invoke(app, ["interpret", "--run", str(run), "--explainer", "nope"])
    assert res.exit_code != 0


def test_failed_llm_run_keeps_the_earlier_stage_two_output(run_dir, tmp_path):
    import shutil

    from cltrace.llm import EndpointDown

    run = tmp_path / "run"
    shutil.copytree(run_dir / "run", run)
    interpret_run(run, config=_cfg(run_dir, compare_random=False))
    names = ["descriptions.json", "interpret_config.json", "interpret_cost.json",
             "report.html", "activations/meta.json", "activations/store.json"]  # fmt: skip
    before = {n: (run / n).read_bytes() for n in names}
    # other store options (fewer documents) and an endpoint that refuses every request
    cfg = _cfg(run_dir, compare_random=False)
    cfg.store.n_docs = 30
    with FakeChatServer(default=Status(401, "no")) as server:
        cfg.base_url, cfg.llm_model = server.base_url, "fake"
        with pytest.raises(EndpointDown, match="rejected the API key"):
            interpret_run(run, explainer="llm", config=cfg)
    assert {n: (run / n).read_bytes() for n in names} == before
    # the store for the new options waits beside the old one, and takes its place on success
    assert json.loads((run / "activations.next" / "meta.json").read_text())["n_docs"] == 30
    cfg.explainer = "weightlens"
    interpret_run(run, config=cfg)
    assert not (run / "activations.next").exists()
    assert json.loads((run / "activations" / "meta.json").read_text())["n_docs"] == 30
    assert json.loads((run / "interpret_config.json").read_text())["store"]["n_docs"] == 30


def test_llm_explainer_without_an_endpoint_fails_before_writing(run_dir, tmp_path, monkeypatch):
    import shutil

    from cltrace.errors import UsageError

    for name in ("CLTRACE_LLM_BASE_URL", "CLTRACE_LLM_MODEL"):
        monkeypatch.delenv(name, raising=False)
    run = tmp_path / "run"
    shutil.copytree(run_dir / "run", run)
    files = sorted(p.name for p in run.iterdir())
    with pytest.raises(UsageError, match="the llm explainer needs an endpoint"):
        interpret_run(run, explainer="llm", config=_cfg(run_dir))
    assert sorted(p.name for p in run.iterdir()) == files


def test_saved_config_names_the_endpoint_and_model_used(run_dir, tmp_path, monkeypatch):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir / "run", run)
    with FakeChatServer(default=Reply("[EXPLANATION]: w")) as server:
        url = server.base_url
        # from the environment: the saved config records what was actually used
        monkeypatch.setenv("CLTRACE_LLM_BASE_URL", url + "/")
        monkeypatch.setenv("CLTRACE_LLM_MODEL", "env-model")
        interpret_run(run, explainer="llm", config=_cfg(run_dir, compare_random=False))
    saved = json.loads((run / "interpret_config.json").read_text())
    assert saved["base_url"] == url and saved["llm_model"] == "env-model"
