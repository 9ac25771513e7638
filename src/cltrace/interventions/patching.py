"""Constrained and iterative patching of feature interventions (docs/METHODS.md §3).

Both run one prompt with feature interventions over a layer range ``[l1, l2]`` and then the
ordinary forward pass (real MLPs, live attention and norms) from layer ``l2 + 1`` on:

* **constrained**: inside the range no MLP or transcoder output is recomputed; each MLP output
  is its clean value plus the intervention's change ``(new - old) * W_dec^{l -> s}``. Attention
  patterns and norm scales are frozen at their clean values, so the range is the local
  replacement model and the effect is exactly linear there (with the whole model in the range,
  the effect on a de-meaned pre-softcap logit is the attribution graph's edge).
* **iterative** (reconstructed; the paper's appendix is not available): layer by layer, the
  transcoder re-encodes the live MLP input, the intervened features are clamped to their new
  values, other features respond, and the MLP output is the reconstruction from the live
  activations plus the clean error node of that (layer, position).

A transcoder's skip term, where it has one, is a linear map of the MLP input and part of the
local replacement model as in attribution (:mod:`cltrace.graph.attribute`), so inside the range
it is evaluated on the live MLP input.

A frozen range that does not reach the last layer runs as two passes: the frozen model up to
the end of the range, then the real model with the residual stream after the range substituted
(:func:`cltrace.models.freeze.frozen` freezes the whole model, and the layers before the range
see clean inputs, where frozen and live values agree).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from cltrace.errors import CltraceError
from cltrace.interventions.spec import (
    Intervention,
    Resolved,
    clean_state,
    intervention_writes,
    layer_range,
    prompt_tokens,
    resolve,
)
from cltrace.models.adapter import Hook, ModelAdapter
from cltrace.models.freeze import frozen
from cltrace.replacement import ReplacementState
from cltrace.transcoders import CrossLayerTranscoder, SparseActivations


@dataclass
class PatchResult:
    """Outcome of a patched run of one prompt."""

    logits: Float[Tensor, "pos d_vocab"]
    clean_logits: Float[Tensor, "pos d_vocab"]
    resid: Float[Tensor, "n_layers pos d_model"]
    """The residual stream after each block (``resid_post``) in the patched run."""
    activations: SparseActivations | None = None
    """Iterative patching only: the live feature activations (clean outside the range)."""

    def logit_change(self) -> Float[Tensor, "pos d_vocab"]:
        return self.logits - self.clean_logits


def _final_norm_frozen(
    adapter: ModelAdapter, end: int, freeze: bool, freeze_final_norm: bool | None
) -> bool:
    whole = freeze and end == adapter.n_layers - 1
    if freeze_final_norm is None:
        return whole
    if freeze_final_norm and not whole:
        raise CltraceError(
            f"freeze_final_norm=True needs a frozen range that ends at the last layer "
            f"({adapter.n_layers - 1}), but it ends at layer {end}; extend the range or leave "
            "freeze_final_norm unset."
        )
    return bool(freeze_final_norm)


@torch.no_grad()
def run_patched(
    adapter: ModelAdapter,
    state: ReplacementState,
    mlp_hooks: dict[str, Hook],
    end: int,
    freeze: bool,
    freeze_final_norm: bool,
) -> tuple[Float[Tensor, "pos d_vocab"], Float[Tensor, "n_layers pos d_model"]]:
    """Logits and ``resid_post`` of every layer with ``mlp_hooks`` on layers ``<= end``.

    With ``freeze``, blocks up to ``end`` run with clean attention patterns and norm scales
    (and the final norm too when ``freeze_final_norm``); later blocks always run live.
    """
    sites = adapter.sites("resid_post")
    tokens = state.tokens
    if not freeze:
        with adapter.hooks(mlp_hooks), adapter.cache(sites) as c:
            logits = adapter(tokens)[0]
        return logits.float(), torch.stack([c[s][0] for s in sites]).float()
    inside = sites[: end + 1]
    with frozen(adapter, state.frozen), adapter.hooks(mlp_hooks), adapter.cache(inside) as c:
        logits = adapter(tokens)[0]
    resid = [c[s][0] for s in inside]
    if not freeze_final_norm:
        after = sites[end + 1 :]
        with adapter.patch(sites[end], replace=resid[-1][None]), adapter.cache(after) as c2:
            logits = adapter(tokens)[0]
        resid += [c2[s][0] for s in after]
    return logits.float(), torch.stack(resid).float()


def _recorder(store: dict[int, Tensor], layer: int) -> Hook:
    def fn(t: Tensor) -> None:
        store[layer] = t

    return fn


def constrained_hooks(
    transcoder: CrossLayerTranscoder,
    state: ReplacementState,
    delta: Float[Tensor, "n_layers pos d_model"],
    start: int,
    end: int,
) -> dict[str, Hook]:
    """MLP outputs up to ``end``: clean, plus ``delta`` and the live skip change from ``start``."""
    live_in: dict[int, Tensor] = {}
    hooks: dict[str, Hook] = {}
    for layer in range(end + 1):

        def write(t: Tensor, _l: int = layer) -> Tensor:
            out = state.mlp_out[_l]
            if _l >= start:
                live_skip = transcoder.skip(_l, live_in[_l][0]).float() - state.skip_out[_l]
                out = out + delta[_l] + live_skip
            return out.to(t.dtype)[None].expand_as(t)

        hooks[f"{state.input_kind}.{layer}"] = _recorder(live_in, layer)
        hooks[f"mlp_out.{layer}"] = write
    return hooks


@torch.no_grad()
def constrained_from_state(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    state: ReplacementState,
    resolved: Resolved,
    layers: tuple[int, int] | None = None,
    freeze_final_norm: bool | None = None,
) -> PatchResult:
    """:func:`constrained_patch` on a prepared clean run (see :func:`spec.clean_state`)."""
    start, end = layer_range(adapter, resolved, layers)
    final = _final_norm_frozen(adapter, end, True, freeze_final_norm)
    delta = intervention_writes(transcoder, resolved).to(state.mlp_out.device)
    hooks = constrained_hooks(transcoder, state, delta, start, end)
    logits, resid = run_patched(adapter, state, hooks, end, True, final)
    return PatchResult(logits, state.logits, resid)


def constrained_patch(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    prompt: str | Tensor,
    interventions: Sequence[Intervention],
    layers: tuple[int, int] | None = None,
    freeze_final_norm: bool | None = None,
) -> PatchResult:
    """Constrained patching (docs/METHODS.md §3): the intervention is the only change in range.

    ``prompt`` is text (BOS prepended) or token ids ``[pos]``. ``layers = (l1, l2)`` (default:
    the first intervened layer to the last layer) is where each intervened feature's decoders
    carry ``(new - old) * W_dec^{l -> s}`` into MLP output ``s`` on top of its clean value, with
    attention patterns and norm scales frozen; no MLP or feature responds there. From
    ``l2 + 1`` the real model runs. The final norm is frozen when the range ends at the last
    layer (then the run is the local replacement model), unless ``freeze_final_norm=False``.
    Returns logits ``[pos, d_vocab]`` and the residual stream after every block.
    """
    tokens = prompt_tokens(adapter, prompt)
    state = clean_state(adapter, transcoder, tokens)
    resolved = resolve(transcoder, state, interventions)
    return constrained_from_state(adapter, transcoder, state, resolved, layers, freeze_final_norm)


class _IterativeLayers:
    """MLP outputs rebuilt from live feature activations, layer by layer, inside the range."""

    def __init__(
        self,
        transcoder: CrossLayerTranscoder,
        state: ReplacementState,
        resolved: Resolved,
        start: int,
        end: int,
    ):
        self.tc, self.state, self.new = transcoder, state, resolved.new
        self.start, self.end = start, end
        # Layers before the range keep their clean activations; their clamped features still
        # write the new value into the range through their later decoders.
        self.acts = [
            self._clamp(layer, transcoder.encode(layer, state.mlp_in[layer]).float())
            for layer in range(transcoder.n_layers)
        ]
        self.live_in: dict[int, Tensor] = {}

    def _clamp(self, layer: int, acts: Float[Tensor, "pos F"]) -> Float[Tensor, "pos F"]:
        m = self.new.layer == layer
        acts[self.new.position[m], self.new.feature[m]] = self.new.value[m].to(acts)
        return acts

    def _write(self, layer: int) -> Hook:
        def fn(t: Tensor) -> Tensor:
            x = self.live_in[layer][0].float()
            self.acts[layer] = self._clamp(layer, self.tc.encode(layer, x).float())
            out = self.tc.decode(self.acts, layer).float() + self.tc.skip(layer, x).float()
            return (out + self.state.errors[layer]).to(t.dtype)[None].expand_as(t)

        return fn

    def hooks(self) -> dict[str, Hook]:
        hooks: dict[str, Hook] = {}
        for layer in range(self.start, self.end + 1):
            hooks[f"{self.state.input_kind}.{layer}"] = _recorder(self.live_in, layer)
            hooks[f"mlp_out.{layer}"] = self._write(layer)
        return hooks

    def sparse(self) -> SparseActivations:
        dense = torch.stack(self.acts)
        idx = dense.nonzero(as_tuple=True)
        return SparseActivations(idx[0], idx[1], idx[2], dense[idx], tuple(dense.shape))


@torch.no_grad()
def iterative_from_state(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    state: ReplacementState,
    resolved: Resolved,
    layers: tuple[int, int] | None = None,
    freeze_attention: bool = False,
    freeze_final_norm: bool | None = None,
) -> PatchResult:
    """:func:`iterative_patch` on a prepared clean run (see :func:`spec.clean_state`)."""
    start, end = layer_range(adapter, resolved, layers)
    final = _final_norm_frozen(adapter, end, freeze_attention, freeze_final_norm)
    rebuilt = _IterativeLayers(transcoder, state, resolved, start, end)
    logits, resid = run_patched(adapter, state, rebuilt.hooks(), end, freeze_attention, final)
    return PatchResult(logits, state.logits, resid, rebuilt.sparse())


def iterative_patch(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    prompt: str | Tensor,
    interventions: Sequence[Intervention],
    layers: tuple[int, int] | None = None,
    freeze_attention: bool = False,
    freeze_final_norm: bool | None = None,
) -> PatchResult:
    """Iterative patching (docs/METHODS.md §3, reconstructed): features respond inside the range.

    For each layer ``s`` of ``layers = (l1, l2)`` (default: first intervened layer to the last
    layer) the transcoder encodes the live MLP input ``x_s`` ``[pos, d_model]``, the intervened
    features of layer ``s`` are clamped to their new values, and the MLP output becomes
    ``decode(activations, s) + skip(x_s) + e_s`` with ``e_s`` the clean error, so second-order
    effects propagate. Without interventions this reproduces the clean run. With
    ``freeze_attention`` the range also holds attention patterns and norm scales at their clean
    values (and the final norm, when the range ends at the last layer). Returns logits
    ``[pos, d_vocab]``, the residual stream after every block and the live activations.
    """
    tokens = prompt_tokens(adapter, prompt)
    state = clean_state(adapter, transcoder, tokens)
    resolved = resolve(transcoder, state, interventions)
    return iterative_from_state(
        adapter, transcoder, state, resolved, layers, freeze_attention, freeze_final_norm
    )
