"""``cltrace attribute``: attribution graph of one prompt, pruned, scored and written as JSON."""

from __future__ import annotations

import contextlib
import json
import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from cltrace.cli._apps import app
from cltrace.cli._where import DEVICE_MAP_HELP, OFFLOAD_HELP


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


@app.command("attribute")
def attribute_cmd(
    prompt: str = typer.Option(None, "--prompt", help="Prompt text (BOS is prepended)."),
    data: str = typer.Option(
        None,
        "--data",
        help="Prompt file (JSON Lines or one prompt per line): one graph per prompt in the --out "
        "folder, shared across ranks under torchrun.",
    ),
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
        ...,
        "--out",
        help="Graph file NAME.json (graph-metadata.json goes beside it); with --data, a folder.",
    ),
    token_nodes: str = typer.Option(
        "cltrace",
        "--token-nodes",
        help="cltrace (token + position embedding) or circuit-tracer (token embedding only, "
        "BOS errors unattributed: edges match circuit-tracer's graphs).",
    ),
    candidates: str = typer.Option(
        None,
        "--candidates",
        help="Only these features become nodes: a `cltrace global --task` global.json (its "
        "pre-filtered set) or a JSON list of [layer, feature] pairs.",
    ),
    descriptions: str = typer.Option(
        None, "--descriptions", help="Label features with a PIE run's descriptions (its folder)."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or mps."),
    lazy_decoders: bool = typer.Option(
        False,
        "--lazy-decoders",
        help="Leave decoders on disk and read only the rows a graph needs (large CLTs).",
    ),
    dtype: str = typer.Option(
        "float32", "--dtype", help="Weights and activations: float32, bfloat16 or float16."
    ),
    device_map: str = typer.Option(None, "--device-map", help=DEVICE_MAP_HELP),
    offload_folder: str = typer.Option(None, "--offload-folder", help=OFFLOAD_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object, not a summary."),
    allow_unk: bool = typer.Option(
        False, "--allow-unk", help="Read prompt words the tokenizer does not know as its unk token."
    ),
) -> None:
    """Attribution graph of a prompt: prune it, score it, write the graph JSON."""
    from cltrace.api.graphs import attribute_checked, check_inputs, read_candidates
    from cltrace.errors import UsageError
    from cltrace.graph.export import graph_paths, read_descriptions, transcoder_scan
    from cltrace.graph.influence import path_lengths
    from cltrace.models import load_model
    from cltrace.paths import BUNDLED_CLT_DIR
    from cltrace.precision import parse_device, parse_dtype
    from cltrace.transcoders import load_transcoder

    t0 = time.perf_counter()
    if (prompt is None) == (data is None):
        raise UsageError(
            "pass exactly one of --prompt TEXT and --data FILE; see `cltrace attribute --help`."
        )
    from cltrace.cli._where import parse_spread

    where = {"device": parse_device(device), "dtype": parse_dtype(dtype)}
    tc_opts = {**where, "lazy_decoder": lazy_decoders}
    spread = parse_spread(device_map, offload_folder)  # {} without --device-map
    if token_nodes not in ("cltrace", "circuit-tracer"):
        raise UsageError(
            f"--token-nodes {token_nodes!r} is unknown; pass cltrace or circuit-tracer."
        )
    if data is not None:
        _attribute_file(
            data,
            out,
            model,
            transcoder,
            node_threshold,
            edge_threshold,
            max_feature_nodes,
            batch_size,
            token_nodes,
            as_json,
            allow_unk,
            t0,
            tc_opts,
            spread,
        )
        return
    if not prompt.strip():  # before the model loads
        raise UsageError(
            "--prompt is empty; pass the text to attribute, such as --prompt 'The capital of "
            "France is'."
        )
    targets = list(target or [])
    labels = read_descriptions(descriptions) if descriptions else None  # before the model loads
    chosen = read_candidates(candidates) if candidates else None
    if chosen is not None and max_feature_nodes is not None:
        raise UsageError("--candidates and --max-feature-nodes both choose nodes; pass one.")
    with _output_folder(graph_paths(out)[0]):
        adapter = load_model(model, **where, **spread)
        if spread:  # the transcoder sits where cltrace keeps its tensors
            tc_opts = {**tc_opts, "device": adapter.device}
        # a prompt or target the model cannot use is a usage error here (exit 2)
        check_inputs(adapter, prompt, targets, allow_unk, "--prompt", "--target", UsageError)
        tc = load_transcoder(transcoder or BUNDLED_CLT_DIR, model=adapter, **tc_opts)
        full = attribute_checked(
            adapter, tc, prompt, targets, max_feature_nodes, batch_size, token_nodes, chosen
        )
        pruned = full.prune(node_threshold, edge_threshold)
        paths = path_lengths(full.graph)
        path = pruned.save(out, scan=transcoder_scan(transcoder), descriptions=labels)
    report = {
        "out": str(path),
        "n_nodes": full.n_nodes,
        "n_edges": full.n_edges,
        "n_features": full.n_features,
        "n_active_features": full.graph.n_active_features,
        "n_logits": full.n_logits,
        "replacement_score": full.replacement_score,
        "completeness_score": full.completeness_score,
        "average_path_length": paths.mean,
        "pruned_n_nodes": pruned.n_nodes,
        "pruned_n_edges": pruned.n_edges,
        "pruned_n_features": pruned.n_features,
        "pruned_replacement_score": pruned.replacement_score,
        "pruned_completeness_score": pruned.completeness_score,
        "node_threshold": node_threshold,
        "edge_threshold": edge_threshold,
        "attribution_seconds": round(full.graph.seconds, 3),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if as_json:
        typer.echo(json.dumps(report))
        return
    # from the report: counting edges again would scan the dense adjacency twice more
    typer.echo(
        f"graph: {report['n_nodes']} nodes ({report['n_features']} features, "
        f"{report['n_logits']} logits), {report['n_edges']} edges; replacement "
        f"{full.replacement_score:.3f}, completeness {full.completeness_score:.3f}, "
        f"mean path length {paths.mean:.2f}"
    )
    typer.echo(
        f"pruned: {report['pruned_n_nodes']} nodes ({report['pruned_n_features']} features), "
        f"{report['pruned_n_edges']} edges; replacement {pruned.replacement_score:.3f}, "
        f"completeness {pruned.completeness_score:.3f}"
    )
    typer.echo(f"wrote {path} ({report['seconds']:.1f} s)")
    typer.echo(f"view it: cltrace serve {shlex.quote(str(path))}")


def _attribute_file(
    data: str,
    out: str,
    model: str | None,
    transcoder: str | None,
    node_threshold: float,
    edge_threshold: float,
    max_feature_nodes: int | None,
    batch_size: int,
    token_nodes: str,
    as_json: bool,
    allow_unk: bool,
    t0: float,
    tc_opts: dict,
    spread: dict,
) -> None:
    """``--data``: one graph per prompt, this rank's share under torchrun."""
    from cltrace import dist
    from cltrace.api.batch import attribute_prompts, read_prompt_file
    from cltrace.graph.export import transcoder_scan
    from cltrace.models import load_model
    from cltrace.paths import BUNDLED_CLT_DIR
    from cltrace.transcoders import load_transcoder

    items = read_prompt_file(data)  # before the model loads
    device = tc_opts["device"]
    if device.type == "cuda" and device.index is None:
        device = dist.local_device(device)  # one GPU per rank, for model and transcoder alike
        tc_opts = {**tc_opts, "device": device}
    where = {"device": device, "dtype": tc_opts["dtype"]}
    world = dist.start(str(device))
    try:
        with _output_folder(Path(out)):
            adapter = load_model(model, **where, **spread)
            if spread:
                tc_opts = {**tc_opts, "device": adapter.device}
            tc = load_transcoder(transcoder or BUNDLED_CLT_DIR, model=adapter, **tc_opts)
            summary = attribute_prompts(
                adapter, tc, items, out, world, node_threshold=node_threshold,
                edge_threshold=edge_threshold, max_feature_nodes=max_feature_nodes,
                batch_size=batch_size, token_nodes=token_nodes,
                scan=transcoder_scan(transcoder), allow_unk=allow_unk,
                on_graph=None if as_json or not world.is_main else (
                    lambda slug: typer.echo(f"wrote {Path(out) / slug}.json", err=True)),
            )  # fmt: skip
    finally:
        dist.finish(world)
    if not world.is_main:
        return
    report = {
        "out": str(out),
        "listing": str(summary.listing),
        "n_prompts": summary.n_prompts,
        "world_size": world.size,
        "written_by_rank0": len(summary.written),
        "already_there_rank0": len(summary.kept),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if as_json:
        typer.echo(json.dumps(report))
        return
    typer.echo(
        f"{summary.n_prompts} prompts over {world.size} process(es); rank 0 wrote "
        f"{len(summary.written)} graphs and kept {len(summary.kept)} already there; listing "
        f"{summary.listing} ({report['seconds']:.1f} s)"
    )
    typer.echo(f"view them: cltrace serve {shlex.quote(str(out))}")
