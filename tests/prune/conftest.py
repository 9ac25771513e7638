import pytest
import torch

from cltrace.tasks import PromptPair
from cltrace.testing import random_transcoder, tiny_model

PAIR = PromptPair("w1 w2 w3 w4 w2 w5", "w6 w7 w3 w4 w7 w5", (" w2",), (" w7",))


@pytest.fixture(scope="module", params=["llama", "gpt2", "gemma2"])
def setup(request):
    adapter = tiny_model(request.param)
    tc = random_transcoder(adapter, d_features=24, skip=request.param == "gpt2")
    return adapter, tc


def dense_writes(comps, tc, policy="corrupted_prompt"):
    """The delta writes as one dense ``[n, n_layers, d_model]`` float32 table, occurrence by
    occurrence from the transcoder's decoder matrices (the layout cltrace held before it built
    writes on demand): an independent reference for ``PairComponents``."""
    L, D = tc.n_layers, tc.d_model
    out = torch.zeros(comps.n, L, D)
    coef = comps.a_clean - (comps.a_corrupt if policy == "corrupted_prompt" else 0.0)
    for o in range(comps.n):
        layer, f = int(comps.layer[o]), int(comps.feature[o])
        rows = tc.W_dec[layer][f].float()  # [n_out, D]
        out[o, layer : layer + rows.shape[0]] = coef[o] * rows
    return out
