"""Stage III on a PIE run directory: score every kept feature's description.

Reads ``config.json`` (model and transcoder), ``kept_features.json`` and ``descriptions.json``;
writes ``scores.json`` (one entry per feature), ``scores_summary.json`` (mean, std and 95%
bootstrap CI per metric, with the configuration) and refreshes ``report.html``. Progress is
saved in ``scores.partial.json`` after each block of features (after each feature with an LLM
rater, whose endpoint may fail mid-block), so an interrupted or failed run resumes
where it stopped while the earlier ``scores.json`` stays intact until the stage succeeds.

Under torchrun the ranks share the features, in blocks of :data:`PREFETCH_CHUNK` (block ``b`` on
rank ``b % world_size``); rank ``r`` saves its progress in ``scores.partial.rank<r>.json``, and
rank 0 moves those entries into ``scores.partial.json`` at the end of each set (and, at the
start, what the ranks of an interrupted run left), so a run resumes at any number of processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cltrace.corpus import BUNDLED
from cltrace.dist import World, crash_point, together
from cltrace.errors import CltraceError
from cltrace.files import RunLock, atomic_write_json, read_json, require_run_dir
from cltrace.pie.stages import (
    check_run_corpus,
    load_run_models,
    read_descriptions,
    read_kept_features,
)
from cltrace.retention.stats import bootstrap_ci
from cltrace.score.activations import sequence_scores
from cltrace.score.batched import Prefetched, prefetch
from cltrace.score.config import ScoreConfig
from cltrace.score.feature import (
    METRICS,
    FeatureScores,
    run_feature_steps,
    score_feature_steps,
    unscored,
)
from cltrace.score.raters import make_rater
from cltrace.score.texts import HELD_OUT_SEED, N_NATURAL, load_texts

PREFETCH_CHUNK = 16
"""Features whose synthetic and activating texts share batched model passes (consecutive in
the set; also the unit of work of a rank under torchrun)."""


def _description(entry) -> str:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict):
        return str(entry.get("description") or "")
    return ""


def _fingerprint(rater: str, cfg: ScoreConfig, texts: Sequence[str], extra: str) -> str:
    h = hashlib.sha256(json.dumps([rater, cfg.to_json(), extra], sort_keys=True).encode())
    for t in texts:
        h.update(t.encode())
    return h.hexdigest()[:16]


def summarize(scores: dict[str, dict], n_boot: int = 1000) -> dict[str, dict]:
    """Per metric over features: mean, std, 95% bootstrap CI, and how many were defined."""
    out = {}
    for m in METRICS:
        vals = [s.get(m) for s in scores.values()]
        ok = [float(v) for v in vals if v is not None and math.isfinite(v)]
        mean, lo, hi = bootstrap_ci(ok, n_boot=n_boot)
        std = float(np.std(ok, ddof=1)) if len(ok) > 1 else (0.0 if ok else math.nan)
        out[m] = {"mean": mean, "std": std, "low": lo, "high": hi, "n": len(ok),
                  "n_undefined": len(vals) - len(ok)}  # fmt: skip
    return out


def _clean(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


def evaluate_run(
    run_dir: str | os.PathLike,
    rater: str = "lexical",
    console=None,
    *,
    corpus: str | os.PathLike | Sequence[str] | None = None,
    pool: Sequence[str] | None = None,
    config: ScoreConfig | None = None,
    base_url: str | None = None,
    model: str | None = None,
    client=None,
    cache_dir: str | os.PathLike | None = None,
    adapter=None,
    transcoder=None,
    n_boot: int = 1000,
    world: World | None = None,
    device=None,
    dtype=None,
    lazy_decoders: bool = False,
    decoder_cache_bytes: int | None = None,
    spread: Mapping[str, Any] | None = None,
) -> dict:
    """Score the descriptions of a run's kept features and write the files; returns the summary.

    ``corpus``: natural texts (list, text file or ``hf:NAME[:SPLIT[:COLUMN]]``; default:
    held-out bundled corpus, refused in one sentence when the run's model is not the bundled
    one). ``device``/``dtype``/``lazy_decoders``/``decoder_cache_bytes``: where and how the
    run's model and transcoder are loaded (:func:`~cltrace.pie.stages.load_run_models`; scores
    are reduced in float32); ``spread``: a device map for the model. ``pool``:
    texts the offline raters may pick as synthetic examples (default: another held-out draw of
    the bundled corpus, or the corpus itself when one is given). ``base_url``/``model``/
    ``client`` configure the LLM rater (without a client, an endpoint and model are required,
    from the options or the environment); ``adapter``/``transcoder`` skip loading the run's
    model.

    Progress goes to ``scores.partial.json`` (and ``scores_random.partial.json``), which a rerun
    resumes from; ``scores.json``, ``scores_random.json`` and ``scores_summary.json`` are
    replaced only when the whole stage succeeded, so a failed run (an LLM endpoint that is down,
    for example) leaves the earlier scores as they were. The run directory is locked for the
    duration.

    Under torchrun (``world`` of several processes) each rank scores its blocks of features
    (see :func:`_score_set`) and keeps its progress in ``scores.partial.rank<r>.json``; rank 0
    merges the ranks' files and writes the same score files as one process, byte for byte (the
    others return ``{}``). A run interrupted at one world size resumes at any other.
    """
    run = Path(run_dir)
    world = world or World()
    cfg = config or ScoreConfig()
    endpoint = None
    if rater == "llm" and client is None:  # checked before anything is loaded
        from cltrace.llm import resolve_endpoint

        endpoint = resolve_endpoint(base_url, model, user="the llm rater")
        base_url, model = endpoint.base_url, endpoint.model
    require_run_dir(run)
    if adapter is None:  # a caller's own model is its business
        check_run_corpus(run, corpus)
    where = {"device": device, "dtype": dtype, "lazy_decoders": lazy_decoders,
             "decoder_cache_bytes": decoder_cache_bytes, "spread": spread}  # fmt: skip
    if endpoint is not None and world.is_main:
        from cltrace.llm import probe

        probe(endpoint)
    with contextlib.ExitStack() as held:
        with together(world, "before stage III"):
            if world.is_main:
                held.enter_context(RunLock(run))
                for name in ("scores.json", "scores_random.json"):
                    _merge_rank_partials(run / name)  # what an interrupted run's ranks saved
            descs = read_descriptions(
                run / "descriptions.json",
                f"run stage II to write it (cltrace interpret --run {run}).",
            )
            kept_feats = read_kept_features(run)
            if adapter is None or transcoder is None:
                adapter, transcoder, _ = load_run_models(
                    run, adapter=adapter, transcoder=transcoder, **where
                )
            texts = load_texts(corpus, N_NATURAL, HELD_OUT_SEED)
            if pool is None:
                bundled = corpus is None or corpus == BUNDLED  # another held-out draw
                pool = load_texts(None, N_NATURAL, HELD_OUT_SEED + 1) if bundled else texts
            judge = make_rater(rater, pool=pool, seed=cfg.seed, client=client,
                               base_url=base_url, model=model, cache_dir=cache_dir)  # fmt: skip
        llm_id = f"{getattr(client, 'model', model)}@{getattr(client, 'base_url', base_url)}"
        extra = llm_id if rater == "llm" else ""
        precision = str(getattr(adapter, "dtype", "torch.float32")).removeprefix("torch.")
        if precision != "float32":  # scores from another precision are not resumed (float32
            extra += f"|{precision}"  # fingerprints stay as they were)
        fp = _fingerprint(rater, cfg, texts, extra)

        def score_set(features: list, descs: dict, path: Path, label: str) -> dict[str, dict]:
            with together(world, f"while scoring the {label} features in stage III"):
                mine = _score_set(features, descs, path, label, adapter, transcoder, judge,
                                  rater, texts, cfg, fp, console, world)  # fmt: skip
            if not world.is_main:
                return {}
            got = _merge_rank_partials(path, mine)
            keys = [f"{layer}/{f}" for layer, f in features]
            missing = [k for k in keys if k not in got]
            if missing:  # a rank reported success without saving its entries
                raise CltraceError(
                    f"no score was saved for {len(missing)} {label} features (first "
                    f"{missing[0]}); rerun the same command to score them."
                )
            return {k: got[k] for k in keys}

        written = {"scores.json": score_set(kept_feats, descs, run / "scores.json", "kept")}
        # stage II also describes a uniform random sample of the active set; scoring it gives
        # the baseline the kept features' scores are compared with
        rand_path = run / "descriptions_random.json"
        if rand_path.exists():
            rand_descs = read_descriptions(
                rand_path, f"rerun stage II to rewrite it (cltrace interpret --run {run})."
            )
            rand_feats = [tuple(int(x) for x in k.split("/")) for k in rand_descs]
            written["scores_random.json"] = score_set(
                rand_feats, rand_descs, run / "scores_random.json", "random"
            )
        with together(world, "in stage III"):
            _check_answered(judge)
        if not world.is_main:
            return {}
        summary = {
            "rater": rater,
            "n_features": len(written["scores.json"]),
            "n_texts": len(texts),
            "corpus": str(corpus) if isinstance(corpus, (str, os.PathLike)) else
                      ("bundled held-out" if corpus is None else "in memory"),
            "config": cfg.to_json(),
            "metrics": summarize(written["scores.json"], n_boot),
        }  # fmt: skip
        if "scores_random.json" in written:
            rand = written["scores_random.json"]
            summary["random"] = {"n_features": len(rand), "metrics": summarize(rand, n_boot)}
        _commit(run, written, summary)
    if console is not None:
        _print_summary(console, summary)
    return summary


def _check_answered(judge) -> None:
    """An LLM rater whose endpoint answered nothing has scored nothing: fail the stage."""
    check = getattr(getattr(judge, "client", None), "check_answered", None)
    if callable(check):
        check()


def _commit(run: Path, written: dict[str, dict], summary: dict) -> None:
    """Replace the score files (each atomically), drop the progress files, refresh the rest."""
    for name, scores in written.items():
        atomic_write_json(run / name, _clean(scores))
        _partial(run / name).unlink(missing_ok=True)
        for p in run.glob(f"{Path(name).stem}.partial.rank*.json"):  # none left after a merge
            p.unlink()
    atomic_write_json(run / "scores_summary.json", _clean(summary))
    if "scores_random.json" in written:
        _update_interpret_cost(run)
    if (run / "results.json").exists():
        from cltrace.report import write_report

        write_report(run)


def _partial(path: Path) -> Path:
    """Where scoring into ``path`` keeps its progress until the stage succeeds."""
    return path.with_name(f"{path.stem}.partial{path.suffix}")


def _rank_partial(path: Path, rank: int) -> Path:
    """Where rank ``rank`` of a run under torchrun keeps its progress on ``path``."""
    return path.with_name(f"{path.stem}.partial.rank{rank}{path.suffix}")


def _merge_rank_partials(path: Path, scores: dict[str, dict] | None = None) -> dict[str, dict]:
    """Move the entries of the ranks' progress files on ``path`` into its one progress file
    (rank 0's job, while the other ranks wait); returns ``scores`` updated with them.

    At the start of stage III this picks up what the ranks of an interrupted run saved; at the
    end of a set it gathers what each rank scored (``scores``: rank 0's own entries)."""
    hint = "delete it to score those features from scratch."
    merged = dict(scores or {})
    ranks = sorted(path.parent.glob(f"{path.stem}.partial.rank*{path.suffix}"))
    if not ranks:
        return merged
    partial = _partial(path)
    saved = read_json(partial, hint) if partial.exists() else {}
    for p in ranks:
        saved.update(read_json(p, hint))
    atomic_write_json(partial, _clean(saved))  # before the rank files go: nothing is lost
    for p in ranks:
        p.unlink()
    merged.update(saved)
    return merged


def _score_set(
    features,
    descs,
    path,
    label,
    adapter,
    transcoder,
    judge,
    rater,
    texts,
    cfg,
    fp,
    console,
    world: World,
) -> dict[str, dict]:
    """Score one set of features for ``path``, resuming entries with the same ``fp`` from it
    and from its progress file; progress is saved after each block of features (each feature
    with an LLM rater), ``path`` is not touched.

    The set is cut into blocks of :data:`PREFETCH_CHUNK` features, whose model passes are
    shared, and the natural-text scores are computed for every described feature of the set:
    the passes then have the same shapes however the work is split, so a feature's scores are
    the same bit for bit whether it is scored by one process or by a rank under torchrun (block
    ``c`` on rank ``c % world_size``), in one go or after a resumption (the passes of a block
    half done before are run whole). Returns the entries this rank has: those resumed and
    those it scored, the latter saved in its own progress file under torchrun."""
    hint = "delete it to score those features from scratch."
    old = read_json(path, hint) if path.exists() else {}
    partial = _partial(path)
    if partial.exists():
        old = {**old, **read_json(partial, hint)}
    keys = [f"{layer}/{f}" for layer, f in features]
    scores: dict[str, dict] = {
        k: old[k] for k in keys if isinstance(old.get(k), dict) and old[k].get("config_id") == fp
    }
    items = list(zip(features, keys, strict=True))
    blocks = [items[i : i + PREFETCH_CHUNK] for i in range(0, len(items), PREFETCH_CHUNK)]
    blocks = blocks[world.rank :: world.size]
    todo = [(feat, k) for block in blocks for feat, k in block if k not in scores]
    saved = keys  # what the progress file holds: every entry, or under torchrun this rank's own
    if world.distributed:
        partial = _rank_partial(path, world.rank)
        saved = [k for _, k in todo]
    described = [(feat, k) for feat, k in items if _description(descs.get(k)).strip()]
    natural = (
        sequence_scores(adapter, transcoder, texts, [f for f, _ in described], cfg.reduce,
                        max_tokens=cfg.max_tokens, batch_size=cfg.batch_size)
        if todo and described else np.zeros((0, len(texts)))
    )  # fmt: skip
    row = {k: i for i, (_, k) in enumerate(described)}
    with _progress(console) as bar:
        job = (
            bar.add_task(f"stage III: scoring {label} descriptions", total=len(todo))
            if bar
            else None
        )
        for block in blocks:
            if all(k in scores for _, k in block):
                continue
            chunk = [(f, key) for f, key in block if key in row]
            pre: dict[str, Prefetched | None] = {}
            if chunk:
                try:
                    pre = dict(zip([key for _, key in chunk], prefetch(
                        adapter, transcoder, judge, [f for f, _ in chunk],
                        [_description(descs.get(key)) for _, key in chunk], texts,
                        natural[[row[key] for _, key in chunk]], cfg,
                        generate=rater != "llm"), strict=True))  # fmt: skip
                except Exception:
                    # a rater that fails (an endpoint going down) fails again below, feature
                    # by feature, so the features before it are scored and saved first
                    pre = {key: None for _, key in chunk}
            # the block's steered generations (faithfulness) share batches across its
            # features; an LLM rater scores feature by feature, so a failing endpoint stops
            # the stage after the features before it have been saved
            left = [(feat, k) for feat, k in block if k not in scores]
            step = 1 if rater == "llm" else len(left)
            for at in range(0, len(left), max(step, 1)):
                part = left[at : at + step]
                done = _score_part(part, descs, row, pre, adapter, transcoder, judge, rater,
                                   texts, natural, cfg)  # fmt: skip
                for _, k in part:
                    scores[k] = {**done[k].to_json(), "config_id": fp}
                # once per part: rewriting the whole file after each feature made saving
                # quadratic in the number of features
                atomic_write_json(partial, _clean({x: scores[x] for x in saved
                                                   if x in scores}))  # fmt: skip
                crash_point(world)
                if bar:
                    bar.advance(job, len(part))
    return scores


def _score_part(part, descs, row, pre, adapter, transcoder, judge, rater, texts, natural,
                cfg) -> dict[str, FeatureScores]:  # fmt: skip
    """Scores of the features ``part`` (``[(feature, key)]``), their steered generations made
    in shared batches."""
    done: dict[str, FeatureScores] = {}
    described = [(feat, k) for feat, k in part if k in row]
    for _, k in part:
        if k not in row:
            done[k] = unscored(rater, "no description (stage II gave none)",
                               _description(descs.get(k)))  # fmt: skip
    steps = [score_feature_steps(adapter, transcoder, judge, rater, feat,
                                 _description(descs.get(k)), texts, natural[row[k]], cfg,
                                 pre.pop(k)) for feat, k in described]  # fmt: skip
    scored = run_feature_steps(adapter, transcoder, steps, cfg)
    done.update(zip([k for _, k in described], scored, strict=True))
    return done


def _update_interpret_cost(run: Path) -> None:
    """Let stage II's cost file record the mean scores (kept vs random), where it has one."""
    try:
        from cltrace.pie.stage2 import update_cost_scores
    except ImportError:
        return
    update_cost_scores(run)


def _progress(console):
    if console is None:
        return contextlib.nullcontext(None)
    from rich.progress import Progress

    return Progress(console=console, transient=True)


def _print_summary(console, summary: dict) -> None:
    """The stage III table; with a random sample scored too, kept and random side by side
    (PIE's headline: do the pruned features get better descriptions than random ones?)."""
    from rich.table import Table

    rand = summary.get("random")
    title = f"Stage III ({summary['rater']} rater): {summary['n_features']} kept features"
    if rand:
        title += f" vs {rand['n_features']} random active features"
    table = Table(title=title)
    sets = [("kept", summary["metrics"])] + ([("random", rand["metrics"])] if rand else [])
    heads = ["metric"] + [f"{name} {col}" if rand else col for name, _ in sets
                          for col in ("mean ± std", "95% CI", "defined")]  # fmt: skip
    rows = []
    for m in summary["metrics"]:
        cells = [m]
        for _, metrics in sets:
            s = metrics[m]
            total = f"{s['n']}/{s['n'] + s['n_undefined']}"
            if s["n"] == 0:
                cells += ["–", "–", total]
            else:
                cells += [f"{s['mean']:.3f} ± {s['std']:.3f}",
                          f"[{s['low']:.3f}, {s['high']:.3f}]", total]  # fmt: skip
        rows.append(cells)
    for j, head in enumerate(heads):
        widest = max([len(head)] + [len(r[j]) for r in rows])
        table.add_column(head, justify="left" if j == 0 else "right", no_wrap=True,
                         min_width=widest)  # fmt: skip
    for cells in rows:
        table.add_row(*cells)
    from rich.measure import Measurement

    # at its natural width: rich would otherwise cut cells, mid-number
    need = Measurement.get(console, console.options.update_width(1000), table).maximum
    console.print(table, width=max(console.width, need), crop=False)
