"""Behaviour retention of kept circuits and the statistics over prompts."""

from cltrace.retention.retention import Retention, evaluate_kept, kl_last
from cltrace.retention.stats import bootstrap_ci, effective_budget, interpolate_budget

__all__ = [
    "Retention",
    "bootstrap_ci",
    "effective_budget",
    "evaluate_kept",
    "interpolate_budget",
    "kl_last",
]
