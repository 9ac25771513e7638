"""One call per method: pairs in, a circuit with its evaluation out (what the CLI runs)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from cltrace.edges.context import prepare
from cltrace.edges.data import make_batches
from cltrace.edges.evaluate import evaluate_circuit, top_edges
from cltrace.edges.pruning import PruneConfig, edge_prune, hap
from cltrace.edges.scores import score_edges
from cltrace.errors import UsageError

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


def find_circuit(adapter, pairs, method: str, opts: EdgeOptions, source: str = "the pairs"):
    """Run ``method`` on ``pairs``; returns the result dict, the kept edges and the scores."""
    if method not in METHODS:
        raise UsageError(f"unknown edge method {method!r}; use one of {', '.join(METHODS)}.")
    check_options(opts)
    start = time.perf_counter()
    ctx = prepare(adapter, make_batches(adapter, pairs, source), opts.intervention)
    n = ctx.graph.n_edges
    cfg = PruneConfig(sparsity=opts.sparsity, steps=opts.steps, seed=opts.seed)
    if method in ("eap", "eap-ig"):
        scores = score_edges(ctx, method, metric=opts.metric, steps=opts.ig_steps)
        keep = top_edges(scores, round((1 - opts.sparsity) * n), graph=ctx.graph)
        extra = {}
    elif method == "ep":
        res = edge_prune(ctx, cfg)
        keep, scores = res.keep, res.log_alpha
        extra = {"learned_sparsity": round(res.learned_sparsity, 4)}
    else:
        res, _ = hap(ctx, cfg, opts.fraction, "eap", opts.metric, opts.ig_steps)
        keep, scores = res.keep, res.log_alpha
        extra = {"learned_sparsity": round(res.learned_sparsity, 4)}
    seconds = time.perf_counter() - start
    ev = evaluate_circuit(ctx, keep, opts.metric if opts.metric != "kl" else "logit_diff")
    result = {
        "method": method,
        "model": adapter.name,
        "n_pairs": ctx.n_examples,
        "n_edges": ev.n_edges,
        "n_edges_total": ev.n_edges_total,
        "sparsity": round(1 - ev.n_edges / n, 4),
        "faithfulness": round(ev.faithfulness, 4),
        "kl": round(ev.kl, 4),
        "accuracy": round(ev.accuracy, 4),
        "metric": ev.metric,
        "metric_full": ev.metric_full,
        "metric_empty": ev.metric_empty,
        "seconds": round(seconds, 3),
        "nodes": ctx.graph.nodes_of(keep),
        **extra,
        "options": asdict(opts),
    }
    return result, keep, scores, ctx.graph


def write_circuit(out: Path, result: dict, keep: torch.Tensor, scores: torch.Tensor, graph) -> Path:
    """``out/circuit.json``: the result, the kept edges and every edge's score."""
    out.mkdir(parents=True, exist_ok=True)
    names = graph.edge_names
    doc = {
        **result,
        "edges": [names[i] for i in keep.nonzero()[:, 0].tolist()],
        "scores": {
            name: (None if not torch.isfinite(s) else round(float(s), 6))
            for name, s in zip(names, scores.detach().cpu(), strict=True)
        },
    }
    path = out / "circuit.json"
    path.write_text(json.dumps(doc, indent=1))
    return path


def find_curve(adapter, pairs, method: str, opts: EdgeOptions, source: str = "the pairs") -> dict:
    """Faithfulness over the edge budgets for the circuits an attribution scorer ranks."""
    from cltrace.edges.evaluate import faithfulness_curve

    if method not in ("eap", "eap-ig"):
        raise UsageError(
            f"a curve ranks edges by scores; use --method eap or eap-ig, not {method!r}."
        )
    check_options(opts)
    start = time.perf_counter()
    ctx = prepare(adapter, make_batches(adapter, pairs, source), opts.intervention)
    scores = score_edges(ctx, method, metric=opts.metric, steps=opts.ig_steps)
    curve = faithfulness_curve(
        ctx, scores, metric=opts.metric if opts.metric != "kl" else "logit_diff"
    )
    return {
        "method": method,
        "model": adapter.name,
        "n_pairs": ctx.n_examples,
        "n_edges_total": ctx.graph.n_edges,
        "budgets": curve.budgets,
        "n_edges": curve.n_edges,
        "faithfulness": [round(f, 4) for f in curve.faithfulness],
        "kl": [round(k, 4) for k in curve.kl],
        "cpr": round(curve.cpr, 4),
        "cmd": round(curve.cmd, 4),
        "seconds": round(time.perf_counter() - start, 3),
    }
