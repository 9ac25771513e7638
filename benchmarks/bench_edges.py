"""HAP against full Edge Pruning at matched target sparsity on the bundled model's IOI task.

    python benchmarks/bench_edges.py [--n 32] [--sparsity 0.95] [--steps 300]
        [--hap-steps 300,100] [--fraction 0.1] [--seed 0] [--out results.json]

Rows: EAP alone (its top edges at the target sparsity), full Edge Pruning for ``--steps``
steps, and HAP (EAP, then Edge Pruning only on the top ``--fraction`` of edges) for each step
count in ``--hap-steps``; HAP's time includes its EAP stage. Every circuit is evaluated on the
same pairs it was found on: faithfulness (m(C) - m(empty)) / (m(full) - m(empty)) of the logit
difference, and KL(full || circuit) at the answer position. A second table gives EAP and EAP-IG
cost per example against their floor: one plain forward of the corrupted prompts plus one
forward and backward of the clean ones (EAP), or ``steps`` of those (EAP-IG).
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _median_time(fn, repeats=3):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--sparsity", type=float, default=0.95)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--hap-steps", default="300,100")
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out")
    args = ap.parse_args()

    import torch

    from cltrace._threads import configure_threads

    configure_threads()
    from cltrace.edges.context import prepare
    from cltrace.edges.data import make_batches
    from cltrace.edges.evaluate import evaluate_circuit, top_edges
    from cltrace.edges.pruning import PruneConfig, edge_prune, hap
    from cltrace.edges.scores import eap, eap_ig_inputs
    from cltrace.models import load_model
    from cltrace.tasks import get_task

    adapter = load_model(None)
    pairs = get_task("ioi").make_pairs(adapter, args.n, seed=args.seed)
    ctx = prepare(adapter, make_batches(adapter, pairs))
    n = ctx.graph.n_edges
    rows = []

    t = time.perf_counter()
    keep = top_edges(eap(ctx), round((1 - args.sparsity) * n), graph=ctx.graph)
    rows.append(("EAP", time.perf_counter() - t, keep))
    cfg = PruneConfig(sparsity=args.sparsity, steps=args.steps, seed=args.seed)
    res = edge_prune(ctx, cfg)
    rows.append((f"EP {args.steps} steps", res.seconds, res.keep))
    ep_seconds = res.seconds
    for steps in [int(s) for s in args.hap_steps.split(",")]:
        cfg_h = PruneConfig(sparsity=args.sparsity, steps=steps, seed=args.seed)
        res_h, _ = hap(ctx, cfg_h, fraction=args.fraction)
        rows.append((f"HAP {steps} steps", res_h.seconds, res_h.keep))

    print(
        f"bundled model, IOI, {ctx.n_examples} pairs, {n} edges, target sparsity "
        f"{args.sparsity}, HAP fraction {args.fraction}"
    )
    print(f"{'method':<16}{'seconds':>9}{'vs EP':>8}{'edges':>7}{'faithful':>10}{'KL':>8}")
    results = []
    for name, seconds, keep in rows:
        ev = evaluate_circuit(ctx, keep)
        ratio = ep_seconds / seconds
        print(
            f"{name:<16}{seconds:>9.2f}{ratio:>7.2f}x{ev.n_edges:>7}"
            f"{ev.faithfulness:>10.3f}{ev.kl:>8.3f}"
        )
        results.append(
            {"method": name, "seconds": seconds, "n_edges": ev.n_edges,
             "faithfulness": ev.faithfulness, "kl": ev.kl}
        )  # fmt: skip

    # scorer cost against the floor of their passes
    def floor_pass():
        with torch.no_grad():
            for b in ctx.batches:
                adapter(b.corrupt)
        for b in ctx.batches:
            emb = adapter.hf_model.get_input_embeddings()(b.clean).detach().requires_grad_(True)
            out = adapter.hf_model(inputs_embeds=emb, use_cache=False).logits
            out[:, -1].sum().backward()

    floor = _median_time(floor_pass)
    t_eap = _median_time(lambda: eap(ctx))
    t_ig = _median_time(lambda: eap_ig_inputs(ctx, steps=5))
    per = 1000.0 / ctx.n_examples
    print(f"\n{'scorer':<16}{'ms/example':>11}{'floor':>8}{'ratio':>8}")
    print(f"{'EAP':<16}{t_eap * per:>11.2f}{floor * per:>8.2f}{t_eap / floor:>7.2f}x")
    print(f"{'EAP-IG (5)':<16}{t_ig * per:>11.2f}{floor * per:>8.2f}{t_ig / floor:>7.2f}x")
    results.append({"eap_s": t_eap, "eap_ig5_s": t_ig, "floor_s": floor})
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
