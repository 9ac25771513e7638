"""Learned occurrence masks against one-shot attribution at strict budgets, side by side.

On the bundled model and N IOI pairs, every method keeps K units per prompt for each budget
and is evaluated the way PIE evaluates a kept set (``cltrace.retention.evaluate_kept``:
everything not kept is removed, real patched forward): FAP, FAP-Synergy, FActP and the learned
hard-concrete mask (``cltrace.prune.learned``). Prints mean last-token KL(clean || pruned) with
its standard error per method and budget, how often the learned mask beats each other method on
a prompt, and the seconds each method spends per prompt beyond the shared components (the clean
and corrupt passes and the FAP gradient, timed once).

    python benchmarks/bench_feature_masks.py [--n 8] [--budgets 5,10,25,50,100] [--steps 300]
        [--out bench_feature_masks.json]

Set ``CLTRACE_NUM_THREADS=1`` for the one-thread figures of docs/METHODS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

METHODS = ("fap", "fap_synergy", "factp", "learned_mask")


def _mean_se(xs: list[float]) -> tuple[float, float]:
    m = statistics.fmean(xs)
    se = statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else float("nan")
    return m, se


def _floor_seconds(adapter, pair, cfg, reps: int = 50) -> float:
    """What ``cfg.steps`` plain forward and backward passes of ``cfg.samples`` rows cost (the
    gradient taken with respect to an added zero at the first MLP output, last-position logits
    only): what a trained mask costs per budget without its gate arithmetic."""
    import torch

    from cltrace.prune.components import _last_logits

    tokens = adapter.to_tokens(pair.clean).expand(cfg.samples, -1)
    d = torch.zeros(tokens.shape + (adapter.d_model,), requires_grad=True)

    def step():
        with adapter.hooks({"mlp_out.0": lambda t: t + d}):
            logits = _last_logits(adapter, tokens)
        torch.autograd.grad(logits.logsumexp(-1).sum(), [d])

    step()  # warm-up
    t = time.perf_counter()
    for _ in range(reps):
        step()
    return (time.perf_counter() - t) / reps * cfg.steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8, help="IOI prompt pairs")
    ap.add_argument("--budgets", default="5,10,25,50,100")
    ap.add_argument("--steps", type=int, default=300, help="learned-mask optimisation steps")
    ap.add_argument("--factor", type=int, default=4, help="learned-mask candidates per kept unit")
    ap.add_argument("--seed", type=int, default=1, help="seed of the generated pairs")
    ap.add_argument("--out")
    args = ap.parse_args()

    from cltrace._threads import configure_threads

    configure_threads()
    import torch

    from cltrace.models import load_model
    from cltrace.paths import BUNDLED_CLT_DIR
    from cltrace.prune import PruneConfig, ScoreContext, compute_components, get_method
    from cltrace.prune.learned import LearnedMaskConfig, train_mask
    from cltrace.retention import evaluate_kept
    from cltrace.tasks import make_ioi_pairs
    from cltrace.transcoders import load_transcoder

    budgets = [int(b) for b in args.budgets.split(",")]
    adapter = load_model()
    transcoder = load_transcoder(BUNDLED_CLT_DIR, model=adapter)
    pairs = make_ioi_pairs(adapter, args.n, seed=args.seed)
    lm_cfg = LearnedMaskConfig(steps=args.steps, candidate_factor=args.factor)
    config = PruneConfig(budgets=tuple(budgets))

    kl: dict[tuple[str, int], list[float]] = {(m, k): [] for m in METHODS for k in budgets}
    seconds: dict[str, list[float]] = {m: [] for m in METHODS}
    seconds["components"] = []
    lm_seconds: dict[int, list[float]] = {k: [] for k in budgets}
    n_units = []
    for i, pair in enumerate(pairs):
        t = time.perf_counter()
        comps = compute_components(adapter, transcoder, pair)
        comps._clean_resid()  # every measured method starts from it; counted as shared
        seconds["components"].append(time.perf_counter() - t)
        n_units.append(comps.n)
        kept = {}
        for method in METHODS:
            ctx = ScoreContext(comps, transcoder, config, prompt_index=i)  # no shared caches
            t = time.perf_counter()
            if method == "learned_mask":
                sets = {}
                for k in budgets:
                    res = train_mask(ctx, k, lm_cfg)
                    sets[k] = res.kept
                    lm_seconds[k].append(res.seconds)
            else:
                sets = get_method(method).select(ctx, budgets, 0)
            seconds[method].append(time.perf_counter() - t)
            kept.update({(method, k, 0): s for k, s in sets.items()})
        retention, _ref = evaluate_kept(ScoreContext(comps, transcoder, config, i), kept)
        for r in retention:
            kl[(r.method, r.budget)].append(r.kl)
        print(f"prompt {i + 1}/{len(pairs)}: {comps.n} occurrences, "
              f"learned mask {seconds['learned_mask'][-1]:.1f} s", flush=True)  # fmt: skip

    floor = _floor_seconds(adapter, pairs[0], lm_cfg)
    titles = {m: get_method(m).title for m in METHODS}
    print(f"\nKL(clean || pruned), mean ± s.e. over {len(pairs)} IOI prompts "
          f"(bundled model; {statistics.fmean(n_units):.0f} occurrences per prompt)")  # fmt: skip
    print(
        f"{'method':30s}" + "".join(f"{'K=' + str(k):>18s}" for k in budgets) + f"{'s/prompt':>10s}"
    )
    for m in METHODS:
        cells = "".join(f"{_mean_se(kl[(m, k)])[0]:>10.4f} ± {_mean_se(kl[(m, k)])[1]:<5.4f}"
                        for k in budgets)  # fmt: skip
        print(f"{titles[m]:30s}{cells}{statistics.fmean(seconds[m]):>10.2f}")
    print(f"{'(shared components)':30s}{'':>{18 * len(budgets)}s}"
          f"{statistics.fmean(seconds['components']):>10.2f}")  # fmt: skip
    print("\nprompts where the learned mask's KL is lower (ties count half):")
    wins: dict[str, dict[int, float]] = {}
    for m in METHODS[:-1]:
        wins[m] = {}
        for k in budgets:
            pairs_kl = zip(kl[("learned_mask", k)], kl[(m, k)], strict=True)
            wins[m][k] = sum(1.0 if a < b else 0.5 if a == b else 0.0 for a, b in pairs_kl)
        cells = "".join(f"{'K=' + str(k):>6s} {wins[m][k]:4.1f}/{len(pairs)}" for k in budgets)
        print(f"   vs {titles[m]:24s}{cells}")
    print(
        "\nlearned mask seconds per prompt by budget: "
        + ", ".join(f"K={k} {statistics.fmean(v):.2f}" for k, v in lm_seconds.items())
    )
    print(f"floor per budget ({lm_cfg.steps} plain forward+backward passes of "
          f"{lm_cfg.samples} rows): {floor:.2f} s")  # fmt: skip
    print(f"threads: {torch.get_num_threads()}, load average at the end: {os.getloadavg()[0]:.2f}")
    if args.out:
        out = {
            "n_prompts": len(pairs), "budgets": budgets, "steps": args.steps,
            "factor": args.factor, "threads": torch.get_num_threads(),
            "kl": {f"{m}@{k}": v for (m, k), v in kl.items()},
            "seconds_per_prompt": {m: statistics.fmean(v) for m, v in seconds.items()},
            "learned_seconds_by_budget": {k: statistics.fmean(v) for k, v in lm_seconds.items()},
            "learned_floor_s_per_budget": floor, "learned_wins": wins,
            "mean_occurrences": statistics.fmean(n_units),
        }  # fmt: skip
        Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
