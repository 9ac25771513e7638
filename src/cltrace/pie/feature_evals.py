"""``cltrace evaluate --evals sort,contrastive`` on a PIE run directory: the sort and
contrastive evals (:mod:`cltrace.score.contrastive`) over the run's kept features, on its model,
transcoder and task; writes ``feature_evals.json`` and ``feature_evals.html``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from cltrace.pie.stages import check_run_corpus, load_run_models


def evaluate_run_evals(
    run_dir: str | os.PathLike,
    evals: Sequence[str],
    rater: str = "lexical",
    corpus: str | None = None,
    base_url: str | None = None,
    model: str | None = None,
    cache_dir: str | None = None,
    console=None,
    models: dict | None = None,
) -> dict:
    """``cltrace evaluate --evals sort,contrastive``: both evals over a PIE run's kept features
    (its model, transcoder and task); writes ``feature_evals.json`` and ``feature_evals.html``.
    ``models``: ``device``, ``dtype`` and ``lazy_decoders`` of :func:`load_run_models`."""
    from cltrace.files import atomic_write_json, atomic_write_text, require_run_dir
    from cltrace.pie.stages import read_kept_features, read_run_config
    from cltrace.score.contrastive import feature_evals, render_html
    from cltrace.score.raters import make_rater

    run = require_run_dir(Path(run_dir))
    check_run_corpus(run, corpus)
    from cltrace.tasks import read_pairs

    feats = read_kept_features(run)
    run_cfg = read_run_config(run)
    task = str(run_cfg.get("task") or "ioi")
    pairs = None
    if run_cfg.get("data") and Path(run_cfg["data"]).is_file():
        task = str(run_cfg["data"])
        pairs = [(p.clean, p.corrupt) for p in read_pairs(run_cfg["data"]).pairs]
    adapter, transcoder, _ = load_run_models(run, **(models or {}))
    judge = make_rater(rater, base_url=base_url, model=model, cache_dir=cache_dir)
    res = feature_evals(adapter, transcoder, judge, evals, features=feats, task=task,
                        corpus=corpus, prompt_pairs=pairs)  # fmt: skip
    summary = {"rater": rater, "task": task, "n_features": len(feats),
               "evals": {k: v.to_json() for k, v in res.items()}}  # fmt: skip
    atomic_write_json(run / "feature_evals.json", summary)
    atomic_write_text(run / "feature_evals.html", render_html({"run": summary}))
    if console is not None:
        for k, v in res.items():
            console.print(f"{k} eval: {v.score:.3f} over {v.n_items} items (chance 0.5; nan: no "
                          "items)")  # fmt: skip
    return summary


def run_cli_evals(
    run: str,
    evals: str,
    rater: str,
    corpus: str | None,
    base_url: str | None,
    model: str | None,
    cache_dir: str | None,
    models: dict | None = None,
) -> dict:
    """The ``--evals sort,contrastive`` branch of ``cltrace evaluate`` (options checked here)."""
    from rich.console import Console

    from cltrace.errors import UsageError
    from cltrace.score.contrastive import EVALS
    from cltrace.score.raters import RATERS

    names = [e.strip() for e in evals.split(",") if e.strip()]
    bad = [e for e in names if e not in EVALS]
    if not names or bad:
        raise UsageError(
            f"--evals {evals!r} names {bad[0] if bad else 'nothing'!r}; use fade, or sort and/or "
            "contrastive separated by commas."
        )
    if rater not in RATERS:
        raise UsageError(f"unknown rater {rater!r}; use one of {', '.join(RATERS)}.")
    if rater == "llm":
        from cltrace.llm import resolve_endpoint

        endpoint = resolve_endpoint(base_url, model, user="the llm rater")
        base_url, model = endpoint.base_url, endpoint.model
    console = Console()
    out = evaluate_run_evals(run, names, rater, corpus, base_url, model, cache_dir, console,
                             models)  # fmt: skip
    console.print(f"feature evals: {Path(run) / 'feature_evals.json'}")
    return out
