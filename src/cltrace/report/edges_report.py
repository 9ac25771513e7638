"""``report.html`` of an edge-circuit run: the faithfulness curve over edge budgets (with CPR
and CMD), the circuit's heads and MLPs by layer, and the measured roles of its heads.

Built from the run's JSON record alone (``circuit.json`` of ``cltrace edges eap|eap-ig|ep|hap``
or ``curve.json`` of ``cltrace edges curve``); every number is printed as the record holds it.
Plain HTML with an inline SVG, no external assets.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from cltrace.files import atomic_write_text
from cltrace.report.pie_report import CSS
from cltrace.report.svg import Series, line_chart

EDGE_CSS = """
table.grid td { text-align: center; min-width: 3.2em; }
table.grid td.on { background: #ffd54f; } table.grid td.mlp { border-left: 2px solid #999; }
.role { display: block; font-size: 10px; color: #6a3d00; }
"""

SUMMARY_KEYS = (
    ("n_pairs", "pairs"),
    ("n_edges", "edges kept"),
    ("n_edges_total", "edges in the graph"),
    ("sparsity", "sparsity"),
    ("learned_sparsity", "learned sparsity (EP, HAP)"),
    ("faithfulness", "faithfulness"),
    ("kl", "KL(full || circuit)"),
    ("accuracy", "accuracy"),
    ("seconds", "seconds (finding the circuit)"),
    ("cpr", "CPR (area under the curve)"),
    ("cmd", "CMD (area between the curve and 1)"),
)

ROLE_FIELDS = (
    ("attn_io", "attn to IO"),
    ("attn_s", "attn to S"),
    ("dup_token", "S2→S1 attn"),
    ("logit_effect", "Δ logit diff"),
    ("effect_io", "Δ log p(IO)"),
    ("effect_s", "Δ log p(S)"),
    ("s_inhibition", "Δ readers' attn to S"),
)

IMPORTANCE = " (the probability that the edge's mask is open; 0 for edges never trained)"

SHORT_ROLES = {
    "duplicate-token-like": "dup",
    "name-mover-like": "mover",
    "s-suppression-like": "S-supp",
    "s-inhibition-like": "S-inhib",
}


def _num(v) -> str:
    """A value exactly as the JSON record holds it (so the page and the record agree)."""
    if v is None:
        return "–"
    return escape(str(v))


def _summary(doc: dict) -> str:
    curve = doc.get("curve", doc)
    rows = []
    for key, label in SUMMARY_KEYS:
        v = curve.get(key) if key in ("cpr", "cmd") else doc.get(key)
        if v is None:
            continue
        rows.append(f"<tr><td class='l'>{label}</td><td id='v-{key}'>{_num(v)}</td></tr>")
    return f"<table>{''.join(rows)}</table>"


def _curve(doc: dict) -> str:
    curve = doc.get("curve", doc)
    if "budgets" not in curve:
        return ""
    pct = [100 * b for b in curve["budgets"]]
    f = curve["faithfulness"]
    pruned = doc["method"] in ("ep", "hap")
    ranked = "|importance|" if pruned else "|score|"
    series = [Series(f"top by {ranked}", pct, f, f, f)]
    if "n_edges" in doc and not isinstance(doc["n_edges"], list) and doc.get("n_edges_total"):
        x = 100 * doc["n_edges"] / doc["n_edges_total"]
        y = doc["faithfulness"]
        series.append(Series(f"{doc['method']} circuit", [x], [y], [y], [y]))
    chart = line_chart(series, f"Faithfulness over edge budgets ({doc['method']})",
                       "edges kept (% of the graph, log scale)", "faithfulness",
                       x_ticks=pct)  # fmt: skip
    rows = "".join(
        f"<tr><td>{_num(b)}</td><td id='c-n-{i}'>{_num(n)}</td><td id='c-f-{i}'>{_num(fi)}</td>"
        f"<td id='c-kl-{i}'>{_num(k)}</td></tr>"
        for i, (b, n, fi, k) in enumerate(
            zip(curve["budgets"], curve["n_edges"], f, curve["kl"], strict=True)
        )
    )
    return (
        f"<h2>Faithfulness curve</h2>{chart}<p class='muted'>Each point keeps the top edges by "
        f"{ranked}{IMPORTANCE if pruned else ''} at one budget and removes the rest (no "
        "dangling-edge pruning); the square is the method's own circuit; faithfulness "
        "is (m(C) − m(empty)) / (m(full) − m(empty)). CPR and CMD are the trapezoid areas under "
        "f and under |1 − f| over the fraction of edges, divided by the budget range.</p>"
        "<table><tr><th>budget (fraction)</th><th>edges</th><th>faithfulness</th><th>KL</th></tr>"
        f"{rows}</table>"
    )


def _grid(doc: dict) -> str:
    if "node_edges" not in doc:
        return ""
    counts = doc["node_edges"]
    roles = (doc.get("head_roles") or {}).get("heads", {})
    n_layers, n_heads = doc["n_layers"], doc["n_heads"]
    head = "".join(f"<th>h{h}</th>" for h in range(n_heads))
    rows = []
    for layer in range(n_layers):
        cells = []
        for h in range(n_heads):
            name = f"a{layer}.h{h}"
            c = counts.get(name, 0)
            tags = "".join(
                f"<span class='role'>{SHORT_ROLES.get(r, escape(r))}</span>"
                for r in roles.get(name, {}).get("roles", [])
            )
            cells.append(
                f"<td id='g-{name}' class='on'>{c}{tags}</td>" if c else f"<td id='g-{name}'></td>"
            )
        c = counts.get(f"m{layer}", 0)
        cls = "mlp on" if c else "mlp"
        cells.append(f"<td id='g-m{layer}' class='{cls}'>{c if c else ''}</td>")
        rows.append(f"<tr><th>layer {layer}</th>{''.join(cells)}</tr>")
    return (
        "<h2>Heads and MLPs of the circuit</h2><p class='muted'>Each cell counts the circuit's "
        "edges that enter or leave the head or MLP (empty: not in the circuit); "
        f"input {counts.get('input', 0)} edges, logits {counts.get('logits', 0)} edges. "
        "Role tags come from the measurements below.</p>"
        f"<table class='grid'><tr><th></th>{head}<th>MLP</th></tr>{''.join(rows)}</table>"
    )


def _roles(doc: dict) -> str:
    if "head_roles" not in doc:
        return ""
    hr = doc["head_roles"]
    if hr is None:
        return (
            "<h2>Head roles</h2><p class='muted'>Not measured: the prompts do not all name the "
            "indirect object once and the subject twice, as IOI prompts do.</p>"
        )
    head = "".join(f"<th>{label}</th>" for _, label in ROLE_FIELDS)
    rows = []
    for name, r in hr["heads"].items():
        cells = "".join(f"<td id='r-{name}-{k}'>{_num(r[k])}</td>" for k, _ in ROLE_FIELDS)
        tags = ", ".join(r["roles"]) or "–"
        rows.append(f"<tr><td class='l'>{escape(name)}</td>{cells}<td class='l'>{tags}</td></tr>")
    readers = ", ".join(hr["readers"]) or "none"
    return (
        f"<h2>Head roles (IOI, {hr['n_examples']} prompts)</h2><p class='muted'>Attention from "
        "the last position to the indirect object (IO) and to the subject (S, both mentions); "
        "from the second S to the first; and the changes when the head's output is replaced by "
        "its output on the corrupted prompt: of the logit difference, of the log-probabilities "
        "of IO and S, and of the later name readers' attention to S (name readers attend from "
        f"the last position to the names: {escape(readers)}).</p>"
        f"<table><tr><th>head</th>{head}<th>roles</th></tr>{''.join(rows)}</table>"
    )


def write_edges_report(out: str | Path, doc: dict) -> Path:
    """Write ``out/report.html`` for the run record ``doc``."""
    out = Path(out)
    task = doc.get("task") or "pairs from a file"
    kind = "Faithfulness curve" if "node_edges" not in doc else "Edge circuit"
    title = f"{kind}: {doc['method']} on {task}"
    html = f"""<!doctype html><html><head><meta charset="utf-8"><title>cltrace {escape(title)}
</title><style>{CSS}{EDGE_CSS}</style></head><body>
<h1>{escape(title)}</h1>
<p class="muted">Model {escape(str(doc.get("model")))}.</p>
{_summary(doc)}
{_curve(doc)}
{_grid(doc)}
{_roles(doc)}
</body></html>"""
    return atomic_write_text(out / "report.html", html)


__all__ = ["write_edges_report"]
