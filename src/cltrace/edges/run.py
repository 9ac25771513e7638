"""One call per method: pairs in, a circuit with its evaluation out (what the CLI runs)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from cltrace.edges.context import EdgeContext, prepare
from cltrace.edges.data import make_batches
from cltrace.edges.evaluate import Curve, evaluate_circuit, faithfulness_curve, top_edges
from cltrace.edges.graph import EdgeGraph
from cltrace.edges.mib import graph_json
from cltrace.edges.pruning import PruneConfig, edge_prune, hap, prob_open
from cltrace.edges.roles import head_roles
from cltrace.edges.scores import score_edges
from cltrace.errors import UsageError
from cltrace.files import atomic_write_json, atomic_write_text

METHODS = ("eap", "eap-ig", "ep", "hap")


@dataclass
class EdgeOptions:
    """Settings shared by the edge methods."""

    sparsity: float = 0.95
    """Fraction of the graph's edges removed from the circuit."""
    metric: str = "logit_diff"
    """Metric the attribution scores estimate (logit_diff, prob_diff; kl with eap-ig)."""
    intervention: str = "patching"
    """What a removed edge carries: patching, zero, mean or mean-positional."""
    ig_steps: int = 5
    """EAP-IG interpolation steps."""
    steps: int = 300
    """Edge Pruning steps (EP and HAP)."""
    fraction: float = 0.1
    """HAP: fraction of edges, by |EAP score|, that Edge Pruning may keep."""
    seed: int = 0


def check_options(opts: EdgeOptions) -> None:
    if not 0.0 <= opts.sparsity <= 1.0:
        raise UsageError(
            f"--sparsity must lie in [0, 1] (a fraction removed), got {opts.sparsity}."
        )
    if not 0.0 < opts.fraction <= 1.0:
        raise UsageError(f"--fraction must lie in (0, 1], got {opts.fraction}.")
    if opts.steps < 1 or opts.ig_steps < 1:
        raise UsageError("--steps and --ig-steps must be at least 1.")


@dataclass
class EdgeRun:
    """What one edge method gives: the result record and the tensors behind it."""

    result: dict
    """JSON-ready: the method, sizes, faithfulness, KL, seconds, the circuit's nodes and their
    kept-edge counts, and (when asked) the faithfulness curve and the head roles."""
    keep: Tensor
    """Bool [n_edges]: the circuit (all False for a curve run, which has no single circuit)."""
    scores: Tensor
    """The method's own score per edge: the attribution score, or EP/HAP's ``log_alpha``
    (``-inf`` for edges HAP never trained)."""
    importance: Tensor
    """What ranks the edges by ``|importance|``: the attribution score, or for EP and HAP the
    probability that an edge's mask is open (0 for edges HAP never trained)."""
    graph: EdgeGraph
    d_model: int


def _scores_and_circuit(ctx: EdgeContext, method: str, opts: EdgeOptions):
    n = ctx.graph.n_edges
    cfg = PruneConfig(sparsity=opts.sparsity, steps=opts.steps, seed=opts.seed)
    if method in ("eap", "eap-ig"):
        scores = score_edges(ctx, method, metric=opts.metric, steps=opts.ig_steps)
        keep = top_edges(scores, round((1 - opts.sparsity) * n), graph=ctx.graph)
        return scores, scores, keep, {}
    if method == "ep":
        res = edge_prune(ctx, cfg)
    else:
        res, _ = hap(ctx, cfg, opts.fraction, "eap", opts.metric, opts.ig_steps)
    extra = {"learned_sparsity": round(res.learned_sparsity, 4)}
    return res.log_alpha, prob_open(res.log_alpha), res.keep, extra


def curve_json(curve: Curve) -> dict:
    return {
        "budgets": curve.budgets,
        "n_edges": curve.n_edges,
        "faithfulness": [round(f, 4) for f in curve.faithfulness],
        "kl": [round(k, 4) for k in curve.kl],
        "cpr": round(curve.cpr, 4),
        "cmd": round(curve.cmd, 4),
    }


def _eval_metric(opts: EdgeOptions) -> str:
    return opts.metric if opts.metric != "kl" else "logit_diff"


def find_circuit(
    adapter,
    pairs,
    method: str,
    opts: EdgeOptions,
    source: str = "the pairs",
    curve: bool = True,
    roles: bool = True,
) -> EdgeRun:
    """Run ``method`` on ``pairs`` and evaluate its circuit. With ``curve``, also the
    faithfulness curve of the edges ranked by ``|importance|``; with ``roles``, the measured
    roles (:func:`~cltrace.edges.roles.head_roles`) of the circuit's heads when the pairs have
    IOI's name structure (``head_roles`` is ``None`` otherwise)."""
    if method not in METHODS:
        raise UsageError(f"unknown edge method {method!r}; use one of {', '.join(METHODS)}.")
    check_options(opts)
    start = time.perf_counter()
    ctx = prepare(adapter, make_batches(adapter, pairs, source), opts.intervention)
    g = ctx.graph
    scores, importance, keep, extra = _scores_and_circuit(ctx, method, opts)
    seconds = time.perf_counter() - start
    ev = evaluate_circuit(ctx, keep, _eval_metric(opts))
    nodes = g.nodes_of(keep)
    result = {
        "method": method,
        "model": adapter.name,
        "n_pairs": ctx.n_examples,
        "n_edges": ev.n_edges,
        "n_edges_total": ev.n_edges_total,
        "sparsity": round(1 - ev.n_edges / g.n_edges, 4),
        "faithfulness": round(ev.faithfulness, 4),
        "kl": round(ev.kl, 4),
        "accuracy": round(ev.accuracy, 4),
        "metric": ev.metric,
        "metric_full": ev.metric_full,
        "metric_empty": ev.metric_empty,
        "seconds": round(seconds, 3),
        "nodes": nodes,
        "n_layers": g.n_layers,
        "n_heads": g.n_heads,
        "node_edges": g.edge_counts(keep),
        **extra,
    }
    if curve:
        result["curve"] = curve_json(faithfulness_curve(ctx, importance, metric=_eval_metric(opts)))
    if roles:
        found = head_roles(ctx)
        heads = [n for n in nodes if n.startswith("a")]
        result["head_roles"] = found.to_json(heads) if found is not None else None
    result["options"] = asdict(opts)
    return EdgeRun(result, keep, scores, importance, g, adapter.d_model)


def find_curve(
    adapter, pairs, method: str, opts: EdgeOptions, source: str = "the pairs"
) -> EdgeRun:
    """Faithfulness over the edge budgets for the circuits an attribution scorer ranks (the
    run's ``keep`` is empty: a curve has no single circuit)."""
    if method not in ("eap", "eap-ig"):
        raise UsageError(
            f"a curve ranks edges by scores; use --method eap or eap-ig, not {method!r}."
        )
    check_options(opts)
    start = time.perf_counter()
    ctx = prepare(adapter, make_batches(adapter, pairs, source), opts.intervention)
    scores = score_edges(ctx, method, metric=opts.metric, steps=opts.ig_steps)
    curve = faithfulness_curve(ctx, scores, metric=_eval_metric(opts))
    result = {
        "method": method,
        "model": adapter.name,
        "n_pairs": ctx.n_examples,
        "n_edges_total": ctx.graph.n_edges,
        **curve_json(curve),
        "seconds": round(time.perf_counter() - start, 3),
    }
    keep = torch.zeros(ctx.graph.n_edges, dtype=torch.bool)
    return EdgeRun(result, keep, scores, scores, ctx.graph, adapter.d_model)


def write_circuit(out: Path, run: EdgeRun) -> Path:
    """``out/circuit.json`` (the result, the kept edges and every edge's own score) and
    ``out/graph.json`` (the circuit as MIB graph JSON, every edge scored by its importance)."""
    out.mkdir(parents=True, exist_ok=True)
    names = run.graph.edge_names
    doc = {
        **run.result,
        "edges": [names[i] for i in run.keep.nonzero()[:, 0].tolist()],
        "scores": {
            name: (None if not torch.isfinite(s) else round(float(s), 6))
            for name, s in zip(names, run.scores.detach().cpu(), strict=True)
        },
    }
    atomic_write_json(
        out / "graph.json", graph_json(run.graph, run.keep, run.d_model, run.importance), None
    )
    return atomic_write_text(out / "circuit.json", json.dumps(doc, indent=1))
