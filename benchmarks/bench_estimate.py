"""The memory estimate (`cltrace estimate`) against measured peaks, side by side.

    python benchmarks/bench_estimate.py [--tokens 20,256,1024] [--max-feature-nodes 4096]

Each length runs `attribute` on the bundled model and CLT in a fresh process (one thread) on
held-out corpus text cut to that many tokens, and reads the process's peak resident memory
(VmHWM). The estimate is computed twice: with the active-feature count the run found (how well
the memory model holds) and with the transcoder's recorded or assumed L0 (what a user sees
before running). Prints the ratios estimate / measured; the goal is within 30%.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, torch
from cltrace.corpus import load_texts
from cltrace.graph import AttributionConfig, attribute
from cltrace.models import load_model
from cltrace.paths import BUNDLED_CLT_DIR
from cltrace.transcoders import load_transcoder
T, cap = int(sys.argv[1]), (int(sys.argv[2]) or None)
model = load_model(None)
tc = load_transcoder(BUNDLED_CLT_DIR, model=model)
ids = []
for text in load_texts(None, 4000, 777):
    ids += model.encode(text, prepend_bos=False)
    if len(ids) >= T:
        break
tokens = torch.tensor([model.bos_token_id] + ids[: T - 1])
g = attribute(model, tc, tokens, config=AttributionConfig(max_feature_nodes=cap))
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"peak_bytes": peak * 1024, "n_active": g.n_active_features}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", default="20,256,1024")
    ap.add_argument("--max-feature-nodes", type=int, default=4096)
    args = ap.parse_args()
    from cltrace.estimate import estimate_attribution, model_parameters, transcoder_shape

    n_params, n_layers, _ = model_parameters(None)
    shape = transcoder_shape(None)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CLTRACE_NUM_THREADS": "1"}
    print(f"{'tokens':>6} {'active':>7} {'measured':>9} {'est (run L0)':>12} {'ratio':>6} "
          f"{'est (default)':>13} {'ratio':>6}")  # fmt: skip
    for T in (int(t) for t in args.tokens.split(",")):
        cap = args.max_feature_nodes if T > 64 else 0
        out = subprocess.run([sys.executable, "-c", CHILD, str(T), str(cap)], env=env,
                             capture_output=True, text=True, check=True)  # fmt: skip
        run = json.loads(out.stdout.strip().splitlines()[-1])
        l0 = run["n_active"] / (n_layers * T)
        kw = {"max_feature_nodes": cap or None}
        exact = estimate_attribution(n_params, shape, T, l0=l0, **kw).total
        default = estimate_attribution(n_params, shape, T, **kw).total
        m = run["peak_bytes"]
        print(f"{T:>6} {run['n_active']:>7} {m / 2**20:>7.0f}MB {exact / 2**20:>10.0f}MB "
              f"{exact / m:>6.2f} {default / 2**20:>11.0f}MB {default / m:>6.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
