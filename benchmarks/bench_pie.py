"""PIE cost, measured side by side in one run.

1. FAP cost per prompt against its floor: one clean forward, one corrupt forward and one
   backward of the plain model (the least any gradient-based score can cost).
2. FAP-Synergy overhead against FAP at K = 100.
3. The whole ``cltrace pie`` job for N IOI prompts (all methods, five budgets, all three
   stages): each stage's time next to its floor, the model passes it cannot avoid --
   stage I: two forwards and a backward per prompt; stage II: one batched pass over the
   activation-store corpus; stage III: one batched pass over the natural corpus.

    python benchmarks/bench_pie.py [--n 50] [--repeats 5] [--threads 2] [--out bench_pie.json]

Uses the bundled model and CLT (falls back to a tiny random model when they are missing).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def load_assets():
    from cltrace.models import load_model
    from cltrace.paths import BUNDLED_CLT_DIR, BUNDLED_MODEL_DIR
    from cltrace.transcoders import load_transcoder

    if (BUNDLED_MODEL_DIR / "config.json").exists() and (BUNDLED_CLT_DIR / "config.yaml").exists():
        adapter = load_model()
        return adapter, load_transcoder(BUNDLED_CLT_DIR, model=adapter), "bundled"
    from cltrace.testing import random_transcoder, tiny_model

    adapter = tiny_model("gpt2", n_layers=4, d_model=128)
    return adapter, random_transcoder(adapter, d_features=512), "tiny-random (bundled missing)"


def bench_fap(adapter, transcoder, pairs, repeats: int) -> dict:
    from cltrace.prune import PruneConfig, ScoreContext, compute_components, get_method
    from cltrace.prune.components import fap_scores, metric_gradients

    def floor():
        for pair in pairs:
            clean = adapter.to_tokens(pair.clean)
            corrupt = adapter.to_tokens(pair.corrupt)
            logits = adapter(clean)[0, -1]
            with torch.no_grad():
                adapter(corrupt)
            a, w = (
                adapter.single_token_id(pair.answers[0]),
                adapter.single_token_id(pair.wrong_answers[0]),
            )
            (logits[a] - logits[w]).backward()
            adapter.hf_model.zero_grad(set_to_none=True)

    def fap():
        for pair in pairs:
            comps = compute_components(adapter, transcoder, pair)
            fap_scores(comps, metric_gradients(comps, transcoder, "direct"))

    def synergy():
        for i, pair in enumerate(pairs):
            comps = compute_components(adapter, transcoder, pair)
            ctx = ScoreContext(comps, transcoder, PruneConfig(), prompt_index=i)
            get_method("fap_synergy").select(ctx, [100], 0)

    t_floor = _median_time(floor, repeats) / len(pairs)
    t_fap = _median_time(fap, repeats) / len(pairs)
    t_syn = _median_time(synergy, max(1, repeats // 2)) / len(pairs)
    return {
        "floor_s_per_prompt": t_floor,
        "fap_s_per_prompt": t_fap,
        "fap_over_floor": t_fap / t_floor,
        "synergy_k100_s_per_prompt": t_syn,
        "synergy_over_fap": t_syn / t_fap,
    }


def _corpus_pass(adapter, texts, max_tokens: int, batch_size: int) -> float:
    """Seconds of one batched forward pass over ``texts`` (right-padded, length-sorted)."""
    from cltrace.score.activations import _batches, tokenize

    rows = tokenize(adapter, texts, max_tokens)
    t0 = time.perf_counter()
    with torch.no_grad():
        for group in _batches([len(r) for r in rows], batch_size, 1 << 30):
            width = max(len(rows[i]) for i in group)
            tokens = torch.zeros(len(group), width, dtype=torch.long)
            for b, i in enumerate(group):
                tokens[b, : len(rows[i])] = torch.tensor(rows[i])
            adapter(tokens)
    return time.perf_counter() - t0


def bench_total(n: int, fap_floor_s: float, adapter) -> dict:
    """The whole job, stage by stage, with each stage's floor."""
    from cltrace.interpret.corpus import load_corpus
    from cltrace.interpret.store import StoreConfig
    from cltrace.pie import DEFAULT_METHODS, PieConfig, run_pie
    from cltrace.pie.stage2 import interpret_run
    from cltrace.pie.stage3 import evaluate_run
    from cltrace.prune import METHODS
    from cltrace.score.config import ScoreConfig
    from cltrace.score.texts import HELD_OUT_SEED, N_NATURAL, load_texts

    methods = tuple(m for m in DEFAULT_METHODS if m in METHODS)
    cfg = PieConfig(task="ioi", n=n, methods=methods)
    st, sc = StoreConfig(), ScoreConfig()
    store_docs = load_corpus(st.corpus, st.n_docs, st.corpus_seed)
    natural = load_texts(None, N_NATURAL, HELD_OUT_SEED)
    floors = {
        "I (prune)": n * fap_floor_s,
        "II (interpret)": _corpus_pass(adapter, store_docs, st.max_tokens, st.batch_size),
        "III (evaluate)": _corpus_pass(adapter, natural, sc.max_tokens, sc.batch_size),
    }
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        t0 = time.perf_counter()
        res = run_pie(cfg, run)
        times["I (prune)"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        interpret_run(run)
        times["II (interpret)"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        evaluate_run(run)
        times["III (evaluate)"] = time.perf_counter() - t0
        records = [json.loads(x) for x in (run / "records.jsonl").open()]
    per_method = {
        k: statistics.mean(r["seconds"].get(k, 0.0) for r in records)
        for k in (*methods, "evaluate")
    }
    return {
        "n_prompts": res["n_prompts"],
        "methods": list(methods),
        "stage_s": times,
        "floor_s": floors,
        "total_s": sum(times.values()),
        "mean_s_per_prompt_by_method": per_method,
        "mean_occurrences": res["mean_occurrences"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=50, help="prompts for the whole-job run")
    ap.add_argument("--fap-prompts", type=int, default=20, help="prompts for the FAP timings")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-total", action="store_true")
    ap.add_argument("--out", type=str, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    adapter, transcoder, label = load_assets()
    from cltrace.tasks import make_ioi_pairs

    pairs = make_ioi_pairs(adapter, args.fap_prompts, seed=1) if label == "bundled" else None
    if pairs is None:
        from cltrace.tasks import PromptPair

        pairs = [PromptPair("w1 w2 w3 w4 w2 w5", "w6 w7 w3 w4 w7 w5", (" w2",), (" w7",))] * 5
    out = {"assets": label, "threads": args.threads, "fap": bench_fap(adapter, transcoder, pairs,
                                                                      args.repeats)}  # fmt: skip
    f = out["fap"]
    print(f"assets: {label}, threads: {args.threads}")
    print(f"floor (clean fwd + corrupt fwd + backward): {f['floor_s_per_prompt'] * 1e3:8.1f} ms")
    print(f"FAP (components + direct gradient + score):  {f['fap_s_per_prompt'] * 1e3:8.1f} ms"
          f"   ratio {f['fap_over_floor']:.2f}  (goal <= 1.5)")  # fmt: skip
    syn_ms = f["synergy_k100_s_per_prompt"] * 1e3
    print(f"FAP-Synergy at K=100:                        {syn_ms:8.1f} ms"
          f"   ratio to FAP {f['synergy_over_fap']:.2f}")  # fmt: skip
    extra = f["synergy_over_fap"] - 1.0  # what synergy adds on top of FAP, in FAP's time
    print(f"   its overhead over FAP (pair and single effects): {extra:.2f}x FAP's time")
    if not args.skip_total and label == "bundled":
        t = bench_total(args.n, f["floor_s_per_prompt"], adapter)
        out["total"] = t
        print(f"\ncltrace pie, {t['n_prompts']} IOI prompts, {len(t['methods'])} methods, "
              "5 budgets, all stages:")  # fmt: skip
        print(f"   {'stage':16s} {'time':>9s} {'floor':>9s} {'ratio':>7s}")
        for k, v in t["stage_s"].items():
            fl = t["floor_s"][k]
            print(f"   {k:16s} {v:8.1f}s {fl:8.1f}s {v / fl:7.1f}")
        print(f"   {'total':16s} {t['total_s']:8.1f}s   (goal: n=50 < 180 s, n=200 < 480 s)")
        print("   stage I per prompt and method:")
        for k, v in t["mean_s_per_prompt_by_method"].items():
            print(f"      {k:16s} {v * 1e3:8.1f} ms/prompt")
        print(f"load average at the end: {os.getloadavg()[0]:.2f} (2 cores: above 2 means shared)")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
