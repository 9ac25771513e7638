"""The activation store: top-activating windows of chosen features over a corpus.

Layout under the store directory (``<run>/activations/``)::

    meta.json            features, corpus and options (a restart must match them)
    chunks/00003.npz     per chunk of documents: the non-BOS token count and every active
                         (feature, doc, pos, value) entry, sparse (compressed numpy arrays)
    store.json           the finished store (examples in quantile buckets, frequencies)

Scanning is resumable: a chunk is written atomically once processed, and a restart skips the
chunks already on disk. Chunks are independent, so the result does not depend on where a run was
interrupted, nor on how many processes shared the scan (under torchrun chunk ``c`` is scanned by
rank ``c % world_size``, and rank 0 finishes the store). Finishing reads the entries, picks the
examples (the top ``n_top`` documents by maximum, and a deterministic uniform sample from each
lower quantile interval) and cuts their windows; no second model pass is needed. Disk use grows
with K x activation frequency x corpus tokens, never with the dictionary size.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from cltrace.dist import World, all_sum, together
from cltrace.errors import CltraceError
from cltrace.files import atomic_write_text
from cltrace.interpret.features import FeatureKey, encode_features, mlp_inputs, pad_batch
from cltrace.models.adapter import ModelAdapter
from cltrace.replacement import input_kind
from cltrace.transcoders import CrossLayerTranscoder


class StaleStoreError(CltraceError):
    """The store directory holds a store built for other features or options."""


@dataclass
class StoreConfig:
    """Options of the activation store (saved in ``meta.json``)."""

    corpus: str | None = None
    """``None``/``bundled``, a text file (one document per line) or ``hf:<dataset>``."""
    n_docs: int = 4000
    """Documents to scan."""
    corpus_seed: int = 1
    """Seed of the bundled corpus (the model was trained on seed 0)."""
    max_tokens: int = 64
    """Tokens per document, BOS included (longer documents are truncated)."""
    batch_size: int = 32
    """Documents per forward pass."""
    chunk_docs: int = 256
    """Documents per saved chunk (the unit of resumption)."""
    n_top: int = 50
    """Examples in the top bucket."""
    n_quantiles: int = 4
    """Lower buckets: equal-count intervals of the remaining activating documents' maxima."""
    per_quantile: int = 10
    """Examples sampled per lower bucket."""
    window_before: int = 24
    """Tokens kept before the maximum in an example window."""
    window_after: int = 8
    """Tokens kept after the maximum."""


@dataclass
class ScanStats:
    """What a scan cost."""

    seconds: float
    n_docs: int
    n_tokens: int
    n_chunks_computed: int


def _tokenize(adapter: ModelAdapter, docs: Sequence[str], max_tokens: int) -> list[list[int]]:
    return [adapter.encode(d)[:max_tokens] for d in docs]


def scan_chunk(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    features: Sequence[FeatureKey],
    rows: Sequence[Sequence[int]],
    doc_offset: int,
    batch_size: int,
) -> dict[str, np.ndarray]:
    """Every active (feature, doc, pos, value) of one chunk, plus its non-BOS token count."""
    return scan_chunk_sets(adapter, transcoder, [features], rows, doc_offset, batch_size)[0]


@torch.no_grad()
def scan_chunk_sets(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    feature_sets: Sequence[Sequence[FeatureKey]],
    rows: Sequence[Sequence[int]],
    doc_offset: int,
    batch_size: int,
) -> list[dict[str, np.ndarray]]:
    """:func:`scan_chunk` for several feature lists from one model pass per batch; each list's
    result equals a scan of that list alone, bit for bit (its features are encoded on their own).

    Documents are batched in order of length, so padding (wasted compute) stays small.
    """
    layers = sorted({f[0] for feats in feature_sets for f in feats})
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    parts: list[list[tuple]] = [[] for _ in feature_sets]
    n_tokens = 0
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = [rows[i] for i in idx]
        lengths = torch.tensor([len(r) for r in batch], device="cpu")  # beside the activations
        toks = pad_batch(batch, adapter.bos_token_id)
        x = mlp_inputs(adapter, toks, layers, kind=input_kind(transcoder))
        pos = torch.arange(toks.shape[1], device="cpu")
        valid = (pos[None, :] < lengths[:, None]) & (pos[None, :] > 0)
        n_tokens += int(valid.sum())
        for s, feats in enumerate(feature_sets):
            acts = encode_features(transcoder, x, feats) * valid[..., None]
            b, p, j = (acts > 0).nonzero(as_tuple=True)
            doc = torch.tensor(idx, dtype=torch.long, device="cpu")[b] + doc_offset
            parts[s].append((j.numpy(), doc.numpy(), p.numpy(), acts[b, p, j].numpy()))
    out = []
    for set_parts in parts:
        cat = [np.concatenate([x[i] for x in set_parts]) if set_parts else np.zeros(0)
               for i in range(4)]  # fmt: skip
        out.append({
            "n_tokens": np.int64(n_tokens),
            "feature": cat[0].astype(np.int32),
            "doc": cat[1].astype(np.int32),
            "pos": cat[2].astype(np.int32),
            "value": cat[3].astype(np.float32),
        })  # fmt: skip
    return out


def _sample_key(feature: FeatureKey, doc: int) -> int:
    # A fixed pseudo-random order per (feature, doc): sampling is reproducible and does not
    # depend on scan order or on resumption.
    return zlib.crc32(f"{feature[0]}/{feature[1]}/{doc}".encode())


def select_examples(
    feature: FeatureKey, triples: list[list], cfg: StoreConfig
) -> tuple[list[tuple[str, list, list | None]], list[float]]:
    """Buckets ``[(name, [(doc, pos, value), ...], [low, high] | None)]`` and the lower edges.

    Top bucket: the ``n_top`` documents with the largest maximum (ties: lower doc id first).
    Lower buckets: the rest split into ``n_quantiles`` equal-count intervals by value; from each,
    ``per_quantile`` documents in the fixed pseudo-random order. Buckets run from high to low.
    """
    ordered = sorted(triples, key=lambda t: (-t[2], t[0]))
    top, rest = ordered[: cfg.n_top], ordered[cfg.n_top :]
    buckets = [("top", top, None)]
    edges: list[float] = []
    if rest and cfg.n_quantiles > 0:
        vals = np.array([t[2] for t in rest])
        edges = np.quantile(vals, np.linspace(0, 1, cfg.n_quantiles + 1)).tolist()
        for i in reversed(range(cfg.n_quantiles)):
            lo, hi = edges[i], edges[i + 1]
            inside = [t for t in rest if lo <= t[2] and (t[2] < hi or i == cfg.n_quantiles - 1)]
            inside.sort(key=lambda t: _sample_key(feature, t[0]))
            picked = sorted(inside[: cfg.per_quantile], key=lambda t: (-t[2], t[0]))
            name = f"quantile {i + 1}/{cfg.n_quantiles} [{lo:.3g}, {hi:.3g}]"
            buckets.append((name, picked, [lo, hi]))
    return buckets, edges


class ActivationStore:
    """A finished store: per feature, frequency and example windows in quantile buckets."""

    def __init__(self, data: dict):
        self.data = data
        self.records = {(r["layer"], r["feature"]): r for r in data["features"]}

    @classmethod
    def load(cls, directory: str | Path) -> ActivationStore:
        return cls(json.loads((Path(directory) / "store.json").read_text()))

    @property
    def features(self) -> list[FeatureKey]:
        return list(self.records)

    def record(self, key: FeatureKey) -> dict:
        return self.records[tuple(key)]

    def top_examples(self, key: FeatureKey, n: int | None = None) -> list[dict]:
        """Examples of the top bucket, strongest first."""
        qs = self.record(key)["examples_quantiles"]
        return qs[0]["examples"][:n] if qs else []

    def all_examples(self, key: FeatureKey) -> list[dict]:
        return [ex for q in self.record(key)["examples_quantiles"] for ex in q["examples"]]


def build_store(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    features: Sequence[FeatureKey],
    out: str | Path,
    cfg: StoreConfig | None = None,
    docs: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    stop_after_chunks: int | None = None,
    replace_stale: bool = False,
) -> tuple[ActivationStore | None, ScanStats]:
    """Scan (or resume scanning) and finish the store in ``out``.

    ``docs`` overrides ``cfg.corpus`` (tests); ``stop_after_chunks`` computes at most that many new
    chunks and returns ``(None, stats)`` without finishing (used to test resumption). A store in
    ``out`` built for other features or options is an error, or with ``replace_stale`` is
    deleted and rebuilt.
    """
    stores, stats = build_stores(adapter, transcoder, [(features, out, replace_stale)], cfg, docs,
                                 progress, stop_after_chunks)  # fmt: skip
    return stores[0], stats


def open_store(adapter, features: list[FeatureKey], out: Path, cfg: StoreConfig, n_docs: int,
                replace_stale: bool) -> None:  # fmt: skip
    """Check (or create) the store directory's ``meta.json`` for these features and options;
    :class:`StaleStoreError` when it was built for others (unless ``replace_stale`` clears it)."""
    (out / "chunks").mkdir(parents=True, exist_ok=True)
    meta = {"features": [list(f) for f in features], "config": asdict(cfg),
            "n_docs": n_docs, "model": adapter.name}  # fmt: skip
    if adapter.dtype != torch.float32:  # chunks scanned in another precision are not resumed
        meta["dtype"] = str(adapter.dtype).removeprefix("torch.")
    meta_path = out / "meta.json"
    if meta_path.exists() and json.loads(meta_path.read_text()) != meta and replace_stale:
        for f in (out / "chunks").glob("*.npz"):
            f.unlink()
        (out / "store.json").unlink(missing_ok=True)
        meta_path.unlink()
    if meta_path.exists():
        if json.loads(meta_path.read_text()) != meta:
            raise StaleStoreError(
                f"activation store {out} was built for other features or options; delete it or "
                "choose another directory."
            )
    else:
        atomic_write_text(meta_path, json.dumps(meta))


def build_stores(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    jobs: Sequence[tuple[Sequence[FeatureKey], str | Path, bool]],
    cfg: StoreConfig | None = None,
    docs: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    stop_after_chunks: int | None = None,
    world: World | None = None,
) -> tuple[list[ActivationStore | None], ScanStats]:
    """Several stores (``(features, directory, replace_stale)`` each) from ONE scan of the corpus.

    Each chunk that any store still lacks gets one model pass, from which every store lacking it
    encodes its own features, so every store holds exactly what scanning it alone would. Each
    directory resumes and checks its options as :func:`build_store` does.

    Under torchrun (``world`` of several processes) rank 0 opens the directories, every rank
    scans the missing chunks ``c`` with ``c % world.size == world.rank``, and once all are on
    disk rank 0 finishes the stores; the other ranks return ``None`` for each. A chunk's content
    depends only on its documents, so the stores are byte-identical to one process's.
    ``stop_after_chunks`` then counts this rank's chunks, and the stats' chunk count is the
    ranks' total.
    """
    from cltrace.interpret.corpus import load_corpus

    world = world or World()
    cfg = cfg or StoreConfig()
    t0 = time.perf_counter()
    docs = list(docs) if docs is not None else load_corpus(cfg.corpus, cfg.n_docs, cfg.corpus_seed)
    sets = [[(int(a), int(b)) for a, b in feats] for feats, _, _ in jobs]
    outs = [Path(o) for _, o, _ in jobs]
    if not sets or any(not f for f in sets):
        raise CltraceError("no features to store; pass a non-empty feature list.")
    with together(world, "while opening the activation stores"):
        if world.is_main:  # first, so that a stale directory is cleared once
            for feats, out, (_, _, stale) in zip(sets, outs, jobs, strict=True):
                open_store(adapter, feats, out, cfg, len(docs), stale)
    if not world.is_main:
        for feats, out in zip(sets, outs, strict=True):
            open_store(adapter, feats, out, cfg, len(docs), False)  # checks what rank 0 wrote
    n_chunks = (len(docs) + cfg.chunk_docs - 1) // cfg.chunk_docs
    computed = 0
    stopped = False
    with together(world, "while scanning the corpus"):
        for c in range(world.rank, n_chunks, world.size):
            paths = [out / "chunks" / f"{c:05d}.npz" for out in outs]
            missing = [i for i, path in enumerate(paths) if not path.exists()]
            if not missing:
                continue
            if stop_after_chunks is not None and computed >= stop_after_chunks:
                stopped = True
                break
            lo = c * cfg.chunk_docs
            rows = _tokenize(adapter, docs[lo : lo + cfg.chunk_docs], cfg.max_tokens)
            chunks = scan_chunk_sets(adapter, transcoder, [sets[i] for i in missing], rows, lo,
                                     cfg.batch_size)  # fmt: skip
            for i, chunk in zip(missing, chunks, strict=True):
                tmp = paths[i].with_suffix(".tmp.npz")
                np.savez_compressed(tmp, **chunk)
                tmp.replace(paths[i])
            computed += 1
            if progress:
                progress(min(lo + cfg.chunk_docs, len(docs)), len(docs))
    computed = all_sum(world, computed)
    if all_sum(world, int(stopped)) or not world.is_main:
        return [None] * len(sets), ScanStats(time.perf_counter() - t0, len(docs), 0, computed)
    stores: list[ActivationStore | None] = [
        finish_store(adapter, transcoder, feats, out, cfg, docs, n_chunks)
        for feats, out in zip(sets, outs, strict=True)
    ]
    n_tok = stores[0].data["n_tokens"] if stores[0] is not None else 0
    return stores, ScanStats(time.perf_counter() - t0, len(docs), n_tok, computed)


def finish_store(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    features: list[FeatureKey],
    out: Path,
    cfg: StoreConfig,
    docs: Sequence[str],
    n_chunks: int,
) -> ActivationStore:
    """Merge chunks, pick the examples and cut their windows (no second model pass: every
    active token is in the chunks)."""
    K = len(features)
    cols: dict[str, list] = {k: [] for k in ("feature", "doc", "pos", "value")}
    n_tokens = 0
    for c in range(n_chunks):
        with np.load(out / "chunks" / f"{c:05d}.npz") as chunk:
            n_tokens += int(chunk["n_tokens"])
            for k in cols:
                cols[k].append(chunk[k])
    f, d, p, v = (np.concatenate(cols[k]) for k in ("feature", "doc", "pos", "value"))
    # by feature, then document, then value descending, then position: the first entry of each
    # (feature, doc) group is that document's maximum (earliest position among ties)
    order = np.lexsort((p, -v, d, f))
    f, d, p, v = f[order], d[order], p[order], v[order]
    group = f.astype(np.int64) * (len(docs) + 1) + d
    _, starts, counts = np.unique(group, return_index=True, return_counts=True)
    triples: list[list] = [[] for _ in range(K)]
    spans: dict[tuple[int, int], tuple[int, int]] = {}
    for s0, n in zip(starts.tolist(), counts.tolist(), strict=True):
        j, doc = int(f[s0]), int(d[s0])
        triples[j].append([doc, int(p[s0]), round(float(v[s0]), 6)])
        spans[(j, doc)] = (s0, s0 + n)
    active = np.bincount(f, minlength=K)
    selections = [select_examples(features[j], triples[j], cfg) for j in range(K)]
    needed = sorted({t[0] for buckets, _ in selections for _, ex, _ in buckets for t in ex})
    token_ids = dict(zip(needed, _tokenize(adapter, [docs[i] for i in needed], cfg.max_tokens),
                         strict=True))  # fmt: skip
    records = []
    for j, (layer, feat) in enumerate(features):
        buckets, edges = selections[j]
        quantiles = []
        for name, ex, interval in buckets:
            if not ex:
                continue
            windows = []
            for doc, pos, val in ex:
                s0, s1 = spans[(j, doc)]
                windows.append(_window(token_ids[doc], p[s0:s1], v[s0:s1], pos, val, cfg,
                                       adapter, doc))  # fmt: skip
            quantiles.append({"quantile_name": name, "interval": interval, "examples": windows})
        maxima = [t[2] for t in triples[j]]
        records.append({
            "layer": layer, "feature": feat,
            "frequency": float(active[j]) / max(n_tokens, 1),
            "n_active_tokens": int(active[j]), "n_active_docs": len(triples[j]),
            "max_activation": max(maxima) if maxima else 0.0,
            "quantile_edges": edges, "examples_quantiles": quantiles,
        })  # fmt: skip
    data = {"n_docs": len(docs), "n_tokens": n_tokens, "config": asdict(cfg),
            "features": records}  # fmt: skip
    atomic_write_text(out / "store.json", json.dumps(data))
    return ActivationStore(data)


def _window(ids, positions, values, pos: int, value: float, cfg: StoreConfig, adapter, doc):
    """The example window around ``pos``, with activations rebuilt from the sparse triples."""
    lo = max(1, pos - cfg.window_before)
    hi = min(len(ids), pos + cfg.window_after + 1)
    acts = [0.0] * (hi - lo)
    for q, a in zip(positions.tolist(), values.tolist(), strict=True):
        if lo <= q < hi:
            acts[q - lo] = round(float(a), 5)
    return {
        "tokens": adapter.to_str_tokens(ids[lo:hi]),
        "ids": list(ids[lo:hi]),
        "start": lo,
        "tokens_acts_list": acts,
        "doc": doc,
        "max_pos": pos - lo,
        "max_value": value,
    }
