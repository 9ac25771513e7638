"""Stage III's shared passes give each feature what its own passes give."""

import numpy as np

from cltrace.score.activations import sequence_scores, token_activations
from cltrace.score.batched import prefetch
from cltrace.score.config import ScoreConfig
from cltrace.score.raters.base import Generated
from cltrace.score.sampling import detection_sample
from tests.score.conftest import TEXTS

FEATURES = [(0, 3), (1, 5), (2, 0), (0, 7), (1, 5)]


class TableRater:
    """Generation by table: each description names the texts it 'writes'."""

    def generate(self, description, n):
        return Generated([TEXTS[int(i)] for i in description.split(",") if i])


def test_prefetch_equals_one_feature_at_a_time(setup):
    adapter, tc = setup
    cfg = ScoreConfig(n_detect=3, batch_size=2)
    descs = ["0,1,2", "2,3", "", "4,5,6,1", "6"]
    natural = sequence_scores(adapter, tc, TEXTS, FEATURES, cfg.reduce, batch_size=3)
    pre = prefetch(adapter, tc, TableRater(), FEATURES, descs, TEXTS, natural, cfg)
    assert (natural != 0).any()
    for j, feat in enumerate(FEATURES):
        gen = TableRater().generate(descs[j], 1)
        assert pre[j].generated.texts == gen.texts
        if gen.texts:
            own = sequence_scores(adapter, tc, gen.texts, [feat], cfg.reduce, batch_size=1)[0]
            np.testing.assert_allclose(pre[j].synthetic, own, atol=2e-4)
        else:
            assert pre[j].synthetic.size == 0
        act, _ = detection_sample(natural[j], cfg.n_detect, cfg.seed)
        own_tok = token_activations(adapter, tc, [TEXTS[i] for i in act], [feat], batch_size=1)
        assert len(pre[j].activating) == act.size
        for a, b in zip(pre[j].activating, own_tok, strict=True):
            assert a.ids == b.ids
            np.testing.assert_allclose(a.acts, b.acts, atol=1e-5)
