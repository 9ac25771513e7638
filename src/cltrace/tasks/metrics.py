"""Behaviour metrics over a pair's answer set and wrong-answer set (docs/METHODS.md §4).

Each metric maps the last-position logits of one prompt and the two token-id sets to one number
that is large when the model prefers the answers:

================== ===========================================================================
``logit_diff``     ``logit[answers[0]] - logit[wrong_answers[0]]`` (the first of each set)
``mean_logit_diff`` mean logit of the answers minus mean logit of the wrong answers
``prob_diff``      summed probability of the answers minus summed probability of the wrong ones
                   (greater-than's metric, Hanna et al. 2023)
``logsumexp``      ``logsumexp`` of the answers' logits minus that of the wrong answers' logits
================== ===========================================================================

All four are differentiable in the logits, so pruning methods that need a gradient of the
behaviour can use any of them. With one answer and one wrong answer the three logit metrics are
the same number.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from cltrace.errors import UsageError


@dataclass(frozen=True)
class AnswerMetric:
    """One registered metric."""

    key: str
    """Name on the command line and in result files."""
    title: str
    """What it measures, in a few words."""
    fn: Callable[[Tensor, Tensor, Tensor], Tensor]
    """``fn(logits [..., d_vocab], answer_ids [a], wrong_ids [w]) -> [...]``."""

    def __call__(
        self,
        logits: Float[Tensor, "*batch d_vocab"],
        answers: Sequence[int] | Tensor,
        wrong: Sequence[int] | Tensor,
    ) -> Float[Tensor, "*batch"]:
        a = torch.as_tensor(answers, dtype=torch.long, device=logits.device)
        w = torch.as_tensor(wrong, dtype=torch.long, device=logits.device)
        if a.numel() == 0 or w.numel() == 0:
            raise ValueError("a metric needs at least one answer and one wrong answer")
        return self.fn(logits.float(), a, w)


def _logit_diff(x: Tensor, a: Tensor, w: Tensor) -> Tensor:
    return x[..., a[0]] - x[..., w[0]]


def _mean_logit_diff(x: Tensor, a: Tensor, w: Tensor) -> Tensor:
    return x[..., a].mean(-1) - x[..., w].mean(-1)


def _prob_diff(x: Tensor, a: Tensor, w: Tensor) -> Tensor:
    p = torch.softmax(x, -1)
    return p[..., a].sum(-1) - p[..., w].sum(-1)


def _logsumexp(x: Tensor, a: Tensor, w: Tensor) -> Tensor:
    return torch.logsumexp(x[..., a], -1) - torch.logsumexp(x[..., w], -1)


METRICS: dict[str, AnswerMetric] = {
    m.key: m
    for m in (
        AnswerMetric("logit_diff", "first answer minus first wrong answer (logits)", _logit_diff),
        AnswerMetric("mean_logit_diff", "mean answer minus mean wrong logit", _mean_logit_diff),
        AnswerMetric("prob_diff", "answer probability mass minus wrong mass", _prob_diff),
        AnswerMetric("logsumexp", "logsumexp over answers minus over wrong answers", _logsumexp),
    )
}


def get_metric(name: str) -> AnswerMetric:
    """The metric registered as ``name`` (``-`` and ``_`` alike)."""
    key = name.strip().lower().replace("-", "_")
    if key not in METRICS:
        raise UsageError(f"unknown metric {name!r}; use one of {', '.join(METRICS)}.")
    return METRICS[key]


__all__ = ["METRICS", "AnswerMetric", "get_metric"]
