"""``cltrace evaluate``: stage III (score descriptions) on a PIE run directory."""

from __future__ import annotations

import typer

from cltrace.cli._apps import app
from cltrace.cli._where import (
    DEVICE_HELP,
    DEVICE_MAP_HELP,
    DTYPE_HELP,
    LAZY_HELP,
    OFFLOAD_HELP,
    parse_spread,
)


@app.command("evaluate")
def evaluate(
    run: str = typer.Option(
        ...,
        "--run",
        "--run-dir",
        help="PIE run directory with descriptions.json (--run-dir under torchrun).",
    ),
    rater: str = typer.Option(
        "lexical", "--rater", help="lexical (offline, token lists), llm, or embedding (optional)."
    ),
    base_url: str | None = typer.Option(
        None,
        "--base-url",
        help="OpenAI-compatible endpoint for --rater llm, e.g. http://127.0.0.1:8000/v1 "
        "(default: $CLTRACE_LLM_BASE_URL; required for it, there is no built-in one).",
    ),
    model: str | None = typer.Option(
        None, "--model", help="Chat model for --rater llm (default: $CLTRACE_LLM_MODEL; required)."
    ),
    corpus: str | None = typer.Option(
        None,
        "--corpus",
        help="Natural texts: a text file (one per line) or hf:NAME[:SPLIT[:COLUMN]] (streamed); "
        "default: held-out bundled corpus, for the bundled model only.",
    ),
    variant: str = typer.Option(
        "fade",
        "--variant",
        help="fade (FADE defaults), pie (PIE's simplified evaluation and rules) or pie-fade (PIE's "
        "sampling with FADE's rules).",
    ),
    faithfulness: bool = typer.Option(
        True, "--faithfulness/--no-faithfulness", help="Steered-generation faithfulness."
    ),
    cache_dir: str | None = typer.Option(
        None, "--cache-dir", help="Cache LLM replies here (default: RUN/llm_cache)."
    ),
    evals: str = typer.Option(
        "fade",
        "--evals",
        help="fade (description scores), or sort and/or contrastive "
        "(comma-separated; writes feature_evals.json).",
    ),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
    dtype: str = typer.Option("float32", "--dtype", help=DTYPE_HELP),
    lazy_decoders: bool = typer.Option(False, "--lazy-decoders", help=LAZY_HELP),
    device_map: str = typer.Option(None, "--device-map", help=DEVICE_MAP_HELP),
    offload_folder: str = typer.Option(None, "--offload-folder", help=OFFLOAD_HELP),
) -> None:
    """Score each kept feature's description: clarity, responsiveness, purity, faithfulness,
    detection and fuzzing; writes scores.json, scores_summary.json and refreshes report.html."""
    from dataclasses import replace
    from pathlib import Path

    from rich.console import Console

    from cltrace.cli._apps import state
    from cltrace.cli._where import parse_where
    from cltrace.errors import UsageError
    from cltrace.pie.stage3 import evaluate_run
    from cltrace.score import RATERS, ScoreConfig

    where, precision = parse_where(device, dtype)
    models = {"device": where, "dtype": precision, "lazy_decoders": lazy_decoders,
              "spread": parse_spread(device_map, offload_folder) or None}  # fmt: skip
    if evals.strip() != "fade":
        from cltrace.pie.feature_evals import run_cli_evals

        run_cli_evals(run, evals, rater, corpus, base_url, model, cache_dir, models)
        return
    if rater not in RATERS:
        raise UsageError(f"unknown rater {rater!r}; use one of {', '.join(RATERS)}.")
    variants = {"fade": ScoreConfig, "pie": ScoreConfig.pie, "pie-fade": ScoreConfig.pie_fade_rules}
    if variant not in variants:
        raise UsageError(f"unknown variant {variant!r}; use fade, pie or pie-fade.")
    cfg = variants[variant]()
    cfg = replace(cfg, faithfulness=faithfulness and cfg.faithfulness)
    from cltrace import dist

    world = dist.start(str(where))  # under torchrun the ranks share the features
    console = Console() if world.is_main else None
    state.interrupt_note = (
        f"scores.json in {run} is as it was; the features scored so far are kept in "
        "scores.partial*.json, and rerunning the same command resumes from them"
    )
    cache = cache_dir or (str(Path(run) / "llm_cache") if rater == "llm" else None)
    try:
        evaluate_run(
            run, rater=rater, console=console, corpus=corpus, config=cfg, base_url=base_url,
            model=model, cache_dir=cache, world=world, **models,
        )  # fmt: skip
    finally:
        dist.finish(world)
    if console is None:
        return
    console.print(f"scores: {Path(run) / 'scores.json'}  (report: {Path(run) / 'report.html'})")
