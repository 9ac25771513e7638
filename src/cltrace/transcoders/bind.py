"""Binding a transcoder to the model it runs on, so its features read what its file says they read.

Transcoder files name their sites with TransformerLens hooks (:mod:`cltrace.transcoders.hooknames`).
cltrace's replacement model reads features at the adapter's ``mlp_in`` site, the output of the
MLP's norm with its weight (and bias) applied. A transcoder whose features read
``ln2.hook_normalized`` reads the same norm *before* its weight and bias:

- LayerNorm (GPT-2): ``mlp_in = n * w + b`` with ``n = (x - mean) / sqrt(var + eps)``;
- RMSNorm (Llama, Qwen): ``mlp_in = n * w`` with ``n = x / sqrt(mean(x^2) + eps)``;
- Gemma-2's RMSNorm: ``mlp_in = n * (1 + w)``.

So ``n = (mlp_in - beta) / gamma`` per dimension, and a feature's pre-activation
``W_enc n + b_enc`` equals ``(W_enc / gamma) mlp_in + (b_enc - (W_enc / gamma) beta)``. Binding
folds that map into the encoder (and the skip connection), which is exact whenever no ``gamma``
entry is zero; after it the transcoder reads ``mlp.hook_in`` and every stage works unchanged.

``hook_resid_mid`` (the residual stream before the norm) is not an affine function of ``mlp_in``
(the norm's scale varies by position), so nothing is folded: such a transcoder keeps its file's
weights and every stage reads its features at the adapter's ``resid_mid`` site. Gemma-2's
``mlp.hook_out`` is the MLP's output before the post-feedforward norm, while cltrace replaces
what the block adds to the residual stream; :func:`bind_transcoder` refuses it with one sentence.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from cltrace.errors import CltraceError
from cltrace.models.families import get_path
from cltrace.transcoders.clt import CrossLayerTranscoder
from cltrace.transcoders.hooknames import hook_site

BOUND_INPUT_HOOK = "mlp.hook_in"


def norm_affine(adapter, layer: int) -> tuple[Float[Tensor, " d"], Float[Tensor, " d"]]:
    """``(gamma, beta)`` of the MLP's input norm at ``layer``: ``mlp_in = n * gamma + beta``."""
    family = adapter.family
    norm = get_path(adapter.block(layer), family.mlp_in_norm)
    weight = norm.weight.detach().float()
    bias = getattr(norm, "bias", None)
    beta = torch.zeros_like(weight) if bias is None else bias.detach().float()
    if family.norm_kind == "gemma_rmsnorm":
        return 1.0 + weight, beta
    return weight, beta


def _check_output_hook(tc: CrossLayerTranscoder, adapter) -> None:
    name = tc.cfg.feature_output_hook
    site = hook_site(name)
    if site.before_post_norm and adapter.family.name == "gemma2":
        raise CltraceError(
            f"the transcoder writes {name!r}, which on Gemma-2 is the MLP's output before the "
            "post-feedforward norm, but cltrace replaces what the block adds to the residual "
            "stream; use a transcoder that writes 'hook_mlp_out'."
        )


@torch.no_grad()
def bind_transcoder(tc: CrossLayerTranscoder, adapter) -> CrossLayerTranscoder:
    """Make ``tc`` read the adapter's ``mlp_in`` site, folding the norm's affine map if needed.

    Transcoders that already read ``mlp.hook_in`` (or ``hook_mlp_in``) or ``hook_resid_mid`` are
    returned as they are;
    ``ln2.hook_normalized`` ones are changed in place (see the module docstring) and their
    config then says ``mlp.hook_in``.
    """
    _check_output_hook(tc, adapter)
    name = tc.cfg.feature_input_hook
    site = hook_site(name)
    if not site.pre_affine:
        return tc
    for layer in range(tc.n_layers):
        gamma, beta = norm_affine(adapter, layer)
        if bool((gamma == 0).any()):
            raise CltraceError(
                f"layer {layer}'s MLP norm has zero weights, so features reading {name!r} cannot "
                "be read from the norm's output; use a transcoder that reads 'mlp.hook_in'."
            )
        W = tc.W_enc[layer]
        dev, dt = W.device, W.dtype
        g, b = gamma.to(dev), beta.to(dev)
        folded = W.float() / g
        tc.b_enc[layer].copy_((tc.b_enc[layer].float() - folded @ b).to(dt))
        W.copy_(folded.to(dt))
        if tc.W_skip is not None:
            S = tc.W_skip[layer]
            skip = S.float() / g  # skip(x) = x @ S.T reads n = (mlp_in - beta) / gamma
            tc.b_dec[layer].copy_((tc.b_dec[layer].float() - (b / g) @ S.float().T).to(dt))
            S.copy_(skip.to(dt))
    tc.cfg.feature_input_hook = BOUND_INPUT_HOOK
    return tc
