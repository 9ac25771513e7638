"""Clamping one transcoder feature to a fixed value during generation (FADE's faithfulness).

Setting feature ``(l, f)`` to ``v`` at a position changes every MLP output it writes to,
``s = l .. l + n_out - 1``, by ``(v - a(t)) W_dec^{l -> s}[f]``, where ``a(t)`` is the value the
feature has there in this very forward pass (read from ``mlp_in.l``, or ``resid_mid.l``, which
the clamp itself cannot change: it acts from layer ``l``'s MLP output on). Everything else stays
the real model, including the transcoder's reconstruction error. The edit is the same at every
position, so it is exact under the key-value cache of ``generate``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from cltrace.interpret.features import encode_subset
from cltrace.models.adapter import Hook, ModelAdapter
from cltrace.replacement import input_kind
from cltrace.transcoders import CrossLayerTranscoder


def _wide(t: Tensor) -> torch.dtype:
    """``t``'s dtype, widened to float32 when narrower (bf16, fp16)."""
    return torch.promote_types(t.dtype, torch.float32)


def clamp_hooks(
    transcoder: CrossLayerTranscoder, layer: int, feature: int, value: float | Tensor
) -> dict[str, Hook]:
    """Hooks that hold feature ``(layer, feature)`` at ``value`` at every position; a tensor
    ``value`` of shape ``[batch]`` gives each row of the batch its own value."""
    rows: Float[Tensor, "n_out D"] = transcoder.decoder_rows(layer, torch.tensor([feature]))[0]
    rows = rows.detach()
    state: dict[str, Tensor] = {}

    def read(x: Tensor) -> None:
        state["a"] = encode_subset(transcoder, layer, x, [feature])[..., 0]
        return None

    hooks: dict[str, Hook] = {f"{input_kind(transcoder)}.{layer}": read}
    for k in range(rows.shape[0]):

        def write(t: Tensor, _w: Tensor = rows[k]) -> Tensor:
            a = state["a"].to(_wide(state["a"]))  # the clamp's difference in float32 at least
            v = value
            if isinstance(v, Tensor):
                v = v.to(device=t.device, dtype=a.dtype)[:, None]
            delta = (v - a).to(t.dtype)
            return t + delta[..., None] * _w.to(device=t.device, dtype=t.dtype)

        hooks[f"mlp_out.{layer + k}"] = write
    return hooks


def clamp_rows_hooks(
    transcoder: CrossLayerTranscoder, features: Sequence[tuple[int, int]], values: Tensor
) -> dict[str, Hook]:
    """:func:`clamp_hooks` with a feature of its own for every row of the batch: row ``i`` holds
    ``features[i]`` at ``values[i]``. Each row sees exactly the arithmetic of its feature's own
    :func:`clamp_hooks`, so a batch mixing features generates what each would alone."""
    by_layer: dict[int, list[int]] = {}
    for i, (layer, _) in enumerate(features):
        by_layer.setdefault(int(layer), []).append(i)
    state: dict[int, Tensor] = {}
    writes: dict[int, list] = {}
    hooks: dict[str, Hook] = {}
    for layer, rows in by_layer.items():
        idx = torch.tensor(rows)
        ids = [int(features[i][1]) for i in rows]
        uniq = sorted(set(ids))
        dec = {f: transcoder.decoder_rows(layer, torch.tensor([f]))[0].detach() for f in uniq}
        groups = [(f, idx[torch.tensor([j for j, g in enumerate(ids) if g == f])]) for f in uniq]

        def read(x: Tensor, layer: int = layer, groups=groups) -> None:
            parts = [(r, encode_subset(transcoder, layer, x[r.to(x.device)], [f])[..., 0])
                     for f, r in groups]  # one feature at a time, as clamp_hooks encodes it
            a = torch.zeros(x.shape[:2], dtype=parts[0][1].dtype, device=x.device)
            for r, part in parts:
                a[r.to(x.device)] = part
            state[layer] = a
            return None

        hooks[f"{input_kind(transcoder)}.{layer}"] = read
        for k in range(next(iter(dec.values())).shape[0]):
            writes.setdefault(layer + k, []).append((layer, k, groups, dec))

    def make_write(site: int):
        def write(t: Tensor) -> Tensor:
            out = t.clone()
            for layer, k, groups, dec in writes[site]:
                for f, r in groups:
                    a = state[layer].to(_wide(state[layer]))
                    v = values[r].to(device=t.device, dtype=a.dtype)[:, None]  # r beside values
                    r = r.to(t.device)
                    delta = (v - a[r]).to(t.dtype)
                    w = dec[f][k].to(device=t.device, dtype=t.dtype)
                    out[r] = t[r] + delta[..., None] * w
            return out

        return write

    for site in writes:
        hooks[f"mlp_out.{site}"] = make_write(site)
    return hooks


@torch.no_grad()
def generate(
    adapter: ModelAdapter,
    prompts: Sequence[str],
    n_tokens: int = 30,
    hooks: dict[str, Hook] | None = None,
    max_prompt_tokens: int = 64,
    batch_size: int = 16,
    hooks_for: Callable[[list[int]], dict[str, Hook]] | None = None,
) -> list[str]:
    """Greedy continuations of exactly ``n_tokens`` tokens (end-of-text suppressed) per prompt.

    Prompts are left-padded into batches; ``generate`` derives position ids from the attention
    mask, so a padded prompt continues exactly as it would alone. ``hooks_for(indices)`` gives
    the hooks of a batch of prompts (by index), for edits that differ per prompt.
    """
    model = adapter.hf_model
    pad = adapter.tokenizer.pad_token_id
    pad = adapter.bos_token_id if pad is None else int(pad)
    rows = [adapter.encode(p)[:max_prompt_tokens] for p in prompts]
    out: list[str] = [""] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    for s in range(0, len(order), batch_size):
        group = order[s : s + batch_size]
        width = max(len(rows[i]) for i in group)
        ids = torch.full((len(group), width), pad, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for b, i in enumerate(group):
            ids[b, width - len(rows[i]) :] = torch.tensor(rows[i])
            mask[b, width - len(rows[i]) :] = 1
        with adapter.hooks(hooks_for(group) if hooks_for else (hooks or {})), \
                adapter.fused_activations():
            gen = model.generate(
                input_ids=ids.to(adapter.device), attention_mask=mask.to(adapter.device),
                max_new_tokens=n_tokens, min_new_tokens=n_tokens, do_sample=False,
                pad_token_id=pad, num_beams=1,
                # keys and values written in place: a growing cache copies itself every step
                cache_implementation="static",
            )  # fmt: skip
        for b, i in enumerate(group):
            out[i] = adapter.tokenizer.decode(gen[b, width:].tolist())
    return out
