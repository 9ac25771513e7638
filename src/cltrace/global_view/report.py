"""The global view of a task or of chosen features, as one JSON-ready dict (what
``cltrace global`` writes), and its small HTML page."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from html import escape

from cltrace.global_view.coactivation import CoactConfig, coactivation_stats
from cltrace.global_view.era import SCORES, pair_table
from cltrace.global_view.prefilter import (
    compare_rankings,
    features_of,
    local_strengths,
    measure_saving,
    prefiltered_features,
)
from cltrace.global_view.virtual import Feature, check_features, top_sources, top_targets
from cltrace.models.adapter import ModelAdapter
from cltrace.transcoders import CrossLayerTranscoder


@dataclass
class GlobalConfig:
    """Options of :func:`task_report` and :func:`features_report`."""

    n_prompts: int = 8
    """Task prompts whose attribution graphs give the local edges."""
    seed: int = 0
    """Seed of the task's prompt generator."""
    top: int = 20
    """Pairs listed per score."""
    ks: tuple[int, ...] = (10, 50, 200)
    """Precision is reported at these k."""
    prefilter_pairs: int = 2000
    """The pre-filtered feature set is the endpoints of this many top TWERA pairs."""
    saving_prompts: int = 2
    """Prompts timed for the saving of pre-filtered attribution."""
    k_partners: int = 10
    """Top partners by |V| per feature (``--features`` mode)."""
    coact: CoactConfig = field(default_factory=lambda: CoactConfig(n_docs=1000))
    """The co-activation pass (corpus, documents, resumption unit)."""


def task_report(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    task: str,
    cfg: GlobalConfig | None = None,
    state_path: str | os.PathLike | None = None,
    say: Callable[[str], None] | None = None,
) -> dict:
    """Top pairs by V, ERA and TWERA among a task's features, and how well they predict the
    strong local edges of the task's prompts (with the saving of pre-filtered attribution)."""
    from cltrace.graph import attribute
    from cltrace.tasks import get_task

    cfg = cfg or GlobalConfig()
    say = say or (lambda _m: None)
    pairs = get_task(task).make_pairs(adapter, cfg.n_prompts, seed=cfg.seed)
    prompts = [p.clean for p in pairs]
    say(f"attributing {len(prompts)} {task} prompts")
    graphs = [attribute(adapter, transcoder, p) for p in prompts]
    feats = features_of(graphs)
    say(f"co-activation of {len(feats)} task features over {cfg.coact.n_docs} documents")
    stats = coactivation_stats(adapter, transcoder, feats, cfg.coact, state_path=state_path)
    table = pair_table(transcoder, stats)
    local = local_strengths(graphs, transcoder.d_features)
    cmp = compare_rankings(table, local, feats, cfg.ks)
    keep = prefiltered_features(table, cfg.prefilter_pairs)
    say(f"timing attribution restricted to {len(keep)} pre-filtered features")
    saving = measure_saving(adapter, transcoder, prompts[: cfg.saving_prompts], keep, local,
                            max(cfg.ks))  # fmt: skip
    return {
        "mode": "task", "task": task, "n_prompts": len(prompts), "n_features": len(feats),
        "n_tokens": stats.n_tokens, "n_coactive_pairs": len(table),
        "transcoder": transcoder.cfg.model_name,
        "kind": "clt" if transcoder.cfg.cross_layer else "plt",
        "config": _cfg_json(cfg),
        "top_pairs": {s: table.top(s, cfg.top) for s in SCORES},
        "prefilter": cmp.to_json(), "saving": saving.to_json(),
    }  # fmt: skip


def features_report(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    features: Sequence[Feature],
    cfg: GlobalConfig | None = None,
    state_path: str | os.PathLike | None = None,
    say: Callable[[str], None] | None = None,
) -> dict:
    """Each feature's top sources and targets by |V| over the whole dictionary, then V, ERA and
    TWERA over the features and those partners."""
    cfg = cfg or GlobalConfig()
    say = say or (lambda _m: None)
    features = check_features(transcoder, features)
    src = top_sources(transcoder, features, cfg.k_partners)
    tgt = top_targets(transcoder, features, cfg.k_partners)
    partners = set(features)
    for tp in (src, tgt):
        for ly, fi in zip(tp.partner_layer.flatten().tolist(), tp.partner_id.flatten().tolist(),
                          strict=True):  # fmt: skip
            if ly >= 0:
                partners.add((ly, fi))
    feats = sorted(partners)
    say(f"co-activation of {len(feats)} features over {cfg.coact.n_docs} documents")
    stats = coactivation_stats(adapter, transcoder, feats, cfg.coact, state_path=state_path)
    table = pair_table(transcoder, stats)
    asked = set(features)
    sub = [i for i in range(len(table)) if table.features[table.src[i]] in asked
           or table.features[table.tgt[i]] in asked]  # fmt: skip
    table = _subset(table, sub)
    by_feature = {r["feature"]: r for r in src.as_records("top_sources")}
    for r in tgt.as_records("top_targets"):
        by_feature[r["feature"]]["top_targets"] = r["top_targets"]
    return {
        "mode": "features", "features": [f"{a}/{b}" for a, b in features],
        "n_tokens": stats.n_tokens, "n_coactive_pairs": len(table),
        "transcoder": transcoder.cfg.model_name,
        "kind": "clt" if transcoder.cfg.cross_layer else "plt",
        "config": _cfg_json(cfg), "virtual_weights": list(by_feature.values()),
        "top_pairs": {s: table.top(s, cfg.top) for s in SCORES},
    }  # fmt: skip


def _subset(table, idx):
    import numpy as np

    from cltrace.global_view.era import PairTable

    i = np.asarray(idx, dtype=int)
    return PairTable(table.features, table.src[i], table.tgt[i], table.v[i], table.era[i],
                     table.twera[i], table.coact[i])  # fmt: skip


def _cfg_json(cfg: GlobalConfig) -> dict:
    d = asdict(cfg)
    d["ks"] = list(cfg.ks)
    return d


def render_html(report: dict) -> str:
    """A small self-contained page: the top pairs per score and the pre-filter precision."""
    title = (f"Global view: task {report['task']}" if report["mode"] == "task"
             else "Global view: " + ", ".join(report["features"]))  # fmt: skip
    parts = [f"<!doctype html><meta charset='utf-8'><title>{escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
             "margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
             "</style>", f"<h1>{escape(title)}</h1>",
             f"<p>{report['kind'].upper()} {escape(str(report['transcoder']))}; "
             f"{report['n_tokens']} corpus tokens; {report['n_coactive_pairs']} co-activating "
             "pairs.</p>"]  # fmt: skip
    pf = report.get("prefilter")
    if pf:
        parts.append("<h2>Pre-filter: precision at k against strong local edges</h2><table>")
        parts.append("<tr><th>score</th>" + "".join(f"<th>k={k}</th>" for k in pf["ks"])
                     + "<th>Spearman</th></tr>")  # fmt: skip
        for s, p in pf["precision_at_k"].items():
            cells = "".join(f"<td>{p[str(k)]:.3f}</td>" for k in pf["ks"])
            parts.append(f"<tr><th>{s}</th>{cells}<td>{pf['spearman'][s]:.3f}</td></tr>")
        chance = "".join(f"<td>{pf['chance_precision_at_k'][str(k)]:.4f}</td>" for k in pf["ks"])
        parts.append(f"<tr><th>chance</th>{chance}<td></td></tr></table>")
        sv = report["saving"]
        parts.append(
            f"<p>Attribution restricted to {sv['n_keep_features']} pre-filtered features: "
            f"{sv['rows_restricted']} of {sv['rows_full']} rows, {sv['seconds_restricted']:.2f}"
            f" s instead of {sv['seconds_full']:.2f} s; it keeps "
            f"{100 * sv['strong_pairs_kept']:.0f}% of the strongest local pairs.</p>"
        )
    for s, rows in report["top_pairs"].items():
        parts.append(f"<h2>Top pairs by |{s.upper()}|</h2><table><tr><th>source</th>"
                     "<th>target</th><th>V</th><th>ERA</th><th>TWERA</th></tr>")  # fmt: skip
        for r in rows:
            parts.append(f"<tr><td>{r['source']}</td><td>{r['target']}</td><td>{r['v']:.3f}</td>"
                         f"<td>{r['era']:.3g}</td><td>{r['twera']:.3g}</td></tr>")  # fmt: skip
        parts.append("</table>")
    return "\n".join(parts)
