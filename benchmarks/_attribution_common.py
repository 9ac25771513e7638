"""Helpers shared by the two benchmark workers (stdlib and torch only).

Both ``_attribution_cltrace.py`` (system Python) and ``_attribution_circuit_tracer.py`` (the
circuit-tracer venv, where cltrace is not installed) import this file, so it must not import
cltrace.

A worker reads a JSON spec, runs attribution ``1 + repeats`` times (the first is a small warm-up)
and writes a JSON result and, if asked, the edges as a ``.pt`` file of node ids + a rectangular
``[targets, sources]`` matrix, so the orchestrator can align the two graphs by node id.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def rss_mb() -> float:
    """Current resident set size (MB)."""
    return _status_kb("VmRSS") / 1024


def peak_mb() -> float:
    """High-water mark of the resident set since start or the last :func:`reset_peak` (MB)."""
    return _status_kb("VmHWM") / 1024


def reset_peak() -> bool:
    """Reset the RSS high-water mark to the current RSS (Linux ``clear_refs`` 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def lifetime_peak_mb() -> float:
    """Peak RSS of the whole process (``ru_maxrss``, kB on Linux), never reset."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_spec() -> dict:
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: {sys.argv[0]} SPEC.json")
    return json.loads(Path(sys.argv[1]).read_text())


def set_threads(n: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(n)
    torch.set_num_threads(n)
    torch.set_num_interop_threads(1)


def measure(run: Callable[[int | None], object], spec: dict) -> tuple[object, dict]:
    """Warm up (``spec['warmup_nodes']`` feature nodes), then time ``spec['repeats']`` full runs.

    Returns the last result and a dict of timings and memory figures (MB).
    """
    rss_before = rss_mb()
    can_reset = reset_peak()
    t0 = time.perf_counter()
    if spec.get("warmup_nodes"):
        run(int(spec["warmup_nodes"]))
    warm_s = time.perf_counter() - t0
    times, out = [], None
    for _ in range(int(spec.get("repeats", 1))):
        out = None  # free the previous graph before the next run
        t0 = time.perf_counter()
        out = run(spec.get("max_feature_nodes"))
        times.append(time.perf_counter() - t0)
    peak = peak_mb()
    return out, {
        "times_s": times,
        "warmup_s": warm_s,
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak if can_reset else lifetime_peak_mb(),
        "attribution_extra_mb": (peak - rss_before) if can_reset else float("nan"),
        "lifetime_peak_rss_mb": lifetime_peak_mb(),
        "threads": torch.get_num_threads(),
    }


def write_result(spec: dict, result: dict) -> None:
    Path(spec["result_path"]).write_text(json.dumps(result, indent=1))


def save_edges(
    path: str,
    target_ids: list[str],
    source_ids: list[str],
    adjacency: torch.Tensor,
) -> None:
    """Edges as ``adjacency[target, source]`` with node ids of docs/formats.md section 2."""
    torch.save(
        {
            "target_ids": target_ids,
            "source_ids": source_ids,
            "adjacency": adjacency.detach().float().contiguous(),
        },
        path,
    )
