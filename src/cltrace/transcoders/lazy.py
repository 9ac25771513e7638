"""Decoder rows read from disk on demand.

A public CLT's decoders run to tens of GB (a 426k-feature Gemma CLT); attribution needs only the
rows of the few thousand features active on one prompt. :class:`LazyDecoders` keeps the
safetensors files memory-mapped and copies just those rows, grouping sorted feature ids into
contiguous runs because ``get_slice`` takes ranges, not index lists. Rows read once stay in a
least-recently-used cache bounded in bytes (``cache_bytes``), so the stages that revisit the same
features (PIE's prompts, WeightLens' upstream layers) read each row from disk once while memory
stays bounded; decoder norms are computed block by block, never from a whole layer at once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float, Int
from safetensors import safe_open
from torch import Tensor


@dataclass(frozen=True)
class DecoderEntry:
    """Where one source layer's decoder lives on disk."""

    path: Path
    """The safetensors file."""
    key: str
    """The tensor name inside it."""
    per_layer: bool
    """True for a PLT file whose decoder is [F, D]; False for a CLT decoder [F, n_out, D]."""
    transposed: bool = False
    """True for a PLT file that stores the decoder as [D, F] (some released ReLU sets do)."""


def _runs(ids: list[int]) -> list[tuple[int, int]]:
    """Split sorted, unique ids into half-open contiguous ranges."""
    runs: list[tuple[int, int]] = []
    for i in ids:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


DEFAULT_CACHE_BYTES = 512 * 2**20
"""Default bound of the row cache (512 MiB)."""


class LazyDecoders:
    """Per-layer decoder tensors that stay on disk until rows are asked for."""

    def __init__(
        self,
        entries: list[DecoderEntry],
        dtype: torch.dtype = torch.float32,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ):
        self.entries = entries
        self.dtype = dtype
        self.cache_bytes = cache_bytes
        """Most bytes the row cache holds (0: no cache)."""
        self._handles: dict[Path, object] = {}
        self._cache: OrderedDict[tuple[int, int], Tensor] = OrderedDict()
        self._cached_bytes = 0
        self._norms: dict[int, Tensor] = {}
        self.rows_read = 0
        """Rows copied from disk so far (cache misses)."""

    @property
    def cached_bytes(self) -> int:
        """Bytes the row cache holds now (never more than ``cache_bytes``)."""
        return self._cached_bytes

    def _handle(self, path: Path):
        if path not in self._handles:
            self._handles[path] = safe_open(str(path), framework="pt", device="cpu")
        return self._handles[path]

    def shape(self, layer: int) -> tuple[int, ...]:
        e = self.entries[layer]
        shape = tuple(self._handle(e.path).get_slice(e.key).get_shape())
        if e.transposed:
            shape = shape[::-1]
        return (shape[0], 1, shape[1]) if e.per_layer else shape

    def _read(self, layer: int, uniq: list[int]) -> Tensor:
        """Rows ``uniq`` (sorted, unique) of ``layer`` from disk, as ``[n, n_out, D]``."""
        e = self.entries[layer]
        sl = self._handle(e.path).get_slice(e.key)
        if e.transposed:
            parts = [sl[:, a:b].T for a, b in _runs(uniq)]
        else:
            parts = [sl[a:b] for a, b in _runs(uniq)]
        if not parts:
            return torch.zeros((0, *self.shape(layer)[1:]), dtype=self.dtype)
        block = torch.cat(parts, 0)
        if e.per_layer:
            block = block.unsqueeze(1)
        self.rows_read += len(uniq)
        return block.to(self.dtype)

    def rows(self, layer: int, feature_ids: Int[Tensor, " n"]) -> Float[Tensor, "n n_out D"]:
        """The decoders of ``feature_ids`` (any order, repeats allowed) of source ``layer``."""
        ids = feature_ids.to(torch.long).reshape(-1)
        uniq, inverse = torch.unique(ids, sorted=True, return_inverse=True)
        wanted = uniq.tolist()
        if self.cache_bytes <= 0:
            return self._read(layer, wanted)[inverse]
        missing = [i for i in wanted if (layer, i) not in self._cache]
        fresh = dict(zip(missing, self._read(layer, missing), strict=True)) if missing else {}
        out = []
        for i in wanted:
            row = fresh.get(i)
            if row is None:
                row = self._cache[(layer, i)]
                self._cache.move_to_end((layer, i))
            out.append(row)
        block = torch.stack(out) if out else self._read(layer, [])
        for i, row in fresh.items():
            self._remember((layer, i), row)
        return block[inverse]

    def _remember(self, key: tuple[int, int], row: Tensor) -> None:
        size = row.numel() * row.element_size()
        if size > self.cache_bytes:
            return
        row = row.clone()  # not a view into a larger block, which would pin the block
        self._cache[key] = row
        self._cached_bytes += size
        while self._cached_bytes > self.cache_bytes:
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= old.numel() * old.element_size()

    def scan(self, layer: int, block: int = 4096) -> Iterator[Float[Tensor, "b n_out D"]]:
        """Every decoder row of ``layer`` in order, ``block`` rows at a time, read past the row
        cache (a whole-layer pass would only evict the rows that are reused)."""
        n = self.shape(layer)[0]
        for a in range(0, n, block):
            ids = list(range(a, min(n, a + block)))
            rows = self._read(layer, ids)
            self.rows_read -= len(ids)  # a scan, not a row lookup
            yield rows

    def norms(self, layer: int, block: int = 4096) -> Float[Tensor, " F"]:
        """Norm of each feature's decoders over all its target layers, read ``block`` rows at a
        time (remembered: one small vector per layer)."""
        if layer not in self._norms:
            parts = [rows.float().flatten(1).norm(dim=1) for rows in self.scan(layer, block)]
            self._norms[layer] = torch.cat(parts) if parts else torch.zeros(0)
        return self._norms[layer]

    def full(self, layer: int) -> Float[Tensor, "F n_out D"]:
        e = self.entries[layer]
        w = self._handle(e.path).get_tensor(e.key)
        if e.transposed:
            w = w.T
        return (w.unsqueeze(1) if e.per_layer else w).to(self.dtype)
