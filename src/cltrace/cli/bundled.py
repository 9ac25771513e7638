"""``cltrace train model``: train the bundled GPT-2 on the synthetic corpus."""

from __future__ import annotations

import typer

from cltrace.cli._apps import train_app

RECIPE_HELP = (
    "Corpus and size preset: two-tasks (IOI and Doc-String, the first bundled model) or "
    "four-tasks (IOI, Doc-String, induction, greater-than)."
)


@train_app.command("model")
def train_bundled_model(
    out: str = typer.Option("cltrace-model", "--out", help="New directory for model+tokenizer."),
    recipe: str = typer.Option("two-tasks", "--recipe", help=RECIPE_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed of corpus, init and batch order."),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Optimizer steps."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Rows per step."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate."),
    n_docs: int | None = typer.Option(None, "--n-docs", min=1, help="Corpus documents."),
    layers: int | None = typer.Option(None, "--layers", min=1, help="Transformer blocks."),
    d_model: int | None = typer.Option(None, "--d-model", min=1, help="Residual width."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="torch CPU threads."),
    log_every: int = typer.Option(
        0, "--log-every", min=0, help="Also print a plain progress line every N steps (0: off)."
    ),
    snapshot_every: int = typer.Option(
        0, "--snapshot-every", min=0, help="Also save the model to OUT.stepN every N steps."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train the small GPT-2 cltrace ships and save it in Hugging Face format."""
    from dataclasses import replace

    import torch

    from cltrace.bundled import TrainConfig, train_model
    from cltrace.cli._apps import positive_float

    positive_float(lr, "--lr")
    cfg = TrainConfig.recipe(recipe.strip().lower(), seed=seed)
    if threads is not None:
        torch.set_num_threads(threads)
    changes = {
        "steps": steps, "batch_size": batch_size, "lr": lr, "n_layers": layers,
        "d_model": d_model,
    }  # fmt: skip
    cfg = replace(cfg, **{k: v for k, v in changes.items() if v is not None})
    if n_docs is not None:
        cfg = replace(cfg, corpus=replace(cfg.corpus, n_docs=n_docs))
    path = train_model(
        out,
        cfg,
        overwrite=overwrite,
        progress=progress,
        log_every=log_every,
        snapshot_every=snapshot_every,
    )
    typer.echo(f"saved the model and tokenizer to {path}")
