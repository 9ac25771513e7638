"""The prompt-independent (global) view of a transcoder: virtual weights, co-activation
statistics, ERA and TWERA, pre-filtering of feature pairs for local work, supernode patching and
mechanistic faithfulness curves (Ameisen, Lindsey et al. 2025, *Circuit Tracing*; see
docs/GLOBAL.md)."""

from cltrace.global_view.coactivation import CoactConfig, CoactStats, coactivation_stats
from cltrace.global_view.era import PairTable, pair_table
from cltrace.global_view.virtual import (
    TopPairs,
    pair_virtual_weights,
    prefix_writes,
    top_sources,
    top_targets,
    virtual_weights,
)

__all__ = [
    "CoactConfig",
    "CoactStats",
    "PairTable",
    "TopPairs",
    "coactivation_stats",
    "pair_table",
    "pair_virtual_weights",
    "prefix_writes",
    "top_sources",
    "top_targets",
    "virtual_weights",
]
