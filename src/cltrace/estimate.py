"""Peak memory of an attribution run, estimated before any weight is loaded.

The estimate adds what the run holds at its peak: the process itself (Python, torch and
transformers, measured on CPU), the model's weights (parameter count from its config, built on
the ``meta`` device so nothing is allocated), the transcoder (shapes from its files' headers,
or only the encoders and a bounded row cache with lazy decoders), and the attribution buffers,
which grow with the number of active feature occurrences: the edge rows (targets x sources,
float32), each source layer's activation-scaled decoders packed by position, and one batch of
gradients at every MLP output. The number of active occurrences is not known before the prompt
runs; it is ``l0`` active features per token and layer (the transcoder's, when its directory
records one, else a stated assumption).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from cltrace.errors import UsageError

PROCESS_BYTES = 380 * 2**20
"""Resident memory of a cltrace process with torch and transformers imported (CPU, measured)."""
PACKING_SLACK = 1.5
"""Packed decoders are padded to the busiest position of each layer: observed up to ~1.5x."""
DEFAULT_L0 = 64.0
"""Active features per token and layer assumed when the transcoder records none."""


@dataclass
class TranscoderShape:
    """What memory needs to know about a transcoder: its sizes and stored bytes."""

    n_layers: int
    d_model: int
    d_features: int
    cross_layer: bool
    l0: float | None = None
    """Mean active features per token and layer, where the directory records it."""

    def n_out_total(self) -> int:
        L = self.n_layers
        return L * (L + 1) // 2 if self.cross_layer else L


@dataclass
class MemoryEstimate:
    """The parts of an estimated peak (bytes) and what was assumed."""

    parts: dict[str, int]
    assumptions: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def to_dict(self) -> dict:
        return {
            "total_bytes": self.total,
            "total_gb": round(self.total / 2**30, 3),
            "parts_bytes": self.parts,
            "assumptions": self.assumptions,
        }


def _dtype_bytes(dtype: str) -> int:
    from cltrace.precision import parse_dtype

    return parse_dtype(dtype).itemsize


def model_parameters(name_or_path: str | None) -> tuple[int, int, int]:
    """``(n_parameters, n_layers, d_model)`` of a model from its config alone."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from cltrace.paths import BUNDLED_MODEL_DIR

    source = str(name_or_path) if name_or_path else str(BUNDLED_MODEL_DIR)
    cfg = AutoConfig.from_pretrained(source)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    n = sum(p.numel() for p in model.parameters())
    n_layers = int(getattr(cfg, "num_hidden_layers", None) or cfg.n_layer)
    return n, n_layers, int(cfg.hidden_size)


def transcoder_shape(directory: str | Path | None) -> TranscoderShape:
    """Sizes of a local transcoder directory (circuit-tracer layout), read from file headers."""
    from safetensors import safe_open

    from cltrace.paths import BUNDLED_CLT_DIR

    root = Path(directory) if directory else BUNDLED_CLT_DIR
    encoders = sorted(root.glob("W_enc_*.safetensors"))
    if not encoders:
        raise UsageError(
            f"{root} has no W_enc_<layer>.safetensors files; point --transcoder at a local "
            "transcoder directory in the circuit-tracer layout."
        )
    with safe_open(str(encoders[0]), framework="pt") as f:
        key = next(k for k in f.keys() if k.startswith("W_enc"))
        shape = f.get_slice(key).get_shape()
    d_features, d_model = (shape[1], shape[0]) if shape[0] < shape[1] else (shape[0], shape[1])
    cross = any(root.glob("W_dec_*.safetensors"))
    stats = root / "train_stats.json"
    l0 = None
    if stats.is_file():
        recorded = json.loads(stats.read_text())
        l0 = recorded.get("mean_l0", recorded.get("final_l0"))
    return TranscoderShape(len(encoders), int(d_model), int(d_features), cross, l0)


def estimate_attribution(
    n_params: int,
    tc: TranscoderShape,
    n_tokens: int,
    dtype: str = "float32",
    l0: float | None = None,
    max_feature_nodes: int | None = None,
    batch_size: int = 64,
    n_logits: int = 10,
    lazy_decoders: bool = False,
    cache_bytes: int = 512 * 2**20,
) -> MemoryEstimate:
    """Peak memory of ``cltrace attribute`` on an ``n_tokens`` prompt (see the module)."""
    assumptions = []
    if l0 is None:
        l0 = tc.l0 if tc.l0 is not None else DEFAULT_L0
        origin = "recorded by the transcoder" if tc.l0 is not None else "assumed"
        assumptions.append(f"{l0:g} active features per token and layer ({origin}; --l0 sets it)")
    L, D, F, T = tc.n_layers, tc.d_model, tc.d_features, n_tokens
    wb = _dtype_bytes(dtype)
    n_active = int(l0 * L * T)
    n_cols = n_active + L * T + T
    encoders = L * F * D * wb
    decoders = F * D * tc.n_out_total() * wb
    parts = {
        "process": PROCESS_BYTES,
        "model_weights": n_params * wb,
        "transcoder": encoders + (min(decoders, cache_bytes) if lazy_decoders else decoders),
    }
    if max_feature_nodes is None or max_feature_nodes >= n_active:
        parts["edge_rows"] = (n_active + n_logits) * n_cols * 4
    else:
        m = max_feature_nodes
        kept_cols = m + L * T + T
        # the selection's rows, then the kept columns: one copy, reordered, concatenated
        parts["edge_rows"] = m * n_cols * 4 + 3 * (m + n_logits) * kept_cols * 4
    per_layer_out = tc.n_out_total() / L
    parts["packed_decoders"] = int(n_active * per_layer_out * D * 4 * PACKING_SLACK)
    parts["gradient_batch"] = batch_size * 4 * ((L + 4) * T * D + 2 * n_cols)
    parts["activations"] = 8 * L * T * D * 4
    return MemoryEstimate({k: int(v) for k, v in parts.items()}, assumptions)
