from __future__ import annotations

import pytest
import torch

from cltrace.edges.context import prepare
from cltrace.edges.data import PairBatch
from cltrace.testing import tiny_model


def random_batch(adapter, b=3, p=6, seed=0) -> PairBatch:
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(4, 200, (b, p), generator=g)
    corrupt = torch.randint(4, 200, (b, p), generator=g)
    answers = torch.randint(4, 200, (b, 2), generator=g)
    wrong = torch.randint(4, 200, (b, 1), generator=g)
    return PairBatch(clean, corrupt, answers, torch.ones(b, 2), wrong, torch.ones(b, 1))


@pytest.fixture(scope="module")
def gpt2_double():
    torch.manual_seed(0)
    a = tiny_model("gpt2", n_layers=2, n_heads=2, d_model=16)
    a.hf_model.double()
    return a


@pytest.fixture(scope="module")
def gpt2_ctx(gpt2_double):
    batches = [random_batch(gpt2_double, 3, 6, 0), random_batch(gpt2_double, 2, 4, 1)]
    return prepare(gpt2_double, batches)
