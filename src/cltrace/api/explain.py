"""Feature descriptions for the API: :func:`explain` and :class:`FeatureNote`."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_N_DOCS = 400
"""Corpus documents the activation store scans by default (``cltrace interpret`` scans 4000;
fewer keep :func:`explain` quick, at the cost of fewer examples for rare features)."""


@dataclass
class FeatureNote:
    """What one transcoder feature does, as an explainer describes it."""

    layer: int
    """Layer the feature reads from."""
    feature: int
    """Index of the feature in its layer."""
    description: str
    """The description ("" when the explainer could not give one; see ``failure``)."""
    explainer: str
    """The explainer that produced it (a fallback names itself, e.g. ``weightlens/top_tokens``)."""
    failure: str | None = None
    """Why there is no description (None when there is one)."""
    frequency: float | None = None
    """Share of corpus tokens on which the feature is active."""
    details: dict = field(default_factory=dict, repr=False)
    """Explainer-specific findings (token lists, scores)."""

    @property
    def key(self) -> tuple[int, int]:
        """``(layer, feature)``."""
        return (self.layer, self.feature)

    def __str__(self) -> str:
        text = self.description or f"(no description: {self.failure})"
        freq = f", active on {self.frequency:.2%} of tokens" if self.frequency is not None else ""
        return f"L{self.layer} F{self.feature} [{self.explainer}{freq}]: {text}"


def explain(
    model,
    transcoder,
    features: Iterable[tuple[int, int]],
    explainer: str = "weightlens",
    corpus: str | None = None,
    n_docs: int = DEFAULT_N_DOCS,
    store_dir: str | os.PathLike | None = None,
) -> list[FeatureNote]:
    """Describe ``(layer, feature)`` ids; one :class:`FeatureNote` per feature, in order.

    ``explainer`` is a registry key: ``weightlens`` (default; offline, from the weights) or
    ``circuitlens`` (offline); the LLM explainers need ``cltrace interpret``. Examples come
    from an activation store over ``n_docs`` documents of ``corpus`` (``None``: the bundled
    corpus, for the bundled model only; a text file; ``hf:NAME[:SPLIT[:COLUMN]]``), built in a
    temporary directory that is removed afterwards, or in ``store_dir`` when given (kept, and
    resumed by a later call).
    """
    from cltrace.api.loading import as_model, as_transcoder
    from cltrace.corpus import check_corpus_fits
    from cltrace.errors import UsageError
    from cltrace.interpret.corpus import load_corpus
    from cltrace.interpret.explainers import ExplainContext, get_explainer
    from cltrace.interpret.store import StoreConfig, build_store

    adapter = as_model(model)
    tc = as_transcoder(transcoder, adapter)
    keys = [(int(layer), int(feature)) for layer, feature in features]
    if not keys:
        return []
    for layer, feature in keys:
        if not (0 <= layer < tc.n_layers and 0 <= feature < tc.d_features):
            raise UsageError(
                f"feature ({layer}, {feature}) is outside the transcoder ({tc.n_layers} layers of "
                f"{tc.d_features} features)."
            )
    spec = get_explainer(explainer)
    if spec.needs_llm:
        raise UsageError(
            f"the {spec.key} explainer needs an LLM endpoint; use `cltrace interpret` for it, or "
            "an offline explainer here (weightlens, circuitlens)."
        )
    # the bundled corpus is written for the bundled model: another model must name its corpus
    check_corpus_fits(corpus, None if adapter.name == "cltrace-bundled" else adapter.name,
                      "corpus=")  # fmt: skip
    unique = list(dict.fromkeys(keys))
    cfg = StoreConfig(corpus=corpus, n_docs=n_docs)
    docs = load_corpus(cfg.corpus, cfg.n_docs, cfg.corpus_seed)
    with tempfile.TemporaryDirectory(prefix="cltrace-store-") as tmp:
        where = Path(store_dir) if store_dir is not None else Path(tmp)
        store, _ = build_store(adapter, tc, unique, where, cfg, docs=docs, replace_stale=True)
        assert store is not None  # only a scan stopped early (a test hook) returns no store
        expl = spec.explain(ExplainContext(adapter, tc, store), unique)
        notes = {
            k: FeatureNote(
                k[0],
                k[1],
                e.description,
                e.explainer,
                e.failure,
                store.record(k).get("frequency"),
                e.details,
            )  # fmt: skip
            for k, e in expl.items()
        }
    return [notes[k] for k in keys]
