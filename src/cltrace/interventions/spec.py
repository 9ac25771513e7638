"""What an intervention changes, checked against one prompt's clean run (docs/METHODS.md §3).

An :class:`Intervention` names one feature occurrence ``(layer, position, feature)`` and either
a new activation or a multiplier of the clean activation. :func:`resolve` turns a list of them
into the occurrences with their new and clean values; :func:`intervention_writes` gives the
resulting change of every MLP output, ``(new - old) * W_dec^{l -> s}`` for each target layer s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from cltrace.errors import CltraceError
from cltrace.models.adapter import ModelAdapter
from cltrace.replacement import ReplacementState, build_replacement, feature_writes
from cltrace.transcoders import CrossLayerTranscoder, SparseActivations


@dataclass(frozen=True)
class Intervention:
    """Change one feature occurrence: set it to ``value``, or multiply it by ``scale``.

    Exactly one of ``value`` and ``scale`` is given. ``scale=-1`` is the standard "inhibit",
    ``scale=0`` ablates; a ``value`` may also switch on a feature that is inactive there.
    ``position`` may be negative (counted from the end of the prompt).
    """

    layer: int
    position: int
    feature: int
    value: float | None = None
    """The new activation."""
    scale: float | None = None
    """Multiplier of the clean activation (the feature must be active at that position)."""

    def __post_init__(self) -> None:
        if (self.value is None) == (self.scale is None):
            raise CltraceError(
                f"the intervention on feature {self.feature} (layer {self.layer}, position "
                f"{self.position}) must give exactly one of value= and scale=."
            )

    @classmethod
    def ablate(cls, layer: int, position: int, feature: int) -> Intervention:
        """Zero the feature's activation."""
        return cls(layer, position, feature, scale=0.0)

    @classmethod
    def inhibit(cls, layer: int, position: int, feature: int) -> Intervention:
        """Flip the sign of the feature's activation (multiplier -1)."""
        return cls(layer, position, feature, scale=-1.0)


@dataclass
class Resolved:
    """Interventions of one prompt as occurrences: ``new.value`` are the new activations."""

    new: SparseActivations
    old: Float[Tensor, " n"]
    """The clean activation of each occurrence."""

    def __len__(self) -> int:
        return len(self.new)

    def change(self) -> SparseActivations:
        """The same occurrences with value ``new - old``."""
        n = self.new
        return SparseActivations(n.layer, n.position, n.feature, n.value - self.old, n.shape)


def prompt_tokens(adapter: ModelAdapter, prompt: str | Tensor) -> Int[Tensor, "1 pos"]:
    """Token ids of one prompt: text (BOS prepended) or ids of shape ``[pos]`` or ``[1, pos]``."""
    tokens = adapter.to_tokens(prompt) if isinstance(prompt, str) else torch.as_tensor(prompt)
    if tokens.ndim == 2 and tokens.shape[0] != 1:
        raise CltraceError(
            f"interventions take one prompt, but the tokens have batch size {tokens.shape[0]}; "
            "pass a single prompt."
        )
    return tokens.reshape(1, -1).to(adapter.device)


def clean_state(
    adapter: ModelAdapter, transcoder: CrossLayerTranscoder, tokens: Int[Tensor, "1 pos"]
) -> ReplacementState:
    """The clean run of a prompt, with *every* position's features counted as features.

    Interventions may touch any position, and iterative patching rebuilds MLP outputs from live
    activations plus errors, so the errors must exclude all feature writes (BOS included).
    """
    return build_replacement(adapter, transcoder, tokens, zero_positions=None)


def _check_index(what: str, value: int, size: int, fix: str) -> int:
    if not -size <= value < size:
        raise CltraceError(f"{what} {value} is out of range 0..{size - 1}; {fix}.")
    return value % size


@torch.no_grad()
def resolve(
    transcoder: CrossLayerTranscoder,
    state: ReplacementState,
    interventions: Sequence[Intervention],
) -> Resolved:
    """Validate interventions against the prompt and look up their clean activations."""
    L, T, F = transcoder.n_layers, state.tokens.shape[1], transcoder.d_features
    rows: list[tuple[int, int, int]] = []
    new, old = [], []
    for iv in interventions:
        layer = _check_index("intervention layer", iv.layer, L, "use a layer of the model")
        pos = _check_index("intervention position", iv.position, T, "use a position of the prompt")
        feat = _check_index("intervention feature", iv.feature, F, "use a feature id of the layer")
        if (layer, pos, feat) in rows:
            raise CltraceError(
                f"feature {feat} at layer {layer}, position {pos} is intervened on twice; "
                "give one intervention per occurrence."
            )
        clean = float(transcoder.encode(layer, state.mlp_in[layer, pos])[feat])
        if iv.scale is not None and clean == 0.0:
            raise CltraceError(
                f"feature {feat} of layer {layer} is not active at position {pos}, so scaling "
                "it changes nothing; pick an active feature or set value= instead."
            )
        rows.append((layer, pos, feat))
        old.append(clean)
        new.append(iv.value if iv.value is not None else iv.scale * clean)
    ids = torch.tensor(rows, dtype=torch.long).reshape(-1, 3)
    occ = SparseActivations(
        ids[:, 0], ids[:, 1], ids[:, 2], torch.tensor(new, dtype=torch.float32), (L, T, F)
    )
    return Resolved(occ, torch.tensor(old, dtype=torch.float32))


@torch.no_grad()
def intervention_writes(
    transcoder: CrossLayerTranscoder, resolved: Resolved
) -> Float[Tensor, "n_layers pos d_model"]:
    """Change of every MLP output: ``(new - old) * W_dec^{l -> s}`` summed per (s, position)."""
    return feature_writes(transcoder, resolved.change())


def layer_range(
    adapter: ModelAdapter, resolved: Resolved, layers: tuple[int, int] | None
) -> tuple[int, int]:
    """``layers`` checked, or by default from the first intervened layer to the last layer."""
    L = adapter.n_layers
    if layers is None:
        start = int(resolved.new.layer.min()) if len(resolved) else 0
        return start, L - 1
    l1, l2 = (int(x) for x in layers)
    if not 0 <= l1 <= l2 < L:
        raise CltraceError(
            f"layer range ({l1}, {l2}) is not within 0..{L - 1} with start <= end; "
            "pass (start, end) layers of the model."
        )
    late = resolved.new.layer > l2
    if late.any():
        layer = int(resolved.new.layer[late][0])
        raise CltraceError(
            f"an intervened feature is in layer {layer}, after the range's end layer {l2}, so "
            "it would change nothing; end the range at or after the feature's layer."
        )
    return l1, l2
