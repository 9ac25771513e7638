"""``cltrace pie``: the main job (stage I; stages II and III plug into the same run directory)."""

from __future__ import annotations

import math
import time

import typer

from cltrace.cli._apps import app
from cltrace.cli._where import DEVICE_MAP_HELP, OFFLOAD_HELP, parse_spread

STAGES = ("prune", "interpret", "evaluate")
SECONDS_PER_PROMPT = {"fap": 0.05, "fap_synergy": 0.1, "fap_signal": 0.01, "act_mag": 0.01,
                      "relp": 0.015, "factp": 0.27, "acdc": 0.5, "graph_influence": 0.09,
                      "random": 0.04, "learned_mask": 20.0}  # fmt: skip
"""Rough stage-I seconds per IOI prompt and method with the bundled model on one idle core
(the per-method times a run records; ``fap`` also counts each prompt's components, ``random``
the retention passes); only for the estimate printed at the start."""


def estimate_seconds(n_prompts: int, methods, stages) -> float:
    """A rough duration of the run on 2 CPU cores (bundled model), for the start message."""
    total = 0.0
    if "prune" in stages:
        total += n_prompts * sum(SECONDS_PER_PROMPT.get(m, 0.5) for m in methods) + 5
    if "interpret" in stages:
        total += 15
    if "evaluate" in stages:
        total += 85
    return total


def _one_thread_for_the_bundled_model(model: str | None) -> None:
    """The bundled model's matrices are too small for a second torch thread to pay: on an idle
    2-core machine ``cltrace pie --n 50`` took 3:37 with one thread and 4:40 with torch's
    default of two. So with the bundled model, and unless ``CLTRACE_NUM_THREADS`` says
    otherwise, the job runs on one thread (``torchrun --nproc-per-node 2`` uses both cores)."""
    import os

    if model is None and not os.environ.get("CLTRACE_NUM_THREADS"):
        import torch

        torch.set_num_threads(1)


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}" if m else f"{s} s"


def print_wide(console, table) -> None:
    """Print a table at its natural width, even past the console's: rich would otherwise cut
    cells ("0.0…"), and a terminal that wraps a long line never breaks a number in two."""
    from rich.measure import Measurement

    need = Measurement.get(console, console.options.update_width(1000), table).maximum
    console.print(table, width=max(console.width, need), crop=False)


def num(v: float) -> str:
    """A table number: 3 decimals, or scientific notation below 0.01 (KLs of 1e-4 matter)."""
    if v is None or not math.isfinite(v):
        return "–" if v is None or math.isnan(v) else ("∞" if v > 0 else "-∞")
    return f"{v:.1e}" if v != 0 and abs(v) < 0.01 else f"{v:.3f}"


def _count_pairs(path: str) -> int:
    from cltrace.tasks import read_pairs

    try:
        return len(read_pairs(path).pairs)
    except Exception:  # a bad file is reported, in one sentence, by the run itself
        return 0


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
    task: str = typer.Option(
        "ioi", "--task", help="ioi, docstring, induction or greater_than (ignored with --data)."
    ),
    data: str | None = typer.Option(None, "--data", help="Your prompt-pair file instead."),
    n: int = typer.Option(
        200, "--n", "--n-pairs", min=1, help="Prompt pairs to generate (--n-pairs under torchrun)."
    ),
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
    metric: str | None = typer.Option(
        None,
        "--metric",
        help="Behaviour metric: logit_diff, mean_logit_diff, prob_diff or logsumexp (default: "
        "the task's; logit_diff for --data).",
    ),
    force: bool = typer.Option(
        False, "--force", help="Go on when the corrupted prompts do not change the behaviour."
    ),
    device: str = typer.Option(
        "cpu", "--device", help="cpu, cuda, cuda:N or mps (cuda under torchrun: each rank's GPU)."
    ),
    dtype: str = typer.Option(
        "float32", "--dtype", help="Weights and activations: float32, bfloat16 or float16."
    ),
    corpus: str | None = typer.Option(
        None,
        "--corpus",
        help="Texts for stages II and III: a text file (one document per line), "
        "hf:NAME[:SPLIT[:COLUMN]] or bundled; default: the bundled corpus, for the bundled "
        "model only.",
    ),
    lazy_decoders: bool = typer.Option(
        False,
        "--lazy-decoders",
        help="Leave decoders on disk and read only the rows of active features (large CLTs).",
    ),
    device_map: str = typer.Option(
        None, "--device-map", help=DEVICE_MAP_HELP + " All three stages."
    ),
    offload_folder: str = typer.Option(None, "--offload-folder", help=OFFLOAD_HELP),
) -> None:
    """Prune first: score every active feature occurrence, keep K, measure retained behaviour."""
    from pathlib import Path

    from rich.console import Console
    from rich.progress import Progress

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
                          lambda_syn=lambda_syn, random_seeds=random_seeds, metric=metric),
        interpret_budget=100 if 100 in ks else min(ks),
        # stages II/III explain what a chosen method kept: FAP-Synergy when it runs
        interpret_method="fap_synergy" if "fap_synergy" in chosen else chosen[0],
        allow_unk=allow_unk, device=device, dtype=dtype, lazy_decoders=lazy_decoders,
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
    if "interpret" in wanted or "evaluate" in wanted:
        from cltrace.corpus import check_corpus_fits

        check_corpus_fits(corpus, model)  # before stage I, not after it
    spread = parse_spread(device_map, offload_folder)
    _one_thread_for_the_bundled_model(model)
    from cltrace import dist

    # several processes under torchrun share the work of every stage
    world = dist.start(cfg.device)
    # stages II and III run where stage I ran
    where = {"device": cfg.device, "dtype": cfg.dtype, "lazy_decoders": cfg.lazy_decoders}
    later = "interpret" in wanted or "evaluate" in wanted
    if not world.is_main:
        try:
            run_pie(cfg, run_dir, force=force, world=world, spread=spread)
            if later:
                from cltrace.pie.stages import run_later_stages

                run_later_stages(run_dir, wanted, None, world, corpus=corpus, spread=spread,
                                 **where)  # fmt: skip
        finally:
            dist.finish(world)
        return
    console = Console(stderr=False)
    n_prompts = n if data is None else _count_pairs(data)
    console.print(f"run directory: {run_dir}  (rerun the same command to resume)")
    console.print(
        f"{n_prompts} prompts, {len(chosen)} methods ({', '.join(chosen)}), budgets "
        f"{','.join(map(str, ks))}; stages: {', '.join(s for s in STAGES if s in wanted)}; "
        f"estimated {_clock(estimate_seconds(n_prompts, chosen, wanted))} on 2 CPU cores"
    )
    resume = f"rerun the same command to resume {run_dir}"
    state.interrupt_note = f"nothing was written yet; {resume}"

    started = time.perf_counter()
    first = []

    def progress(i: int, total: int) -> None:
        if not first:
            first.append(i)
            if i:  # the first call of a resumed run reports the prompts already on disk
                console.print(f"resuming: {i}/{total} prompts done")
        bar.update(job, completed=i, total=total)
        state.interrupt_note = (
            f"{run_dir}/records.jsonl keeps the {i} of {total} prompts finished; {resume}"
        )

    try:
        with Progress(console=console, transient=True) as bar:
            job = bar.add_task("stage I: scoring prompts", total=None)
            results = run_pie(cfg, run_dir, progress=progress, force=force, world=world,
                              spread=spread)  # fmt: skip
        n_now = results["n_prompts"] - (first[0] if first else 0)
        console.print(
            f"stage I (prune): {results['n_prompts']} prompts ({n_now} computed now) in "
            f"{_clock(time.perf_counter() - started)}"
        )
        state.interrupt_note = (
            f"stage I is complete in {run_dir}; rerun the same command to redo the later stages"
        )
        _print_stage1(console, results, chosen, ks)
        if later:
            from cltrace.pie.stages import run_later_stages

            run_later_stages(
                run_dir, wanted, console, world, corpus=corpus, spread=spread, **where
            )
    finally:
        dist.finish(world)
    state.interrupt_note = None
    console.print(f"run directory: {run_dir}  (report: {run_dir / 'report.html'})")
    console.print(f"view it: cltrace serve {run_dir}", markup=False, soft_wrap=True)


def _print_stage1(console, results: dict, chosen, ks) -> None:
    """The behaviour line, the stage-I table and the random baseline's equivalent budget."""
    from rich.table import Table

    b = results.get("behaviour")
    if b:
        console.print(
            f"behaviour ({b['metric']}): {num(b['clean_mean'])} clean, "
            f"{num(b['corrupt_mean'])} corrupted, difference {num(b['difference'])} +- "
            f"{num(b['difference_se'])} over {b['n_pairs']} pairs"
        )
    table = Table(title=f"PIE stage I: mean last-token KL (95% CI), {results['n_prompts']} prompts")
    rows = []
    for method in chosen:
        row = []
        for k in ks:
            e = results["methods"].get(method, {}).get(str(k))
            if not e:
                row.append("–")
                continue
            kl = e["kl"]
            # the CI on its own line, so that a narrow terminal never breaks a number
            row.append(f"{num(kl['mean'])}\n[{num(kl['low'])}, {num(kl['high'])}]")
        rows.append(row)
    table.add_column("method", no_wrap=True, min_width=max(len(m) for m in chosen))
    for j, k in enumerate(ks):
        widest = max(len(line) for row in rows for line in row[j].split("\n"))
        table.add_column(f"K={k}", justify="right", no_wrap=True, min_width=widest)
    for method, row in zip(chosen, rows, strict=True):
        table.add_row(method, *row)
    print_wide(console, table)
    req = results.get("random_equivalence") or {}
    if req and math.isfinite(req.get("random_equivalent_budget", math.inf)):
        console.print(
            f"random needs K≈{req['random_equivalent_budget']:.0f} to match FAP at "
            f"K={req['fap_budget']} ({req['compression']:.1f}x)"
        )
