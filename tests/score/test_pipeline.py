"""Stage III on a tiny PIE run directory: scores.json, the summary, the report, the CLI."""

import json
import math
import random

import numpy as np
import pytest
from typer.testing import CliRunner

from cltrace.cli import app
from cltrace.errors import CltraceError
from cltrace.pie import PieConfig, run_pie
from cltrace.pie.stage3 import evaluate_run
from cltrace.prune import PruneConfig
from cltrace.score import METRICS, ScoreConfig, sequence_scores
from cltrace.score import feature as feature_mod
from cltrace.score.raters import Generated, Judgement, Rater
from cltrace.score.texts import HELD_OUT_SEED, load_texts
from cltrace.tasks import PromptPair, write_pairs
from cltrace.testing import random_transcoder, save_tiny_assets, tiny_model

PAIRS = [
    PromptPair("w1 w2 w3 w4 w2 w5", "w6 w7 w3 w4 w7 w5", (" w2",), (" w7",)),
    PromptPair("w8 w9 w3 w4 w9 w5", "w10 w11 w3 w4 w11 w5", (" w9",), (" w11",)),
]
CFG = ScoreConfig(n_generate=3, n_rated=40, n_faith_prompts=4, n_new_tokens=4, n_detect=5)


def corpus(n=60, seed=0):
    rng = random.Random(seed)
    return [" ".join(f"w{rng.randrange(40)}" for _ in range(rng.randint(3, 9))) for _ in range(n)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    adapter, tc = save_tiny_assets(root, "gpt2", d_features=16, n_layers=2)
    write_pairs(root / "pairs.json", PAIRS)
    cfg = PieConfig(
        data=str(root / "pairs.json"), model=str(root / "model"), transcoder=str(root / "clt"),
        methods=("fap",), random_sweep=(), prune=PruneConfig(budgets=(3,)), n_boot=50,
        interpret_method="fap", interpret_budget=3,
    )  # fmt: skip
    run = root / "run"
    run_pie(cfg, run, force=True)
    feats = json.loads((run / "kept_features.json").read_text())["features"]
    assert len(feats) >= 2
    # describe the first feature by the token where it fires most on the corpus; leave the
    # second without a description
    texts = corpus()
    first = (feats[0]["layer"], feats[0]["feature"])
    scores = sequence_scores(adapter, tc, texts, [first])[0]
    best = texts[int(np.argmax(scores))].split()
    descs = {f"{feats[0]['layer']}/{feats[0]['feature']}": {"description": f"'{best[0]}'"}}
    for f in feats[2:]:
        descs[f"{f['layer']}/{f['feature']}"] = {"description": "'w3', 'w4'"}
    (run / "descriptions.json").write_text(json.dumps(descs))
    (root / "corpus.txt").write_text("\n".join(texts) + "\n")
    return run


def test_evaluate_run_writes_scores_summary_and_report(run_dir):
    summary = evaluate_run(run_dir, corpus=corpus(), config=CFG, n_boot=100)
    scores = json.loads((run_dir / "scores.json").read_text())
    feats = json.loads((run_dir / "kept_features.json").read_text())["features"]
    keys = [f"{f['layer']}/{f['feature']}" for f in feats]
    assert list(scores) == keys
    first, second = scores[keys[0]], scores[keys[1]]
    assert first["rater"] == "lexical" and first["description"]
    for m in METRICS:
        v = first[m]
        assert v is None or 0.0 <= v <= 1.0, (m, v)
        assert v is not None or m in first["reasons"]
    assert first["clarity"] is not None and first["info"]["n_synthetic"] > 0
    # no description: every metric null, with the reason
    assert all(second[m] is None for m in METRICS)
    assert all("no description" in second["reasons"][m] for m in METRICS)

    on_disk = json.loads((run_dir / "scores_summary.json").read_text())
    assert on_disk["rater"] == "lexical" and on_disk["n_features"] == len(keys)
    clar = on_disk["metrics"]["clarity"]
    assert {"mean", "std", "low", "high", "n", "n_undefined"} <= clar.keys()
    assert clar["n"] >= 1 and clar["low"] <= clar["mean"] <= clar["high"]
    assert summary["metrics"]["clarity"]["n"] == clar["n"]

    html = (run_dir / "report.html").read_text()
    assert "clarity" in html and f"{first['clarity']:.3g}" in html
    assert first["description"] in html.replace("&#x27;", "'")


def test_rerun_resumes_from_scores_json(run_dir, monkeypatch):
    evaluate_run(run_dir, corpus=corpus(), config=CFG, n_boot=100)
    before = (run_dir / "scores.json").read_text()

    def boom(*a, **k):
        raise AssertionError("a scored feature was scored again")

    monkeypatch.setattr("cltrace.pie.stage3.score_feature_steps", boom)
    evaluate_run(run_dir, corpus=corpus(), config=CFG, n_boot=100)
    assert (run_dir / "scores.json").read_text() == before
    # another configuration is not mistaken for the same scores
    monkeypatch.setattr("cltrace.pie.stage3.score_feature_steps", feature_mod.score_feature_steps)
    evaluate_run(run_dir, corpus=corpus(), config=ScoreConfig.pie(n_detect=3), n_boot=100)
    after = json.loads((run_dir / "scores.json").read_text())
    assert json.loads((run_dir / "scores_summary.json").read_text())["config"]["reduce"] == "max"
    assert any(v["config_id"] != json.loads(before)[k]["config_id"] for k, v in after.items())


def test_cli_evaluate(run_dir):
    corpus_file = run_dir.parent / "corpus.txt"
    result = CliRunner().invoke(app, ["evaluate", "--run", str(run_dir), "--corpus",
                                      str(corpus_file), "--variant", "pie"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "clarity" in result.output
    result = CliRunner().invoke(app, ["evaluate", "--run", str(run_dir), "--rater", "nope"])
    assert isinstance(result.exception, CltraceError)


def test_missing_descriptions_is_a_user_error(tmp_path):
    (tmp_path / "kept_features.json").write_text(json.dumps({"features": []}))
    with pytest.raises(CltraceError, match="descriptions.json is missing"):
        evaluate_run(tmp_path, corpus=corpus())


class SilentRater(Rater):
    """Produces nothing and finds nothing: every rating-based metric is undefined."""

    name = "silent"

    def generate(self, description, n_requests):
        return Generated([], ["the server said no"])

    def rate(self, description, texts):
        return Judgement([0] * len(texts))


def test_degenerate_feature_gets_nan_with_reasons():
    adapter = tiny_model("gpt2", n_layers=2)
    tc = random_transcoder(adapter, d_features=16)
    texts = corpus(20)
    natural = np.zeros(len(texts))  # never fires
    fs = feature_mod.score_feature(adapter, tc, SilentRater(), "silent", (0, 1), "'w3'", texts,
                                   natural, CFG)  # fmt: skip
    reasons = fs.reasons
    assert math.isnan(fs.values["clarity"]) and "no synthetic texts" in reasons["clarity"]
    assert "the server said no" in reasons["clarity"]
    assert math.isnan(fs.values["responsiveness"]) and "rating 2" in reasons["responsiveness"]
    assert fs.values["faithfulness"] is None and "skipped" in reasons["faithfulness"]
    assert math.isnan(fs.values["detection"]) and "never fires" in reasons["detection"]
    assert math.isnan(fs.values["fuzzing"]) and "never fires" in reasons["fuzzing"]
    json.dumps(fs.to_json(), allow_nan=False)  # NaN is written as null


def test_default_corpus_is_held_out_bundled_text():
    a = load_texts(None, 50, HELD_OUT_SEED)
    assert len(a) == 50 and a == load_texts(None, 50, HELD_OUT_SEED)
    assert a != load_texts(None, 50, 0)  # not the training draw


def test_evaluate_run_with_the_llm_rater_on_the_local_server(run_dir, tmp_path):
    from cltrace.llm.testing import FakeChatServer, Reply
    from tests.score.test_raters import _answer

    with FakeChatServer(default=_answer) as server:
        server.script(Reply("not a list"))  # one malformed generation reply
        evaluate_run(run_dir, rater="llm", base_url=server.base_url, model="fake",
                     corpus=corpus(), config=CFG, n_boot=50, cache_dir=tmp_path / "c")  # fmt: skip
        assert server.requests
    scores = json.loads((run_dir / "scores.json").read_text())
    described = [v for v in scores.values() if v["description"]]
    assert all(v["rater"] == "llm" for v in described)
    assert sum(v["n_failures"] for v in described) >= 1
    assert any("no readable list" in f for v in described for f in v["failures"])


def test_random_sample_descriptions_are_scored_as_a_baseline(run_dir):
    rand = {"0/1": {"description": "'w3'"}, "1/2": {"description": ""}}
    (run_dir / "descriptions_random.json").write_text(json.dumps(rand))
    try:
        summary = evaluate_run(run_dir, corpus=corpus(), config=CFG, n_boot=50)
        scores = json.loads((run_dir / "scores_random.json").read_text())
        assert list(scores) == ["0/1", "1/2"]
        assert "no description" in scores["1/2"]["reasons"]["clarity"]
        assert summary["random"]["n_features"] == 2
        assert "random" in json.loads((run_dir / "scores_summary.json").read_text())
    finally:
        (run_dir / "descriptions_random.json").unlink()


def test_failed_llm_evaluate_keeps_scores_and_resumes_from_progress(run_dir, tmp_path):
    import shutil

    from cltrace.llm import EndpointDown
    from cltrace.llm.testing import FakeChatServer, Status
    from tests.score.test_raters import _answer

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "descriptions_random.json").unlink(missing_ok=True)
    keys = [f"{f['layer']}/{f['feature']}"
            for f in json.loads((run / "kept_features.json").read_text())["features"]]  # fmt: skip
    # the first feature is described one way, the others another, so the server can refuse
    # exactly the requests about the later features
    descs = {k: {"description": "'w5'" if i == 0 else "'w3', 'w4'"} for i, k in enumerate(keys)}
    (run / "descriptions.json").write_text(json.dumps(descs))
    evaluate_run(run, corpus=corpus(), config=CFG, n_boot=20)
    lexical = (run / "scores.json").read_bytes()
    summary = (run / "scores_summary.json").read_bytes()

    def first_only(body):
        return Status(403, "no") if "'w3', 'w4'" in body["messages"][1]["content"] else \
            _answer(body)  # fmt: skip

    opts = dict(rater="llm", model="fake", corpus=corpus(), config=CFG, n_boot=20)
    with FakeChatServer(default=first_only) as server:
        with pytest.raises(EndpointDown, match="rejected the API key .HTTP 403"):
            evaluate_run(run, base_url=server.base_url, **opts)
        assert (run / "scores.json").read_bytes() == lexical
        assert (run / "scores_summary.json").read_bytes() == summary
        partial = json.loads((run / "scores.partial.json").read_text())
        assert list(partial) == [keys[0]] and partial[keys[0]]["rater"] == "llm"

        server.reset()  # the same endpoint (the port is part of the scores' configuration)
        server.default = _answer
        evaluate_run(run, base_url=server.base_url, **opts)
        asked = [r["messages"][1]["content"] for r in server.requests]
    assert asked and not any("'w5'" in a for a in asked)  # the first feature was resumed
    scores = json.loads((run / "scores.json").read_text())
    assert list(scores) == keys and all(v["rater"] == "llm" for v in scores.values())
    assert scores[keys[0]] == partial[keys[0]]
    assert not (run / "scores.partial.json").exists()


def test_llm_rater_without_an_endpoint_fails_before_loading(run_dir, monkeypatch):
    from cltrace.errors import UsageError

    for name in ("CLTRACE_LLM_BASE_URL", "CLTRACE_LLM_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("cltrace.pie.stage3.load_texts", None)  # never reached
    with pytest.raises(UsageError, match="the llm rater needs an endpoint"):
        evaluate_run(run_dir, rater="llm", model="m")


@pytest.mark.parametrize(
    "name,content,fragment",
    [
        ("kept_features.json", "[1, 2", "kept_features.json is not valid JSON"),
        ("kept_features.json", '{"features": [{"layer": 0}]}', "does not list features"),
        ("descriptions.json", "[]", "is not a mapping of features to descriptions"),
        ("config.json", "{", "config.json is not valid JSON"),
    ],
)
def test_damaged_run_files_are_one_sentence(run_dir, tmp_path, name, content, fragment):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / name).write_text(content)
    with pytest.raises(CltraceError, match=fragment) as info:
        evaluate_run(run, corpus=corpus(), config=CFG, n_boot=20)
    assert "\n" not in str(info.value)


def test_missing_run_directory_is_not_created(tmp_path):
    with pytest.raises(CltraceError, match="does not exist"):
        evaluate_run(tmp_path / "nope", corpus=corpus())
    assert not (tmp_path / "nope").exists()
