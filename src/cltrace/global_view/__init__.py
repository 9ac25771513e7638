"""The prompt-independent (global) view of a transcoder: virtual weights, co-activation
statistics, ERA and TWERA, pre-filtering of feature pairs for local work, and mechanistic
faithfulness curves (Ameisen, Lindsey et al. 2025, *Circuit Tracing*; docs/GLOBAL.md)."""

from cltrace.global_view.virtual import (
    TopPairs,
    pair_virtual_weights,
    prefix_writes,
    top_sources,
    top_targets,
    virtual_weights,
)

__all__ = [
    "TopPairs",
    "pair_virtual_weights",
    "prefix_writes",
    "top_sources",
    "top_targets",
    "virtual_weights",
]
