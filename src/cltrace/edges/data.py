"""Prompt pairs as token batches for the edge methods, and the metrics they optimise.

Pairs are grouped by token length (clean and corrupt of a pair must match), so every batch is a
rectangle and the answer is read at its last position.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from cltrace.errors import UsageError
from cltrace.tasks.pairs import PromptPair


@dataclass
class PairBatch:
    """Pairs of one token length."""

    clean: Int[Tensor, "batch pos"]
    corrupt: Int[Tensor, "batch pos"]
    answers: Int[Tensor, "batch n_answers"]
    """Answer ids, padded by repeating the first one (``answer_mask`` says which are real)."""
    answer_mask: Tensor
    wrong: Int[Tensor, "batch n_wrong"]
    wrong_mask: Tensor

    @property
    def size(self) -> int:
        return int(self.clean.shape[0])


def _pad(rows: list[list[int]]) -> tuple[Tensor, Tensor]:
    n = max(len(r) for r in rows)
    ids = torch.tensor([r + [r[0]] * (n - len(r)) for r in rows], dtype=torch.long)
    mask = torch.tensor([[1.0] * len(r) + [0.0] * (n - len(r)) for r in rows])
    return ids, mask


def make_batches(
    adapter, pairs: Sequence[PromptPair], source: str = "the pairs"
) -> list[PairBatch]:
    """Tokenise ``pairs`` and group them into batches of equal length."""
    if not pairs:
        raise UsageError(f"{source} hold no prompt pairs; give at least one.")
    groups: dict[int, list[tuple[list[int], list[int], list[int], list[int]]]] = {}
    for i, p in enumerate(pairs):
        clean, corrupt = adapter.encode(p.clean), adapter.encode(p.corrupt)
        if len(clean) != len(corrupt):
            raise UsageError(
                f"pair {i} of {source} has a clean prompt of {len(clean)} tokens and a corrupt "
                f"one of {len(corrupt)}; edge methods need equal lengths, so fix that pair."
            )
        ans = [adapter.single_token_id(a) for a in p.answers]
        wrong = [adapter.single_token_id(a) for a in p.wrong_answers]
        groups.setdefault(len(clean), []).append((clean, corrupt, ans, wrong))
    batches = []
    dev = adapter.device
    for _, rows in sorted(groups.items()):
        a_ids, a_mask = _pad([r[2] for r in rows])
        w_ids, w_mask = _pad([r[3] for r in rows])
        batches.append(
            PairBatch(
                clean=torch.tensor([r[0] for r in rows], device=dev),
                corrupt=torch.tensor([r[1] for r in rows], device=dev),
                answers=a_ids.to(dev),
                answer_mask=a_mask.to(dev),
                wrong=w_ids.to(dev),
                wrong_mask=w_mask.to(dev),
            )
        )
    return batches


# A metric maps (last-position logits [mask, batch, vocab], the batch, the full model's
# last-position log-probs [batch, vocab]) to one value per mask and example [mask, batch].
Metric = Callable[[Tensor, PairBatch, Tensor], Tensor]


def _logit_diff(x: Float[Tensor, "m b v"], batch: PairBatch, _ref: Tensor) -> Tensor:
    a = x.gather(-1, batch.answers[None, :, :1].expand(x.shape[0], -1, -1))[..., 0]
    w = x.gather(-1, batch.wrong[None, :, :1].expand(x.shape[0], -1, -1))[..., 0]
    return a - w


def _prob_diff(x: Tensor, batch: PairBatch, _ref: Tensor) -> Tensor:
    p = torch.softmax(x.float(), -1)
    m = x.shape[0]
    pa = p.gather(-1, batch.answers[None].expand(m, -1, -1)) * batch.answer_mask
    pw = p.gather(-1, batch.wrong[None].expand(m, -1, -1)) * batch.wrong_mask
    return pa.sum(-1) - pw.sum(-1)


def _neg_kl(x: Tensor, _batch: PairBatch, ref: Tensor) -> Tensor:
    """Minus KL(full || run): larger is closer to the full model, like the other metrics."""
    logq = torch.log_softmax(x.float(), -1)
    return -(ref.exp() * (ref - logq)).sum(-1)


METRICS: dict[str, Metric] = {
    "logit_diff": _logit_diff,
    "prob_diff": _prob_diff,
    "kl": _neg_kl,
}


def get_metric(name: str) -> Metric:
    key = name.strip().lower().replace("-", "_")
    if key not in METRICS:
        raise UsageError(f"unknown edge metric {name!r}; use one of {', '.join(METRICS)}.")
    return METRICS[key]


def kl_full_to(x: Float[Tensor, "m b v"], ref: Float[Tensor, "b v"]) -> Tensor:
    """KL(full || run) per mask and example, from last-position logits and full log-probs."""
    return -_neg_kl(x, None, ref)  # type: ignore[arg-type]
