"""Where each supported architecture keeps its pieces: the one table of module paths.

Everything architecture-specific in cltrace is a field of :class:`Family`; the adapter reads
these fields and has a single code path for all families.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cltrace.errors import CltraceError


@dataclass(frozen=True)
class Family:
    """Module layout of one architecture family (paths are dotted attribute paths)."""

    name: str
    """Family name as cltrace reports it."""
    model_types: tuple[str, ...]
    """HF ``config.model_type`` values that belong to this family."""
    blocks: str
    """Path from the CausalLM module to the list of transformer blocks."""
    embed: str
    """Path to the token embedding module (its output is what enters block 0, bar positions)."""
    final_norm: str
    """Path to the norm applied before the unembedding."""
    attn: str
    """Attention module inside a block."""
    mlp: str
    """MLP module inside a block; its forward input is the ``mlp_in`` site."""
    attn_write: str
    """Module inside a block whose output is what attention adds to the residual stream."""
    mlp_write: str
    """Module inside a block whose output is what the MLP adds to the residual stream."""
    norms: tuple[str, ...]
    """Every norm inside a block (their scales are what a local replacement model freezes)."""
    norm_kind: str
    """``layernorm`` (mean-centred, with bias), ``rmsnorm`` (x/rms * w) or ``gemma_rmsnorm``
    (x/rms * (1 + w))."""
    attn_in_norm: str
    """The norm attention reads the residual stream through (inside a block)."""
    mlp_in_norm: str
    """The norm whose output is the ``mlp_in`` site."""
    attn_out_norm: str | None
    """A norm on attention's output before it joins the residual stream (Gemma-2), or None."""
    ov_kind: str
    """Where the value and output projections live: ``fused_conv1d`` (GPT-2: ``c_attn`` holds
    q, k, v as a Conv1D, ``c_proj`` is a Conv1D) or ``proj`` (``v_proj``/``o_proj`` Linears)."""
    mlp_kind: str
    """``gelu_mlp``: ``c_proj(act(c_fc(x)))`` (GPT-2; ``act`` is the config's elementwise
    activation); ``gated``: ``down_proj(act_fn(gate_proj(x)) * up_proj(x))`` (Llama, Gemma-2,
    Qwen). Read by :mod:`cltrace.models.relp`, which rewrites the MLP's backward pass."""


_LLAMA = Family(
    name="llama",
    model_types=("llama",),
    blocks="model.layers",
    embed="model.embed_tokens",
    final_norm="model.norm",
    attn="self_attn",
    mlp="mlp",
    attn_write="self_attn",
    mlp_write="mlp",
    norms=("input_layernorm", "post_attention_layernorm"),
    norm_kind="rmsnorm",
    attn_in_norm="input_layernorm",
    mlp_in_norm="post_attention_layernorm",
    attn_out_norm=None,
    ov_kind="proj",
    mlp_kind="gated",
)

FAMILIES: tuple[Family, ...] = (
    Family(
        name="gpt2",
        model_types=("gpt2",),
        blocks="transformer.h",
        embed="transformer.wte",
        final_norm="transformer.ln_f",
        attn="attn",
        mlp="mlp",
        attn_write="attn",
        mlp_write="mlp",
        norms=("ln_1", "ln_2"),
        norm_kind="layernorm",
        attn_in_norm="ln_1",
        mlp_in_norm="ln_2",
        attn_out_norm=None,
        ov_kind="fused_conv1d",
        mlp_kind="gelu_mlp",
    ),
    _LLAMA,
    replace(
        _LLAMA,
        name="gemma2",
        model_types=("gemma2",),
        # Gemma-2 normalises each sublayer's output before adding it to the residual stream;
        # the transcoder's output site is after that post-norm.
        attn_write="post_attention_layernorm",
        mlp_write="post_feedforward_layernorm",
        norms=(
            "input_layernorm",
            "post_attention_layernorm",
            "pre_feedforward_layernorm",
            "post_feedforward_layernorm",
        ),
        norm_kind="gemma_rmsnorm",
        mlp_in_norm="pre_feedforward_layernorm",
        attn_out_norm="post_attention_layernorm",
    ),
    # Qwen2 and Qwen3 lay out their blocks like Llama (Qwen3's extra q/k norms sit inside
    # attention, before the pattern, so cltrace never needs to touch them).
    replace(_LLAMA, name="qwen2", model_types=("qwen2",)),
    replace(_LLAMA, name="qwen3", model_types=("qwen3",)),
)

SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(t for f in FAMILIES for t in f.model_types)


def family_for(model_type: str, source: str = "the model") -> Family:
    """The family of an HF ``model_type``; a clear error for anything unsupported."""
    for fam in FAMILIES:
        if model_type in fam.model_types:
            return fam
    raise CltraceError(
        f"{source} has architecture '{model_type}', which cltrace does not support; "
        f"use one of: {', '.join(SUPPORTED_MODEL_TYPES)}."
    )


def get_path(root, path: str):
    """Follow a dotted attribute path (``model.layers``) from ``root``."""
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj
