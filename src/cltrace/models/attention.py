"""One attention function for every family, with a hook on the attention pattern.

cltrace registers this function with transformers' attention interface under the name
``cltrace``; the adapter switches its model to it. It computes exactly what each family's eager
attention computes (scaling, Gemma-2's logit soft-capping, grouped-query heads, the additive
mask) and lets the adapter read or substitute the pattern, which is how attention is frozen in a
local replacement model.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

ATTN_IMPLEMENTATION = "cltrace"
_HOOKS_ATTR = "_cltrace_pattern_hooks"


def _repeat_kv(x: Float[Tensor, "b kv_heads pos d_head"], groups: int) -> Tensor:
    if groups == 1:
        return x
    b, h, p, d = x.shape
    return x[:, :, None].expand(b, h, groups, p, d).reshape(b, h * groups, p, d)


def pattern_hooks(module: torch.nn.Module) -> list:
    """The (mutable) list of pattern hooks attached to an attention module."""
    hooks = getattr(module, _HOOKS_ATTR, None)
    if hooks is None:
        hooks = []
        setattr(module, _HOOKS_ATTR, hooks)
    return hooks


def cltrace_attention(
    module: torch.nn.Module,
    query: Float[Tensor, "b heads q d_head"],
    key: Float[Tensor, "b kv_heads k d_head"],
    value: Float[Tensor, "b kv_heads k d_head"],
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    softcap: float | None = None,
    **kwargs,
) -> tuple[Float[Tensor, "b q heads d_head"], Float[Tensor, "b heads q k"]]:
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    groups = getattr(module, "num_key_value_groups", 1)
    key = _repeat_kv(key, groups)
    value = _repeat_kv(value, groups)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, :, : key.shape[-2]]
    # float32 at least (bf16/fp16 models), float64 for a float64 model (finite-difference checks)
    pattern = torch.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32))
    pattern = pattern.to(query.dtype)
    for hook in getattr(module, _HOOKS_ATTR, ()):
        out = hook(pattern)
        if out is not None:
            pattern = out
    if dropout and module.training:
        pattern = torch.nn.functional.dropout(pattern, p=dropout)
    out = torch.matmul(pattern, value).transpose(1, 2).contiguous()
    return out, pattern


_registered = False


def register() -> None:
    """Make ``attn_implementation="cltrace"`` known to transformers (idempotent)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

    AttentionInterface.register(ATTN_IMPLEMENTATION, cltrace_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTN_IMPLEMENTATION, eager_mask)
    _registered = True
