"""``cltrace global``: virtual weights, ERA and TWERA of chosen features or of a task's features,
with the pre-filter precision against the task's local edges; ``--faithfulness`` adds the
mechanistic-faithfulness curves of the task's prompts."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import typer

from cltrace.cli._apps import app


def parse_features(text: str) -> list[tuple[int, int]]:
    """``"1/20,2/33"`` -> ``[(1, 20), (2, 33)]``; a usage error names a malformed item."""
    from cltrace.errors import UsageError

    out = []
    for item in (x.strip() for x in text.split(",")):
        m = re.fullmatch(r"(\d+)\s*/\s*(\d+)", item)
        if not m:
            raise UsageError(
                f"--features item {item!r} is not LAYER/FEATURE; pass a comma-separated list "
                "such as --features 1/20,2/33."
            )
        out.append((int(m.group(1)), int(m.group(2))))
    return out


@app.command("global")
def global_cmd(
    task: str = typer.Option(None, "--task", help="A task (ioi, docstring, induction, ...)."),
    features: str = typer.Option(
        None, "--features", help="Features LAYER/FEATURE, comma-separated (instead of --task)."
    ),
    model: str = typer.Option(None, "--model", help="HF id or local model dir (default: bundled)."),
    transcoder: str = typer.Option(
        None, "--transcoder", help="Transcoder directory or HF repo id (default: bundled CLT)."
    ),
    corpus: str = typer.Option(
        None,
        "--corpus",
        help="Text file (one document per line) or hf:<dataset> (default: the bundled corpus).",
    ),
    n_docs: int = typer.Option(1000, "--n-docs", min=1, help="Corpus documents to read."),
    n_prompts: int = typer.Option(8, "--n-prompts", min=1, help="Task prompts to attribute."),
    top: int = typer.Option(20, "--top", min=1, help="Pairs listed per score."),
    faithfulness: bool = typer.Option(
        False, "--faithfulness", help="Also the mechanistic-faithfulness curves of the prompts."
    ),
    out: str = typer.Option(
        "global_view",
        "--out",
        help="Folder for global.json, global.html and the resumable co-activation state.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
) -> None:
    """Top feature pairs by virtual weight, ERA and TWERA; for a task, how well TWERA predicts
    the strong edges of its attribution graphs (precision at k) and the saving of pre-filtering."""
    from dataclasses import replace

    from cltrace.errors import UsageError
    from cltrace.files import atomic_write_json, atomic_write_text, check_writable_dir
    from cltrace.global_view.coactivation import CoactConfig
    from cltrace.global_view.report import (
        GlobalConfig,
        features_report,
        render_html,
        task_report,
    )
    from cltrace.models import load_model
    from cltrace.paths import BUNDLED_CLT_DIR
    from cltrace.transcoders import load_transcoder

    if (task is None) == (features is None):
        raise UsageError("pass exactly one of --task and --features (e.g. --task ioi).")
    feats = parse_features(features) if features is not None else None
    if task is not None:
        from cltrace.tasks import get_task

        task = get_task(task).key
    if faithfulness and task is None:
        raise UsageError("--faithfulness needs --task (its prompts are perturbed).")
    out_dir = check_writable_dir(out, "--out folder")
    adapter = load_model(model)
    tc = load_transcoder(transcoder or BUNDLED_CLT_DIR, model=adapter)
    if feats is not None:
        bad = [f for f in feats if not (0 <= f[0] < tc.n_layers and 0 <= f[1] < tc.d_features)]
        if bad:
            raise UsageError(
                f"--features names {bad[0][0]}/{bad[0][1]}, which the transcoder does not have; "
                f"use layers 0..{tc.n_layers - 1} and features 0..{tc.d_features - 1}."
            )
    cfg = GlobalConfig(n_prompts=n_prompts, top=top,
                       coact=replace(CoactConfig(), corpus=corpus, n_docs=n_docs))  # fmt: skip
    say = (lambda _m: None) if as_json else (lambda m: typer.echo(m, err=True))
    # one state per question, so a rerun with other options starts its own pass
    key = json.dumps([task, features, str(transcoder), corpus, n_docs, n_prompts])
    state = Path(out_dir) / f"coact-{hashlib.sha256(key.encode()).hexdigest()[:10]}.npz"
    if feats is not None:
        report = features_report(adapter, tc, feats, cfg, state_path=state, say=say)
    else:
        report = task_report(adapter, tc, task, cfg, state_path=state, say=say)
    files = {"json": str(Path(out_dir) / "global.json"), "html": str(Path(out_dir) / "global.html")}
    if faithfulness:
        from cltrace.global_view.mechanistic import faithfulness_curves
        from cltrace.global_view.mechanistic import render_html as curves_html
        from cltrace.tasks import get_task

        say("mechanistic faithfulness curves")
        pairs = get_task(task).make_pairs(adapter, min(n_prompts, 4), seed=cfg.seed)
        curves = faithfulness_curves(adapter, tc, [p.clean for p in pairs])
        atomic_write_json(Path(out_dir) / "faithfulness.json", curves.to_json())
        atomic_write_text(Path(out_dir) / "faithfulness.html", curves_html(curves))
        report["faithfulness"] = {
            "ks": curves.ks, "n_perturbations": curves.n_perturbations,
            "cosine": {m: c.mean for m, c in curves.cosine.items()},
            "nmse": {m: c.mean for m, c in curves.nmse.items()},
        }  # fmt: skip
        files["faithfulness_html"] = str(Path(out_dir) / "faithfulness.html")
    report["files"] = files
    atomic_write_json(files["json"], report)
    atomic_write_text(files["html"], render_html(report))
    if as_json:
        typer.echo(json.dumps(report))
        return
    for s in ("twera", "era", "v"):
        typer.echo(f"top pairs by |{s.upper()}|:")
        for r in report["top_pairs"][s][:5]:
            typer.echo(f"  {r['source']:>8} -> {r['target']:<8} V {r['v']:+.3f}  "
                       f"ERA {r['era']:+.3g}  TWERA {r['twera']:+.3g}")  # fmt: skip
    if "prefilter" in report:
        pf = report["prefilter"]
        for k in pf["ks"]:
            typer.echo(f"precision@{k}: TWERA {pf['precision_at_k']['twera'][str(k)]:.3f}, "
                       f"ERA {pf['precision_at_k']['era'][str(k)]:.3f}, "
                       f"V {pf['precision_at_k']['v'][str(k)]:.3f} "
                       f"(chance {pf['chance_precision_at_k'][str(k)]:.2g})")  # fmt: skip
    typer.echo(f"wrote {files['json']} and {files['html']}")
