"""Mechanistic faithfulness of the local replacement model (docs/METHODS.md §3).

The same feature perturbation is applied to

* the **local replacement model** (docs/METHODS.md §2): attention patterns and norm scales frozen,
  MLPs replaced by the transcoder plus the clean error nodes. By default its features respond to the
  perturbation (re-encoded layer by layer, as in iterative patching); with
  ``recompute_features=False`` nothing responds and the model is linear (constrained patching);
* the **real model**: each intervened feature's change ``(new - old) * W_dec^{l -> s}`` is added
  to MLP output ``s`` for ``s >= l``, and real MLPs, attention and norms respond.

The change of the residual stream ``k`` layers after the perturbed layer is compared by cosine
and ``NMSE = |d_local - d_real|^2 / |d_real|^2`` (docs/METHODS.md §3), over all
positions at once. At ``k = 0`` both changes are the perturbation itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from cltrace.errors import CltraceError
from cltrace.interventions.patching import constrained_from_state, iterative_from_state
from cltrace.interventions.spec import (
    Intervention,
    clean_state,
    intervention_writes,
    prompt_tokens,
    resolve,
)
from cltrace.models.adapter import Hook, ModelAdapter
from cltrace.transcoders import CrossLayerTranscoder


@dataclass
class Faithfulness:
    """Local-vs-real agreement after a perturbation in layer ``layer``; index ``k`` of each
    curve is the residual stream after block ``layer + k``."""

    layer: int
    cosine: Float[Tensor, " k"]
    nmse: Float[Tensor, " k"]
    """NaN where the real change is zero."""
    delta_local: Float[Tensor, "k pos d_model"]
    delta_real: Float[Tensor, "k pos d_model"]


@torch.no_grad()
def _resid_post(adapter: ModelAdapter, tokens: Tensor, hooks: dict[str, Hook]) -> Tensor:
    sites = adapter.sites("resid_post")
    with adapter.hooks(hooks), adapter.cache(sites) as c:
        adapter(tokens)
    return torch.stack([c[s][0] for s in sites]).float()


def compare_changes(
    delta_local: Float[Tensor, "k pos d_model"], delta_real: Float[Tensor, "k pos d_model"]
) -> tuple[Float[Tensor, " k"], Float[Tensor, " k"]]:
    """Cosine and NMSE of two residual changes, per leading index (flattened over the rest)."""
    a, b = delta_local.flatten(1).double(), delta_real.flatten(1).double()
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp(min=1e-30)
    real_sq = b.pow(2).sum(1)
    nmse = (a - b).pow(2).sum(1) / real_sq
    nmse = torch.where(real_sq > 0, nmse, torch.full_like(nmse, float("nan")))
    return cos.float(), nmse.float()


@torch.no_grad()
def mechanistic_faithfulness(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    prompt: str | Tensor,
    interventions: Sequence[Intervention],
    recompute_features: bool = True,
) -> Faithfulness:
    """Compare a feature perturbation's effect in the local replacement and the real model.

    All ``interventions`` must be in one layer ``l``. Returns, for ``k = 0 .. L-1-l``, the
    cosine and NMSE between the local and real changes of ``resid_post`` of layer ``l + k``
    (``[pos, d_model]`` each, compared over all positions).
    """
    tokens = prompt_tokens(adapter, prompt)
    state = clean_state(adapter, transcoder, tokens)
    resolved = resolve(transcoder, state, interventions)
    layers = resolved.new.layer.unique().tolist()
    if len(layers) != 1:
        raise CltraceError(
            f"mechanistic faithfulness perturbs one layer, but the interventions are in layers "
            f"{layers}; pass interventions of a single layer."
        )
    layer, L = int(layers[0]), adapter.n_layers
    if recompute_features:
        local = iterative_from_state(
            adapter, transcoder, state, resolved, (layer, L - 1), freeze_attention=True
        )
    else:
        local = constrained_from_state(adapter, transcoder, state, resolved, (layer, L - 1))
    delta = intervention_writes(transcoder, resolved)
    hooks = {f"mlp_out.{s}": (lambda t, d=delta[s]: t + d.to(t)[None]) for s in range(layer, L)}
    clean = _resid_post(adapter, tokens, {})
    real = _resid_post(adapter, tokens, hooks)
    d_local = local.resid[layer:] - clean[layer:]
    d_real = real[layer:] - clean[layer:]
    cos, nmse = compare_changes(d_local, d_real)
    return Faithfulness(layer, cos, nmse, d_local, d_real)
