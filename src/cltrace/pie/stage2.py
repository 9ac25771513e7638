"""PIE stage II on a run directory: store, explain, write descriptions, refresh the report.

Adds to the run directory (``cltrace.pie.run`` describes the rest)::

    activations/            activation store of the kept features (resumable)
    activations_random/     the same for a uniform random sample of the active set
    activations*.next/      a store for new options, built beside the old one and put in its
                            place only when the stage succeeds
    descriptions.json       {"<layer>/<feature>": {description, explainer, failure,
                             examples_html, frequency, details}} for the kept features
    descriptions_random.json  the same for the random sample (for stage III's comparison)
    features/<l>_<f>.json   feature detail JSON (docs/formats.md) of every kept feature
    interpret_cost.json     seconds and LLM calls, kept versus random (plus scores once known)
    interpret_config.json   the options used
"""

from __future__ import annotations

import contextlib
import random
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from cltrace.dist import World, together
from cltrace.files import RunLock, atomic_write_json, read_json, require_run_dir
from cltrace.interpret.detail import description_entry, detail_files, write_details
from cltrace.interpret.explainers import ExplainContext, get_explainer
from cltrace.interpret.features import FeatureKey
from cltrace.interpret.store import StaleStoreError, StoreConfig, build_stores
from cltrace.pie.stages import (
    check_run_corpus,
    load_run_models,
    read_kept_features,
)
from cltrace.precision import parse_device, parse_dtype
from cltrace.replacement import input_kind


@dataclass
class InterpretConfig:
    """Options of stage II (saved as ``interpret_config.json``)."""

    explainer: str = "weightlens"
    """Registry key: weightlens, llm, circuitlens or circuitlens_llm."""
    store: StoreConfig = field(default_factory=StoreConfig)
    """Corpus and example options of the activation store."""
    compare_random: bool = True
    """Also explain a uniform random sample (same size) of the features active on the task."""
    random_seed: int = 0
    """Seed of that sample."""
    base_url: str | None = None
    """LLM endpoint (default: $CLTRACE_LLM_BASE_URL; there is no built-in one, the LLM
    explainers fail without it)."""
    llm_model: str | None = None
    """LLM model name (default: $CLTRACE_LLM_MODEL; required with the LLM explainers)."""
    concurrency: int = 4
    """Simultaneous LLM requests."""
    max_features: int | None = None
    """Explain at most this many kept features (most often kept first); None: all."""
    device: str = "cpu"
    """Where the model and transcoder run: cpu, cuda, cuda:N or mps (as ``cltrace attribute``)."""
    dtype: str = "float32"
    """Weights and activations: float32, bfloat16 or float16 (reductions stay in float32)."""
    lazy_decoders: bool = False
    """Leave the transcoder's decoders on disk and read only the rows WeightLens, CircuitLens and
    the feature details need, through a cache bounded in bytes (circuit-tracer layout)."""
    decoder_cache_bytes: int | None = None
    """Bound of that row cache in bytes (None: 512 MiB)."""


def _console_print(console, text: str) -> None:
    if console is not None:
        console.print(text)


@torch.no_grad()
def active_set(adapter, transcoder, run_cfg: dict) -> list[FeatureKey]:
    """Every (layer, feature) active at a non-BOS position of a clean prompt of the run's task."""
    from cltrace.tasks import get_task, read_pairs

    if run_cfg.get("data"):
        pairs = read_pairs(run_cfg["data"]).pairs
    else:
        pairs = get_task(run_cfg["task"]).make_pairs(adapter, run_cfg["n"], seed=run_cfg["seed"])
    seen: set[FeatureKey] = set()
    kind = input_kind(transcoder)
    sites = adapter.sites(kind)
    for pair in pairs:
        with adapter.cache(sites) as c:
            adapter(adapter.to_tokens(pair.clean))
        for layer in range(adapter.n_layers):
            acts = transcoder.encode(layer, c[f"{kind}.{layer}"][0, 1:])
            seen.update((layer, int(f)) for f in (acts > 0).any(0).nonzero().flatten().tolist())
    return sorted(seen)


def _explain_set(name, features, scanned, adapter, tc, cfg, client, options, console):
    """Explain one feature set from its store; returns (store, explanations, cost, staged dir)."""
    store, scan, staged, n_sets = scanned
    ctx = ExplainContext(adapter, tc, store, client, options)
    t0 = time.perf_counter()
    _console_print(console, f"stage II ({name}): explaining {len(features)} features "
                            f"with {cfg.explainer}")  # fmt: skip
    explanations = get_explainer(cfg.explainer).explain(ctx, features)
    seconds = time.perf_counter() - t0
    described = sum(1 for e in explanations.values() if e.description)
    cost = {
        "n_features": len(features),
        "store_seconds": scan.seconds,
        "store_chunks_computed": scan.n_chunks_computed,
        "store_sets_in_scan": n_sets,
        "corpus_docs": scan.n_docs,
        "corpus_tokens": scan.n_tokens,
        "explain_seconds": seconds,
        "explain_seconds_per_feature": seconds / max(len(features), 1),
        "llm_calls": ctx.llm_calls,
        "n_described": described,
        "n_fallback": sum(1 for e in explanations.values() if "/" in e.explainer),
        "n_failed": sum(1 for e in explanations.values() if e.failure),
    }
    return store, explanations, cost, staged


def _stores(adapter, tc, sets, cfg: StoreConfig, console, world: World):
    """Build or resume the activation stores of ``sets`` (``[(features, directory)]``) in one
    shared scan of the corpus; returns ``[(store, scan, staged, len(sets))]`` in the same order
    (under torchrun the ranks share the scan, and only rank 0's stores are not None).

    A store in a directory that was built for other features or options belongs to the earlier
    stage-II output, so it is not replaced now: the new one is built in ``<directory>.next``
    (``staged``, resumable like any store) and takes the old one's place only when the stage
    succeeds. The scan's time is the shared pass's (recorded for every set).
    """
    from cltrace.interpret.corpus import load_corpus

    docs = load_corpus(cfg.corpus, cfg.n_docs, cfg.corpus_seed)
    stale: list[bool] = []
    with together(world, "while opening the activation stores"):
        if world.is_main:  # rank 0 decides (and writes a new store's meta.json) first
            stale = [_is_stale(adapter, f, d, cfg, len(docs)) for f, d in sets]
    if not world.is_main:
        stale = [_is_stale(adapter, f, d, cfg, len(docs)) for f, d in sets]
    jobs, staged_dirs = [], []
    for (features, store_dir), is_stale in zip(sets, stale, strict=True):
        staged = store_dir.with_name(store_dir.name + ".next") if is_stale else None
        jobs.append((features, staged or store_dir, is_stale))
        staged_dirs.append(staged)
    bar = None
    if console is not None:
        from rich.progress import Progress

        bar = Progress(console=console, transient=True)
        bar.start()
        job = bar.add_task("stage II: scanning corpus", total=None)
    try:
        progress = (lambda i, n: bar.update(job, completed=i, total=n)) if bar else None
        stores, scan = build_stores(adapter, tc, jobs, cfg, docs=docs, progress=progress,
                                    world=world)  # fmt: skip
    finally:
        if bar is not None:
            bar.stop()
    return [(store, scan, staged, len(sets))
            for store, staged in zip(stores, staged_dirs, strict=True)]  # fmt: skip


def _is_stale(adapter, features, store_dir: Path, cfg: StoreConfig, n_docs: int) -> bool:
    """Whether ``store_dir`` holds a store built for other features or options (kept until
    the stage succeeds); a missing store is created."""
    from cltrace.interpret.store import open_store

    try:
        open_store(adapter, features, store_dir, cfg, n_docs, replace_stale=False)
    except StaleStoreError:
        return True
    return False


def _promote(staged: Path | None, target: Path) -> None:
    """Put a store built in ``staged`` in place of ``target`` (the stage has succeeded)."""
    if staged is None:
        return
    shutil.rmtree(target, ignore_errors=True)
    staged.rename(target)


def _descriptions(store, explanations) -> dict:
    return {f"{k[0]}/{k[1]}": description_entry(store, k, e) for k, e in explanations.items()}


def _llm_endpoint(spec, cfg: InterpretConfig):
    """The checked endpoint for an explainer that needs an LLM (None for the others); fails
    with one sentence before anything is loaded or written."""
    if not spec.needs_llm:
        return None
    from cltrace.llm import resolve_endpoint

    return resolve_endpoint(cfg.base_url, cfg.llm_model, user=f"the {cfg.explainer} explainer")


def interpret_run(
    run_dir: str | Path,
    explainer: str | None = None,
    console=None,
    config: InterpretConfig | None = None,
    options: dict | None = None,
    world: World | None = None,
    spread: Mapping[str, Any] | None = None,
) -> dict:
    """Run stage II on a PIE run directory; returns ``descriptions.json``'s content.

    ``explainer`` (a registry key) overrides ``config.explainer`` (default ``weightlens``).
    ``options`` holds per-explainer configs (``{"weightlens": WeightLensConfig(...)}``).

    Options are checked before anything is loaded; every output is computed first and written
    (each file atomically) only once the whole stage has succeeded, so a failed run, an LLM
    endpoint that is down for example, leaves the earlier stage-II files as they were. The run
    directory is locked (:class:`~cltrace.files.RunLock`) for the duration.

    Under torchrun (``world`` of several processes) the ranks share the corpus scan (chunk
    ``c`` on rank ``c % world_size``); rank 0 then finishes the stores, explains and writes the
    files, while the others wait and return ``{}``. The files equal a one-process run's.
    """
    run_dir = Path(run_dir)
    world = world or World()
    cfg = config or InterpretConfig()
    cfg.explainer = explainer or cfg.explainer
    spec = get_explainer(cfg.explainer)
    endpoint = _llm_endpoint(spec, cfg)
    parse_device(cfg.device, "device")  # a bad name fails before anything is loaded
    parse_dtype(cfg.dtype, "dtype")
    require_run_dir(run_dir)
    check_run_corpus(run_dir, cfg.store.corpus)
    if endpoint is not None and world.is_main:
        from cltrace.llm import probe

        probe(endpoint)
    with contextlib.ExitStack() as held:
        with together(world, "before stage II"):
            if world.is_main:
                held.enter_context(RunLock(run_dir))
            features = read_kept_features(run_dir, cfg.max_features)
            adapter, tc, run_cfg = load_run_models(
                run_dir, device=cfg.device, dtype=cfg.dtype, lazy_decoders=cfg.lazy_decoders,
                decoder_cache_bytes=cfg.decoder_cache_bytes, spread=spread,
            )  # fmt: skip
        sets, pool = _feature_sets(run_dir, features, adapter, tc, run_cfg, cfg)
        scanned = _stores(adapter, tc, sets, cfg.store, console, world)
        with together(world, "in stage II"):  # the other ranks wait here for rank 0
            if not world.is_main:
                return {}  # leaving the block reports this rank ok, then waits for rank 0
            client = None
            if endpoint is not None:
                from cltrace.llm import ChatClient

                client = ChatClient(endpoint.base_url, endpoint.model,
                                    concurrency=cfg.concurrency,
                                    cache_dir=run_dir / "llm_cache")  # fmt: skip
            outputs = _stage_outputs(run_dir, sets, pool, scanned, adapter, tc, cfg, client,
                                     options or {}, console)  # fmt: skip
            saved_cfg = asdict(cfg)
            if endpoint is not None:  # what was used, env included; never a password in the URL
                saved_cfg.update(base_url=endpoint.display_url, llm_model=endpoint.model)
            _write_outputs(run_dir, outputs, saved_cfg)
    cost_kept = outputs["cost"]["kept"]
    _console_print(
        console,
        f"stage II: described {cost_kept['n_described']}/{len(features)} kept features "
        f"({cost_kept['n_fallback']} by fallback); wrote descriptions.json",
    )
    return outputs["descriptions"]


def _feature_sets(run_dir, features, adapter, tc, run_cfg, cfg):
    """The feature sets to store, ``[(features, store directory)]`` (kept, then the random
    sample when compared), and the active set the sample was drawn from (None without it)."""
    sets = [(features, run_dir / "activations")]
    pool = None
    if cfg.compare_random:
        pool = active_set(adapter, tc, run_cfg)
        sample = sorted(random.Random(cfg.random_seed).sample(pool, min(len(features),
                                                                        len(pool))))  # fmt: skip
        sets.append((sample, run_dir / "activations_random"))
    return sets, pool


def _stage_outputs(run_dir, sets, pool, scanned, adapter, tc, cfg, client, options, console):
    """Everything stage II writes, computed in memory: descriptions (kept and random), the
    feature detail files and the cost record."""
    features = sets[0][0]
    store, expl, cost_kept, staged = _explain_set("kept", features, scanned[0], adapter, tc, cfg,
                                                  client, options, console)  # fmt: skip
    if client is not None:
        client.check_answered()  # an endpoint that answered nothing is a failed stage
    out = {
        "descriptions": _descriptions(store, expl),
        "details": detail_files(adapter, tc, store, expl),
        "cost": {"explainer": cfg.explainer, "kept": cost_kept},
        "stores": {run_dir / "activations": staged},
    }
    if cfg.compare_random:
        sample = sets[1][0]
        r_dir = run_dir / "activations_random"
        r_store, r_expl, cost_rand, r_staged = _explain_set(
            "random", sample, scanned[1], adapter, tc, cfg, client, options, console
        )
        out["stores"][r_dir] = r_staged
        out["descriptions_random"] = _descriptions(r_store, r_expl)
        per_feature = cost_kept["explain_seconds_per_feature"]
        out["cost"].update({
            "random": cost_rand,
            "active_set_size": len(pool),
            "kept_in_active_set": len(set(features) & set(pool)),
            "explain_all_active_estimate": {
                "explain_seconds": per_feature * len(pool),
                "llm_calls": cost_kept["llm_calls"] / max(len(features), 1) * len(pool),
            },
        })  # fmt: skip
    return out


def _write_outputs(run_dir: Path, outputs: dict, saved_cfg: dict) -> None:
    """Write stage II's files; descriptions.json last of the data, as it marks the stage done."""
    from cltrace.report import write_report

    for target, staged in outputs["stores"].items():
        _promote(staged, target)
    write_details(run_dir, outputs["details"])
    if "descriptions_random" in outputs:
        atomic_write_json(run_dir / "descriptions_random.json", outputs["descriptions_random"],
                          indent=1)  # fmt: skip
    atomic_write_json(run_dir / "descriptions.json", outputs["descriptions"], indent=1)
    atomic_write_json(run_dir / "interpret_config.json", saved_cfg)
    atomic_write_json(run_dir / "interpret_cost.json", outputs["cost"])
    update_cost_scores(run_dir)
    write_report(run_dir)


def update_cost_scores(run_dir: str | Path) -> dict | None:
    """Add stage III's mean scores of the kept and random sets to ``interpret_cost.json``.

    Reads ``scores.json`` and ``scores_random.json`` (``{"<l>/<f>": {metric: value}}``) when
    present; stage III may call this after writing them.
    """
    run_dir = Path(run_dir)
    path = run_dir / "interpret_cost.json"
    if not path.exists():
        return None
    cost = read_json(path, "delete it and rerun stage II (cltrace interpret) to rewrite it.")
    means = {}
    for name, fname in (("kept", "scores.json"), ("random", "scores_random.json")):
        p = run_dir / fname
        if not p.exists():
            continue
        by_metric: dict[str, list[float]] = {}
        for entry in read_json(p, "rerun stage III (cltrace evaluate) to rewrite it.").values():
            if not isinstance(entry, dict):
                continue
            for m, v in entry.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v:
                    by_metric.setdefault(m, []).append(float(v))
        means[name] = {m: sum(v) / len(v) for m, v in by_metric.items()}
    if means:
        cost["scores"] = means
    else:
        cost.pop("scores", None)
    atomic_write_json(path, cost)
    return cost


def evaluate_run(run_dir: str | Path, console=None, **kwargs):
    """Stage III, provided by :mod:`cltrace.score` (re-exported here for ``cltrace pie``)."""
    try:
        from cltrace.pie.stage3 import evaluate_run as _evaluate_run
    except ImportError:
        _console_print(console, "[yellow]stage III (evaluate) is not available in this build."
                                "[/yellow]")  # fmt: skip
        return None
    return _evaluate_run(run_dir, console=console, **kwargs)
