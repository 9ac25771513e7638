"""Freezing attention patterns and norm scales: what makes a model linear in its residual stream.

A local replacement model (and every direct-path gradient cltrace takes) runs the real network
with each attention pattern and each norm's ``1/scale`` held at the values of a reference forward
pass. With those frozen, the residual stream's path to any later site is affine, so attributions
are exact sums.

:func:`record_frozen` takes the values from one forward pass; :func:`frozen` replays them (for a
batch of any size: recorded values of batch 1 broadcast).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

from cltrace.models import attention
from cltrace.models.adapter import ModelAdapter
from cltrace.models.families import get_path
from cltrace.models.offload import param


def _eps(norm: torch.nn.Module) -> float:
    for name in ("eps", "variance_epsilon"):
        if hasattr(norm, name):
            return float(getattr(norm, name))
    raise AttributeError(f"{type(norm).__name__} has no epsilon attribute")


def inverse_scale(kind: str, norm: torch.nn.Module, x: Tensor) -> Float[Tensor, "... 1"]:
    """``1/scale`` of a norm at input ``x`` (float32): 1/std for LayerNorm, 1/rms for RMSNorms."""
    xf = x.float()
    if kind == "layernorm":
        var = xf.var(-1, keepdim=True, unbiased=False)
        return torch.rsqrt(var + _eps(norm))
    return torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + _eps(norm))


def apply_norm(kind: str, norm: torch.nn.Module, x: Tensor, inv: Tensor) -> Tensor:
    """The norm's output with its ``1/scale`` given (linear in ``x`` when ``inv`` is constant)."""
    xf = x.float()
    # a forward hook runs outside accelerate's loading of an offloaded norm: param() reads it
    weight = param(norm).to(x.device)  # type: ignore[union-attr]
    if kind == "layernorm":
        bias = param(norm, "bias")
        y = (xf - xf.mean(-1, keepdim=True)) * inv
        y = y * weight.float() + (bias.to(x.device).float() if bias is not None else 0.0)
        return y.to(x.dtype)
    if kind == "gemma_rmsnorm":
        return (xf * inv * (1.0 + weight.float())).to(x.dtype)
    return weight * (xf * inv).to(x.dtype)


@dataclass
class FrozenState:
    """Attention patterns and norm inverse scales of one forward pass (batch 1)."""

    tokens: Int[Tensor, "1 pos"]
    patterns: list[Float[Tensor, "1 head pos pos"]] = field(default_factory=list)
    """Per layer."""
    inv_scales: dict[str, Float[Tensor, "1 pos 1"]] = field(default_factory=dict)
    """Keyed by ``"<layer>.<norm attribute>"`` and ``"final"``."""
    logits: Float[Tensor, "1 pos d_vocab"] | None = None
    """Logits of the recorded pass."""
    final_out: Float[Tensor, "1 pos d_model"] | None = None
    """Output of the final norm (what the unembedding reads) on the recorded pass."""
    cache: dict[str, Tensor] = field(default_factory=dict)
    """Any extra sites asked for when recording (so callers need no second forward)."""


def _norm_modules(adapter: ModelAdapter) -> dict[str, torch.nn.Module]:
    mods = {
        f"{layer}.{name}": mod
        for layer in range(adapter.n_layers)
        for name, mod in adapter.norm_modules(layer).items()
    }
    mods["final"] = adapter.final_norm()
    return mods


@torch.no_grad()
def record_frozen(
    adapter: ModelAdapter, tokens: Int[Tensor, "1 pos"], sites: tuple[str, ...] | list[str] = ()
) -> FrozenState:
    """Run ``tokens`` (batch 1) through the real model and keep what a frozen run replays.

    ``sites`` are cached from the same pass (``state.cache``), with the logits and the final
    norm's output, so one forward serves a caller that needs both.
    """
    if tokens.ndim == 1:
        tokens = tokens[None]
    state = FrozenState(tokens=tokens)
    kind = adapter.family.norm_kind
    handles = []
    for key, mod in _norm_modules(adapter).items():

        def hook(m, args, _key=key):
            state.inv_scales[_key] = inverse_scale(kind, m, args[0])

        handles.append(mod.register_forward_pre_hook(hook))

    def keep_final(_m, _args, out):
        state.final_out = out.detach().to(adapter.device)  # where a device map puts the norm

    handles.append(adapter.final_norm().register_forward_hook(keep_final))
    patterns = adapter.sites("attn_pattern")
    try:
        with adapter.cache([*patterns, *sites]) as c:
            state.logits = adapter(tokens).detach()
    finally:
        for h in handles:
            h.remove()
    state.patterns = [c[p] for p in patterns]
    state.cache = {s: c[s] for s in sites}
    return state


@contextlib.contextmanager
def frozen(adapter: ModelAdapter, state: FrozenState) -> Iterator[None]:
    """Forward passes inside use ``state``'s patterns and norm scales (as constants)."""
    kind = adapter.family.norm_kind
    handles = []
    for key, mod in _norm_modules(adapter).items():
        inv = state.inv_scales[key]

        def hook(m, args, _out, _inv=inv):
            return apply_norm(kind, m, args[0], _inv)

        # prepend: any other hook on the norm must see the frozen output
        handles.append(mod.register_forward_hook(hook, prepend=True))
    removers = []
    for layer, pattern in enumerate(state.patterns):
        hooks = attention.pattern_hooks(get_path(adapter.block(layer), adapter.family.attn))

        def pat_hook(p, _pat=pattern):
            return _pat.to(p.device, p.dtype).expand_as(p)

        hooks.insert(0, pat_hook)  # first, so other pattern hooks see the frozen pattern
        removers.append(lambda h=hooks, f=pat_hook: h.remove(f))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for r in removers:
            r()


@contextlib.contextmanager
def detached_scales(adapter: ModelAdapter) -> Iterator[None]:
    """Forward values unchanged, but no gradient through attention patterns or norm scales.

    The gradient of anything downstream then follows the same direct linear paths as in a
    frozen run, without a separate recording pass (one forward instead of two).
    """
    kind = adapter.family.norm_kind
    handles = []
    for mod in _norm_modules(adapter).values():

        def hook(m, args, _out):
            x = args[0]
            return apply_norm(kind, m, x, inverse_scale(kind, m, x).detach())

        handles.append(mod.register_forward_hook(hook, prepend=True))
    try:
        with adapter.stop_gradient(adapter.sites("attn_pattern")):
            yield
    finally:
        for h in handles:
            h.remove()
