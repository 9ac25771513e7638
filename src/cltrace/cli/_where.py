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
DEVICE_MAP_HELP = (
    "Spread a model too large for one device (needs accelerate): auto, balanced, "
    "balanced_low_0, sequential, or a JSON object (inline or a .json file) of module name to "
    "device (cpu, disk, cuda:N). Replaces --device for the model."
)
OFFLOAD_HELP = "Folder for the modules a --device-map sends to disk."


def parse_where(device: str, dtype: str) -> tuple[torch.device, torch.dtype]:
    """The checked device and dtype; under torchrun a plain ``cuda`` is this rank's GPU."""
    from cltrace.precision import parse_dtype, rank_device

    return rank_device(device), parse_dtype(dtype)


def parse_spread(device_map: str | None, offload_folder: str | None) -> dict:
    """``load_model``'s device-map options (none without ``--device-map``), checked before
    anything loads: a bad map or a missing accelerate fails at once."""
    from cltrace.errors import UsageError
    from cltrace.models.loading import device_map_options

    if device_map is None:
        if offload_folder is not None:
            raise UsageError("--offload-folder only serves --device-map; pass both or neither.")
        return {}
    parsed = device_map_options(device_map, offload_folder)["device_map"]
    return {"device_map": parsed, "offload_folder": offload_folder}
