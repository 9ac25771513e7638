"""``cltrace train clt`` and ``cltrace transcoder eval``: thin shells over cltrace.transcoders."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import typer

from cltrace.cli._apps import train_app, transcoder_app

#: Corpus seeds: the bundled model trained on seed 0; transcoders train on TRAIN_SEED + seed and
#: are evaluated on EVAL_SEED, so evaluation text is unseen by both.
TRAIN_SEED = 1000
EVAL_SEED = 99_991


def _model(name: str | None):
    from cltrace.models import load_model

    return load_model(name)


@train_app.command("clt")
def train_clt(
    per_layer: bool = typer.Option(False, "--per-layer", help="Train per-layer transcoders."),
    model: str = typer.Option(None, "--model", help="HF id or local model dir (default: bundled)."),
    out: str = typer.Option(None, "--out", help="Output directory (default ./clt or ./plt)."),
    steps: int = typer.Option(None, "--steps", min=1, help="Optimizer steps."),
    seed: int = typer.Option(0, "--seed", help="Seed of weights and data order."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoint.pt."),
    features: int = typer.Option(None, "--features", min=1, help="Features per layer."),
    activation: str = typer.Option(None, "--activation", help="jumprelu, relu or topk."),
    k: int = typer.Option(None, "--k", min=1, help="k for --activation topk."),
    sparsity: float = typer.Option(None, "--sparsity", help="Final tanh-L0 coefficient."),
    corpus: str = typer.Option(
        None,
        "--corpus",
        help="Text file (one doc per line) or HF dataset (default: bundled, for the bundled model "
        "only).",
    ),
    n_docs: int = typer.Option(
        40_000, "--n-docs", min=1, help="Documents to read from the corpus."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train a cross-layer (or per-layer) transcoder on the model's MLP activations."""
    from cltrace.cli._apps import positive_float, state
    from cltrace.corpus import check_corpus_fits
    from cltrace.errors import UsageError
    from cltrace.transcoders.activations import ACTIVATIONS
    from cltrace.transcoders.data import load_texts
    from cltrace.transcoders.train import CLTTrainConfig, train_transcoder

    positive_float(sparsity, "--sparsity", allow_zero=True)
    if activation is not None and activation not in ACTIVATIONS:
        raise UsageError(
            f"unknown --activation {activation!r}; use one of {', '.join(ACTIVATIONS)}."
        )
    if activation == "topk" and k is None:
        raise UsageError("--activation topk needs --k (active features per token and layer).")
    cfg = CLTTrainConfig(cross_layer=not per_layer, seed=seed)
    overrides = {
        "steps": steps,
        "d_features": features,
        "activation": activation,
        "k": k,
        "sparsity": sparsity,
    }
    cfg = replace(cfg, **{key: v for key, v in overrides.items() if v is not None})
    out = Path(out or ("plt" if per_layer else "clt"))
    check_corpus_fits(corpus, model)
    adapter = _model(model)
    texts = load_texts(corpus, n_docs, TRAIN_SEED + seed)
    state.interrupt_note = (
        f"{out}/checkpoint.pt holds the last checkpoint (every {cfg.checkpoint_every} steps), if "
        "one was reached; add --resume to the same command to continue from it"
    )
    from cltrace import dist

    world = dist.start()  # several processes under torchrun: data-parallel (see train_transcoder)
    try:
        train_transcoder(adapter, texts, out, cfg, resume=resume, progress=progress, world=world)
    finally:
        dist.finish(world)
    if not world.is_main:
        return
    stats = json.loads((out / "train_stats.json").read_text())
    typer.echo(f"saved {out} ({stats['seconds']:.0f} s, {stats['tokens_per_s']:.0f} tokens/s)")


@transcoder_app.command("eval")
def eval_transcoder(
    model: str = typer.Option(None, "--model", help="HF id or local model dir (default: bundled)."),
    transcoder: str = typer.Option(
        None, "--transcoder", help="Transcoder directory or HF repo id (default: bundled CLT)."
    ),
    n_tokens: int = typer.Option(20_000, "--n-tokens", min=1, help="Held-out tokens to evaluate."),
    corpus: str = typer.Option(
        None,
        "--corpus",
        help="Text file or HF dataset (default: bundled, for the bundled model only).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """FVU, L0, dead features and replacement-model agreement / KL on held-out text."""
    from cltrace.corpus import check_corpus_fits
    from cltrace.paths import BUNDLED_CLT_DIR
    from cltrace.transcoders import load_transcoder
    from cltrace.transcoders.data import load_texts
    from cltrace.transcoders.evaluate import evaluate_transcoder

    check_corpus_fits(corpus, model)
    adapter = _model(model)
    tc = load_transcoder(transcoder or BUNDLED_CLT_DIR, model=adapter)
    texts = load_texts(corpus, max(200, n_tokens // 5), EVAL_SEED)
    report = evaluate_transcoder(adapter, tc, texts, n_tokens=n_tokens)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"transcoder on {report.n_tokens} held-out tokens")
    table.add_column("layer")
    table.add_column("FVU", justify="right")
    table.add_column("L0", justify="right")
    for i, (f, l0) in enumerate(zip(report.fvu, report.l0, strict=True)):
        table.add_row(str(i), f"{f:.3f}", f"{l0:.1f}")
    table.add_row("mean", f"{report.mean_fvu:.3f}", f"{report.mean_l0:.1f}")
    console = Console()
    console.print(table)
    console.print(
        f"features {report.n_features}, dead {report.dead_share:.1%}, replacement top-1 "
        f"agreement {report.replacement_agreement:.1%}, KL {report.replacement_kl:.4f} nats"
    )
