"""Attribution speed, memory and edge agreement: cltrace against circuit-tracer 0.5.0.

    python benchmarks/bench_attribution.py [--configs random,bundled,long] [--repeats 3]
        [--out results.json]

Configs:
  random   random GPT-2-architecture model (8 layers, d_model 256) with a random CLT of 4,096
           features per layer, thresholds calibrated to ~40 active features per token and layer;
           20-token prompt; cltrace vs circuit-tracer, same graph (no feature-node cap).
  bundled  the bundled model and CLT (src/cltrace/assets), 20-token prompt; same comparison.
  long     cltrace alone on 256-, 512- and 1,024-token prompts with ``max_feature_nodes`` capped,
           on the bundled model (or the random one if the bundled model is missing).

Each side runs in its own fresh process (cltrace in this Python, circuit-tracer in its venv, see
``--ct-python``) with the same thread count; rounds alternate the two so machine load hits both
alike, and each process does a small warm-up before its timed run. Times are medians over
rounds; memory is the process's peak RSS during attribution (``VmHWM`` reset after loading),
and "extra" is that peak minus the RSS before the first attribution. Edges are compared by node
id (docs/formats.md section 2) over the nodes both graphs have.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
DEFAULT_CT_PYTHON = os.environ.get("CLTRACE_CT_PYTHON", "/work/ct-venv/bin/python")
CT_SETUP = (
    "python -m venv /work/ct-venv && /work/ct-venv/bin/pip install torch==2.13.0 "
    "circuit-tracer==0.5.0   (then pass --ct-python /work/ct-venv/bin/python)"
)


@dataclass
class Case:
    """One model + transcoder + prompt that the workers read from disk."""

    name: str
    model_dir: Path
    clt_dir: Path
    tokens: list[int]
    notes: list[str] = field(default_factory=list)


# ----- building the inputs ---------------------------------------------------------------------
def build_random_case(work: Path, n_tokens: int, args) -> Case:
    """Random GPT-2 model + random JumpReLU CLT, saved as HF weights and circuit-tracer files."""
    from transformers import GPT2LMHeadModel

    from cltrace.models.adapter import ModelAdapter
    from cltrace.models.tiny import tiny_config, word_tokenizer
    from cltrace.testing import random_transcoder
    from cltrace.transcoders import save_transcoder

    n_words = 1020
    cfg = tiny_config("gpt2", n_layers=8, d_model=256, n_heads=8, vocab_size=n_words + 4)
    cfg.n_positions = max(1024, args.long_max_tokens)
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # non-identity norms, as in cltrace.models.tiny
        for name, p in hf.named_parameters():
            if ".ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    tok = word_tokenizer(n_words)
    adapter = ModelAdapter(hf, tok, name="random-gpt2-8x256")
    tc = random_transcoder(adapter, d_features=args.features, cross_layer=True, seed=0)
    tc.cfg.feature_output_hook = "mlp.hook_out"  # the hook circuit-tracer wraps for MLPs
    density = calibrate_thresholds(adapter, tc, args.active_per_token, n_words)
    model_dir, clt_dir = work / "model", work / "clt"
    hf.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    save_transcoder(tc, clt_dir)
    rng = random.Random(1)
    tokens = [adapter.bos_token_id] + [4 + rng.randrange(n_words) for _ in range(n_tokens - 1)]
    note = (
        f"random CLT: {args.features} features/layer, per-feature thresholds at the "
        f"{100 * (1 - density):.2f}th percentile of held-out pre-activations"
    )
    return Case("random", model_dir, clt_dir, tokens, [note])


@torch.no_grad()
def calibrate_thresholds(adapter, tc, active_per_token: float, n_words: int) -> float:
    """Set each feature's JumpReLU threshold so ~``active_per_token`` fire per token and layer.

    Per-feature quantiles of the pre-activation on random held-out prompts (not the benchmark
    prompt), so every feature fires about equally often, as in a trained dictionary.
    """
    g = torch.Generator().manual_seed(123)
    toks = torch.randint(4, 4 + n_words, (8, 64), generator=g)
    toks[:, 0] = adapter.bos_token_id
    sites = [f"mlp_in.{layer}" for layer in range(adapter.n_layers)]
    with adapter.cache(sites) as c:
        adapter(toks)
    density = active_per_token / tc.d_features
    for layer in range(tc.n_layers):
        x = c[f"mlp_in.{layer}"][:, 1:].reshape(-1, adapter.d_model)
        pre = tc.pre_activation(layer, x)
        tc.threshold[layer].copy_(torch.quantile(pre, 1 - density, dim=0).clamp(min=1e-3))
    return density


def bundled_available() -> str | None:
    """None if the bundled model and CLT exist, else why not."""
    from cltrace.paths import BUNDLED_CLT_DIR, BUNDLED_MODEL_DIR

    if not (BUNDLED_MODEL_DIR / "config.json").is_file():
        return f"bundled model missing ({BUNDLED_MODEL_DIR}/config.json)"
    if not (BUNDLED_CLT_DIR / "config.yaml").is_file():
        return f"bundled CLT missing ({BUNDLED_CLT_DIR}/config.yaml)"
    return None


def bundled_prompt(adapter, n_tokens: int) -> list[int]:
    """BOS + the first ``n_tokens - 1`` tokens of held-out bundled-corpus text."""
    from cltrace.bundled.corpus import CorpusConfig, generate_corpus

    ids: list[int] = []
    n_docs = 64
    while len(ids) < n_tokens - 1:
        docs = generate_corpus(CorpusConfig(n_docs=n_docs, seed=987_654))
        ids = adapter.encode(" ".join(docs), prepend_bos=False)
        n_docs *= 2
    return [adapter.bos_token_id, *ids[: n_tokens - 1]]


def build_bundled_case(work: Path, n_tokens: int) -> Case:
    """The bundled model as is; its CLT re-saved with ``save_transcoder`` for circuit-tracer."""
    from cltrace.models import load_model
    from cltrace.paths import BUNDLED_CLT_DIR, BUNDLED_MODEL_DIR
    from cltrace.transcoders import load_transcoder, save_transcoder

    adapter = load_model()
    tc = load_transcoder(BUNDLED_CLT_DIR, model=adapter)
    notes = []
    if tc.W_skip is not None:
        notes.append(
            "the bundled CLT has W_skip; circuit-tracer 0.5.0's load_clt never reads W_skip "
            "files, so its graph has no skip path (expect edge differences)"
        )
    clt_dir = work / "clt"
    if not (clt_dir / "config.yaml").is_file():
        save_transcoder(tc, clt_dir)
    tokens = bundled_prompt(adapter, n_tokens)
    return Case("bundled", BUNDLED_MODEL_DIR, clt_dir, tokens, notes)


def model_max_tokens(model_dir: Path) -> int:
    cfg = json.loads((model_dir / "config.json").read_text())
    return int(cfg.get("n_positions") or cfg.get("max_position_embeddings") or 0)


# ----- running workers -------------------------------------------------------------------------
def run_worker(python: str, script: str, spec: dict, work: Path, tag: str) -> dict:
    spec = dict(spec, result_path=str(work / f"{tag}.result.json"))
    spec_path = work / f"{tag}.spec.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]), TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = str(HERE)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [python, str(HERE / script), str(spec_path)],
        env=env,
        capture_output=True,
        text=True,
        cwd=str(HERE),
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    out = json.loads(Path(spec["result_path"]).read_text())
    out["process_s"] = time.perf_counter() - t0
    return out


def summarise(runs: list[dict]) -> dict:
    times = [t for r in runs for t in r["times_s"]]
    last = runs[-1]
    return {
        **{k: v for k, v in last.items() if k not in ("times_s",)},
        "all_times_s": times,
        "median_s": statistics.median(times),
        "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
        "attribution_extra_mb": statistics.median(r["attribution_extra_mb"] for r in runs),
    }


def compare_case(case: Case, args, ct_python: str | None, work: Path) -> dict:
    """Alternate cltrace and circuit-tracer workers for ``args.repeats`` rounds; compare."""
    base = {
        "model_dir": str(case.model_dir),
        "clt_dir": str(case.clt_dir),
        "tokens": case.tokens,
        "threads": args.threads,
        "repeats": 1,
        "warmup_nodes": args.warmup_nodes,
        "max_feature_nodes": None,
        "max_n_logits": 10,
        "desired_logit_prob": 0.95,
        "lazy_decoder": False,
    }
    cl_runs, ct_runs = [], []
    for r in range(args.repeats):
        spec = dict(base, batch_size=args.batch_size)
        if r == 0:
            spec["edges_path"] = str(work / "cltrace.edges.pt")
        cl_runs.append(run_worker(sys.executable, "_attribution_cltrace.py", spec, work, "cl"))
        print(f"  [{case.name}] round {r + 1}: cltrace {cl_runs[-1]['times_s'][0]:.2f}s", end="")
        if ct_python:
            spec = dict(base, batch_size=args.ct_batch_size)
            spec["logit_tokens"] = cl_runs[0]["logit_tokens"]  # the same logit targets
            if r == 0:
                spec["edges_path"] = str(work / "ct.edges.pt")
            ct_runs.append(
                run_worker(ct_python, "_attribution_circuit_tracer.py", spec, work, "ct")
            )
            print(f", circuit-tracer {ct_runs[-1]['times_s'][0]:.2f}s", end="")
        print(flush=True)
    out = {"config": case.name, "n_tokens": len(case.tokens), "notes": case.notes}
    out["cltrace"] = summarise(cl_runs)
    if ct_runs:
        out["circuit_tracer"] = summarise(ct_runs)
        ct, cl = out["circuit_tracer"], out["cltrace"]
        out["time_ratio"] = ct["median_s"] / cl["median_s"]
        out["memory_ratio"] = ct["peak_rss_mb"] / cl["peak_rss_mb"]
        out["extra_memory_ratio"] = ct["attribution_extra_mb"] / max(
            cl["attribution_extra_mb"], 1e-9
        )
        out["edges"] = compare_edges(work / "cltrace.edges.pt", work / "ct.edges.pt")
    return out


# ----- comparing edges -------------------------------------------------------------------------
def _kind(node_id: str) -> str:
    if node_id.startswith("E_"):
        return "token"
    return "error" if node_id.split("_")[1] == "-1" else "feature"


def compare_edges(cl_path: Path, ct_path: Path) -> dict:
    """Max |edge difference| over the nodes both graphs have, overall and by source kind."""
    cl, ct = torch.load(cl_path), torch.load(ct_path)
    rows_ct = {n: i for i, n in enumerate(ct["target_ids"])}
    cols_ct = {n: i for i, n in enumerate(ct["source_ids"])}
    rows = [(i, rows_ct[n]) for i, n in enumerate(cl["target_ids"]) if n in rows_ct]
    cols = [(i, cols_ct[n]) for i, n in enumerate(cl["source_ids"]) if n in cols_ct]
    r_cl, r_ct = (torch.tensor(x) for x in zip(*rows, strict=True))
    c_cl, c_ct = (torch.tensor(x) for x in zip(*cols, strict=True))
    a = cl["adjacency"][r_cl][:, c_cl]
    b = ct["adjacency"][r_ct][:, c_ct]
    diff = (a - b).abs()
    scale = max(float(a.abs().max()), float(b.abs().max()), 1e-30)
    out = {
        "rows_compared": len(rows),
        "cols_compared": len(cols),
        "rows_only_cltrace": len(cl["target_ids"]) - len(rows),
        "rows_only_circuit_tracer": len(ct["target_ids"]) - len(rows),
        "cols_only_cltrace": len(cl["source_ids"]) - len(cols),
        "cols_only_circuit_tracer": len(ct["source_ids"]) - len(cols),
        "max_abs_edge": scale,
        "max_abs_diff": float(diff.max()),
        "max_rel_diff": float(diff.max()) / scale,
        "by_source": {},
    }
    src_ids = [cl["source_ids"][i] for i, _ in cols]
    groups: dict[str, list[int]] = {}
    for j, n in enumerate(src_ids):
        kind = _kind(n)
        if n.endswith("_0"):
            kind += "@pos0"
        groups.setdefault(kind, []).append(j)
    for kind, js in sorted(groups.items()):
        d = diff[:, js]
        out["by_source"][kind] = {
            "n": len(js),
            "max_abs_diff": float(d.max()),
            "max_rel_diff": float(d.max()) / scale,
        }
    # Sources defined alike by both tools; see CONVENTIONS for the other two kinds.
    same = [j for kind, js in groups.items() if kind in ("feature", "error") for j in js]
    out["max_abs_diff_same_definition"] = float(diff[:, same].max()) if same else float("nan")
    out["max_rel_diff_same_definition"] = out["max_abs_diff_same_definition"] / scale
    return out


CONVENTIONS = {
    "token": "circuit-tracer's token node is W_E[token] (hook_embed); cltrace's is the whole "
    "block-0 input, W_E[token] + W_pos[pos] for GPT-2, so cltrace's token edges also carry the "
    "position embedding (circuit-tracer leaves it unattributed, like a bias)",
    "error@pos0": "circuit-tracer zeroes the error vector at the BOS position (the BOS MLP "
    "output is unattributed); cltrace keeps it in the error node (zero_bos moves BOS features "
    "into the error nodes)",
}


# ----- long prompts ----------------------------------------------------------------------------
def long_case(args, work: Path) -> dict:
    """cltrace alone on growing prompts with a feature-node cap: time, peak RSS, node count."""
    why = bundled_available()
    if why is None:
        from cltrace.paths import BUNDLED_MODEL_DIR

        if model_max_tokens(BUNDLED_MODEL_DIR) < args.long_max_tokens:
            why = f"bundled model has only {model_max_tokens(BUNDLED_MODEL_DIR)} positions"
    if why is None:
        lengths_case = build_bundled_case(work / "bundled", args.long_max_tokens)
        label = "bundled"
    else:
        print(f"  [long] {why}; using the random model instead")
        lengths_case = build_random_case(work / "random-long", args.long_max_tokens, args)
        label = "random"
    rows = []
    for n in args.long_tokens:
        spec = {
            "model_dir": str(lengths_case.model_dir),
            "clt_dir": str(lengths_case.clt_dir),
            "tokens": lengths_case.tokens[:n],
            "threads": args.threads,
            "repeats": 1,
            "warmup_nodes": 0,
            "max_feature_nodes": args.long_max_nodes,
            "max_n_logits": 10,
            "desired_logit_prob": 0.95,
            "lazy_decoder": False,
            "batch_size": args.batch_size,
        }
        res = run_worker(sys.executable, "_attribution_cltrace.py", spec, work, f"long{n}")
        n_rows, n_cols = res["adjacency_shape"]
        res["adjacency_mb"] = n_rows * n_cols * 4 / 2**20
        res["dense_square_mb"] = res["n_nodes"] ** 2 * 4 / 2**20
        rows.append(res)
        print(
            f"  [long] {n} tokens: {res['times_s'][0]:.1f}s, peak {res['peak_rss_mb']:.0f} MB, "
            f"{res['n_active_features']} active, {res['n_nodes']} nodes",
            flush=True,
        )
    return {
        "config": "long",
        "model": label,
        "max_feature_nodes": args.long_max_nodes,
        "rows": rows,
    }


# ----- report ----------------------------------------------------------------------------------
def print_compare(res: dict) -> None:
    cl, ct = res["cltrace"], res.get("circuit_tracer")
    print(f"\n== {res['config']}: {res['n_tokens']} tokens, {cl['n_active_features']} active "
          f"features, {cl['n_nodes']} nodes (cltrace), threads={cl['threads']}")  # fmt: skip
    for note in res["notes"]:
        print(f"   note: {note}")
    head = f"{'':22}{'cltrace':>14}{'circuit-tracer':>16}{'ct / cl':>13}"
    print(head)
    print("-" * len(head))

    def line(label, a, b, fmt):
        ratio = f"{b / a:>12.2f}x" if b is not None and a else f"{'':>13}"
        bs = f"{b:>16{fmt}}" if b is not None else f"{'-':>16}"
        print(f"{label:22}{a:>14{fmt}}{bs}{ratio}")

    line("median wall (s)", cl["median_s"], ct and ct["median_s"], ".2f")
    line("peak RSS (MB)", cl["peak_rss_mb"], ct and ct["peak_rss_mb"], ".0f")
    extra = ct and ct["attribution_extra_mb"]
    line("attribution extra (MB)", cl["attribution_extra_mb"], extra, ".0f")
    line("feature nodes", cl["n_feature_nodes"], ct and ct["n_feature_nodes"], "d")
    if ct:
        e = res["edges"]
        print(f"max |edge| {e['max_abs_edge']:.3g}; max |Δedge| {e['max_abs_diff']:.3g} "
              f"(relative {e['max_rel_diff']:.2e}) over {e['rows_compared']} x "
              f"{e['cols_compared']} edges")  # fmt: skip
        print(f"   same-definition sources (features, errors at pos > 0): max |Δ| "
              f"{e['max_abs_diff_same_definition']:.3g} "
              f"(relative {e['max_rel_diff_same_definition']:.2e})")  # fmt: skip
        for kind, d in e["by_source"].items():
            print(f"   from {kind:14} ({d['n']:>6} nodes): max |Δ| {d['max_abs_diff']:.3g} "
                  f"(rel {d['max_rel_diff']:.2e})")  # fmt: skip
        for kind, why in CONVENTIONS.items():
            if e["by_source"].get(kind, {}).get("max_rel_diff", 0) > 1e-4:
                print(f"   {kind} differs by definition: {why}")
        unmatched = {k: v for k, v in e.items() if k.startswith(("rows_only", "cols_only")) and v}
        if unmatched:
            print(f"   unmatched nodes: {unmatched}")
        print(f"   circuit-tracer TL model vs HF logits: max |Δ| "
              f"{ct['tl_vs_hf_max_logit_diff']:.2e}")  # fmt: skip


def print_long(res: dict) -> None:
    print(f"\n== long: cltrace only, {res['model']} model, max_feature_nodes="
          f"{res['max_feature_nodes']}")  # fmt: skip
    head = (f"{'tokens':>7}{'wall s':>9}{'peak MB':>9}{'extra MB':>9}{'active':>9}"
            f"{'nodes':>8}{'adj MB':>8}{'dense n² MB':>12}")  # fmt: skip
    print(head)
    print("-" * len(head))
    for r in res["rows"]:
        print(f"{r['n_tokens']:>7}{r['times_s'][0]:>9.1f}{r['peak_rss_mb']:>9.0f}"
              f"{r['attribution_extra_mb']:>9.0f}{r['n_active_features']:>9}{r['n_nodes']:>8}"
              f"{r['adjacency_mb']:>8.0f}{r['dense_square_mb']:>12.0f}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="random,bundled,long")
    ap.add_argument("--repeats", type=int, default=3, help="rounds per side (median reported)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads on both sides")
    ap.add_argument("--out", default=None, help="write all results here as JSON")
    ap.add_argument("--workdir", default=None, help="keep models/edges here (default: temp)")
    ap.add_argument("--ct-python", default=DEFAULT_CT_PYTHON, help="python of circuit-tracer venv")
    ap.add_argument("--batch-size", type=int, default=64, help="cltrace targets per batch")
    ap.add_argument("--ct-batch-size", type=int, default=64, help="circuit-tracer batch_size")
    ap.add_argument("--warmup-nodes", type=int, default=64, help="feature cap of the warm-up run")
    ap.add_argument("--features", type=int, default=4096, help="random CLT features per layer")
    ap.add_argument("--active-per-token", type=float, default=40.0)
    ap.add_argument("--n-tokens", type=int, default=20, help="prompt length (incl. BOS)")
    ap.add_argument("--long-tokens", default="256,512,1024")
    ap.add_argument("--long-max-nodes", type=int, default=4096)
    args = ap.parse_args()
    args.long_tokens = [int(x) for x in args.long_tokens.split(",")]
    args.long_max_tokens = max(args.long_tokens)
    torch.set_num_threads(args.threads)

    ct_python = args.ct_python
    if not (Path(ct_python).is_file() and _has_circuit_tracer(ct_python)):
        print(f"circuit-tracer not found at {ct_python}; running cltrace-only parts.\n"
              f"To compare, create the venv:\n  {CT_SETUP}")  # fmt: skip
        ct_python = None
    work = Path(args.workdir or tempfile.mkdtemp(prefix="cltrace-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work dir: {work}")
    results = []
    for name in [c.strip() for c in args.configs.split(",") if c.strip()]:
        sub = work / name
        sub.mkdir(exist_ok=True)
        if name == "random":
            res = compare_case(build_random_case(sub, args.n_tokens, args), args, ct_python, sub)
            print_compare(res)
        elif name == "bundled":
            why = bundled_available()
            if why:
                print(f"\n== bundled: skipped, {why}")
                results.append({"config": "bundled", "skipped": why})
                if args.out:
                    Path(args.out).write_text(json.dumps(results, indent=1))
                continue
            res = compare_case(build_bundled_case(sub, args.n_tokens), args, ct_python, sub)
            print_compare(res)
        elif name == "long":
            res = long_case(args, sub)
            print_long(res)
        else:
            raise SystemExit(f"unknown config {name!r}; use random, bundled or long")
        results.append(res)
        if args.out:  # write as we go
            Path(args.out).write_text(json.dumps(results, indent=1))
    if args.out:
        print(f"\nresults written to {args.out}")


def _has_circuit_tracer(python: str) -> bool:
    probe = "import importlib.metadata as m; print(m.version('circuit-tracer'))"
    proc = subprocess.run([python, "-c", probe], capture_output=True, text=True)
    return proc.returncode == 0 and proc.stdout.strip() == "0.5.0"


if __name__ == "__main__":
    main()
