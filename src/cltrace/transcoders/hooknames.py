"""The one table from TransformerLens hook names (as transcoder ``config.yaml`` files spell them)
to cltrace adapter sites.

A transcoder file names where its features read and write with TransformerLens strings such as
``blocks.3.mlp.hook_in``; the model adapter calls those places ``mlp_in.3`` and ``mlp_out.3``
(``resid_mid.3`` for ``hook_resid_mid``).
Everything that needs the translation goes through :func:`hook_site`. The names mean what they
mean in TransformerLens: ``ln2.hook_normalized`` is the MLP's norm *before* its weight and bias
(flagged ``pre_affine``), ``mlp.hook_in`` the norm's output, ``hook_resid_mid`` the residual
stream before the MLP's norm (the adapter's ``resid_mid`` site: features read it raw, no
norm folded in, and a local replacement model reads them linearly in the residual stream),
``hook_mlp_out`` what the block's MLP adds to the residual stream, and
``mlp.hook_out`` the MLP module's output (on Gemma-2 before the post-feedforward norm).
:mod:`cltrace.transcoders.bind` turns an ``ln2.hook_normalized`` transcoder into one reading
``mlp_in`` exactly; every stage reads a transcoder's features at ``hook_site(...).kind``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cltrace.errors import CltraceError


@dataclass(frozen=True)
class HookSite:
    """Where a TransformerLens hook sits, in adapter terms."""

    kind: str
    """Adapter site kind: ``mlp_in``, ``resid_mid`` (inputs) or ``mlp_out`` (outputs)."""
    pre_affine: bool = False
    """True when the hook reads the MLP's norm after normalising but before its weight and bias
    (``ln2.hook_normalized``); :func:`cltrace.transcoders.bind.bind_transcoder` folds the
    difference into the encoder."""
    before_post_norm: bool = False
    """True when the hook is the MLP module's own output (``mlp.hook_out``); on Gemma-2 that is
    before the post-feedforward norm, elsewhere it is what the block adds to the residual
    stream."""


HOOK_TABLE: dict[str, HookSite] = {
    "ln2.hook_normalized": HookSite("mlp_in", pre_affine=True),
    "mlp.hook_in": HookSite("mlp_in"),
    "hook_mlp_in": HookSite("mlp_in"),
    "hook_resid_mid": HookSite("resid_mid"),
    "hook_mlp_out": HookSite("mlp_out"),
    "mlp.hook_out": HookSite("mlp_out", before_post_norm=True),
}

_BLOCK_PREFIX = re.compile(r"^blocks\.(\d+)\.")


def hook_site(name: str) -> HookSite:
    """Map a hook name, with or without a ``blocks.{l}.`` prefix, to its :class:`HookSite`."""
    bare = _BLOCK_PREFIX.sub("", name.strip())
    if bare not in HOOK_TABLE:
        raise CltraceError(
            f"Unknown transcoder hook {name!r}; cltrace understands {sorted(HOOK_TABLE)} "
            "(optionally prefixed by 'blocks.<layer>.'), so fix feature_input_hook or "
            "feature_output_hook in config.yaml."
        )
    return HOOK_TABLE[bare]


def site_name(name: str, layer: int) -> str:
    """The adapter site string (e.g. ``mlp_in.3``) of a hook name at ``layer``."""
    return f"{hook_site(name).kind}.{layer}"
