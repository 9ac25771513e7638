"""Device and dtype names as users write them (``--device cuda:1 --dtype bf16``), checked once.

Weights and activations take the chosen dtype; cltrace's reductions that need the range (edge
rows, influence, metrics) run in float32 whatever it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cltrace.errors import CltraceError, UsageError

if TYPE_CHECKING:
    import torch

DTYPE_NAMES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}


def parse_dtype(name: str | torch.dtype | None, option: str = "--dtype") -> torch.dtype:
    """``float32``/``fp32``, ``bfloat16``/``bf16`` or ``float16``/``fp16`` (None: float32)."""
    import torch

    if isinstance(name, torch.dtype):
        return name
    key = DTYPE_NAMES.get(str(name or "float32").lower())
    if key is None:
        raise UsageError(
            f"{option} {name!r} is unknown; use float32, bfloat16 or float16 (or fp32, bf16, fp16)."
        )
    return getattr(torch, key)


def parse_device(name: str | torch.device | None, option: str = "--device") -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps``, refused with one sentence where unavailable."""
    import torch

    if isinstance(name, torch.device):
        return name
    text = str(name or "cpu").lower()
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UsageError(
            f"{option} {name!r} is not a device; use cpu, cuda, cuda:N or mps."
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CltraceError(
                f"{option} {text} asks for a GPU but this torch sees none (a CPU-only build, or "
                "no driver); install a CUDA build of torch or use --device cpu."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            n = torch.cuda.device_count()
            raise UsageError(
                f"{option} {text}: this machine has {n} GPU(s); pick cuda:0 .. cuda:{n - 1}."
            )
    elif device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise CltraceError(f"{option} mps is not available here; use --device cpu.")
    elif device.type != "cpu":
        raise UsageError(f"{option} {text!r} is not supported; use cpu, cuda, cuda:N or mps.")
    return device


def rank_device(name: str | torch.device | None, option: str = "--device") -> torch.device:
    """:func:`parse_device`, where a plain ``cuda`` under torchrun is this rank's GPU
    (``cuda:LOCAL_RANK``; ``cuda:0`` in a single process)."""
    from cltrace import dist

    device = parse_device(name, option)
    if device.type == "cuda" and device.index is None:
        device = dist.local_device(device)
    return device
