"""``cltrace supernodes``: add manual or automatic supernodes to a graph JSON and coarsen it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cltrace.cli._apps import app


def _parse_add(spec: str):
    from cltrace.errors import UsageError
    from cltrace.graph.supernodes import Supernode

    name, sep, ids = spec.partition("=")
    members = [x.strip() for x in ids.split(",") if x.strip()]
    if not sep or not name.strip() or not members:
        raise UsageError(
            f"--add {spec!r} is not NAME=ID,ID,...; pass e.g. --add 'say Mary=1_20_5,2_33_5'."
        )
    return Supernode(name.strip(), members)


@app.command("supernodes")
def supernodes_cmd(
    graph: str = typer.Option(..., "--graph", help="A graph JSON written by cltrace attribute."),
    add: Annotated[
        list[str] | None,
        typer.Option("--add", metavar="NAME=ID,ID", help="A manual supernode; repeat for more."),
    ] = None,
    auto: bool = typer.Option(
        False, "--auto", help="Group feature nodes automatically (decoder cosine, labels)."
    ),
    threshold: float = typer.Option(
        0.5, "--threshold", help="--auto: merge groups while their mean similarity is >= this."
    ),
    groups: int = typer.Option(
        None, "--groups", min=1, help="--auto: stop at this many groups (instead of --threshold)."
    ),
    transcoder: str = typer.Option(
        None, "--transcoder", help="--auto: transcoder of the graph (default: bundled CLT)."
    ),
    out: str = typer.Option(
        None, "--out", help="Where the graph with supernodes goes (default: the --graph file)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Write supernodes into the graph's qParams.supernodes, and a coarsened graph
    (NAME.coarse.json: each supernode one node with summed edges and influence) with a small
    HTML view (NAME.supernodes.html)."""
    import math

    from cltrace.errors import CltraceError, UsageError
    from cltrace.files import atomic_write_text
    from cltrace.graph.export import load_graph_json, node_key
    from cltrace.graph.supernodes import (
        auto_supernodes,
        check_supernodes,
        coarsen,
        read_supernodes,
        with_supernodes,
    )

    if not math.isfinite(threshold):
        raise UsageError(f"--threshold must be a finite number, got {threshold}.")
    manual = [_parse_add(s) for s in add or []]
    if not Path(graph).is_file():
        raise UsageError(
            f"--graph {graph} is not a file; pass a graph JSON from cltrace attribute."
        )
    doc = load_graph_json(graph)
    supernodes = read_supernodes(doc)
    try:  # a bad --add is a usage error; a bad supernode already in the file is not
        check_supernodes(doc, supernodes + manual)
    except CltraceError as exc:
        raise UsageError(str(exc)) from None
    supernodes += manual
    if auto:
        from cltrace.paths import BUNDLED_CLT_DIR
        from cltrace.transcoders import load_transcoder

        tc = load_transcoder(transcoder or BUNDLED_CLT_DIR)
        taken = {m for sn in supernodes for m in sn.members}
        free = doc.model_copy(deep=True)
        free.nodes = [n for n in doc.nodes if n.node_id not in taken]
        for n in free.nodes:
            if n.feature_type != "cross layer transcoder":
                continue
            key = node_key(n)
            if not (0 <= key["layer"] < tc.n_layers and 0 <= key["feature"] < tc.d_features):
                raise UsageError(
                    f"graph node {n.node_id} is not a feature of the transcoder; pass the "
                    "--transcoder the graph was made with."
                )
        found = auto_supernodes(free, transcoder=tc, threshold=None if groups else threshold,
                                n_groups=groups)  # fmt: skip
        used = {sn.name for sn in supernodes}
        for sn in found:
            while sn.name in used:
                sn.name += "'"
            used.add(sn.name)
        supernodes += found
    if not supernodes:
        raise UsageError(
            f"{graph} has no supernodes and none were asked for; pass --add NAME=ID,... or --auto."
        )
    new = with_supernodes(doc, supernodes)
    target = Path(out) if out else Path(graph)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, new.model_dump_json(indent=1))
    coarse = coarsen(doc, supernodes)
    stem = target.with_suffix("")
    coarse_path = Path(f"{stem}.coarse.json")
    html_path = Path(f"{stem}.supernodes.html")
    atomic_write_text(coarse_path, coarse.model_dump_json(indent=1))
    atomic_write_text(html_path, _html(coarse, supernodes))
    report = {
        "graph": str(target), "coarse_graph": str(coarse_path), "html": str(html_path),
        "n_nodes": len(doc.nodes), "n_coarse_nodes": len(coarse.nodes),
        "n_links": len(doc.links), "n_coarse_links": len(coarse.links),
        "supernodes": [{"name": sn.name, "members": sn.members} for sn in supernodes],
    }  # fmt: skip
    if as_json:
        typer.echo(json.dumps(report))
        return
    typer.echo(f"{len(supernodes)} supernodes; graph {len(doc.nodes)} -> {len(coarse.nodes)} "
               f"nodes, {len(doc.links)} -> {len(coarse.links)} links")  # fmt: skip
    typer.echo(f"wrote {target}, {coarse_path} and {html_path}")


def _html(coarse, supernodes) -> str:
    from html import escape

    nodes = {n.node_id: n for n in coarse.nodes}
    rows = []
    for k, sn in enumerate(supernodes, start=1):
        node = nodes[f"SN_{k}"]
        infl = "" if node.influence is None else f"{node.influence:.3f}"
        rows.append(f"<tr><td>SN_{k}</td><td>{escape(sn.name)}</td><td>{len(sn.members)}</td>"
                    f"<td>{infl}</td><td>{escape(', '.join(sn.members))}</td></tr>")  # fmt: skip
    links = sorted(
        (x for x in coarse.links if x["source"].startswith("SN_") or x["target"].startswith("SN_")),
        key=lambda x: -abs(x["weight"]),
    )[:30]
    lrows = "".join(f"<tr><td>{escape(x['source'])}</td><td>{escape(x['target'])}</td>"
                    f"<td>{x['weight']:+.4f}</td></tr>" for x in links)  # fmt: skip
    return ("<!doctype html><meta charset='utf-8'><title>Supernodes</title><style>body{"
            "font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:2px 8px}"
            "table{border-collapse:collapse;margin-bottom:1.5em}</style>"
            f"<h1>Supernodes of {escape(coarse.metadata.prompt)}</h1><table><tr><th>id</th>"
            "<th>name</th><th>members</th><th>influence</th><th>member ids</th></tr>"
            + "".join(rows) + "</table><h2>Strongest edges of the coarsened graph</h2><table>"
            "<tr><th>source</th><th>target</th><th>weight</th></tr>"
            + lrows + "</table>")  # fmt: skip
