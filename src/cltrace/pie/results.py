"""Aggregating per-prompt PIE records into results, and writing the run's output files."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from cltrace.files import atomic_write_json
from cltrace.graph.nodes import cantor
from cltrace.retention.stats import bootstrap_ci, effective_budget, interpolate_budget

METRICS = ("kl", "pred_changed", "faithfulness", "completeness", "logit_diff", "n_kept")


def per_prompt_table(records: list[dict]) -> dict[tuple[str, int], dict[str, np.ndarray]]:
    """{(method, K): {metric: [n_prompts] array}}, randomized methods averaged over seeds."""
    acc: dict[tuple[str, int], dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for rec in records:
        by_key: dict[tuple[str, int], list[dict]] = defaultdict(list)
        for r in rec["results"]:
            by_key[(r["method"], r["budget"])].append(r)
        for key, rows in by_key.items():
            for m in METRICS:
                vals = [float(r[m]) for r in rows]
                acc[key][m].append(float(np.nanmean(vals)) if not all(map(math.isnan, vals))
                                   else math.nan)  # fmt: skip
    return {k: {m: np.asarray(v) for m, v in d.items()} for k, d in acc.items()}


def aggregate(records: list[dict], cfg) -> dict:
    """results.json: per method and budget, mean with a 95% bootstrap CI over prompts."""
    table = per_prompt_table(records)
    methods: dict[str, dict] = defaultdict(dict)
    for (method, k), metrics in sorted(table.items()):
        entry = {}
        for m, vals in metrics.items():
            mean, lo, hi = bootstrap_ci(vals.tolist(), n_boot=cfg.n_boot)
            entry[m] = {"mean": mean, "low": lo, "high": hi}
        entry["n_prompts"] = int(len(metrics["kl"]))
        methods[method][str(k)] = entry
    budgets = list(cfg.prune.budgets)
    out = {
        "n_prompts": len(records),
        "budgets": budgets,
        "methods": dict(methods),
        "mean_occurrences": float(np.mean([r["n_occurrences"] for r in records])),
        "mean_units": float(np.mean([r["n_units"] for r in records])),
        "clean_logit_diff": float(np.mean([r["m_clean"] for r in records])),
        "null_logit_diff": float(np.mean([r["m_null"] for r in records])),
        "null_kl": float(np.mean([r["kl_null"] for r in records])),
    }
    out["effective_budget"] = _effective(table, budgets, cfg)
    out["random_equivalence"] = _random_equivalence(table, cfg)
    return out


def _curve(table, method: str, budgets: list[int]) -> np.ndarray | None:
    if not all((method, k) in table for k in budgets):
        return None
    return np.stack([table[(method, k)]["kl"] for k in budgets], axis=1)  # [prompts, budgets]


def _effective(table, budgets: list[int], cfg) -> dict:
    """For each method at the smallest budget: the budget the baselines need for the same KL."""
    k0 = min(budgets)
    res: dict[str, dict] = {}
    for baseline in ("fap", "relp"):
        base = _curve(table, baseline, budgets)
        if base is None:
            continue
        for (method, k), metrics in table.items():
            if k != k0 or method == baseline:
                continue
            point, lo, hi = effective_budget(budgets, base, metrics["kl"], n_boot=cfg.n_boot)
            # outside the budgets tried the interpolation only knows a bound: "above" when
            # the method beats the baseline's largest budget, "below" when it is no better
            # than the baseline's smallest (then K' <= k0, no saving)
            curve = base.mean(0)[np.argsort(budgets)]
            target = float(np.mean(metrics["kl"]))
            censored = ("above" if math.isinf(point) else
                        "below" if target >= curve[0] else None)  # fmt: skip
            res.setdefault(method, {})[baseline] = {
                "budget": k0,
                "effective_budget": point,
                "low": lo,
                "high": hi,
                "saving": 1 - k0 / point if point not in (0, math.inf) else math.nan,
                "censored": censored,
                "budget_range": [k0, max(budgets)],
            }
    return res


def _random_equivalence(table, cfg) -> dict:
    """How many random occurrences match FAP's mean KL at K = 100 (docs/METHODS.md §5)."""
    ref_k = 100 if ("fap", 100) in table else min(cfg.prune.budgets)
    if ("fap", ref_k) not in table:
        return {}
    ks = sorted(k for (m, k) in table if m == "random")
    if not ks:
        return {}
    target = float(np.mean(table[("fap", ref_k)]["kl"]))
    kls = [float(np.mean(table[("random", k)]["kl"])) for k in ks]
    k_eq = interpolate_budget(ks, kls, target)
    return {
        "fap_budget": ref_k,
        "fap_kl": target,
        "random_budgets": ks,
        "random_kl": kls,
        "random_equivalent_budget": k_eq,
        "compression": k_eq / ref_k if math.isfinite(k_eq) else math.inf,
    }


def kept_features(records: list[dict]) -> list[dict]:
    """(layer, feature) ids kept at least once by the interpretation method, most kept first."""
    agg: dict[tuple[int, int], dict] = {}
    for rec in records:
        seen_here = set()
        for layer, feature, pos, score in rec.get("interpret_kept", []):
            a = agg.setdefault(
                (layer, feature),
                {
                    "kept_count": 0,
                    "occurrences": 0,
                    "abs_score": 0.0,
                    "positions": defaultdict(int),
                },
            )
            a["occurrences"] += 1
            a["abs_score"] += abs(score)
            a["positions"][pos] += 1
            if (layer, feature) not in seen_here:
                a["kept_count"] += 1
                seen_here.add((layer, feature))
    rows = []
    for (layer, feature), a in agg.items():
        top = sorted(a["positions"].items(), key=lambda kv: -kv[1])[:5]
        rows.append({
            "layer": layer, "feature": feature, "id": cantor(layer, feature),
            "kept_count": a["kept_count"], "occurrences": a["occurrences"],
            "mean_abs_score": a["abs_score"] / a["occurrences"],
            "top_positions": [p for p, _ in top],
        })  # fmt: skip
    rows.sort(key=lambda r: (-r["kept_count"], -r["mean_abs_score"]))
    return rows


def _clean_json(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: _clean_json(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clean_json(v) for v in x]
    return x


def write_outputs(out: Path, records: list[dict], results: dict, cfg) -> None:
    from cltrace.report.pie_report import write_report

    atomic_write_json(out / "results.json", _clean_json(results))
    feats = kept_features(records)
    atomic_write_json(out / "kept_features.json", _clean_json({
        "method": cfg.interpret_method, "budget": cfg.interpret_budget, "features": feats,
    }))  # fmt: skip
    write_report(out)
