"""Tiny random models and transcoders for tests, benchmarks and notebooks (nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import torch

from cltrace.models.adapter import ModelAdapter
from cltrace.models.tiny import TINY_FAMILIES, tiny_model
from cltrace.transcoders import CrossLayerTranscoder, TranscoderConfig


def random_transcoder(
    adapter: ModelAdapter,
    d_features: int = 32,
    cross_layer: bool = True,
    activation: str = "jumprelu",
    skip: bool = False,
    k: int = 8,
    seed: int = 0,
    scale: float = 1.0,
) -> CrossLayerTranscoder:
    """A transcoder for ``adapter`` with random weights and roughly half its features active.

    Encoder rows are scaled to the model's MLP-input norm so activations are O(1) whatever the
    width; thresholds are small positive numbers so JumpReLU really gates.
    """
    cfg = TranscoderConfig(
        n_layers=adapter.n_layers,
        d_model=adapter.d_model,
        d_features=d_features,
        cross_layer=cross_layer,
        activation=activation,
        k=k if activation == "topk" else None,
        skip=skip,
        model_name=adapter.name,
        feature_input_hook="mlp.hook_in",
        feature_output_hook="hook_mlp_out",
    )
    tc = CrossLayerTranscoder(cfg)
    g = torch.Generator().manual_seed(seed)
    D = adapter.d_model
    with torch.no_grad():
        for name, p in tc.named_parameters():
            if name.startswith("threshold"):
                p.copy_(torch.rand(p.shape, generator=g) * 0.2)
            elif name.startswith("W_enc"):
                p.copy_(torch.randn(p.shape, generator=g) * scale / D**0.5)
            elif name.startswith("W_dec"):
                p.copy_(torch.randn(p.shape, generator=g) * scale * 0.2 / D**0.5)
            elif name.startswith("W_skip"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1 / D**0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return tc


@torch.no_grad()
def resid_mid_transcoder(
    adapter: ModelAdapter, prompt: str = "w1 w2 w3 w4", **kwargs
) -> CrossLayerTranscoder:
    """:func:`random_transcoder` reading ``hook_resid_mid`` (the residual stream before the MLP's
    norm), its encoder rescaled per layer so that pre-activations on ``prompt`` are O(1) (the
    raw residual stream of a tiny model is far smaller than a norm's output)."""
    tc = random_transcoder(adapter, **kwargs)
    tc.cfg.feature_input_hook = "hook_resid_mid"
    with adapter.cache(adapter.sites("resid_mid")) as c:
        adapter(adapter.to_tokens(prompt))
    for layer in range(adapter.n_layers):
        size = c[f"resid_mid.{layer}"][0, 1:].float().norm(dim=-1).mean()
        tc.W_enc[layer].mul_(adapter.d_model**0.5 / size)
    return tc


def save_model(adapter: ModelAdapter, directory: str | Path) -> Path:
    """Write an adapter's model and tokenizer as an HF directory that ``load_model`` reads."""
    directory = Path(directory)
    adapter.hf_model.save_pretrained(directory)
    adapter.tokenizer.save_pretrained(directory)
    return directory


def save_tiny_assets(
    root: str | Path, family: str = "gpt2", d_features: int = 16, **sizes
) -> tuple[ModelAdapter, CrossLayerTranscoder]:
    """A tiny model and a random CLT for it, saved under ``root/model`` and ``root/clt``."""
    from cltrace.transcoders import save_transcoder

    root = Path(root)
    adapter = tiny_model(family, **sizes)
    model_dir = save_model(adapter, root / "model")
    transcoder = random_transcoder(adapter, d_features=d_features)
    transcoder.cfg.model_name = str(model_dir)  # the name a loaded adapter gets: no warning
    save_transcoder(transcoder, root / "clt")
    return adapter, transcoder


__all__ = [
    "TINY_FAMILIES",
    "random_transcoder",
    "resid_mid_transcoder",
    "save_model",
    "save_tiny_assets",
    "tiny_model",
]
