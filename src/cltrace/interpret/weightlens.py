"""WeightLens for cross-layer transcoders (docs/METHODS.md §6, Golimblevskaia et al. 2025).

Describes a feature from weights alone: the vocabulary tokens whose embedding points along its
encoder (validated by running ``[BOS, token]``), the logits its decoders push up and down, and the
earlier-layer features with outlying virtual weights into it (whose own token descriptions are
reused, validated by running them together as one sequence).

CLT adaptations: the output direction is the feature's decoder summed over all the layers it
writes to (``decoder="sum"``) or its last-layer decoder (``"last"``); the virtual weight from an
upstream feature ``(l', i')`` is ``<sum_{l' <= s < l} W_dec^{l'->s}[i'], W_enc^l[i]>``
(docs/METHODS.md §6), i.e. every decoder that writes below the target's MLP input.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

from cltrace.interpret.features import FeatureKey, feature_activations
from cltrace.interpret.render import quote_tokens
from cltrace.models.adapter import ModelAdapter
from cltrace.transcoders import CrossLayerTranscoder


@dataclass
class WeightLensConfig:
    """Thresholds of WeightLens (see the project report for how defaults were chosen)."""

    top_k_tokens: int = 1000
    """Window of largest token scores in which z-scores are computed (clipped to the vocab)."""
    threshold_tokens: float | None = None
    """Keep token-input and logit scores with z above this within the window. ``None`` scales it
    with the vocabulary (:func:`token_threshold`): 5.5 for a 256k-token vocabulary and a
    1,000-token window, as WeightLens was tuned on Gemma, about 3.2 for the bundled 886 words."""
    top_k_features: int = 100
    """Window of largest virtual weights per upstream layer."""
    threshold_features: float = 4.0
    """Keep upstream features with z above this within their window."""
    max_upstream: int = 8
    """Upstream features (largest relative contribution first) whose descriptions are reused."""
    max_depth: int = 3
    """Recursion depth of the upstream description."""
    n_listed: int = 8
    """At most this many tokens per list in the description text."""
    decoder: str = "sum"
    """Output direction: ``sum`` of decoders over target layers, or the ``last`` one."""
    max_sequence: int = 48
    """Longest token sequence run for validation (the model's context bounds it too)."""
    skip_special: bool = True
    """Ignore the tokenizer's special tokens (BOS, padding...) as token inputs and outputs."""
    summed_cache_bytes: int = 256 * 2**20
    """Most bytes of summed upstream decoders (``[F, D]`` float32 per source and target layer)
    kept between features; a sum that does not fit is streamed from the decoders block by block
    each time it is needed, so memory stays bounded on a CLT of any size."""


@dataclass
class WeightLensResult:
    """WeightLens' findings for one feature."""

    layer: int
    feature: int
    input_tokens: list[dict] = field(default_factory=list)
    """Token-input outliers ``{token, id, score, z, activation}``; validated ones have act > 0."""
    promoted: list[dict] = field(default_factory=list)
    """Logit outliers at the top ``{token, id, score, z}``."""
    suppressed: list[dict] = field(default_factory=list)
    """Logit outliers at the bottom."""
    upstream: list[dict] = field(default_factory=list)
    """Upstream feature outliers ``{layer, feature, weight, z, relative}``."""
    description_ids: list[int] = field(default_factory=list)
    """Validated description tokens (direct and through upstream features)."""
    description_tokens: list[str] = field(default_factory=list)
    description_soft: list[str] = field(default_factory=list)
    """All candidate tokens before validation."""
    validation: bool = False
    """Whether the feature's activations over the description sequence sum to more than 0."""
    validation_soft: float = 0.0
    """Fraction of soft-description positions at which the feature is active."""
    reason: str | None = None
    """Why no description was produced."""

    def description(self, n: int = 8) -> str:
        if not self.description_tokens:
            return ""
        text = f"fires on tokens {quote_tokens(self.description_tokens[:n])}"
        if self.promoted:
            text += f"; promotes {quote_tokens([p['token'] for p in self.promoted[:n]])}"
        return text

    def to_json(self) -> dict:
        return asdict(self)


SCAN_BLOCK = 4096
"""Decoder rows per block when WeightLens sums upstream decoders."""

REFERENCE_VOCAB, REFERENCE_WINDOW, REFERENCE_THRESHOLD = 256_000, 1000, 5.5
"""The setting WeightLens' token threshold was chosen for (Gemma's vocabulary, top-1000 window)."""


@functools.lru_cache(maxsize=32)
def noise_max_z(n: int, k: int, draws: int = 128, seed: int = 0) -> float:
    """Median, over ``draws`` seeded standard-normal score vectors of length ``n``, of the largest
    z-score within their ``k`` largest values: how far pure noise's top entry stands out.

    Within a fixed window the tail of a larger vocabulary is flatter, so its top entry stands
    out more (about 5.5 for 256k values, 3.2 for 886 with a 1,000 window)."""
    gen = torch.Generator().manual_seed(seed)
    k = min(k, n)
    tops = torch.stack([torch.randn(n, generator=gen).topk(k).values for _ in range(draws)])
    z = (tops[:, 0] - tops.mean(1)) / tops.std(1)
    return float(z.median())


def token_threshold(n_tokens: int, window: int) -> float:
    """Token z threshold for a vocabulary of ``n_tokens`` scored in a top-``window`` window: the
    reference threshold scaled by how far noise's top entry stands out here relative to the
    reference setting, so a threshold is equally strict against noise on every vocabulary."""
    here = noise_max_z(n_tokens, window)
    return REFERENCE_THRESHOLD * here / noise_max_z(REFERENCE_VOCAB, REFERENCE_WINDOW)


def z_outliers(
    values: Float[Tensor, " n"], k: int, threshold: float, largest: bool = True
) -> tuple[Int[Tensor, " m"], Float[Tensor, " m"], Float[Tensor, " m"]]:
    """Indices, values and z-scores of the entries whose z-score, computed within the ``k``
    largest (or smallest) values, exceeds ``threshold`` (or is below ``-threshold``)."""
    keep_ids = torch.isfinite(values).nonzero().squeeze(1)  # masked (special) tokens are +-inf
    k = min(k, keep_ids.numel())
    top, pos = values[keep_ids].topk(k, largest=largest)
    idx = keep_ids[pos]
    std = top.std() if k > 1 else torch.tensor(0.0)
    if not torch.isfinite(std) or std <= 0:
        return idx[:0], top[:0], top[:0]
    z = (top - top.mean()) / std
    keep = z > threshold if largest else z < -threshold
    return idx[keep], top[keep], z[keep]


class WeightLens:
    """WeightLens over one model and transcoder; results are cached per feature."""

    def __init__(
        self,
        adapter: ModelAdapter,
        transcoder: CrossLayerTranscoder,
        cfg: WeightLensConfig | None = None,
    ):
        self.adapter, self.tc, self.cfg = adapter, transcoder, cfg or WeightLensConfig()
        self.W_E = adapter.W_E.detach().float()
        self.W_U = adapter.W_U.detach().float()
        self.special = set(getattr(adapter.tokenizer, "all_special_ids", []) or [])
        self._summed: OrderedDict[tuple[int, int], Tensor] = OrderedDict()
        self._cache: dict[FeatureKey, WeightLensResult] = {}
        cfg_hf = adapter.hf_model.config
        n_ctx = getattr(cfg_hf, "max_position_embeddings", None) or getattr(
            cfg_hf, "n_positions", 0
        )
        self.max_sequence = min(self.cfg.max_sequence, (n_ctx or 10**9) - 1)
        # the token z threshold in use: the configured one, or scaled with the vocabulary
        n_tokens = self.W_U.shape[1] - (len(self.special) if self.cfg.skip_special else 0)
        self.threshold_tokens = (
            self.cfg.threshold_tokens
            if self.cfg.threshold_tokens is not None
            else token_threshold(n_tokens, self.cfg.top_k_tokens)
        )

    # ------------------------------------------------------------------ weights
    def encoder(self, key: FeatureKey) -> Float[Tensor, " D"]:
        return self.tc.W_enc[key[0]][key[1]].detach().float()

    def output_direction(self, key: FeatureKey) -> Float[Tensor, " D"]:
        rows = self.tc.decoder_rows(key[0], torch.tensor([key[1]]))[0].detach().float()
        return rows.sum(0) if self.cfg.decoder == "sum" else rows[-1]

    def _writes_below(self, src: int, target: int) -> Iterator[Float[Tensor, "b D"]]:
        """Sum of layer ``src``'s decoders into MLP outputs of layers ``src .. target-1``, in
        blocks of :data:`SCAN_BLOCK` features (float32, on the transcoder's device).

        A sum is kept for later features while ``cfg.summed_cache_bytes`` holds it (least
        recently used first out); one that does not fit is read again block by block (lazily,
        off disk). Both give the same blocks, so results do not depend on the bound."""
        key = (src, target)
        if key in self._summed:
            self._summed.move_to_end(key)
            yield from self._summed[key].split(SCAN_BLOCK)
            return
        n = min(self.tc.n_out(src), target - src)
        size = self.tc.d_features * self.tc.d_model * 4
        keep = size <= self.cfg.summed_cache_bytes
        device = self.tc.W_enc[src].device
        if self.tc.lazy is not None:
            blocks = (rows.to(device) for rows in self.tc.lazy.scan(src, SCAN_BLOCK))
        else:
            blocks = iter(self.tc.W_dec[src].split(SCAN_BLOCK))
        parts = []
        for rows in blocks:
            part = rows[:, :n].detach().float().sum(1)
            if keep:
                parts.append(part)
            yield part
        if keep:
            self._summed[key] = torch.cat(parts)
            while sum(t.numel() * 4 for t in self._summed.values()) > self.cfg.summed_cache_bytes:
                self._summed.popitem(last=False)

    def virtual_weights(self, src: int, target: int, e: Float[Tensor, " D"]) -> Float[Tensor, " F"]:
        """``<sum_{src <= s < target} W_dec^{src->s}[i], e>`` for every feature ``i`` of ``src``
        (float32), computed block by block."""
        return torch.cat([blk @ e for blk in self._writes_below(src, target)])

    def _masked(self, scores: Tensor, fill: float) -> Tensor:
        if self.cfg.skip_special and self.special:
            scores = scores.clone()
            scores[list(self.special)] = fill
        return scores

    def _token_list(self, ids, vals, z) -> list[dict]:
        strs = self.adapter.to_str_tokens(ids)
        return [{"token": s, "id": int(i), "score": float(v), "z": float(zz)}
                for s, i, v, zz in zip(strs, ids.tolist(), vals, z, strict=True)]  # fmt: skip

    # ------------------------------------------------------------------ model runs
    def activations_on(self, key: FeatureKey, sequences: Sequence[Sequence[int]]) -> Tensor:
        """The feature's activation at every non-BOS position of ``[BOS, *seq]`` per sequence."""
        bos = self.adapter.bos_token_id
        cap = self.max_sequence
        sequences = [list(s)[:cap] for s in sequences]
        width = max(len(s) for s in sequences)
        toks = torch.tensor([[bos, *s, *([bos] * (width - len(s)))] for s in sequences])
        return feature_activations(self.adapter, self.tc, toks, [key])[:, 1:, 0]

    # ------------------------------------------------------------------ the method
    def analyse(self, key: FeatureKey, depth: int = 0) -> WeightLensResult:
        key = (int(key[0]), int(key[1]))
        if key in self._cache:
            return self._cache[key]
        cfg = self.cfg
        layer = key[0]
        res = WeightLensResult(layer, key[1])
        e = self.encoder(key)
        tau = self._masked(self.W_E @ e, -float("inf"))
        ids, vals, z = z_outliers(tau, cfg.top_k_tokens, self.threshold_tokens)
        res.input_tokens = self._token_list(ids, vals.tolist(), z.tolist())
        if ids.numel():
            acts = self.activations_on(key, [[int(i)] for i in ids])[:, 0]
            for entry, a in zip(res.input_tokens, acts.tolist(), strict=True):
                entry["activation"] = a
        o = self.output_direction(key) @ self.W_U
        for largest, target in ((True, res.promoted), (False, res.suppressed)):
            fill = -float("inf") if largest else float("inf")
            i2, v2, z2 = z_outliers(self._masked(o, fill), cfg.top_k_tokens,
                                    self.threshold_tokens, largest)  # fmt: skip
            target.extend(self._token_list(i2, v2.tolist(), z2.tolist()))
        res.upstream = self._upstream(key, e, tau)
        direct = [t["id"] for t in res.input_tokens if t.get("activation", 0.0) > 0]
        candidates: list[int] = []
        if depth < cfg.max_depth:
            for up in res.upstream[: cfg.max_upstream]:
                sub = self.analyse((up["layer"], up["feature"]), depth + 1)
                candidates.extend(sub.description_ids)
        candidates = [c for c in dict.fromkeys(candidates) if c not in direct]
        candidates = candidates[: self.max_sequence]
        extra: list[int] = []
        if candidates:
            acts = self.activations_on(key, [candidates])[0]
            extra = [c for c, a in zip(candidates, acts.tolist(), strict=True) if a > 0]
        res.description_ids = list(dict.fromkeys(direct + extra))[: self.max_sequence]
        soft = list(dict.fromkeys([t["id"] for t in res.input_tokens] + candidates))
        soft = soft[: self.max_sequence]
        res.description_tokens = self.adapter.to_str_tokens(res.description_ids)
        res.description_soft = self.adapter.to_str_tokens(soft)
        if res.description_ids:
            res.validation = bool(self.activations_on(key, [res.description_ids]).sum() > 0)
        if soft:
            res.validation_soft = float((self.activations_on(key, [soft])[0] > 0).float().mean())
        if not res.description_ids:
            res.reason = (
                "no validated input tokens: no token or upstream description activates the "
                "feature on its own (context-dependent; outside WeightLens' scope)"
            )
        self._cache[key] = res
        return res

    def _upstream(self, key: FeatureKey, e: Tensor, tau: Tensor) -> list[dict]:
        layer = key[0]
        found, total = [], float(tau[torch.isfinite(tau)].abs().sum())
        for src in range(layer):
            if not any(src + j < layer for j in range(self.tc.n_out(src))):
                continue
            c = self.virtual_weights(src, layer, e)
            total += float(c.abs().sum())
            ids, vals, z = z_outliers(c, self.cfg.top_k_features, self.cfg.threshold_features)
            rows = zip(ids.tolist(), vals.tolist(), z.tolist(), strict=True)
            found += [{"layer": src, "feature": i, "weight": v, "z": zz} for i, v, zz in rows]
        for f in found:
            f["relative"] = abs(f["weight"]) / total if total > 0 else 0.0
        return sorted(found, key=lambda f: -f["relative"])
