"""Load a causal LM by Hugging Face id or local directory (the bundled model by default)."""

from __future__ import annotations

from pathlib import Path

import torch

from cltrace.errors import CltraceError
from cltrace.models.adapter import ModelAdapter
from cltrace.models.families import family_for
from cltrace.paths import BUNDLED_MODEL_DIR


def _looks_like_path(name: str) -> bool:
    # hub ids are "org/name"; anything else with a slash, or that exists, is a path
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        return True
    return Path(name).expanduser().exists()


def load_model(
    name_or_path: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> ModelAdapter:
    """Load a causal LM and its tokenizer and wrap them in a :class:`ModelAdapter`.

    ``None`` means the model cltrace ships (trained by ``cltrace train model``). A string is a
    local HF-format directory if such a path exists (or looks like a path), else a hub id.
    """
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from cltrace.files import read_json
    from cltrace.models import attention

    # cltrace prints its own progress; transformers' per-load bars and notes are noise here
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

    source = str(name_or_path) if name_or_path is not None else str(BUNDLED_MODEL_DIR)
    if name_or_path is None and not (BUNDLED_MODEL_DIR / "config.json").exists():
        raise CltraceError(
            f"the bundled model is missing from {BUNDLED_MODEL_DIR}; reinstall cltrace or "
            "train it with `cltrace train model --out` that directory."
        )
    if _looks_like_path(source):
        path = Path(source).expanduser()
        if not path.is_dir():
            raise CltraceError(
                f"model path {source} does not exist; pass an existing local model directory "
                "or a Hugging Face model id."
            )
        if not (path / "config.json").exists():
            raise CltraceError(
                f"model directory {source} has no config.json; point --model at a directory "
                "written by save_pretrained."
            )
        source = str(path)
        read_json(path / "config.json", "fix it or re-save the model with save_pretrained.")
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise CltraceError(
            f"could not load a model config for {source!r} ({type(exc).__name__}); check the "
            "model id or path, and the network or HF_HOME cache for hub ids."
        ) from exc
    family_for(getattr(config, "model_type", "?"), source=source)
    attention.register()
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, attn_implementation=attention.ATTN_IMPLEMENTATION
        )
    except (OSError, ValueError, SafetensorError) as exc:
        raise CltraceError(
            f"could not load the weights of {source!r} ({_first_line(exc)}); check that the "
            "directory or hub repo holds a complete model (re-download or re-save it)."
        ) from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as exc:  # tokenizer files fail in many library-specific ways
        raise CltraceError(
            f"could not load the tokenizer of {source!r} ({_first_line(exc)}); check its "
            "tokenizer files (re-download or re-save the model with its tokenizer)."
        ) from exc
    hf_model.to(device)
    name = "cltrace-bundled" if name_or_path is None else str(name_or_path)
    return ModelAdapter(hf_model, tokenizer, name=name)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:160]}" if text else type(exc).__name__
