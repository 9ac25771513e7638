"""Feature interventions (docs/METHODS.md §3): constrained and iterative patching, steering,
steered generation and mechanistic faithfulness."""

from cltrace.interventions.faithfulness import Faithfulness, mechanistic_faithfulness
from cltrace.interventions.patching import PatchResult, constrained_patch, iterative_patch
from cltrace.interventions.spec import Intervention
from cltrace.interventions.steering import steer, steered_generate, steering_vectors

__all__ = [
    "Faithfulness",
    "Intervention",
    "PatchResult",
    "constrained_patch",
    "iterative_patch",
    "mechanistic_faithfulness",
    "steer",
    "steered_generate",
    "steering_vectors",
]
