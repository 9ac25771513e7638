"""One process against two (torchrun, gloo on CPU; nccl on GPUs), side by side in one run.

    python benchmarks/bench_distributed.py [--pairs 32] [--steps 200] [--threads 1] [--no-later]

Each job runs with 1 and then 2 processes of ``--threads`` torch threads:
- PIE stage I on the bundled model (``cltrace pie --n-pairs N --stages prune --methods
  fap,fap_synergy,random``), timed from the command's start (model loading included);
- PIE stages II and III on that run (``--stages interpret``, then ``--stages evaluate``, each
  timed the same way; ``--no-later`` skips them);
- CLT training (``cltrace train clt --steps S``), whose throughput comes from train_stats.json.

Prints wall time (or tokens/s), the speed-up and the scaling efficiency (speed-up / processes),
and checks that the two PIE runs wrote the same results.json, descriptions and scores. On a
2-core machine the two processes share the cores, so efficiency is bounded by what else runs
there; the load average is printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run(cmd: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "CLTRACE_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
    return time.perf_counter() - t0


def _cltrace(n: int, args: list[str]) -> list[str]:
    if n == 1:
        return [sys.executable, "-m", "cltrace", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n),
            "-m", "cltrace", *args]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-later", action="store_true", help="Skip PIE stages II and III.")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        pie = ["pie", "--n-pairs", str(args.pairs), "--stages", "prune", "--methods",
               "fap,fap_synergy,random", "--budgets", "50,100"]  # fmt: skip
        times = {}
        for n in (1, 2):
            out = Path(tmp) / f"pie{n}"
            times[n] = _run(_cltrace(n, [*pie, "--out", str(out)]), args.threads)
        same = (Path(tmp) / "pie1/results.json").read_text() == (
            Path(tmp) / "pie2/results.json"
        ).read_text()
        rows.append(("PIE stage I (s, wall)", times[1], times[2], times[1] / times[2]))
        checked = ["results.json"]
        for stage, label in [] if args.no_later else [("interpret", "II"), ("evaluate", "III")]:
            for n in (1, 2):
                cmd = [*pie[:3], "--stages", stage, *pie[5:], "--out", str(Path(tmp) / f"pie{n}")]
                times[n] = _run(_cltrace(n, cmd), args.threads)
            rows.append((f"PIE stage {label} (s, wall)", times[1], times[2], times[1] / times[2]))
            names = ["descriptions.json", "descriptions_random.json"] if stage == "interpret" else [
                "scores.json", "scores_random.json", "scores_summary.json"]  # fmt: skip
            same = same and all(
                (Path(tmp) / "pie1" / f).read_bytes() == (Path(tmp) / "pie2" / f).read_bytes()
                for f in names
            )
            checked += names
        rates = {}
        for n in (1, 2):
            out = Path(tmp) / f"clt{n}"
            _run(_cltrace(n, ["train", "clt", "--steps", str(args.steps), "--n-docs", "4000",
                              "--no-progress", "--out", str(out)]), args.threads)  # fmt: skip
            rates[n] = json.loads((out / "train_stats.json").read_text())["tokens_per_s"]
        rows.append(("CLT training (tokens/s)", rates[1], rates[2], rates[2] / rates[1]))
    print(f"{'job':<26} {'1 process':>12} {'2 processes':>12} {'speed-up':>9} {'efficiency':>10}")
    for name, a, b, s in rows:
        print(f"{name:<26} {a:>12.1f} {b:>12.1f} {s:>8.2f}x {s / 2:>10.2f}")
    print(
        f"PIE {', '.join(checked)} identical: {same}; load average {os.getloadavg()[0]:.2f}; "
        f"{args.threads} thread(s) per process"
    )


if __name__ == "__main__":
    main()
