"""The PIE job end to end on a tiny saved model: run directory, resume, invariants."""

import json

import pytest

from cltrace.errors import CltraceError, UsageError
from cltrace.pie import PieConfig, run_pie
from cltrace.prune import PruneConfig
from cltrace.tasks import PromptPair, write_pairs
from cltrace.testing import save_tiny_assets

PAIRS = [
    PromptPair("w1 w2 w3 w4 w2 w5", "w6 w7 w3 w4 w7 w5", (" w2",), (" w7",)),
    PromptPair("w8 w9 w3 w4 w9 w5", "w10 w11 w3 w4 w11 w5", (" w9",), (" w11",)),
    PromptPair("w12 w13 w3 w14 w13", "w15 w16 w3 w14 w16", (" w13",), (" w16",)),
    PromptPair("w17 w18 w19 w18 w20", "w21 w22 w19 w22 w20", (" w18",), (" w22",)),
]
METHODS = ("fap", "fap_synergy", "fap_signal", "act_mag", "random")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("pie")
    save_tiny_assets(root, "gpt2", d_features=24)
    write_pairs(root / "pairs.json", PAIRS)
    return root


def _cfg(assets, **kw):
    opts = dict(
        data=str(assets / "pairs.json"), model=str(assets / "model"),
        transcoder=str(assets / "clt"), methods=METHODS, random_sweep=(32,),
        prune=PruneConfig(budgets=(2, 4, 8), random_seeds=2), n_boot=200, interpret_budget=4,
        interpret_method="fap",
    )  # fmt: skip
    return PieConfig(**{**opts, **kw})


def test_run_writes_the_directory_and_results(assets, tmp_path):
    res = run_pie(_cfg(assets), tmp_path / "run", force=True)
    for name in ("config.json", "records.jsonl", "results.json", "kept_features.json",
                 "report.html"):  # fmt: skip
        assert (tmp_path / "run" / name).exists(), name
    assert res["n_prompts"] == len(PAIRS)
    assert set(res["methods"]) == set(METHODS)
    fap = res["methods"]["fap"]["8"]["kl"]
    assert fap["low"] <= fap["mean"] <= fap["high"]
    html = (tmp_path / "run" / "report.html").read_text()
    assert "<svg" in html and "fap_synergy" in html
    kept = json.loads((tmp_path / "run" / "kept_features.json").read_text())
    assert kept["features"] and all(f["kept_count"] >= 1 for f in kept["features"])


def test_interrupted_run_resumes_to_identical_results(assets, tmp_path):
    full = tmp_path / "full"
    part = tmp_path / "part"
    run_pie(_cfg(assets), full, force=True)
    assert run_pie(_cfg(assets), part, stop_after=2, force=True) == {}
    lines = (part / "records.jsonl").read_text().splitlines()
    assert len(lines) == 2
    # a line cut in half by the interruption is dropped and recomputed
    with (part / "records.jsonl").open("a") as f:
        f.write(lines[0][: len(lines[0]) // 2])
    run_pie(_cfg(assets), part, force=True)
    assert (part / "results.json").read_text() == (full / "results.json").read_text()


def test_other_config_in_same_directory_is_refused(assets, tmp_path):
    run_pie(_cfg(assets), tmp_path / "r", stop_after=1, force=True)
    other = _cfg(assets)
    other.prune.budgets = (3,)
    with pytest.raises(CltraceError, match="different options \\(budgets\\)"):
        run_pie(other, tmp_path / "r", force=True)


def test_budget_above_active_set_keeps_everything(assets, tmp_path):
    res = run_pie(_cfg(assets, random_sweep=(10_000,)), tmp_path / "big", force=True)
    everything = res["methods"]["random"]["10000"]
    assert everything["kl"]["mean"] == 0.0
    assert abs(everything["faithfulness"]["mean"] - 1.0) < 1e-4


def test_lazy_decoders_resume_an_eager_run_to_identical_results(assets, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    run_pie(_cfg(assets), full, force=True)
    run_pie(_cfg(assets), part, stop_after=2, force=True)
    # a run directory written before the device, dtype and lazy options existed
    saved = json.loads((part / "config.json").read_text())
    for key in ("device", "dtype", "lazy_decoders"):
        saved.pop(key)
    (part / "config.json").write_text(json.dumps(saved))
    run_pie(_cfg(assets, lazy_decoders=True), part, force=True)
    assert (part / "results.json").read_text() == (full / "results.json").read_text()
    assert (part / "kept_features.json").read_text() == (full / "kept_features.json").read_text()


def test_dtype_is_part_of_a_run_and_spelled_one_way(assets, tmp_path):
    assert PieConfig(dtype="bf16").dtype == "bfloat16"
    with pytest.raises(UsageError, match="--dtype 'fp8' is unknown"):
        PieConfig(dtype="fp8")
    with pytest.raises(UsageError, match="--device 'tpu'"):
        run_pie(_cfg(assets, device="tpu"), tmp_path / "t", force=True)
    run_pie(_cfg(assets), tmp_path / "r", stop_after=1, force=True)
    with pytest.raises(CltraceError, match="different options \\(dtype\\)"):
        run_pie(_cfg(assets, dtype="bfloat16"), tmp_path / "r", force=True)
