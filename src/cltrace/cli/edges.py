"""``cltrace edges {eap,eap-ig,ep,hap}``: edge-level circuits of heads and MLPs."""

from __future__ import annotations

import json

import typer

from cltrace.cli._apps import app

edges_app = typer.Typer(
    help="Edge-level circuits of heads and MLPs: EAP, EAP-IG, Edge Pruning, HAP.",
    no_args_is_help=True,
)
app.add_typer(edges_app, name="edges")

MIB_HELP = (
    "Also write the circuit as a MIB circuit-localisation submission under this directory: "
    "importances/TASK_MODEL/importances.json and multiple_circuits/TASK_MODEL/<p>pct.json."
)


def _run(method: str, curve: bool = False, **kw) -> None:
    from pathlib import Path

    from cltrace.edges.mib import write_submission
    from cltrace.edges.run import (
        EdgeOptions,
        check_options,
        find_circuit,
        find_curve,
        write_circuit,
    )
    from cltrace.errors import UsageError
    from cltrace.files import atomic_write_text, check_out_path
    from cltrace.models import load_model
    from cltrace.report.edges_report import write_edges_report
    from cltrace.tasks import get_task, read_pairs

    task, data, out, as_json = kw.pop("task"), kw.pop("data"), kw.pop("out"), kw.pop("as_json")
    model, n, mib = kw.pop("model"), kw.pop("n"), kw.pop("mib")
    opts = EdgeOptions(**kw)
    check_options(opts)
    if task is None and data is None:
        raise UsageError(
            f"edges {method} needs --task (to generate pairs) or --data (a pair file)."
        )
    if curve and method not in ("eap", "eap-ig"):
        raise UsageError(
            f"a curve ranks edges by scores; use --method eap or eap-ig, not {method!r}."
        )
    spec = get_task(task) if task is not None else None
    if out is None:
        what = task if task is not None else Path(data).stem
        out = f"runs/edges-{'curve-' if curve else ''}{method}-{what}-s{opts.seed}"
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out} is a file; give a directory for circuit.json.")
    if mib is not None:
        if Path(mib).exists() and not Path(mib).is_dir():
            raise UsageError(f"--mib {mib} is a file; give a directory for the MIB submission.")
        check_out_path(mib, "MIB submission directory")
    pairs = read_pairs(data).pairs if data is not None else None
    adapter = load_model(model)
    if pairs is None:
        pairs, source = spec.make_pairs(adapter, n, seed=opts.seed), f"generated {spec.key} pairs"
    else:
        source = str(data)
    if curve:
        run = find_curve(adapter, pairs, method, opts, source)
    else:
        run = find_circuit(adapter, pairs, method, opts, source)
    run.result["task"] = spec.key if spec else None
    out_dir.mkdir(parents=True, exist_ok=True)
    if curve:
        path = atomic_write_text(out_dir / "curve.json", json.dumps(run.result, indent=1))
    else:
        path = write_circuit(out_dir, run)
    write_edges_report(out_dir, run.result)
    if mib is not None:
        task_name = spec.key if spec else Path(data).stem
        write_submission(
            mib, run.graph, run.importance, run.keep, run.d_model, task_name, adapter.name
        )
    result = run.result
    if as_json:
        typer.echo(json.dumps({k: v for k, v in result.items() if k != "options"}))
    elif curve:
        typer.echo(
            f"{method} curve: CPR {result['cpr']}, CMD {result['cmd']}, faithfulness "
            f"{result['faithfulness']}; wrote {path} and {out_dir / 'report.html'}"
        )
    else:
        typer.echo(
            f"{method}: {result['n_edges']}/{result['n_edges_total']} edges, faithfulness "
            f"{result['faithfulness']}, KL {result['kl']}, {result['seconds']} s; wrote {path} "
            f"and {out_dir / 'report.html'}"
        )


def _command(method: str, doc: str):
    def command(
        task: str | None = typer.Option(
            None, "--task", help="Task: ioi, docstring, induction or greater_than."
        ),
        data: str | None = typer.Option(None, "--data", help="Pair file (default: generate)."),
        n: int = typer.Option(32, "--n", min=1, help="Pairs to generate when --data is not given."),
        model: str | None = typer.Option(
            None, "--model", help="HF model id or directory (default: the bundled model)."
        ),
        sparsity: float = typer.Option(0.95, "--sparsity", help="Fraction of edges removed."),
        metric: str = typer.Option(
            "logit_diff", "--metric", help="logit_diff, prob_diff or kl (eap-ig)."
        ),
        intervention: str = typer.Option(
            "patching", "--intervention", help="patching, zero, mean or mean-positional."
        ),
        ig_steps: int = typer.Option(5, "--ig-steps", help="EAP-IG interpolation steps."),
        steps: int = typer.Option(300, "--steps", help="Edge Pruning steps (ep, hap)."),
        fraction: float = typer.Option(
            0.1, "--fraction", help="HAP: fraction of edges kept by EAP for pruning."
        ),
        seed: int = typer.Option(0, "--seed", help="Seed of the pairs and of the masks."),
        out: str | None = typer.Option(
            None, "--out", help="Directory for circuit.json, graph.json and report.html "
            "(default runs/edges-<method>-<task>-s<seed>).",
        ),
        mib: str | None = typer.Option(None, "--mib", help=MIB_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    ) -> None:
        _run(
            method, task=task, data=data, n=n, model=model, sparsity=sparsity, metric=metric,
            intervention=intervention, ig_steps=ig_steps, steps=steps, fraction=fraction,
            seed=seed, out=out, mib=mib, as_json=as_json,
        )  # fmt: skip

    command.__doc__ = doc
    return command


for _method, _doc in (
    ("eap", "Edge attribution patching: the top edges by |gradient x (corrupt - clean)|."),
    ("eap-ig", "EAP with integrated gradients over the input embeddings."),
    ("ep", "Edge Pruning: learned hard-concrete edge masks at a target sparsity."),
    ("hap", "HAP: EAP picks a subgraph, Edge Pruning prunes inside it."),
):
    edges_app.command(_method)(_command(_method, _doc))


@edges_app.command("curve")
def curve(
    method: str = typer.Option("eap", "--method", help="Scorer ranking the edges: eap or eap-ig."),
    task: str | None = typer.Option(
        None, "--task", help="Task: ioi, docstring, induction or greater_than."
    ),
    data: str | None = typer.Option(None, "--data", help="Pair file (default: generate)."),
    n: int = typer.Option(32, "--n", min=1, help="Pairs to generate when --data is not given."),
    model: str | None = typer.Option(
        None, "--model", help="HF model id or directory (default: the bundled model)."
    ),
    metric: str = typer.Option(
        "logit_diff", "--metric", help="logit_diff, prob_diff or kl (eap-ig)."
    ),
    intervention: str = typer.Option(
        "patching", "--intervention", help="patching, zero, mean or mean-positional."
    ),
    ig_steps: int = typer.Option(5, "--ig-steps", help="EAP-IG interpolation steps."),
    seed: int = typer.Option(0, "--seed", help="Seed of the pairs."),
    out: str | None = typer.Option(
        None, "--out", help="Directory for curve.json and report.html "
        "(default runs/edges-curve-<method>-<task>-s<seed>).",
    ),
    mib: str | None = typer.Option(None, "--mib", help=MIB_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Faithfulness over edge budgets 0.1% ... 100% and its areas (CPR, CMD)."""
    _run(
        method, curve=True, task=task, data=data, n=n, model=model, metric=metric,
        intervention=intervention, ig_steps=ig_steps, seed=seed, out=out, mib=mib,
        as_json=as_json,
    )  # fmt: skip
