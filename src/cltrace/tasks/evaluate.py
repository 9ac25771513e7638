"""Score a model on prompt pairs at the last position.

Per pair: logit difference = mean logit of the answers minus mean logit of the wrong answers;
correct = every answer's logit beats every wrong answer's logit (for the usual one-answer pairs
both reduce to ``logit(answer) > logit(wrong)``); top-1 = the first answer is the most likely
next token of the whole vocabulary; and the chosen metric of :mod:`cltrace.tasks.metrics`.
Prompts of equal token length run as one batch.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from cltrace.tasks.metrics import get_metric
from cltrace.tasks.pairs import PromptPair, check_pairs

if TYPE_CHECKING:
    from cltrace.models import ModelAdapter


@dataclass
class TaskScores:
    """Per-pair results of one evaluation."""

    logit_diff: torch.Tensor
    """[n_pairs] answer minus wrong-answer logit at the last position."""
    correct: torch.Tensor
    """[n_pairs] bool, every answer logit above every wrong-answer logit."""
    top1: torch.Tensor
    """[n_pairs] bool, the first answer is the argmax of the last-position logits."""
    metric: str = "mean_logit_diff"
    """Name of the metric in ``values`` (:data:`cltrace.tasks.metrics.METRICS`)."""
    values: torch.Tensor | None = None
    """[n_pairs] the metric per pair (``logit_diff`` when None)."""

    @property
    def accuracy(self) -> float:
        return float(self.correct.float().mean()) if len(self.correct) else float("nan")

    @property
    def top1_accuracy(self) -> float:
        return float(self.top1.float().mean()) if len(self.top1) else float("nan")

    @property
    def mean_logit_diff(self) -> float:
        return float(self.logit_diff.mean()) if len(self.logit_diff) else float("nan")

    @property
    def metric_values(self) -> torch.Tensor:
        return self.logit_diff if self.values is None else self.values


@torch.no_grad()
def last_position_logits(
    adapter: ModelAdapter, prompts: list[str], batch_size: int = 64
) -> torch.Tensor:
    """[n_prompts, d_vocab] logits at each prompt's last token, batching equal lengths."""
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, text in enumerate(prompts):
        by_length[len(adapter.encode(text))].append(i)
    out = torch.empty(len(prompts), adapter.d_vocab)
    for idx in by_length.values():
        for start in range(0, len(idx), batch_size):
            chunk = idx[start : start + batch_size]
            tokens = adapter.to_tokens([prompts[i] for i in chunk])
            out[chunk] = adapter(tokens)[:, -1].float().cpu()
    return out


def evaluate_pairs(
    adapter: ModelAdapter,
    pairs: list[PromptPair],
    corrupt: bool = False,
    source: str = "<pairs>",
    batch_size: int = 64,
    allow_unk: bool = False,
    metric: str = "mean_logit_diff",
) -> TaskScores:
    """Accuracy, logit difference and ``metric`` on the clean prompts (or the corrupt ones).

    ``allow_unk``: score prompts with words the tokenizer does not know (read as its unk
    token, with one warning) instead of refusing them."""
    measure = get_metric(metric)
    check_pairs(pairs, adapter, source, allow_unk=allow_unk)
    prompts = [p.corrupt if corrupt else p.clean for p in pairs]
    logits = last_position_logits(adapter, prompts, batch_size)
    diffs, correct, top1, values = [], [], [], []
    for row, pair in zip(logits, pairs, strict=True):
        a = [adapter.single_token_id(t) for t in pair.answers]
        w = [adapter.single_token_id(t) for t in pair.wrong_answers]
        good, bad = row[a], row[w]
        diffs.append(good.mean() - bad.mean())
        correct.append(bool(good.min() > bad.max()))
        top1.append(int(row.argmax()) == a[0])
        values.append(measure(row, a, w))
    return TaskScores(
        torch.stack(diffs), torch.tensor(correct, dtype=torch.bool),
        torch.tensor(top1, dtype=torch.bool), measure.key, torch.stack(values),
    )  # fmt: skip
