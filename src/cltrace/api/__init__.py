"""The curated Python API of cltrace: load, attribute, prune, explain (see docs/API.md).

Every function takes loaded objects or names (``None`` = the bundled asset), returns a result
object that prints a readable summary, and writes files only when asked (``.save``). This layer
only orchestrates the algorithm modules (``graph``, ``prune``, ``pie``, ``interpret``); none of
them imports it. ``import cltrace`` re-exports these names lazily.
"""

from cltrace.api.explain import FeatureNote, explain
from cltrace.api.graphs import AttributionGraph, PrunedGraph, attribute
from cltrace.api.loading import load_model, load_transcoder, make_pairs
from cltrace.api.pruning import PruneResult, prune

__all__ = [
    "AttributionGraph",
    "FeatureNote",
    "PruneResult",
    "PrunedGraph",
    "attribute",
    "explain",
    "load_model",
    "load_transcoder",
    "make_pairs",
    "prune",
]
