"""Attribution graphs of many prompts: one graph file per prompt and a ``graph-metadata.json``.

Under ``torchrun`` the prompts are shared across ranks (:mod:`cltrace.dist`): prompt ``i`` goes to
rank ``i % world_size`` and each rank writes its own graph files; rank 0 writes the listing once
every rank is done. A graph file that already exists is kept, so a run that stopped (or lost a
rank) finishes when started again, with any number of processes; a run over a changed prompt
file belongs in a new folder.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from cltrace.dist import World, barrier, shard
from cltrace.errors import CltraceError, UsageError

_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass
class PromptItem:
    """One prompt of a prompt file: its text, its graph's slug and its logit targets."""

    prompt: str
    slug: str
    targets: list[str] = field(default_factory=list)


def read_prompt_file(path: str | Path) -> list[PromptItem]:
    """Prompts from ``path``: JSON Lines (each line a string, or an object with ``prompt`` and
    optionally ``slug`` and ``targets``), or any other text file with one prompt per line.

    Slugs default to ``prompt-0000``, ``prompt-0001``, ... by line; they must be unique."""
    from cltrace.files import read_text_lines

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"prompt file {p} does not exist; pass the path of a prompt file.")
    lines = read_text_lines(p, what="prompt file")
    items = []
    for i, line in enumerate(lines):
        slug, targets = f"prompt-{i:04d}", []
        text: object = line
        if p.suffix == ".jsonl":
            where = f"{p} line {i + 1}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(
                    f"{where} is not JSON ({exc.msg}); write one JSON object or string per line."
                ) from None
            if isinstance(row, dict):
                text = row.get("prompt")
                slug = str(row.get("slug", slug))
                targets = row.get("targets", [])
                if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
                    raise UsageError(f"{where}: 'targets' must be a list of strings; fix it.")
            else:
                text = row
            if not isinstance(text, str) or not text.strip():
                raise UsageError(f"{where} has no 'prompt' text; give each line a prompt.")
        if not _SLUG.match(slug):
            raise UsageError(
                f"slug {slug!r} in {p} is not a safe file name; use letters, digits, '.', '_' "
                "and '-'."
            )
        assert isinstance(text, str)
        items.append(PromptItem(text, slug, list(targets)))
    seen: set[str] = set()
    for item in items:
        if item.slug in seen:
            raise UsageError(f"slug {item.slug!r} appears twice in {p}; make the slugs unique.")
        seen.add(item.slug)
    return items


@dataclass
class BatchSummary:
    """What :func:`attribute_prompts` did on this rank."""

    n_prompts: int
    written: list[str]
    """Slugs written by this rank in this run."""
    kept: list[str]
    """Slugs of this rank's share whose graph file was already there."""
    listing: Path | None
    """``graph-metadata.json`` (rank 0 only)."""
    seconds: float


def attribute_prompts(
    model,
    transcoder,
    items: list[PromptItem],
    out_dir: str | Path,
    world: World | None = None,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    max_feature_nodes: int | None = None,
    batch_size: int = 64,
    token_nodes: str = "cltrace",
    scan: str | None = None,
    allow_unk: bool = False,
    on_graph=None,
) -> BatchSummary:
    """Attribute this rank's share of ``items`` and write one pruned graph file each to
    ``out_dir``; rank 0 then lists every graph in ``graph-metadata.json``.

    Every prompt and target is checked (on every rank) before any graph is computed, so a bad
    line fails the run at once. ``on_graph(slug)`` is called after each file is written."""
    from cltrace.api.graphs import attribute_checked, check_inputs
    from cltrace.files import atomic_write_text
    from cltrace.graph.export import graph_document, graph_json_text, write_graph_list

    world = world or World()
    t0 = time.perf_counter()
    for item in items:
        check_inputs(model, item.prompt, item.targets, allow_unk, f"prompt {item.slug!r}",
                     f"target of {item.slug!r}", UsageError)  # fmt: skip
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; pass a folder for the graph files.")
    out.mkdir(parents=True, exist_ok=True)
    written, kept = [], []
    for i in shard(len(items), world):
        item = items[i]
        path = out / f"{item.slug}.json"
        if _is_graph_file(path):
            kept.append(item.slug)
            continue
        full = attribute_checked(model, transcoder, item.prompt, item.targets,
                                 max_feature_nodes, batch_size, token_nodes)  # fmt: skip
        pruned = full.prune(node_threshold, edge_threshold)
        doc = graph_document(pruned.graph, item.slug, pruned.result, scan=scan,
                             decode=model.tokenizer.decode)  # fmt: skip
        atomic_write_text(path, graph_json_text(doc))
        written.append(item.slug)
        if on_graph is not None:
            on_graph(item.slug)
    barrier(world)
    listing = write_graph_list(out) if world.is_main else None
    return BatchSummary(len(items), written, kept, listing, time.perf_counter() - t0)


def _is_graph_file(path: Path) -> bool:
    """Whether ``path`` holds a readable graph file (an item finished by an earlier run; a file
    cut short is written again)."""
    from cltrace.graph.export import load_graph_json

    if not path.is_file():
        return False
    try:
        doc = load_graph_json(path)
    except CltraceError:
        return False
    return bool(doc.nodes)
