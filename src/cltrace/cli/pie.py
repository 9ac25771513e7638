"""``cltrace pie``: the main job (stage I; stages II and III plug into the same run directory)."""

from __future__ import annotations

import math

import typer

from cltrace.cli._apps import app


def _ints(text: str, what: str) -> tuple[int, ...]:
    from cltrace.errors import UsageError

    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        vals = ()
    if not vals or min(vals) < 1:
        raise UsageError(
            f"{what} must be positive integers separated by commas, got {text!r}; pass e.g. "
            "50,100,200."
        )
    return vals


@app.command("pie")
def pie(
    task: str = typer.Option("ioi", "--task", help="ioi or docstring (ignored with --data)."),
    data: str | None = typer.Option(None, "--data", help="Your prompt-pair file instead."),
    n: int = typer.Option(200, "--n", min=1, help="Prompt pairs to generate."),
    seed: int = typer.Option(0, "--seed", help="Seed of the generated pairs."),
    model: str | None = typer.Option(
        None, "--model", help="HF id or directory (default: bundled)."
    ),
    transcoder: str | None = typer.Option(
        None, "--transcoder", help="Transcoder directory or hub id (default: bundled CLT)."
    ),
    methods: str | None = typer.Option(
        None, "--methods", help="Comma-separated stage-I methods (default: all)."
    ),
    budgets: str = typer.Option("50,100,200,400,800", "--budgets", help="Budgets K."),
    unit: str = typer.Option("occurrence", "--unit", help="occurrence or feature."),
    policy: str = typer.Option(
        "corrupted_prompt", "--policy", help="Removed units go to corrupted values or zero."
    ),
    grad_mode: str = typer.Option("direct", "--grad-mode", help="FAP gradient: direct or full."),
    lambda_syn: float = typer.Option(3.0, "--lambda-syn", help="FAP-Synergy weight."),
    random_seeds: int = typer.Option(3, "--random-seeds", min=1, help="Seeds of random."),
    out: str | None = typer.Option(
        None, "--out", help="Run directory (default runs/pie-<task>-n<N>-s<seed>); rerun to resume."
    ),
    stages: str = typer.Option(
        "prune,interpret,evaluate", "--stages", help="Which PIE stages to run."
    ),
    allow_unk: bool = typer.Option(
        False, "--allow-unk", help="Read words of --data the tokenizer does not know as unk."
    ),
) -> None:
    """Prune first: score every active feature occurrence, keep K, measure retained behaviour."""
    from pathlib import Path

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from cltrace.cli._apps import state
    from cltrace.errors import UsageError
    from cltrace.pie import DEFAULT_METHODS, PieConfig, run_pie
    from cltrace.pie.run import validate
    from cltrace.prune import METHODS, PruneConfig

    chosen = (
        tuple(m.strip() for m in methods.split(",") if m.strip())
        if methods
        else tuple(m for m in DEFAULT_METHODS if m in METHODS)
    )
    if not chosen:
        raise UsageError(f"--methods {methods!r} names no method; pass e.g. fap,random.")
    ks = _ints(budgets, "--budgets")
    cfg = PieConfig(
        task=task, n=n, seed=seed, data=data, model=model, transcoder=transcoder,
        methods=chosen,
        prune=PruneConfig(budgets=ks, unit=unit, policy=policy, grad_mode=grad_mode,
                          lambda_syn=lambda_syn, random_seeds=random_seeds),
        interpret_budget=100 if 100 in ks else min(ks),
        # stages II/III explain what a chosen method kept: FAP-Synergy when it runs
        interpret_method="fap_synergy" if "fap_synergy" in chosen else chosen[0],
        allow_unk=allow_unk,
    )  # fmt: skip
    label = Path(data).stem if data else task
    run_dir = Path(out or f"runs/pie-{label}-n{n}-s{seed}")
    wanted = {s.strip() for s in stages.split(",") if s.strip()}
    unknown = wanted - {"prune", "interpret", "evaluate"}
    if unknown or not wanted:
        raise UsageError(
            f"unknown --stages {stages!r}; use a comma-separated subset of prune,interpret,"
            "evaluate."
        )
    validate(cfg)
    console = Console(stderr=False)
    console.print(f"run directory: {run_dir}  (rerun the same command to resume)")
    resume = f"rerun the same command to resume {run_dir}"
    state.interrupt_note = f"nothing was written yet; {resume}"

    def progress(i: int, total: int) -> None:
        bar.update(job, completed=i, total=total)
        state.interrupt_note = (
            f"{run_dir}/records.jsonl keeps the {i} of {total} prompts finished; {resume}"
        )

    with Progress(console=console, transient=True) as bar:
        job = bar.add_task("stage I: scoring prompts", total=None)
        results = run_pie(cfg, run_dir, progress=progress)
    state.interrupt_note = (
        f"stage I is complete in {run_dir}; rerun the same command to redo the later stages"
    )
    table = Table(title=f"PIE stage I: mean last-token KL (95% CI), {results['n_prompts']} prompts")
    table.add_column("method")
    for k in ks:
        table.add_column(f"K={k}", justify="right")
    for method in chosen:
        row = []
        for k in ks:
            e = results["methods"].get(method, {}).get(str(k))
            if not e:
                row.append("–")
                continue
            kl = e["kl"]
            row.append(f"{kl['mean']:.3f} [{kl['low']:.3f}, {kl['high']:.3f}]")
        table.add_row(method, *row)
    console.print(table)
    req = results.get("random_equivalence") or {}
    if req and math.isfinite(req.get("random_equivalent_budget", math.inf)):
        console.print(
            f"random needs K≈{req['random_equivalent_budget']:.0f} to match FAP at "
            f"K={req['fap_budget']} ({req['compression']:.1f}x)"
        )
    if "interpret" in wanted or "evaluate" in wanted:
        from cltrace.pie.stages import run_later_stages

        run_later_stages(run_dir, wanted, console)
    state.interrupt_note = None
    console.print(f"run directory: {run_dir}  (report: {run_dir / 'report.html'})")
    console.print(f"view it: cltrace serve {run_dir}", markup=False, soft_wrap=True)
