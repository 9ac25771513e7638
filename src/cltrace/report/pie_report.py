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
.hl { background: #ffd54f; } .muted { color: #777; }
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


def feature_table_html(run: Path, limit: int = 60) -> str:
    """The kept-feature table; descriptions and scores appear once stages II/III wrote them."""
    kept = json.loads((run / "kept_features.json").read_text())
    desc_path, score_path = run / "descriptions.json", run / "scores.json"
    descs = json.loads(desc_path.read_text()) if desc_path.exists() else {}
    scores = json.loads(score_path.read_text()) if score_path.exists() else {}
    rows = []
    for f in kept["features"][:limit]:
        key = f"{f['layer']}/{f['feature']}"
        d = descs.get(key, {})
        s = scores.get(key, {})
        score_cells = "".join(
            f"<td>{_fmt(s.get(m))}</td>" for m in ("clarity", "responsiveness", "purity")
        )
        examples = "".join(f"<div>{ex}</div>" for ex in d.get("examples_html", [])[:3])
        rows.append(
            f"<tr><td>{f['layer']}</td><td>{f['feature']}</td><td>{f['kept_count']}</td>"
            f"<td>{_fmt(f['mean_abs_score'])}</td>"
            f"<td class='l'>{escape(d.get('description', ''))}</td>{score_cells}"
            f"<td class='l'>{examples}</td></tr>"
        )
    return (
        f"<h2>Kept features ({escape(kept['method'])}, K={kept['budget']}; "
        f"{len(kept['features'])} distinct)</h2><table><tr><th>layer</th><th>feature</th>"
        "<th>kept in prompts</th><th>mean |score|</th><th>description</th><th>clarity</th>"
        f"<th>responsiveness</th><th>purity</th><th>top examples</th></tr>{''.join(rows)}</table>"
    )


def write_report(run: str | Path) -> Path:
    """Write ``report.html`` from the run directory's JSON files."""
    run = Path(run)
    results = json.loads((run / "results.json").read_text())
    config = json.loads((run / "config.json").read_text())
    kl = line_chart(_series(results, "kl"), "Last-token KL(clean || circuit) vs budget",
                    "budget K (units kept)", "KL (nats)")  # fmt: skip
    faith = line_chart(_series(results, "faithfulness"), "Faithfulness vs budget",
                       "budget K (units kept)", "faithfulness")  # fmt: skip
    eff = results.get("effective_budget", {})
    eff_rows = "".join(
        f"<tr><td class='l'>{escape(m)}</td><td class='l'>{escape(b)}</td><td>{v['budget']}</td>"
        f"<td>{_fmt(v['effective_budget'])} [{_fmt(v['low'])}, {_fmt(v['high'])}]</td>"
        f"<td>{_fmt(v['saving'])}</td></tr>"
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
    html = f"""<!doctype html><html><head><meta charset="utf-8"><title>cltrace PIE report</title>
<style>{CSS}</style></head><body>
<h1>PIE run: {escape(str(task))}</h1>
<p class="muted">{results["n_prompts"]} prompts; mean {_fmt(results["mean_occurrences"])}
occurrences per prompt; clean logit difference {_fmt(results["clean_logit_diff"])}; with every
occurrence removed {_fmt(results["null_logit_diff"])} (KL {_fmt(results["null_kl"])}).</p>
{kl}
{faith}
<h2>Mean last-token KL with 95% bootstrap CI</h2>
{_retention_table(results)}
<h2>Effective budget</h2>
<table><tr><th>method</th><th>baseline</th><th>K</th><th>baseline K for the same KL</th>
<th>saving</th></tr>{eff_rows}</table>
{req_html}
{feature_table_html(run) if (run / "kept_features.json").exists() else ""}
</body></html>"""
    return atomic_write_text(run / "report.html", html)
