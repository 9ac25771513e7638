"""A model spread over devices by accelerate (``device_map``): where its weights and
activations are, and how cltrace patches its modules without undoing accelerate's hooks.

accelerate places each module listed in a device map on a GPU, the CPU or the disk. A module on
the CPU or the disk while the model runs on a GPU (an *offloaded* module) keeps its parameters
on the ``meta`` device and a hook (``module._hf_hook``) loads them for each forward pass, from
its ``weights_map``; every hooked module's inputs are moved to its execution device. accelerate
installs that hook by replacing ``module.forward`` with an instance attribute, so cltrace's own
temporary replacements (:func:`swapped_forward`) save and restore whatever was there.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from cltrace.errors import UsageError

DEVICE_MAP_PRESETS: tuple[str, ...] = ("auto", "balanced", "balanced_low_0", "sequential")

_ABSENT = object()


def require_accelerate(option: str = "--device-map") -> None:
    """Raise the one-sentence fix when accelerate (which dispatches device maps) is missing."""
    if importlib.util.find_spec("accelerate") is None:
        raise UsageError(
            f"{option} spreads the model over devices with accelerate, which is not installed; "
            "run `pip install accelerate` (or drop the device map)."
        )


def param(module: torch.nn.Module, name: str = "weight") -> Tensor | None:
    """``module``'s parameter or buffer ``name`` as a real tensor, also where accelerate has
    offloaded it (its value then comes from the hook's weights map, on the execution device)."""
    value = getattr(module, name, None)
    if value is None or value.device.type != "meta":
        return value
    hook = getattr(module, "_hf_hook", None)
    weights = getattr(hook, "weights_map", None)
    if weights is None:
        raise RuntimeError(f"{type(module).__name__}.{name} is on the meta device with no weights")
    return weights[name].to(execution_device(module))


def execution_device(module: torch.nn.Module) -> torch.device:
    """Where ``module`` computes: its accelerate hook's execution device, else the device of its
    first parameter (the CPU for a module without any)."""
    hook = getattr(module, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    if device is not None:
        return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    for p in module.parameters():
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")


@contextlib.contextmanager
def swapped_forward(
    swaps: list[tuple[torch.nn.Module, Callable]],
) -> Iterator[None]:
    """Inside the block, each module's ``forward`` is the function given; afterwards exactly the
    instance attribute that was there before (accelerate's hook wrapper, or none) is back."""
    saved = [(m, m.__dict__.get("forward", _ABSENT)) for m, _ in swaps]
    try:
        for m, fn in swaps:
            m.forward = fn
        yield
    finally:
        for m, before in reversed(saved):
            if before is _ABSENT:
                m.__dict__.pop("forward", None)
            else:
                m.forward = before
