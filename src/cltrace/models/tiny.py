"""Tiny random models of every supported family, built locally from configs.

Tests and benchmarks use these: no weights are downloaded, and every code path that a real
GPT-2, Llama, Gemma-2 or Qwen model takes is exercised at a size that runs in milliseconds.
"""

from __future__ import annotations

import torch

from cltrace.errors import CltraceError
from cltrace.models.adapter import ModelAdapter
from cltrace.models.attention import ATTN_IMPLEMENTATION, register

TINY_FAMILIES: tuple[str, ...] = ("gpt2", "llama", "gemma2", "qwen2", "qwen3")


def word_tokenizer(n_words: int = 200):
    """A word-level fast tokenizer with words ``w0 … w{n-1}`` plus ``<bos>``/``<eos>``/``<unk>``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<bos>", "<eos>", "<unk>", "<pad>"]
    vocab = {tok: i for i, tok in enumerate(specials + [f"w{i}" for i in range(n_words)])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
    )


def tiny_config(
    family: str,
    n_layers: int = 2,
    d_model: int = 64,
    n_heads: int = 4,
    vocab_size: int = 204,
    d_mlp: int | None = None,
    sliding_window: int = 4,
):
    """A transformers config of the given family at toy size (``sliding_window``: Gemma-2's
    local attention layers; the default 4 is shorter than most test prompts)."""
    import transformers as tf

    d_mlp = d_mlp or 4 * d_model
    head_dim = d_model // n_heads
    common = dict(vocab_size=vocab_size, bos_token_id=0, eos_token_id=1, pad_token_id=3)
    rope = dict(
        hidden_size=d_model,
        intermediate_size=d_mlp,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=max(1, n_heads // 2),  # exercise grouped-query attention
        head_dim=head_dim,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        **common,
    )
    if family == "gpt2":
        return tf.GPT2Config(
            n_layer=n_layers, n_embd=d_model, n_head=n_heads, n_positions=512, n_inner=d_mlp,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common,
        )  # fmt: skip
    if family == "llama":
        return tf.LlamaConfig(**rope)
    if family == "gemma2":
        return tf.Gemma2Config(
            **rope, query_pre_attn_scalar=head_dim, sliding_window=sliding_window,
            attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
        )  # fmt: skip
    if family == "qwen2":
        return tf.Qwen2Config(**rope)
    if family == "qwen3":
        return tf.Qwen3Config(**rope)
    raise CltraceError(f"no tiny config for family {family!r}; use one of {TINY_FAMILIES}.")


def tiny_hf_model(family: str, seed: int = 0, **sizes) -> torch.nn.Module:
    """A random transformers causal LM of the family, in eval mode, float32."""
    from transformers import AutoModelForCausalLM

    register()
    config = tiny_config(family, **sizes)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=ATTN_IMPLEMENTATION)
    # Random init leaves norm weights at their identity value; perturb them so that tests see
    # the norms' effect (and Gemma's 1 + w convention) rather than a no-op.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or ".ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def tiny_model(family: str = "llama", seed: int = 0, **sizes) -> ModelAdapter:
    """A :class:`ModelAdapter` over a tiny random model with a word-level tokenizer."""
    vocab = sizes.get("vocab_size", 204)
    model = tiny_hf_model(family, seed=seed, **sizes)
    return ModelAdapter(model, word_tokenizer(vocab - 4), name=f"tiny-{family}")
