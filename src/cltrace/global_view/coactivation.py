"""Co-activation statistics of chosen features over a corpus, in one streamed, resumable pass.

For a feature set ``K`` (the features of interest, never the whole dictionary by default) and
every token of the corpus (BOS and padding excluded), the pass accumulates

* ``n_tokens``, ``sum[f] = Σ a_f`` and ``count[f] = Σ 1(a_f > 0)``;
* ``prod[s, t] = Σ a_s a_t`` and ``ind[s, t] = Σ a_s 1(a_t > 0)``, both at the same position.

Activations are sparse, so each batch multiplies a sparse ``[K, tokens]`` matrix by a dense
one; the running sums live as ``K x K`` arrays during the pass and are saved sparsely (only
pairs that ever co-activate) after every chunk of documents. A restart with the same features
and options resumes after the last saved chunk; pairs that never co-activate are simply absent,
which is what makes ERA and TWERA zero for them (:mod:`cltrace.global_view.era`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, Int

from cltrace.errors import CltraceError
from cltrace.global_view.virtual import Feature, check_features
from cltrace.interpret.features import feature_activations, pad_batch
from cltrace.models.adapter import ModelAdapter
from cltrace.transcoders import CrossLayerTranscoder


@dataclass
class CoactConfig:
    """Options of the co-activation pass (saved with its state; a resume must match them)."""

    corpus: str | None = None
    """``None``/``bundled``, a text file (one document per line) or ``hf:<dataset>``."""
    n_docs: int = 2000
    """Documents to read."""
    corpus_seed: int = 1
    """Seed of the bundled corpus (the bundled model was trained on seed 0)."""
    max_tokens: int = 64
    """Tokens per document, BOS included (longer documents are cut)."""
    batch_size: int = 32
    """Documents per forward pass."""
    chunk_docs: int = 256
    """Documents between two saves of the running sums (the unit of resumption)."""


@dataclass
class CoactStats:
    """The accumulated statistics; ``pairs`` index into ``features``."""

    features: list[Feature]
    n_tokens: int
    sum: Float[np.ndarray, " K"]
    count: Int[np.ndarray, " K"]
    rows: Int[np.ndarray, " n"]
    """Source index of each co-activating pair."""
    cols: Int[np.ndarray, " n"]
    """Target index of each co-activating pair."""
    prod: Float[np.ndarray, " n"]
    """``Σ a_s a_t`` over tokens."""
    ind: Float[np.ndarray, " n"]
    """``Σ a_s 1(a_t > 0)`` over tokens."""
    n_docs_done: int = 0

    def mean(self) -> Float[np.ndarray, " K"]:
        """``E[a_f]`` per feature (over all tokens, zeros included)."""
        return self.sum / max(self.n_tokens, 1)

    def frequency(self) -> Float[np.ndarray, " K"]:
        """Share of tokens on which each feature is active."""
        return self.count / max(self.n_tokens, 1)

    def dense(self, which: str = "prod") -> Float[np.ndarray, "K K"]:
        """A dense ``K x K`` copy of ``prod`` or ``ind`` (for small sets and tests)."""
        K = len(self.features)
        out = np.zeros((K, K))
        out[self.rows, self.cols] = getattr(self, which)
        return out


class _Sums:
    """Running sums as dense arrays (float64), with conversion to and from the saved form."""

    def __init__(self, K: int):
        self.n_tokens = 0
        self.sum = np.zeros(K)
        self.count = np.zeros(K, dtype=np.int64)
        self.prod = torch.zeros(K, K, dtype=torch.float64)
        self.ind = torch.zeros(K, K, dtype=torch.float64)

    def add(self, acts: Float[torch.Tensor, "n K"]) -> None:
        a = acts.double()
        on = (a > 0).double()
        self.n_tokens += a.shape[0]
        self.sum += a.sum(0).numpy()
        self.count += (a > 0).sum(0).numpy()
        at = a.T.to_sparse()
        self.prod += torch.sparse.mm(at, a)
        self.ind += torch.sparse.mm(at, on)

    def save(self, path: Path, meta: dict, n_docs_done: int) -> None:
        r, c = (self.prod != 0).nonzero(as_tuple=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(
            tmp, meta=np.asarray(json.dumps(meta)), n_docs_done=np.int64(n_docs_done),
            n_tokens=np.int64(self.n_tokens), sum=self.sum, count=self.count,
            rows=r.numpy().astype(np.int32), cols=c.numpy().astype(np.int32),
            prod=self.prod[r, c].numpy(), ind=self.ind[r, c].numpy(),
        )  # fmt: skip
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, K: int) -> tuple[_Sums, int]:
        s = cls(K)
        with np.load(path) as z:
            s.n_tokens = int(z["n_tokens"])
            s.sum, s.count = z["sum"].copy(), z["count"].copy()
            r, c = torch.from_numpy(z["rows"]).long(), torch.from_numpy(z["cols"]).long()
            s.prod[r, c] = torch.from_numpy(z["prod"])
            s.ind[r, c] = torch.from_numpy(z["ind"])
            return s, int(z["n_docs_done"])

    def stats(self, features: list[Feature], n_docs_done: int) -> CoactStats:
        r, c = (self.prod != 0).nonzero(as_tuple=True)
        return CoactStats(
            features=features, n_tokens=self.n_tokens, sum=self.sum.copy(),
            count=self.count.copy(), rows=r.numpy(), cols=c.numpy(),
            prod=self.prod[r, c].numpy(), ind=self.ind[r, c].numpy(), n_docs_done=n_docs_done,
        )  # fmt: skip


def saved_meta(path: str | os.PathLike) -> dict:
    """The features and options a saved state was built with."""
    with np.load(path) as z:
        return json.loads(str(z["meta"]))


@torch.no_grad()
def batch_activations(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    rows: Sequence[Sequence[int]],
    features: Sequence[Feature],
) -> Float[torch.Tensor, "n_tokens K"]:
    """Activations of ``features`` on every real, non-BOS token of a batch of token lists."""
    lengths = torch.tensor([len(r) for r in rows])
    toks = pad_batch(rows, adapter.bos_token_id)
    acts = feature_activations(adapter, transcoder, toks, features)  # [b, pos, K]
    pos = torch.arange(acts.shape[1])
    valid = (pos[None, :] < lengths[:, None]) & (pos[None, :] > 0)
    return acts[valid]


def coactivation_stats(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    features: Sequence[Feature],
    cfg: CoactConfig | None = None,
    docs: Sequence[str] | None = None,
    state_path: str | os.PathLike | None = None,
    progress: Callable[[int, int], None] | None = None,
    stop_after_chunks: int | None = None,
) -> CoactStats:
    """Stream the corpus once and return the co-activation statistics of ``features``.

    ``docs`` overrides ``cfg.corpus``. With ``state_path`` the running sums are saved after
    every ``cfg.chunk_docs`` documents and a rerun resumes from them (a state built for other
    features or options is an error). ``stop_after_chunks`` stops early (to test resumption).
    """
    from cltrace.corpus import load_texts

    cfg = cfg or CoactConfig()
    features = check_features(transcoder, features)
    if not features:
        raise CltraceError("no features to gather statistics for; pass at least one feature.")
    if docs is None:
        docs = load_texts(cfg.corpus, cfg.n_docs, cfg.corpus_seed)
    docs = list(docs)[: cfg.n_docs]
    meta = {"features": [list(f) for f in features], "config": asdict(cfg),
            "n_docs": len(docs), "transcoder": transcoder.cfg.model_name}  # fmt: skip
    K = len(features)
    sums, done = _Sums(K), 0
    path = Path(state_path) if state_path is not None else None
    if path is not None and path.exists():
        old = saved_meta(path)
        if old != meta:
            raise CltraceError(
                f"the co-activation state {path} was built for other features or options; "
                "delete it or pass another state path."
            )
        sums, done = _Sums.load(path, K)
    chunks = 0
    for lo in range(done, len(docs), cfg.chunk_docs):
        if stop_after_chunks is not None and chunks >= stop_after_chunks:
            break
        part = [adapter.encode(d)[: cfg.max_tokens] for d in docs[lo : lo + cfg.chunk_docs]]
        part.sort(key=len)  # similar lengths per batch: little padding
        for b in range(0, len(part), cfg.batch_size):
            sums.add(batch_activations(adapter, transcoder, part[b : b + cfg.batch_size],
                                       features))  # fmt: skip
        done = min(lo + cfg.chunk_docs, len(docs))
        chunks += 1
        if path is not None:
            sums.save(path, meta, done)
        if progress is not None:
            progress(done, len(docs))
    return sums.stats(features, done)
