"""``--device``, ``--dtype`` and ``--lazy-decoders`` as every model-loading command reads them.

The names are parsed and checked by :mod:`cltrace.precision` (the one place that knows them), so
``cltrace interpret --dtype bf17`` fails with the same sentence as ``cltrace attribute``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICE_HELP = "cpu, cuda, cuda:N or mps."
DTYPE_HELP = "Weights and activations: float32, bfloat16 or float16."
LAZY_HELP = "Leave decoders on disk and read only the rows a stage needs (large CLTs)."


def parse_where(device: str, dtype: str) -> tuple[torch.device, torch.dtype]:
    """The checked device and dtype; under torchrun a plain ``cuda`` is this rank's GPU."""
    from cltrace.precision import parse_dtype, rank_device

    return rank_device(device), parse_dtype(dtype)
