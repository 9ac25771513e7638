"""``cltrace attribute``: attribution graph of one prompt, pruned, scored and written as JSON."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from cltrace.cli._apps import app


def _out_paths(out: str) -> tuple[Path, str]:
    """``dir/name.json`` → (dir, "name"); a path without ``.json`` is a folder for graph.json."""
    path = Path(out)
    if path.suffix == ".json":
        return path.parent, path.stem
    return path, "graph"


@contextlib.contextmanager
def _output_folder(out_dir: Path) -> Iterator[None]:
    """Create ``out_dir`` up front, so an unwritable --out fails before any work; if the run
    then fails, remove the folders this made while they are still empty."""
    from cltrace.files import check_writable_dir

    made = [p for p in (out_dir, *out_dir.parents) if not p.exists()]
    check_writable_dir(out_dir, "graph folder")
    try:
        yield
    except BaseException:
        for folder in made:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()  # only succeeds while empty
        raise


def _decoder(adapter):
    return lambda token: adapter.tokenizer.decode([token])


def _check_inputs(adapter, prompt: str, targets: list[str], allow_unk: bool) -> None:
    """Refuse a prompt or target the model cannot use, as a usage error (exit 2)."""
    import warnings

    from cltrace.errors import CltraceError, UsageError
    from cltrace.models.adapter import describe_words

    unknown = adapter.check_prompt(prompt, "--prompt", allow_unk=allow_unk, error=UsageError)
    if unknown:
        warnings.warn(
            f"--prompt has {describe_words(unknown)} that the tokenizer does not know; unknown "
            f"words are read as {adapter.tokenizer.unk_token}.",
            stacklevel=2,
        )
    for target in targets:
        try:
            adapter.single_token_id(target, what="--target")
        except CltraceError as exc:
            raise UsageError(str(exc)) from None


@app.command("attribute")
def attribute_cmd(
    prompt: str = typer.Option(..., "--prompt", help="Prompt text (BOS is prepended)."),
    model: str = typer.Option(None, "--model", help="HF id or local model dir (default: bundled)."),
    transcoder: str = typer.Option(
        None, "--transcoder", help="Transcoder directory or HF repo id (default: bundled CLT)."
    ),
    target: Annotated[
        list[str] | None,
        typer.Option(
            "--target",
            metavar="TOKEN",
            help="Single-token logit target; repeat for more (default: top tokens).",
        ),
    ] = None,
    max_feature_nodes: int = typer.Option(
        None, "--max-feature-nodes", min=1, help="Keep at most N feature nodes, by influence."
    ),
    node_threshold: float = typer.Option(
        0.8, "--node-threshold", help="Pruning: share of node influence to keep (1 = all)."
    ),
    edge_threshold: float = typer.Option(
        0.98, "--edge-threshold", help="Pruning: share of edge score to keep (1 = all)."
    ),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Targets per batch."),
    out: str = typer.Option(
        ..., "--out", help="Graph file NAME.json (graph-metadata.json goes beside it)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object, not a summary."),
    allow_unk: bool = typer.Option(
        False, "--allow-unk", help="Read prompt words the tokenizer does not know as its unk token."
    ),
) -> None:
    """Attribution graph of a prompt: prune it, score it, write the graph JSON."""
    from cltrace.errors import UsageError
    from cltrace.graph import AttributionConfig, attribute
    from cltrace.graph.export import graph_document, write_graph_json
    from cltrace.graph.influence import graph_scores, path_lengths
    from cltrace.graph.prune import GraphPruneConfig, prune_graph
    from cltrace.models import load_model
    from cltrace.paths import BUNDLED_CLT_DIR
    from cltrace.transcoders import load_transcoder

    t0 = time.perf_counter()
    if not prompt.strip():
        raise UsageError(
            "--prompt is empty; pass the text to attribute, such as --prompt 'The capital of "
            "France is'."
        )
    prune_cfg = GraphPruneConfig(node_threshold=node_threshold, edge_threshold=edge_threshold)
    out_dir, slug = _out_paths(out)
    targets = list(target or [])
    with _output_folder(out_dir):
        adapter = load_model(model)
        _check_inputs(adapter, prompt, targets, allow_unk)
        tc = load_transcoder(transcoder or BUNDLED_CLT_DIR, model=adapter)
        cfg = AttributionConfig(max_feature_nodes=max_feature_nodes, batch_size=batch_size)
        graph = attribute(adapter, tc, prompt, targets=targets or None, config=cfg)
        full = graph_scores(graph)
        result = prune_graph(graph, prune_cfg)
        pruned = graph_scores(graph, result.node_mask)
        paths = path_lengths(graph)
        doc = graph_document(graph, slug, result, scan=adapter.name, decode=_decoder(adapter))
        path = write_graph_json(doc, out_dir)
    idx = graph.index
    kept_features = int(result.node_mask[idx.features()].sum())
    report = {
        "out": str(path),
        "n_nodes": idx.n_nodes,
        "n_edges": int((graph.adjacency != 0).sum()),
        "n_features": idx.n_features,
        "n_active_features": graph.n_active_features,
        "n_logits": idx.n_logits,
        "replacement_score": full.replacement,
        "completeness_score": full.completeness,
        "average_path_length": paths.mean,
        "pruned_n_nodes": result.n_nodes,
        "pruned_n_edges": result.n_edges,
        "pruned_n_features": kept_features,
        "pruned_replacement_score": pruned.replacement,
        "pruned_completeness_score": pruned.completeness,
        "node_threshold": node_threshold,
        "edge_threshold": edge_threshold,
        "attribution_seconds": round(graph.seconds, 3),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if as_json:
        typer.echo(json.dumps(report))
        return
    typer.echo(
        f"graph: {idx.n_nodes} nodes ({idx.n_features} features, {idx.n_logits} logits), "
        f"{report['n_edges']} edges; replacement {full.replacement:.3f}, "
        f"completeness {full.completeness:.3f}, mean path length {paths.mean:.2f}"
    )
    typer.echo(
        f"pruned: {result.n_nodes} nodes ({kept_features} features), {result.n_edges} edges; "
        f"replacement {pruned.replacement:.3f}, completeness {pruned.completeness:.3f}"
    )
    typer.echo(f"wrote {path} ({report['seconds']:.1f} s)")
