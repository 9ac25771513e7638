"""One entry point for every transcoder source, and the check that a transcoder fits a model."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from cltrace.errors import CltraceError
from cltrace.transcoders.bind import bind_transcoder
from cltrace.transcoders.clt import CrossLayerTranscoder
from cltrace.transcoders.io import load_circuit_tracer_dir
from cltrace.transcoders.source import resolve_source
from cltrace.transcoders.sparsify import is_sparsify_dir, load_sparsify_dir


def load_transcoder(
    source: str | os.PathLike,
    *,
    lazy_decoder: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    revision: str | None = None,
    model=None,
) -> CrossLayerTranscoder:
    """Load a CLT or PLT set from a local directory or a Hugging Face repo id.

    Reads the circuit-tracer layout (``config.yaml``) or a sparsify checkpoint (per-layer
    ``cfg.json`` folders). Weights are cast to ``dtype`` (fp16 files are upcast to fp32 by
    default). ``lazy_decoder=True`` leaves decoders on disk (circuit-tracer layout only).
    ``model`` (anything with ``n_layers``, ``d_model``, ``name``) is checked with
    :func:`check_compatible`; a model adapter also binds the transcoder to it
    (:func:`~cltrace.transcoders.bind.bind_transcoder`: features reading the norm before its
    weight get that weight folded into their encoder).
    """
    directory = resolve_source(source, revision=revision)
    if (directory / "config.yaml").is_file():
        tc = load_circuit_tracer_dir(
            directory, lazy_decoder=lazy_decoder, dtype=dtype, device=device
        )
    elif is_sparsify_dir(directory):
        if lazy_decoder:
            raise CltraceError(
                f"lazy_decoder is only supported for the circuit-tracer layout, but "
                f"{str(source)!r} is a sparsify checkpoint; load it with lazy_decoder=False."
            )
        tc = load_sparsify_dir(directory, dtype=dtype, device=device)
    else:
        raise CltraceError(
            f"Transcoder directory {str(source)!r} has neither a config.yaml (circuit-tracer "
            "layout) nor per-layer cfg.json folders (sparsify layout); point at a transcoder "
            "directory."
        )
    if model is not None:
        check_compatible(tc, model)
        if hasattr(model, "family"):  # a model adapter: read what the file's hooks say
            bind_transcoder(tc, model)
    # loaded weights are read, not trained: no autograd history on anything computed from them
    return tc.requires_grad_(False)


def check_compatible(tc: CrossLayerTranscoder, model, names: bool = True) -> None:
    """Error when widths or layer counts differ; warn when only the model names differ.

    Names differ harmlessly all the time (a local copy of a hub model, a fine-tuned checkpoint),
    so they only warn; a width or depth mismatch cannot work at all.
    """
    if int(model.d_model) != tc.d_model:
        raise CltraceError(
            f"The transcoder reads width {tc.d_model} but model {model.name!r} has d_model "
            f"{model.d_model}; use a transcoder trained on this model."
        )
    if int(model.n_layers) != tc.n_layers:
        raise CltraceError(
            f"The transcoder has {tc.n_layers} layers but model {model.name!r} has "
            f"{model.n_layers}; use a transcoder trained on this model."
        )
    want, have = str(tc.cfg.model_name or ""), str(model.name or "")
    if names and want and have and _short(want) != _short(have):
        warnings.warn(
            f"Transcoder was trained on {want!r} but is used with {have!r}; shapes match, so "
            "cltrace goes on.",
            stacklevel=2,
        )


def _short(name: str) -> str:
    return Path(name.rstrip("/")).name.lower()
