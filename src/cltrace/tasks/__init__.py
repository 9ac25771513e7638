"""Circuit tasks: IOI, Doc-String, induction and greater-than generators, prompt-pair files,
behaviour metrics over answer sets, and evaluation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cltrace.errors import UsageError
from cltrace.tasks.docstring import make_docstring_pairs
from cltrace.tasks.evaluate import TaskScores, evaluate_pairs, last_position_logits
from cltrace.tasks.greater_than import make_greater_than_pairs
from cltrace.tasks.induction import make_induction_pairs
from cltrace.tasks.ioi import make_ioi_pairs
from cltrace.tasks.metrics import METRICS, AnswerMetric, get_metric
from cltrace.tasks.pairs import (
    PairSet,
    PromptPair,
    check_pairs,
    parse_pairs,
    read_pairs,
    write_pairs,
)
from cltrace.tasks.split import split_of


@dataclass(frozen=True)
class Task:
    """A registered task generator."""

    key: str
    """Name used on the command line."""
    title: str
    """Human-readable name."""
    make_pairs: Callable[..., list[PromptPair]]
    """``make_pairs(encoder, n, seed=0, split="eval")``."""
    metric: str = "logit_diff"
    """The behaviour metric used when none is asked for (:data:`METRICS`)."""


TASKS: dict[str, Task] = {
    t.key: t
    for t in (
        Task("ioi", "Indirect-object identification", make_ioi_pairs),
        Task("docstring", "Doc-String argument completion", make_docstring_pairs),
        Task("induction", "Induction on repeated random words", make_induction_pairs),
        Task("greater_than", "Greater-than over years", make_greater_than_pairs, "prob_diff"),
    )
}


def get_task(key: str) -> Task:
    """The task registered under ``key``."""
    key = key.strip().lower().replace("-", "_")
    if key not in TASKS:
        raise UsageError(f"unknown task {key!r}; use one of {', '.join(TASKS)}.")
    return TASKS[key]


__all__ = [
    "METRICS",
    "TASKS",
    "AnswerMetric",
    "PairSet",
    "PromptPair",
    "Task",
    "TaskScores",
    "check_pairs",
    "evaluate_pairs",
    "get_metric",
    "get_task",
    "last_position_logits",
    "make_docstring_pairs",
    "make_greater_than_pairs",
    "make_induction_pairs",
    "make_ioi_pairs",
    "parse_pairs",
    "read_pairs",
    "split_of",
    "write_pairs",
]
