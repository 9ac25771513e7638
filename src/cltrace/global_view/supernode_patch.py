"""Interventions on supernodes: every member feature occurrence is patched in the same pass.

A supernode's members are feature node ids ``{layer}_{feature}_{pos}``; the supernode
intervention is the list of member interventions handed at once to constrained or iterative
patching (:mod:`cltrace.interventions.patching`), so the members' changes meet inside one
forward pass (with iterative patching each member sees the others' effects).
"""

from __future__ import annotations

from collections.abc import Sequence

from cltrace.errors import CltraceError
from cltrace.graph.supernodes import Supernode, feature_key
from cltrace.interventions import Intervention, PatchResult, constrained_patch, iterative_patch
from cltrace.models.adapter import ModelAdapter
from cltrace.transcoders import CrossLayerTranscoder

MODES = ("constrained", "iterative")


def supernode_interventions(
    supernodes: Supernode | Sequence[Supernode],
    scale: float | None = None,
    value: float | None = None,
) -> list[Intervention]:
    """One :class:`Intervention` per member of each supernode (``scale=-1`` inhibits)."""
    if isinstance(supernodes, Supernode):
        supernodes = [supernodes]
    out = []
    for sn in supernodes:
        for m in sn.members:
            layer, feature, pos = feature_key(m)
            out.append(Intervention(layer, pos, feature, value=value, scale=scale))
    return out


def patch_supernodes(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    prompt: str,
    supernodes: Supernode | Sequence[Supernode],
    scale: float | None = -1.0,
    value: float | None = None,
    mode: str = "constrained",
    layers: tuple[int, int] | None = None,
) -> PatchResult:
    """Patch every member of the supernodes in one run of ``prompt`` (see the module doc)."""
    if mode not in MODES:
        raise CltraceError(f"unknown patching mode {mode!r}; use one of {', '.join(MODES)}.")
    if value is not None:
        scale = None
    ivs = supernode_interventions(supernodes, scale=scale, value=value)
    fn = constrained_patch if mode == "constrained" else iterative_patch
    return fn(adapter, transcoder, prompt, ivs, layers=layers)
