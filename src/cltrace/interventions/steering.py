"""Steering the real model with transcoder features, and steered generation (docs/METHODS.md §3).

Steering a CLT feature of layer ``l`` by ``alpha`` adds ``alpha * W_dec^{l -> s}[f]`` to the MLP
output of each layer ``s = l .. L-1``: each decoder once, at its own layer, which is what the
feature itself would write. Adding the feature's summed decoders (its whole cross-layer write)
at every layer would count the later writes again at each layer (the naive double counting
noted in docs/METHODS.md §3). Everything else is the real model: real MLPs, live attention and
norms.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from cltrace.errors import CltraceError
from cltrace.interventions.patching import PatchResult
from cltrace.interventions.spec import prompt_tokens
from cltrace.models.adapter import Hook, ModelAdapter
from cltrace.replacement import feature_writes
from cltrace.transcoders import CrossLayerTranscoder, SparseActivations


@torch.no_grad()
def steering_vectors(
    transcoder: CrossLayerTranscoder,
    features: Sequence[tuple[int, int]],
    alpha: float | Sequence[float],
) -> Float[Tensor, "n_layers d_model"]:
    """Per layer ``s``: ``sum_i alpha_i W_dec^{l_i -> s}[f_i]`` over features ``(l_i, f_i)``."""
    L, F = transcoder.n_layers, transcoder.d_features
    alphas = list(alpha) if isinstance(alpha, Sequence) else [float(alpha)] * len(features)
    if len(alphas) != len(features):
        raise CltraceError(
            f"{len(alphas)} steering strengths were given for {len(features)} features; "
            "pass one alpha, or one per feature."
        )
    for layer, feat in features:
        if not (0 <= layer < L and 0 <= feat < F):
            raise CltraceError(
                f"steering feature (layer {layer}, feature {feat}) does not exist; the "
                f"transcoder has layers 0..{L - 1} with features 0..{F - 1}."
            )
    ids = torch.tensor(list(features), dtype=torch.long).reshape(-1, 2)
    # one placeholder position: the vectors do not depend on where they are added
    occ = SparseActivations(
        ids[:, 0], torch.zeros(len(ids), dtype=torch.long), ids[:, 1],
        torch.tensor(alphas, dtype=torch.float32), (L, 1, F),
    )  # fmt: skip
    return feature_writes(transcoder, occ)[:, 0]


def _position_mask(positions: Sequence[int] | None, n_prompt: int) -> Tensor | None:
    """Which prompt positions are steered (None: every position, generated ones included)."""
    if positions is None:
        return None
    mask = torch.zeros(n_prompt, dtype=torch.bool)
    for p in positions:
        if not -n_prompt <= p < n_prompt:
            raise CltraceError(
                f"steering position {p} is outside the prompt's {n_prompt} tokens; pass "
                "positions of the prompt (negative counts from its end)."
            )
        mask[p] = True
    return mask


def steering_hooks(
    vectors: Float[Tensor, "n_layers d_model"], mask: Tensor | None
) -> dict[str, Hook]:
    """Hooks adding ``vectors[s]`` to ``mlp_out.s`` at the masked positions (any length)."""
    hooks: dict[str, Hook] = {}
    for layer in range(vectors.shape[0]):
        v = vectors[layer]
        if not v.any():
            continue

        def add(t: Tensor, _v: Tensor = v) -> Tensor:
            add_v = _v.to(device=t.device, dtype=t.dtype)
            if mask is None:
                return t + add_v
            m = torch.zeros(t.shape[1], dtype=t.dtype, device=t.device)
            n = min(t.shape[1], mask.numel())
            m[:n] = mask[:n].to(m)
            return t + m[:, None] * add_v

        hooks[f"mlp_out.{layer}"] = add
    return hooks


@torch.no_grad()
def steer(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    prompt: str | Tensor,
    features: Sequence[tuple[int, int]],
    alpha: float | Sequence[float],
    positions: Sequence[int] | None = None,
) -> PatchResult:
    """Run the real model with features ``(layer, feature)`` added at strength ``alpha``.

    Each feature adds ``alpha * W_dec^{l -> s}`` to MLP output ``s`` for every layer it decodes
    to (``l .. L-1`` for a CLT, ``l`` for a PLT), at ``positions`` of the prompt (default: all).
    Returns logits ``[pos, d_vocab]`` and the residual stream after every block.
    """
    tokens = prompt_tokens(adapter, prompt)
    hooks = steering_hooks(
        steering_vectors(transcoder, features, alpha), _position_mask(positions, tokens.shape[1])
    )
    sites = adapter.sites("resid_post")
    clean = adapter(tokens)[0].float()
    with adapter.hooks(hooks), adapter.cache(sites) as c:
        logits = adapter(tokens)[0].float()
    return PatchResult(logits, clean, torch.stack([c[s][0] for s in sites]).float())


@torch.no_grad()
def steered_generate(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    prompt: str | Tensor,
    features: Sequence[tuple[int, int]],
    alpha: float | Sequence[float],
    n_tokens: int = 20,
    positions: Sequence[int] | None = None,
    temperature: float = 0.0,
    seed: int = 0,
) -> str:
    """Generate ``n_tokens`` continuation tokens with the steering of :func:`steer` on each step.

    Every step reruns the whole sequence (no key-value cache), so with ``positions=None`` the
    generated tokens are steered too; given ``positions`` refer to the prompt. Greedy when
    ``temperature == 0``, else sampled from ``softmax(logits / temperature)`` with ``seed``.
    Returns the decoded continuation (without the prompt).
    """
    if n_tokens < 0 or temperature < 0:
        raise CltraceError(
            f"n_tokens={n_tokens} and temperature={temperature} must be >= 0; pass "
            "non-negative values."
        )
    tokens = prompt_tokens(adapter, prompt)
    hooks = steering_hooks(
        steering_vectors(transcoder, features, alpha), _position_mask(positions, tokens.shape[1])
    )
    gen = torch.Generator().manual_seed(seed)
    new: list[int] = []
    with adapter.hooks(hooks):
        for _ in range(n_tokens):
            logits = adapter(tokens)[0, -1].float().cpu()
            nxt = _next_token(logits, temperature, gen)
            new.append(nxt)
            step: Int[Tensor, "1 1"] = torch.tensor([[nxt]], device=tokens.device)
            tokens = torch.cat([tokens, step], dim=1)
    return adapter.tokenizer.decode(new)


def _next_token(logits: Float[Tensor, " d_vocab"], temperature: float, gen) -> int:
    if temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=gen))
