"""Stages II (interpret) and III (evaluate) on a PIE run directory.

They read ``kept_features.json`` and add ``descriptions.json`` and ``scores.json``; the readers
here turn a missing or damaged input file into one sentence saying which stage rewrites it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cltrace.errors import CltraceError
from cltrace.files import read_json


def run_later_stages(
    run_dir: Path,
    stages: set[str],
    console,
    world=None,
    *,
    corpus: str | None = None,
    device=None,
    dtype=None,
    lazy_decoders: bool = False,
    spread: Mapping[str, Any] | None = None,
) -> None:
    """Stages II and III (those in ``stages``) on a run directory; under torchrun (``world``
    of several processes, a :class:`cltrace.dist.World`) every rank calls this and they share
    the work, and only rank 0 passes a ``console``.

    ``corpus`` feeds both stages (None: the bundled corpus, refused in one sentence for a run of
    another model); ``spread``: a device map for the model (:func:`load_run_models`).
    """
    import time
    from dataclasses import replace

    from cltrace.pie.stage2 import InterpretConfig, interpret_run
    from cltrace.pie.stage3 import evaluate_run

    check_run_corpus(run_dir, corpus)
    where = {"device": str(device or "cpu"), "dtype": str(dtype or "float32")}
    where["dtype"] = where["dtype"].removeprefix("torch.")

    def done(name: str, t0: float) -> None:
        if console is not None:
            m, s = divmod(int(round(time.perf_counter() - t0)), 60)
            console.print(f"{name} in {m}:{s:02d}" if m else f"{name} in {s} s")

    if "interpret" in stages:
        t0 = time.perf_counter()
        base = InterpretConfig(lazy_decoders=lazy_decoders, **where)
        cfg = replace(base, store=replace(base.store, corpus=corpus))
        interpret_run(run_dir, console=console, world=world, config=cfg, spread=spread)
        done("stage II (interpret)", t0)
    if "evaluate" in stages:
        t0 = time.perf_counter()
        evaluate_run(run_dir, console=console, world=world, corpus=corpus,
                     lazy_decoders=lazy_decoders, spread=spread, **where)  # fmt: skip
        done("stage III (evaluate)", t0)


def read_kept_features(run_dir: Path, max_features: int | None = None) -> list[tuple[int, int]]:
    """The ``(layer, feature)`` pairs stage I kept (most often kept first), at most
    ``max_features``; one sentence when the file is missing, damaged or empty."""
    path = Path(run_dir) / "kept_features.json"
    rerun = f"rerun stage I to rewrite it (cltrace pie --out {run_dir})."
    if not path.exists():
        raise CltraceError(
            f"{run_dir} has no kept_features.json; run stage I first (cltrace pie --out {run_dir})."
        )
    kept = read_json(path, rerun)
    try:
        features = [(int(f["layer"]), int(f["feature"])) for f in kept["features"]]
    except (KeyError, TypeError, ValueError):
        raise CltraceError(
            f"{path} does not list features as {{layer, feature}} entries; {rerun}"
        ) from None
    features = features[:max_features] if max_features else features
    if not features:
        raise CltraceError(f"{path} lists no kept features; rerun stage I with a budget.")
    return features


def read_descriptions(path: Path, hint: str) -> dict:
    """A ``descriptions*.json`` file: ``{"<layer>/<feature>": entry}``."""
    descs = read_json(path, hint)
    if not isinstance(descs, dict):
        raise CltraceError(f"{path} is not a mapping of features to descriptions; {hint}")
    return descs


def read_run_config(run_dir: Path) -> dict:
    """The run's ``config.json`` (what stage I ran: model, transcoder, task or data)."""
    path = Path(run_dir) / "config.json"
    # without its config the records cannot be matched to a model, so the run is not resumable
    hint = "pass the --out of a complete cltrace pie run, or run stage I again in a new --out."
    cfg = read_json(path, hint)
    if not isinstance(cfg, dict):
        raise CltraceError(f"{path} is not a PIE configuration (a JSON object); {hint}")
    return cfg


def load_run_models(
    run_dir: Path,
    *,
    device=None,
    dtype=None,
    lazy_decoders: bool = False,
    decoder_cache_bytes: int | None = None,
    adapter=None,
    transcoder=None,
    spread: Mapping[str, Any] | None = None,
):
    """The model and transcoder a PIE run used (its ``config.json``), and that config.

    ``device`` and ``dtype`` take what ``cltrace attribute`` takes (``cuda:1``, ``bf16``; parsed
    by :mod:`cltrace.precision`); ``lazy_decoders`` leaves the decoders on disk and reads the
    rows a stage needs through a cache of at most ``decoder_cache_bytes`` (None: the default of
    :class:`~cltrace.transcoders.lazy.LazyDecoders`; circuit-tracer layout). ``adapter`` and
    ``transcoder``, when given, are used as they are. ``spread``: ``load_model``'s
    ``device_map`` and ``offload_folder`` (the transcoder then sits on the model's home device).
    """
    from cltrace.models import load_model
    from cltrace.paths import BUNDLED_CLT_DIR
    from cltrace.precision import parse_dtype, rank_device
    from cltrace.transcoders import load_transcoder

    where = {"device": rank_device(device), "dtype": parse_dtype(dtype)}
    # only the two fields the stages need, so a config from another cltrace version still works
    run_cfg = read_run_config(run_dir)
    adapter = adapter or load_model(run_cfg.get("model"), **where, **(spread or {}))
    if spread:
        where["device"] = adapter.device
    if transcoder is None:
        source = run_cfg.get("transcoder") or BUNDLED_CLT_DIR
        transcoder = load_transcoder(source, model=adapter, lazy_decoder=lazy_decoders, **where)
        if transcoder.lazy is not None and decoder_cache_bytes is not None:
            transcoder.lazy.cache_bytes = decoder_cache_bytes
    return adapter, transcoder, run_cfg


def check_run_corpus(run_dir: Path, corpus, option: str = "--corpus") -> None:
    """Refuse, in one sentence, to scan the bundled synthetic corpus (``corpus`` None) for a
    run whose model is not the bundled one (:func:`cltrace.corpus.check_corpus_fits`)."""
    from cltrace.corpus import check_corpus_fits

    if corpus is None:
        check_corpus_fits(None, read_run_config(run_dir).get("model"), option)
