"""``cltrace tasks make`` and ``cltrace tasks eval``."""

from __future__ import annotations

import json

import typer

from cltrace.cli._apps import tasks_app

TASK_HELP = "Task: ioi, docstring, induction or greater_than."
METRIC_HELP = (
    "Behaviour metric: logit_diff, mean_logit_diff, prob_diff or logsumexp (default: the "
    "task's own; logit_diff for a pair file)."
)
MODEL_HELP = "HF model id or local directory (default: the bundled model)."
ALLOW_UNK_HELP = (
    "Read words the tokenizer does not know as its unk token (a warning), not an error."
)


@tasks_app.command("make")
def make(
    task: str = typer.Option(..., "--task", help=TASK_HELP),
    n: int = typer.Option(200, "--n", min=1, help="Number of prompt pairs."),
    seed: int = typer.Option(0, "--seed", help="Same seed and tokenizer, same pairs."),
    out: str = typer.Option(..., "--out", help="Output file (.json, or .jsonl: a pair a line)."),
    model: str | None = typer.Option(None, "--model", help=MODEL_HELP),
    split: str = typer.Option(
        "eval", "--split", help="Word combinations: eval (unseen by the bundled model), train, any."
    ),
) -> None:
    """Generate clean/corrupt prompt pairs for a task and write them to a file."""
    from cltrace.errors import UsageError
    from cltrace.models import load_model
    from cltrace.tasks import get_task, write_pairs
    from cltrace.tasks.pairs import check_pairs_out

    spec = get_task(task)
    if split not in ("eval", "train", "any"):
        raise UsageError(f"unknown --split {split!r}; use eval, train or any.")
    check_pairs_out(out)  # an unwritable --out fails before the model loads
    adapter = load_model(model)
    pairs = spec.make_pairs(adapter, n, seed=seed, split=split)
    write_pairs(out, pairs)
    typer.echo(f"wrote {len(pairs)} {spec.key} pairs to {out}")


@tasks_app.command("eval")
def evaluate(
    task: str | None = typer.Option(None, "--task", help=TASK_HELP + " Optional with --data."),
    model: str | None = typer.Option(None, "--model", help=MODEL_HELP),
    data: str | None = typer.Option(None, "--data", help="Pair file to score (default: generate)."),
    n: int = typer.Option(200, "--n", min=1, help="Pairs to generate when --data is not given."),
    seed: int = typer.Option(0, "--seed", help="Seed of the generated pairs."),
    corrupt: bool = typer.Option(False, "--corrupt", help="Score the corrupt prompts instead."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object, not a table."),
    allow_unk: bool = typer.Option(False, "--allow-unk", help=ALLOW_UNK_HELP),
    metric: str | None = typer.Option(None, "--metric", help=METRIC_HELP),
) -> None:
    """Accuracy, top-1 accuracy, logit difference and the task's metric at the last position."""
    from cltrace.errors import UsageError
    from cltrace.models import load_model
    from cltrace.tasks import evaluate_pairs, get_metric, get_task, read_pairs

    if task is None and data is None:
        raise UsageError("tasks eval needs --task (to generate pairs) or --data (a pair file).")
    spec = get_task(task) if task is not None else None
    measure = get_metric(metric or (spec.metric if spec else "logit_diff"))
    # a file that is not pairs at all fails before the model loads
    pairs = read_pairs(data).pairs if data is not None else None
    adapter = load_model(model)
    if pairs is not None:
        source = str(data)
    else:
        pairs, source = spec.make_pairs(adapter, n, seed=seed), f"generated {spec.key} pairs"
    scores = evaluate_pairs(
        adapter, pairs, corrupt=corrupt, source=source, allow_unk=allow_unk, metric=measure.key
    )
    values = scores.metric_values
    result = {
        "task": spec.key if spec else None,
        "model": adapter.name,
        "data": str(data) if data else None,
        "prompts": "corrupt" if corrupt else "clean",
        "n": len(pairs),
        "accuracy": round(scores.accuracy, 4),
        "top1_accuracy": round(scores.top1_accuracy, 4),
        "mean_logit_diff": round(scores.mean_logit_diff, 4),
        "std_logit_diff": round(float(scores.logit_diff.std()), 4) if len(pairs) > 1 else 0.0,
        "metric": measure.key,
        "mean_metric": round(float(values.mean()), 4),
        "std_metric": round(float(values.std()), 4) if len(pairs) > 1 else 0.0,
    }
    if as_json:
        typer.echo(json.dumps(result))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['task'] or data} on {adapter.name} ({result['prompts']} prompts)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("n", "accuracy", "top1_accuracy", "mean_logit_diff", "std_logit_diff"):
        table.add_row(key, str(result[key]))
    table.add_row(f"mean {measure.key}", str(result["mean_metric"]))
    table.add_row(f"std {measure.key}", str(result["std_metric"]))
    Console().print(table)
