"""``cltrace interpret``: PIE stage II on an existing run directory."""

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


@app.command("interpret")
def interpret_cmd(
    run: str = typer.Option(
        ...,
        "--run",
        "--run-dir",
        help="PIE run directory (with kept_features.json; --run-dir under torchrun).",
    ),
    explainer: str = typer.Option(
        "weightlens", "--explainer", help="weightlens, llm, circuitlens or circuitlens_llm."
    ),
    base_url: str | None = typer.Option(
        None,
        "--base-url",
        help="OpenAI-compatible endpoint for the LLM explainers, e.g. http://127.0.0.1:8000/v1 "
        "(default: $CLTRACE_LLM_BASE_URL; required for them, there is no built-in one).",
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        help="LLM model name for the LLM explainers (default: $CLTRACE_LLM_MODEL; required).",
    ),
    corpus: str | None = typer.Option(
        None,
        "--corpus",
        help="A text file (one document per line) or hf:NAME[:SPLIT[:COLUMN]] (streamed); "
        "default: the bundled corpus, for the bundled model only.",
    ),
    n_docs: int = typer.Option(4000, "--n-docs", min=1, help="Corpus documents to scan."),
    concurrency: int = typer.Option(4, "--concurrency", min=1, help="Simultaneous LLM requests."),
    compare_random: bool = typer.Option(
        True,
        "--compare-random/--no-compare-random",
        help="Also explain a random sample of the active set of the same size.",
    ),  # fmt: skip
    max_features: int | None = typer.Option(
        None, "--max-features", min=1, help="Explain at most N kept features."
    ),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
    dtype: str = typer.Option("float32", "--dtype", help=DTYPE_HELP),
    lazy_decoders: bool = typer.Option(False, "--lazy-decoders", help=LAZY_HELP),
    device_map: str = typer.Option(None, "--device-map", help=DEVICE_MAP_HELP),
    offload_folder: str = typer.Option(None, "--offload-folder", help=OFFLOAD_HELP),
) -> None:
    """Explain the kept features of a PIE run: activation store, descriptions, report."""
    from pathlib import Path

    from rich.console import Console

    from cltrace.cli._apps import state
    from cltrace.cli._where import parse_where
    from cltrace.errors import CltraceError
    from cltrace.interpret.explainers import get_explainer
    from cltrace.interpret.store import StoreConfig
    from cltrace.pie.stage2 import InterpretConfig, interpret_run
    from cltrace.pie.stages import check_run_corpus

    get_explainer(explainer)  # unknown names fail before any loading
    where, precision = parse_where(device, dtype)
    spread = parse_spread(device_map, offload_folder)
    run_dir = Path(run)
    if not run_dir.is_dir():
        raise CltraceError(f"run directory {run} does not exist; pass the --out of cltrace pie.")
    check_run_corpus(run_dir, corpus)
    cfg = InterpretConfig(
        explainer=explainer, store=StoreConfig(corpus=corpus, n_docs=n_docs),
        compare_random=compare_random, base_url=base_url, llm_model=model,
        concurrency=concurrency, max_features=max_features, device=str(where),
        dtype=str(precision).removeprefix("torch."), lazy_decoders=lazy_decoders,
    )  # fmt: skip
    from cltrace import dist

    world = dist.start(str(where))  # under torchrun the ranks share the corpus scan
    console = Console() if world.is_main else None
    state.interrupt_note = (
        f"the files of {run_dir} are as they were before this command (descriptions are "
        "written only when the stage finishes); the activation store keeps its finished chunks, "
        "so rerunning the same command resumes the scan"
    )
    try:
        interpret_run(run_dir, console=console, config=cfg, world=world, spread=spread or None)
    finally:
        dist.finish(world)
    if console is None:
        return
    console.print(f"descriptions: {run_dir / 'descriptions.json'}  "
                  f"(report: {run_dir / 'report.html'})")  # fmt: skip
