"""The PIE report: log-scale KL, distinct series styles, bounded effective budgets, the stage III
kept-versus-random table and the full feature table."""

import json
import math
import re

import numpy as np

from cltrace.pie.results import _effective
from cltrace.report.pie_report import write_report
from cltrace.report.svg import Series, line_chart


def test_log_y_places_decades_evenly_and_series_differ_without_colour():
    s = [Series("a", [50, 100], [1e-3, 1e-1], [1e-3, 1e-1], [1e-3, 1e-1]),
         Series("b", [50, 100], [1e-2, 1e-2], [1e-2, 1e-2], [1e-2, 1e-2])]  # fmt: skip
    svg = line_chart(s, "t", "x", "y", log_y=True)
    ys = [float(y) for y in re.findall(r'<circle cx="[\d.]+" cy="([\d.]+)"', svg)]
    # series a: a circle at 1e-3 and at 1e-1; the legend circle comes last
    y3, y1 = ys[0], ys[1]
    rect_y = [float(y) + 3.5 for y in re.findall(r'<rect x="[\d.]+" y="([\d.]+)" width="7.0"', svg)]
    y2 = rect_y[0]  # series b's first marker (a square) at 1e-2: halfway between, in log scale
    assert math.isclose(y2, (y3 + y1) / 2, abs_tol=0.2)
    dashes = re.findall(r'<polyline [^>]*stroke-dasharray="([^"]+)"', svg)
    assert len(set(dashes)) == 2


def _table(curves):
    return {(m, k): {"kl": np.asarray(v)} for m, by_k in curves.items() for k, v in by_k.items()}


class Cfg:
    n_boot = 50


def test_effective_budget_is_a_bound_outside_the_budgets_tried():
    budgets = [50, 100, 200]
    fap = {50: [1.0, 1.0], 100: [0.5, 0.5], 200: [0.2, 0.2]}
    table = _table({
        "fap": fap,
        "better": {50: [0.1, 0.1]},   # beats FAP at every budget: K' > 200
        "worse": {50: [2.0, 2.0]},    # no better than FAP at K=50: K' <= 50
        "inside": {50: [0.75, 0.75]},  # halfway between K=50 and K=100
    })  # fmt: skip
    eff = _effective(table, budgets, Cfg())
    assert eff["better"]["fap"]["censored"] == "above"
    assert eff["worse"]["fap"]["censored"] == "below"
    assert eff["inside"]["fap"]["censored"] is None
    assert math.isclose(eff["inside"]["fap"]["effective_budget"], 75.0)


def test_report_shows_bounds_stage3_table_and_every_feature(tmp_path):
    run = tmp_path
    results = {
        "n_prompts": 2, "budgets": [50, 100], "mean_occurrences": 10.0, "mean_units": 10.0,
        "clean_logit_diff": 1.0, "null_logit_diff": 0.0, "null_kl": 1.0,
        "methods": {m: {str(k): {"kl": {"mean": v, "low": v, "high": v},
                                  "faithfulness": {"mean": 0.5, "low": 0.5, "high": 0.5}}
                        for k, v in ((50, 1e-3), (100, 1e-4))} for m in ("fap", "random")},
        "effective_budget": {"random": {"fap": {
            "budget": 50, "effective_budget": "inf", "low": "inf", "high": "inf",
            "saving": None, "censored": "above", "budget_range": [50, 100]}}},
    }  # fmt: skip
    (run / "results.json").write_text(json.dumps(results))
    (run / "config.json").write_text(json.dumps({"task": "ioi"}))
    feats = [{"layer": 0, "feature": i, "kept_count": 1, "mean_abs_score": 0.1}
             for i in range(75)]  # fmt: skip
    (run / "kept_features.json").write_text(
        json.dumps({"method": "fap", "budget": 50, "features": feats})
    )
    descs = {f"0/{i}": {"description": f"d{i}", "explainer": "weightlens/top_tokens" if i % 2
                        else "weightlens"} for i in range(75)}  # fmt: skip
    (run / "descriptions.json").write_text(json.dumps(descs))
    metric = {"mean": 0.6, "std": 0.1, "low": 0.55, "high": 0.65, "n": 75, "n_undefined": 0}
    (run / "scores_summary.json").write_text(json.dumps({
        "rater": "lexical", "n_features": 75, "metrics": {"clarity": metric},
        "random": {"n_features": 75, "metrics": {"clarity": {**metric, "mean": 0.2}}},
    }))  # fmt: skip
    html = write_report(run).read_text()
    assert "&gt; 100" in html  # never reached within the budgets: a bound, not a number
    assert "kept versus random" in html and "0.2 [0.55, 0.65]" in html
    assert "75 distinct" in html and html.count("<td>0</td><td>") == 75
    assert html.count("written by the fallback") == 37 and "37 descriptions by a fallback" in html
    assert "log scale" in html
