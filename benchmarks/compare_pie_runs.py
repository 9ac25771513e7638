"""Compare two PIE run directories' results (same options and seed), ignoring timing fields.

    python benchmarks/compare_pie_runs.py OLD_RUN NEW_RUN [relative tolerance]

Checks results.json, records.jsonl, kept_features.json, descriptions, scores and the stage II
cost file; prints the first differences of each and exits 1 if any file differs. Used to check
that a speed change keeps a run's results.
"""

import json
import math
import sys
from pathlib import Path

IGNORE = {
    "seconds",
    "store_seconds",
    "explain_seconds",
    "explain_seconds_per_feature",
    "explain_all_active_estimate",
    "config_id",
    "store_chunks_computed",
}


def strip(x):
    if isinstance(x, dict):
        return {k: strip(v) for k, v in x.items() if k not in IGNORE}
    if isinstance(x, list):
        return [strip(v) for v in x]
    return x


def diff(a, b, path="", out=None, tol=0.0):
    out = [] if out is None else out
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{path}/{k}: only in {'new' if k not in a else 'old'}")
            else:
                diff(a[k], b[k], f"{path}/{k}", out, tol)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{path}: length {len(a)} vs {len(b)}")
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            diff(x, y, f"{path}[{i}]", out, tol)
    elif isinstance(a, float) and isinstance(b, (int, float)):
        if not (a == b or (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol * max(1, abs(a))):
            out.append(f"{path}: {a!r} vs {b!r}")
    elif a != b:
        out.append(f"{path}: {str(a)[:80]!r} vs {str(b)[:80]!r}")
    return out


old, new = Path(sys.argv[1]), Path(sys.argv[2])
tol = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
bad = 0
for name in [
    "results.json",
    "kept_features.json",
    "descriptions.json",
    "descriptions_random.json",
    "scores.json",
    "scores_random.json",
    "scores_summary.json",
    "records.jsonl",
    "interpret_cost.json",
]:
    p, q = old / name, new / name
    if not p.exists():
        continue
    if not q.exists():
        print(f"{name}: missing in new")
        bad += 1
        continue
    if name.endswith(".jsonl"):
        a = sorted((json.loads(line) for line in p.open()), key=lambda r: r["index"])
        b = sorted((json.loads(line) for line in q.open()), key=lambda r: r["index"])
    else:
        a, b = json.loads(p.read_text()), json.loads(q.read_text())
    d = diff(strip(a), strip(b), tol=tol)
    print(f"{name}: {'identical' if not d else f'{len(d)} differences'}")
    for line in d[:8]:
        print("   ", line)
    bad += bool(d)
sys.exit(1 if bad else 0)
