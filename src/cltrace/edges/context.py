"""What every edge method needs once per dataset: the batches, the values removed edges carry
(the intervention) and the full model's answers."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from cltrace.edges.data import PairBatch
from cltrace.edges.forward import graph_of, masked_forward
from cltrace.edges.graph import EdgeGraph
from cltrace.errors import UsageError

INTERVENTIONS = ("patching", "zero", "mean", "mean-positional")
"""What a removed edge carries: the writer's output on the corrupted prompt (``patching``),
zero, its mean over every clean example and position (``mean``), or its mean over examples at
each position (``mean-positional``, within a batch of one length)."""


@dataclass
class EdgeContext:
    adapter: object
    graph: EdgeGraph
    batches: list[PairBatch]
    corrupt: list[Tensor]
    """Per batch, what each writer carries on a removed edge, ``[writer, batch, pos, d_model]``."""
    clean: list[Tensor]
    """Per batch, each writer's clean output, ``[writer, batch, pos, d_model]``."""
    full_logprobs: list[Tensor]
    """Per batch, the full model's last-position log-probabilities ``[batch, vocab]``."""

    @property
    def n_examples(self) -> int:
        return sum(b.size for b in self.batches)


@torch.no_grad()
def prepare(adapter, batches: list[PairBatch], intervention: str = "patching") -> EdgeContext:
    if intervention not in INTERVENTIONS:
        raise UsageError(
            f"unknown intervention {intervention!r}; use one of {', '.join(INTERVENTIONS)}."
        )
    clean, full = [], []
    for b in batches:
        run = masked_forward(adapter, b.clean, record=True)
        clean.append(run.writers[:, 0])
        full.append(torch.log_softmax(run.logits[0, :, -1].float(), -1))
    if intervention == "patching":
        corrupt = [masked_forward(adapter, b.corrupt, record=True).writers[:, 0] for b in batches]
    elif intervention == "zero":
        corrupt = [torch.zeros_like(c) for c in clean]
    elif intervention == "mean":
        total = sum(c.sum((1, 2)) for c in clean)
        count = sum(c.shape[1] * c.shape[2] for c in clean)
        mean = total / count
        corrupt = [mean[:, None, None].expand_as(c).clone() for c in clean]
    else:
        corrupt = [c.mean(1, keepdim=True).expand_as(c).clone() for c in clean]
    return EdgeContext(adapter, graph_of(adapter), batches, corrupt, clean, full)
