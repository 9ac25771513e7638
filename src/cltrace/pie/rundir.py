"""A PIE run directory: what identifies its inputs, and reading back what it holds.

A rerun resumes only when everything that determines the results is the same: the options
(``config.json``), the content of the pair file, and the identity of the model and transcoder
(:func:`source_identity`). ``records.jsonl`` is read line by line; a line that is not a valid
record is set aside in ``records.rejected.jsonl`` with a warning, and only that line's prompt is
recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

from cltrace.errors import CltraceError
from cltrace.files import atomic_write_text, read_json

WHOLE_FILE_LIMIT = 64 * 2**20
"""Files up to this size are hashed whole; larger weight files by size, head and tail."""
EDGE_BYTES = 2**20
"""Bytes hashed at each end of a larger file."""
REJECTED = "records.rejected.jsonl"


def file_digest(path: Path) -> str:
    """SHA-256 of a file (whole up to 64 MiB; beyond that its size, first and last MiB)."""
    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size <= WHOLE_FILE_LIMIT:
            for block in iter(lambda: f.read(2**20), b""):
                h.update(block)
        else:
            h.update(str(size).encode())
            h.update(f.read(EDGE_BYTES))
            f.seek(size - EDGE_BYTES)
            h.update(f.read(EDGE_BYTES))
    return h.hexdigest()


def source_identity(source: str | os.PathLike | None, bundled: Path) -> dict:
    """What a model or transcoder argument stands for: the digest of a local directory's files,
    or the hub id (a hub repo is identified by its name; pin a revision by downloading it)."""
    path = Path(source) if source is not None else bundled
    if not path.exists():
        return {"hub_id": str(source)}
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(path) if path.is_dir() else p.name).encode())
        h.update(file_digest(p).encode())
    label = "bundled" if source is None else str(path.resolve())
    return {"path": label, "sha256": h.hexdigest()[:32], "n_files": len(files)}


def input_identity(cfg) -> dict:
    """The identities of a :class:`~cltrace.pie.PieConfig`'s inputs (saved in config.json)."""
    from cltrace.paths import BUNDLED_CLT_DIR, BUNDLED_MODEL_DIR

    ident = {
        "model": source_identity(cfg.model, BUNDLED_MODEL_DIR),
        "transcoder": source_identity(cfg.transcoder, BUNDLED_CLT_DIR),
    }
    if cfg.data:
        ident["data_sha256"] = file_digest(Path(cfg.data))
    return ident


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


RESUME_FREE = ("lazy_decoders",)
"""Options that change how a run computes, not what: a run may resume with others."""


def check_same_run(out: Path, saved: dict, wanted: dict) -> None:
    """Refuse to resume ``out`` when its saved config differs from the wanted one (the options
    in :data:`RESUME_FREE` aside)."""
    saved = {k: v for k, v in saved.items() if k not in RESUME_FREE}
    wanted = {k: v for k, v in wanted.items() if k not in RESUME_FREE}
    if saved == wanted:
        return
    if "inputs" not in saved:
        raise CltraceError(
            f"run directory {out} was made by an older cltrace that did not record its inputs, "
            "so resuming it could mix results; pass a new --out."
        )
    diff = _differences(saved, wanted)
    inputs = [d for d in diff if d.startswith("inputs.")]
    if any(d.startswith("inputs.data_sha256") for d in inputs):
        raise CltraceError(
            f"the pair file {wanted.get('data')} changed since the run in {out} started; "
            "restore it to resume, or pass a new --out for the new pairs."
        )
    if inputs and len(inputs) == len(diff):
        what = "model" if any(d.startswith("inputs.model") for d in inputs) else "transcoder"
        raise CltraceError(
            f"the {what} files differ from those the run in {out} started with; use the same "
            f"{what} to resume, or pass a new --out."
        )
    shown = ", ".join(d.removeprefix("prune.") for d in diff[:4])
    raise CltraceError(
        f"run directory {out} holds a run with different options ({shown}); pass the same "
        "options to resume it, or a new --out."
    )


def read_config(out: Path) -> dict | None:
    """The saved config of a run directory; None for a new (or empty) directory."""
    path = out / "config.json"
    if not path.exists():
        if (out / "records.jsonl").exists():
            raise CltraceError(
                f"run directory {out} has records.jsonl but no config.json, so its records "
                "cannot be matched to options; pass a new --out (or delete that directory)."
            )
        return None
    saved = read_json(path, f"delete {out} or pass a new --out.")
    if not isinstance(saved, dict):
        raise CltraceError(f"{path} is not a PIE config object; delete {out} or pass a new --out.")
    return saved


def read_records(out: Path, n_prompts: int) -> dict[int, str]:
    """{prompt index: its line} of ``records.jsonl``; invalid lines are moved aside.

    A line cut by an interruption (the file's last line, without its newline) is dropped quietly;
    any other invalid line, a duplicate index or an index outside the pair set is reported once
    and kept in ``records.rejected.jsonl``. Either way the rest of the file is kept.
    """
    path = out / "records.jsonl"
    if not path.exists():
        return {}
    raw = path.read_bytes()
    text = raw.decode("utf-8", errors="replace")
    lines = text.split("\n")
    torn = lines.pop() if lines else ""  # text after the last newline: an unfinished append
    if torn.strip() and _record_index(torn) is not None:
        lines.append(torn)  # a complete record that only lacks its newline
    kept: dict[int, str] = {}
    rejected: list[tuple[int, str]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        index = _record_index(line)
        if index is None or not 0 <= index < n_prompts or index in kept:
            rejected.append((number, line))
            continue
        kept[index] = line
    if rejected:
        numbers = ", ".join(str(n) for n, _ in rejected[:5])
        more = f" and {len(rejected) - 5} more" if len(rejected) > 5 else ""
        warnings.warn(
            f"{path}: line(s) {numbers}{more} are not valid records (corrupt, duplicate or out "
            f"of range); moved them to {REJECTED}, and their prompts are recomputed",
            stacklevel=2,
        )
        with open(out / REJECTED, "a", encoding="utf-8") as f:
            f.writelines(line + "\n" for _, line in rejected)
    if rejected or torn:
        atomic_write_text(path, "".join(line + "\n" for line in kept.values()))
    return kept


def _record_index(line: str) -> int | None:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("index"), int):
        return None
    if not isinstance(rec.get("results"), list):
        return None
    return rec["index"]


RANK_RECORDS = "records.rank*.jsonl"
"""Per-rank record files of a run under torchrun, merged into ``records.jsonl`` by rank 0."""


def rank_records(out: Path, rank: int) -> Path:
    return out / f"records.rank{rank}.jsonl"


def merge_rank_records(out: Path) -> int:
    """Append the complete lines of every per-rank record file to ``records.jsonl`` and remove
    the rank files; returns the number of lines moved. A line cut by an interruption is
    dropped (its prompt is recomputed); duplicates are set aside by :func:`read_records`."""
    files = sorted(out.glob(RANK_RECORDS))
    if not files:
        return 0
    lines = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        complete = text.split("\n")[:-1]  # the part after the last newline is unfinished
        lines += [ln for ln in complete if ln.strip()]
    with open(out / "records.jsonl", "a", encoding="utf-8") as f:
        f.writelines(ln + "\n" for ln in lines)
        f.flush()
        os.fsync(f.fileno())
    for path in files:
        path.unlink()
    return len(lines)


def append_record(path: Path, record: dict) -> None:
    """Append one prompt's record and flush it to disk (the resume point after a crash)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())
