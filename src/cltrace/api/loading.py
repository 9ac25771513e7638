"""Loading models, transcoders and prompt pairs for the API: names or loaded objects alike."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cltrace.models.adapter import ModelAdapter
    from cltrace.tasks import PromptPair
    from cltrace.transcoders import CrossLayerTranscoder


def load_model(
    name_or_path: str | os.PathLike | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    device_map: str | dict | None = None,
    offload_folder: str | os.PathLike | None = None,
) -> ModelAdapter:
    """Load a causal LM: ``None`` for the bundled model, else a local directory or an HF id.

    ``device``: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; ``dtype``: ``float32``, ``bfloat16``
    or ``float16`` (short names ``fp32``, ``bf16``, ``fp16`` too). Returns the
    :class:`~cltrace.models.adapter.ModelAdapter` every other API function takes.

    ``device_map`` (needs accelerate) spreads a model too large for one device: ``"auto"``,
    ``"balanced"``, ``"sequential"``, or a dict of module name to device (``"disk"`` modules
    go to ``offload_folder``); ``device`` is then unused. Results equal a one-device load's.
    """
    from cltrace.models import load_model as _load_model
    from cltrace.models.offload import require_accelerate
    from cltrace.precision import parse_device, parse_dtype

    name = None if name_or_path is None else str(name_or_path)
    if device_map is not None:
        require_accelerate("device_map")
    folder = None if offload_folder is None else str(offload_folder)
    return _load_model(name, device=parse_device(device), dtype=parse_dtype(dtype),
                       device_map=device_map, offload_folder=folder)  # fmt: skip


def load_transcoder(
    source: str | os.PathLike | None = None,
    model: ModelAdapter | str | None = None,
    lazy_decoder: bool = False,
) -> CrossLayerTranscoder:
    """Load a cross-layer transcoder: ``None`` for the bundled CLT, else a directory or hub id.

    With ``model`` (a loaded model) its widths and layer count are checked against the
    transcoder's (a mismatch is an error), and the weights go to the model's device and dtype.
    ``lazy_decoder`` leaves the decoders on disk and reads rows as they are needed.
    """
    import torch

    from cltrace.paths import BUNDLED_CLT_DIR
    from cltrace.transcoders import load_transcoder as _load_transcoder

    adapter = as_model(model) if isinstance(model, (str, os.PathLike)) else model
    return _load_transcoder(
        source if source is not None else BUNDLED_CLT_DIR,
        model=adapter,
        lazy_decoder=lazy_decoder,
        device=None if adapter is None else adapter.device,
        dtype=torch.float32 if adapter is None else adapter.dtype,
    )


def as_model(model) -> ModelAdapter:
    """A loaded model as is; a name, path or ``None`` loaded with :func:`load_model`."""
    if model is None or isinstance(model, (str, os.PathLike)):
        return load_model(model)
    return model


def as_transcoder(transcoder, model: ModelAdapter) -> CrossLayerTranscoder:
    """A loaded transcoder as is; a name, path or ``None`` loaded and checked against ``model``."""
    if transcoder is None or isinstance(transcoder, (str, os.PathLike)):
        return load_transcoder(transcoder, model=model)
    return transcoder


def make_pairs(
    task: str = "ioi", n: int = 200, seed: int = 0, model: ModelAdapter | str | None = None
) -> list[PromptPair]:
    """``n`` clean/corrupted prompt pairs of a built-in task (``ioi`` or ``docstring``).

    The pairs are generated for ``model``'s tokenizer (default: the bundled model): every
    answer is a single token of it. The same ``(task, n, seed)`` gives the pairs ``cltrace pie``
    uses with ``--task``, ``--n`` and ``--seed``.
    """
    from cltrace.tasks import get_task

    return get_task(task).make_pairs(as_model(model), n, seed=seed)


def as_pairs(pairs, model: ModelAdapter, allow_unk: bool = False) -> list[PromptPair]:
    """Prompt pairs from a list of pairs, a ``PairSet`` or a pair file, checked against
    ``model``'s tokenizer."""
    from cltrace.errors import CltraceError
    from cltrace.tasks import PairSet, check_pairs, read_pairs

    source = "pairs"
    if isinstance(pairs, (str, Path)):
        source = str(pairs)
        pairs = read_pairs(pairs).pairs
    elif isinstance(pairs, PairSet):
        pairs = pairs.pairs
    else:
        pairs = list(pairs)
    if not all(hasattr(p, "clean") and hasattr(p, "corrupt") for p in pairs):
        raise CltraceError(
            "pairs must be PromptPair objects (see cltrace.make_pairs), a PairSet or a pair file."
        )
    check_pairs(pairs, model, source, allow_unk=allow_unk)
    return pairs
