"""Stages II and III on a tiny PIE run: lazily read decoders give the same files as decoders in
memory, and bfloat16 weights and activations give stores, descriptions and FADE scores close to
float32 (tolerances below, with why)."""

import json
import shutil
from pathlib import Path

import pytest

from cltrace.errors import UsageError
from cltrace.interpret.store import StoreConfig
from cltrace.pie import PieConfig, run_pie
from cltrace.pie.stage2 import InterpretConfig, interpret_run
from cltrace.pie.stage3 import evaluate_run
from cltrace.prune import PruneConfig
from cltrace.tasks import write_pairs
from cltrace.testing import save_tiny_assets
from tests.interpret.conftest import tiny_docs
from tests.interpret.test_pipeline import PAIRS

RANKED = ("clarity", "responsiveness", "purity")
"""FADE metrics that rank texts by activation (AUC-like)."""
COUNTED = ("detection", "fuzzing")
"""Metrics that count examples on either side of a decision over 20 texts."""


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Stage I once on a tiny GPT-2 and CLT, then stages II and III three ways."""
    root = tmp_path_factory.mktemp("stages-precision")
    save_tiny_assets(root, "gpt2", d_features=16)
    write_pairs(root / "pairs.json", PAIRS)
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(tiny_docs(60)) + "\n")
    cfg = PieConfig(
        data=str(root / "pairs.json"), model=str(root / "model"), transcoder=str(root / "clt"),
        methods=("fap", "random"), random_sweep=(16,), n_boot=50, interpret_budget=8,
        interpret_method="fap", prune=PruneConfig(budgets=(2, 8), random_seeds=1),
    )  # fmt: skip
    run_pie(cfg, root / "run", force=True)
    out = {}
    small = {"lazy_decoders": True, "decoder_cache_bytes": 4096}  # a few rows, then evicted
    for name, opts in [("fp32", {}), ("lazy", {"lazy_decoders": True}), ("small", small),
                       ("bf16", {"dtype": "bfloat16"})]:  # fmt: skip
        run = Path(shutil.copytree(root / "run", root / name))
        store = StoreConfig(corpus=str(corpus), n_docs=60, chunk_docs=20, n_top=6,
                            n_quantiles=2, per_quantile=2)  # fmt: skip
        interpret_run(run, config=InterpretConfig(store=store, **opts))
        evaluate_run(run, corpus=str(corpus), **opts)
        out[name] = run
    out["root"] = root
    return out


def _files(run: Path) -> dict[str, bytes]:
    names = ["descriptions.json", "descriptions_random.json", "scores.json", "scores_random.json"]
    names += [str(p.relative_to(run)) for p in sorted((run / "features").glob("*.json"))]
    names += [str(p.relative_to(run)) for p in sorted((run / "activations").rglob("*"))
              if p.is_file()]  # fmt: skip
    return {n: (run / n).read_bytes() for n in names}


def test_lazy_decoders_give_the_same_files(runs):
    eager, lazy, small = _files(runs["fp32"]), _files(runs["lazy"]), _files(runs["small"])
    assert len(eager) > 8 and eager == lazy == small
    assert json.loads((runs["lazy"] / "interpret_config.json").read_text())["lazy_decoders"]


def test_bfloat16_store_and_weightlens_descriptions_are_close_to_float32(runs):
    a = json.loads((runs["fp32"] / "descriptions.json").read_text())
    b = json.loads((runs["bf16"] / "descriptions.json").read_text())
    assert set(a) == set(b) and a
    assert json.loads((runs["bf16"] / "interpret_config.json").read_text())["dtype"] == "bfloat16"
    # bf16 keeps 8 significant bits, so activations move by about 1%: only tokens whose
    # pre-activation sits that close to the JumpReLU threshold switch on or off, and the
    # activation frequency moves by a few tokens in a thousand (measured at most 0.0023)
    freq = [abs(a[k]["frequency"] - b[k]["frequency"]) for k in a]
    assert max(freq) <= 0.01
    assert a != b  # it ran in bf16: some frequency or example order moved
    metas = [json.loads((runs[n] / "activations" / "meta.json").read_text()) for n in
             ("fp32", "bf16")]  # fmt: skip
    assert "dtype" not in metas[0] and metas[1]["dtype"] == "bfloat16"  # never resumed across
    # WeightLens works from the weights (scored in float32 after rounding them to bf16); its
    # z-score outliers stand far above that rounding, so its descriptions stay the same
    weights = [k for k in a if a[k]["explainer"] == "weightlens"]
    assert weights
    assert all(a[k]["description"] == b[k]["description"] for k in weights)
    # store examples: at least the top example is the same text in most features
    same_top = [a[k]["examples_html"][:1] == b[k]["examples_html"][:1] for k in a]
    assert sum(same_top) >= 0.75 * len(a)


def test_bfloat16_fade_scores_are_close_to_float32(runs):
    a = json.loads((runs["fp32"] / "scores.json").read_text())
    b = json.loads((runs["bf16"] / "scores.json").read_text())
    assert set(a) == set(b) and a
    ranked, counted = [], []
    for k in a:
        for m in RANKED + COUNTED:
            x, y = a[k].get(m), b[k].get(m)
            assert (x is None) == (y is None), (k, m)
            if x is not None:
                (ranked if m in RANKED else counted).append(abs(x - y))
    assert ranked and counted
    # ranked metrics only change where two texts' activations are within bf16 rounding of
    # each other (measured at most 0.021)
    assert max(ranked) <= 0.05
    # a counted metric moves by 0.05 per example that crosses its decision (20 examples): a
    # few cross (measured at most 0.1, mean 0.04)
    assert max(counted) <= 0.2
    assert sum(counted) / len(counted) <= 0.08


def test_another_model_without_a_corpus_is_refused_before_any_work(runs):
    run = runs["fp32"]
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(UsageError, match="--corpus"):
        interpret_run(run)
    with pytest.raises(UsageError, match="--corpus"):
        evaluate_run(run)
    assert before == {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}


def test_scores_of_another_precision_are_not_resumed(runs):
    a = json.loads((runs["fp32"] / "scores.json").read_text())
    b = json.loads((runs["bf16"] / "scores.json").read_text())
    lazy = json.loads((runs["lazy"] / "scores.json").read_text())
    ids = {k: (a[k]["config_id"], b[k]["config_id"], lazy[k]["config_id"]) for k in a}
    assert all(x == z != y for x, y, z in ids.values())


@pytest.fixture(scope="module")
def bundled(tmp_path_factory) -> dict[str, Path]:
    """Stage I on the bundled model (4 IOI prompts, 8 kept features), then stages II and III
    in float32 and in bfloat16 on the bundled corpus."""
    root = tmp_path_factory.mktemp("stages-bundled")
    cfg = PieConfig(task="ioi", n=4, methods=("fap",), random_sweep=(8,), n_boot=200,
                    interpret_budget=8, interpret_method="fap",
                    prune=PruneConfig(budgets=(8,), random_seeds=1))  # fmt: skip
    run_pie(cfg, root / "run", force=True)
    out = {}
    for name, opts in [("fp32", {}), ("bf16", {"dtype": "bf16"})]:
        run = Path(shutil.copytree(root / "run", root / name))
        store = StoreConfig(n_docs=300)
        interpret_run(run, config=InterpretConfig(store=store, compare_random=False, **opts))
        evaluate_run(run, **opts)
        out[name] = run
    return out


def test_bfloat16_on_the_bundled_model_keeps_descriptions_and_mean_scores(bundled):
    a = json.loads((bundled["fp32"] / "descriptions.json").read_text())
    b = json.loads((bundled["bf16"] / "descriptions.json").read_text())
    assert set(a) == set(b) and a
    # the trained CLT has more pre-activations near its thresholds than the random one: the
    # frequency moves a little more (measured at most 0.019)
    assert max(abs(a[k]["frequency"] - b[k]["frequency"]) for k in a) <= 0.03
    assert all(a[k]["description"] == b[k]["description"] for k in a
               if a[k]["explainer"] == "weightlens")  # fmt: skip
    ma = json.loads((bundled["fp32"] / "scores_summary.json").read_text())["metrics"]
    mb = json.loads((bundled["bf16"] / "scores_summary.json").read_text())["metrics"]
    compared = 0
    for m, s in ma.items():
        if s["n"] < 2:
            continue
        compared += 1
        # a feature's responsiveness or detection can move by up to 0.25 when bf16 swaps which
        # texts are its top or negative examples, but the mean over kept features (what PIE
        # reports) moves well inside its own 95% CI: measured at most 0.14 of the CI's width
        assert abs(s["mean"] - mb[m]["mean"]) <= 0.25 * (s["high"] - s["low"]) + 1e-9, m
    assert compared >= 4
