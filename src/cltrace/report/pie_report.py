"""``report.html`` of a PIE run directory: retention curves, tables, and (after stages II/III)
the feature table. Rebuilt from the files in the directory, so every stage can refresh it."""

from __future__ import annotations

import json
import math
from html import escape
from pathlib import Path

from cltrace.files import atomic_write_text
from cltrace.report.svg import Series, line_chart

CSS = """
body { font-family: sans-serif; margin: 2em; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td.l { text-align: left; }
.hl { background: #ffd54f; } .muted { color: #777; } .fb { color: #a15c00; font-size: 11px; }
td { white-space: nowrap; } td.l { white-space: normal; } table.sortable th { cursor: pointer; }
"""


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–" if v is None or math.isnan(v) else "∞"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return escape(str(v))


def _ci(entry: dict) -> str:
    return f"{_fmt(entry['mean'])} [{_fmt(entry['low'])}, {_fmt(entry['high'])}]"


def _series(results: dict, metric: str) -> list[Series]:
    out = []
    for method, by_k in results["methods"].items():
        ks = sorted(int(k) for k in by_k if int(k) in results["budgets"])
        e = [by_k[str(k)][metric] for k in ks]
        out.append(Series(method, ks, [x["mean"] for x in e], [x["low"] for x in e],
                          [x["high"] for x in e]))  # fmt: skip
    return out


def _retention_table(results: dict) -> str:
    budgets = results["budgets"]
    head = "".join(f"<th>K={k}</th>" for k in budgets)
    rows = []
    for method, by_k in results["methods"].items():
        cells = "".join(
            f"<td>{_ci(by_k[str(k)]['kl'])}</td>" if str(k) in by_k else "<td>–</td>"
            for k in budgets
        )
        rows.append(f"<tr><td class='l'>{escape(method)}</td>{cells}</tr>")
    return f"<table><tr><th>method</th>{head}</tr>{''.join(rows)}</table>"


def feature_table_html(run: Path, limit: int | None = None) -> str:
    """The kept-feature table (every kept feature unless ``limit``; the columns sort on a
    click); descriptions and scores appear once stages II/III wrote them, and descriptions a
    fallback explainer wrote are marked as such."""
    kept = json.loads((run / "kept_features.json").read_text())
    desc_path, score_path = run / "descriptions.json", run / "scores.json"
    descs = json.loads(desc_path.read_text()) if desc_path.exists() else {}
    scores = json.loads(score_path.read_text()) if score_path.exists() else {}
    rows = []
    n_fallback = 0
    feats = kept["features"] if limit is None else kept["features"][:limit]
    for f in feats:
        key = f"{f['layer']}/{f['feature']}"
        d = descs.get(key, {})
        s = scores.get(key, {})
        score_cells = "".join(
            f"<td>{_fmt(s.get(m))}</td>" for m in ("clarity", "responsiveness", "purity")
        )
        examples = "".join(f"<div>{ex}</div>" for ex in d.get("examples_html", [])[:3])
        explainer = str(d.get("explainer") or "")
        fallback = "/" in explainer  # "weightlens/top_tokens": the explainer's fallback path
        n_fallback += fallback
        mark = (f" <span class='fb' title='written by the fallback {escape(explainer)}'>"
                "[fallback]</span>" if fallback else "")  # fmt: skip
        rows.append(
            f"<tr><td>{f['layer']}</td><td>{f['feature']}</td><td>{f['kept_count']}</td>"
            f"<td>{_fmt(f['mean_abs_score'])}</td>"
            f"<td class='l'>{escape(d.get('description', ''))}{mark}</td>{score_cells}"
            f"<td class='l'>{examples}</td></tr>"
        )
    shown = "" if len(feats) == len(kept["features"]) else f", first {len(feats)} shown"
    fb = f"; {n_fallback} descriptions by a fallback explainer, marked [fallback]" if descs else ""
    return (
        f"<h2>Kept features ({escape(kept['method'])}, K={kept['budget']}): "
        f"{len(kept['features'])} distinct{shown}{fb}</h2>"
        "<p class='muted'>Click a column header to sort.</p>"
        "<table class='sortable'><tr><th>layer</th><th>feature</th>"
        "<th>kept in prompts</th><th>mean |score|</th><th>description</th><th>clarity</th>"
        f"<th>responsiveness</th><th>purity</th><th>top examples</th></tr>{''.join(rows)}</table>"
    )


def stage3_table_html(run: Path) -> str:
    """Stage III, kept versus random: what interpreting costs and how well each set's
    descriptions score (mean and 95% bootstrap CI per metric)."""
    path = run / "scores_summary.json"
    if not path.exists():
        return ""
    summary = json.loads(path.read_text())
    sets = [("kept", summary)] + ([("random", summary["random"])] if summary.get("random") else [])
    cost_path = run / "interpret_cost.json"
    cost = json.loads(cost_path.read_text()) if cost_path.exists() else {}
    head = "".join(f"<th>{name} ({s['n_features']} features)</th>" for name, s in sets)
    rows = []
    shared = all(cost.get(name, {}).get("store_sets_in_scan", 1) > 1 for name, _ in sets)
    store_label = "store seconds (one scan for both)" if shared else "store seconds"
    for label, field in (("stage II seconds", "explain_seconds"), (store_label,
                         "store_seconds"), ("LLM calls", "llm_calls")):  # fmt: skip
        if all(field in cost.get(name, {}) for name, _ in sets):
            cells = "".join(f"<td>{_fmt(float(cost[name][field]))}</td>" for name, _ in sets)
            rows.append(f"<tr><td class='l'>{label}</td>{cells}</tr>")
    for m in summary["metrics"]:
        cells = []
        for _, s in sets:
            e = s["metrics"].get(m, {})
            n_all = e.get("n", 0) + e.get("n_undefined", 0)
            cells.append(f"<td>{_ci(e)} <span class='muted'>({e.get('n', 0)}/{n_all})</span></td>"
                         if e.get("n") else f"<td>– (0/{n_all})</td>")  # fmt: skip
        rows.append(f"<tr><td class='l'>{escape(m)}</td>{''.join(cells)}</tr>")
    return (
        f"<h2>Stage III: kept versus random features ({escape(str(summary.get('rater')))} "
        "rater)</h2><p class='muted'>Mean with 95% bootstrap CI over features (defined/all). "
        "The random set is a uniform sample, of the same size, of the features active on the "
        f"task's prompts.</p><table><tr><th></th>{head}</tr>{''.join(rows)}</table>"
    )


def _effective_cell(v: dict) -> tuple[str, str]:
    """(effective budget, saving) cells; a bound instead of a floored or infinite value when
    the baseline's curve does not reach the method's KL within the budgets tried."""
    lo_k, hi_k = v.get("budget_range", [v["budget"], None])
    if v.get("censored") == "above":
        return f"&gt; {hi_k} (beyond the budgets tried)", f"&gt; {_fmt(1 - v['budget'] / hi_k)}"
    if v.get("censored") == "below":
        return f"≤ {lo_k} (no better than the baseline at K={lo_k})", "≤ 0"
    return (f"{_fmt(v['effective_budget'])} [{_fmt(v['low'])}, {_fmt(v['high'])}]",
            _fmt(v["saving"]))  # fmt: skip


SORT_JS = """
document.querySelectorAll('table.sortable th').forEach((th, i) => th.addEventListener('click',
() => { const t = th.closest('table'), rows = [...t.rows].slice(1), asc = th.dataset.asc !== '1';
th.dataset.asc = asc ? '1' : '0'; const v = r => { const x = r.cells[i].innerText;
const n = parseFloat(x); return isNaN(n) ? x : n; };
rows.sort((a, b) => (v(a) > v(b) ? 1 : v(a) < v(b) ? -1 : 0) * (asc ? 1 : -1));
rows.forEach(r => t.appendChild(r)); }));
"""


def write_report(run: str | Path) -> Path:
    """Write ``report.html`` from the run directory's JSON files."""
    run = Path(run)
    results = json.loads((run / "results.json").read_text())
    config = json.loads((run / "config.json").read_text())
    kl = line_chart(_series(results, "kl"), "Last-token KL(clean || circuit) vs budget",
                    "budget K (units kept)", "KL (nats, log scale)", log_y=True)  # fmt: skip
    faith = line_chart(_series(results, "faithfulness"), "Faithfulness vs budget",
                       "budget K (units kept)", "faithfulness")  # fmt: skip
    eff = results.get("effective_budget", {})
    eff_rows = "".join(
        f"<tr><td class='l'>{escape(m)}</td><td class='l'>{escape(b)}</td><td>{v['budget']}</td>"
        + "".join(f"<td>{c}</td>" for c in _effective_cell(v)) + "</tr>"
        for m, by_b in eff.items() for b, v in by_b.items()
    )  # fmt: skip
    req = results.get("random_equivalence", {})
    req_html = (
        f"<p>Random occurrences needed to match FAP at K={req['fap_budget']} "
        f"(KL {_fmt(req['fap_kl'])}): <b>{_fmt(req['random_equivalent_budget'])}</b> "
        f"(compression {_fmt(req['compression'])}×).</p>"
        if req
        else ""
    )
    task = config.get("data") or config.get("task")
    b = results.get("behaviour")
    behaviour_html = (
        f"<p>Behaviour ({escape(str(b['metric']))}): {_fmt(b['clean_mean'])} clean, "
        f"{_fmt(b['corrupt_mean'])} corrupted, difference {_fmt(b['difference'])} ± "
        f"{_fmt(b['difference_se'])} (standard error) over {b['n_pairs']} pairs"
        + ("" if b["present"] and b["changed"] else
           " — <b>the corrupted prompts barely change it; this run went on with --force</b>")
        + ".</p>"
        if b
        else ""
    )  # fmt: skip
    html = f"""<!doctype html><html><head><meta charset="utf-8"><title>cltrace PIE report</title>
<style>{CSS}</style></head><body>
<h1>PIE run: {escape(str(task))}</h1>
<p class="muted">{results["n_prompts"]} prompts; mean {_fmt(results["mean_occurrences"])}
occurrences per prompt; clean logit difference {_fmt(results["clean_logit_diff"])}; with every
occurrence removed {_fmt(results["null_logit_diff"])} (KL {_fmt(results["null_kl"])}).</p>
{behaviour_html}
{kl}
{faith}
<h2>Mean last-token KL with 95% bootstrap CI</h2>
{_retention_table(results)}
<h2>Effective budget</h2>
<table><tr><th>method</th><th>baseline</th><th>K</th><th>baseline K for the same KL</th>
<th>saving</th></tr>{eff_rows}</table>
{req_html}
{stage3_table_html(run)}
{feature_table_html(run) if (run / "kept_features.json").exists() else ""}
<script>{SORT_JS}</script>
</body></html>"""
    return atomic_write_text(run / "report.html", html)
