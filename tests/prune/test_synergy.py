"""FAP-Synergy (docs/METHODS.md §4) against hand arithmetic on a stub whose removal effects are
set by the test: pair synergy, clipping at 0, the two scales, the rerank inside the band."""

import random
import statistics

import pytest
import torch

from cltrace.prune import PruneConfig
from cltrace.prune.methods import synergy_select

# |S| ranks 5, 2, 1, 7 | 4, 0 | 3, 6: with K = 5 and bp = 40, h = round(0.4 * 5 * 0.5) = 1, so
# the core is units 5, 2, 1, 7 (always kept) and the band is units 4 and 0 (one is kept)
SCORES = torch.tensor([0.9, 3.0, -4.0, 0.1, 1.0, 5.0, 0.0, 2.0])
K = 5
SINGLE = {5: 2.0, 2: 1.0, 1: 0.5, 4: 0.8, 0: 0.6}
SYN = {(4, 5): -1.0, (4, 2): 0.0, (4, 1): -2.0, (0, 5): 3.0, (0, 2): 1.0, (0, 1): 0.0}


class Stub:
    """Removal effects M(S) of singletons and pairs from the tables above; records each call."""

    def __init__(self, lam, single=SINGLE, syn=SYN, partners=3):
        self.config = PruneConfig(
            lambda_syn=lam,
            boundary_percent=40.0,
            partners=partners,
            partners_per_candidate=partners,  # every partner drawn: the seed cannot matter
        )
        self.prompt_index = 0
        self.extras = {}
        self.single, self.syn = single, syn
        self.asked: list[tuple[int, ...]] = []

    def removal_effect(self, sets):
        out = []
        for s in sets:
            key = tuple(int(u) for u in s)
            self.asked.append(key)
            if len(key) == 1:
                out.append(self.single[key[0]])
            else:
                c, p = key
                out.append(self.single[c] + self.single[p] + self.syn[(c, p)])
        return torch.tensor(out, dtype=torch.float64)

    # the context's entry points for single effects (runs kept) and pair effects (resumed)
    def recorded_effects(self, units):
        return self.removal_effect([torch.tensor([u]) for u in units])

    def pair_effects(self, pairs):
        return self.removal_effect([torch.tensor(p) for p in pairs])


def _select(stub):
    return set(synergy_select(stub, SCORES, K, stub.config.lambda_syn).tolist())


FAP_SET = {5, 2, 1, 7, 4}


def test_hand_computed_boosts_and_the_lambda_where_synergy_flips_the_band():
    # base_scale = median(5, 4, 3, 2, 1) = 3; partner_scale = median(2.0, 1.0, 0.5) = 1.0
    # unit 4: syn = [-1, 0, -2], median -1, clipped to 0 -> boosted = 1.0 / 3
    # unit 0: syn = [3, 1, 0], median 1 -> boosted = 0.9 / 3 + lam * 1 / (1 + 1e-6)
    # so unit 0 overtakes unit 4 once lam > (1/3 - 0.3) * (1 + 1e-6) = 0.0333334
    flip = (1 / 3 - 0.3) * (1 + 1e-6)
    assert _select(Stub(lam=flip - 1e-5)) == FAP_SET
    assert _select(Stub(lam=flip + 1e-5)) == {5, 2, 1, 7, 0}
    assert _select(Stub(lam=3.0)) == {5, 2, 1, 7, 0}


def test_negative_synergy_is_clipped_not_subtracted():
    # unclipped, unit 4 would score 1/3 - 0.03 = 0.3033 < unit 0's 0.3 + 0.03 = 0.33
    assert _select(Stub(lam=0.03)) == FAP_SET
    # and a candidate whose only synergy is negative is never pushed below its |S| rank: with
    # unit 0's synergy negative too, the band keeps FAP's order for any lambda
    syn = {**SYN, (0, 5): -3.0, (0, 2): -1.0, (0, 1): -0.5}
    assert _select(Stub(lam=100.0, syn=syn)) == FAP_SET


def test_only_pairs_with_both_single_effects_positive_are_measured():
    stub = Stub(lam=3.0, single={**SINGLE, 1: -0.5, 0: -0.6})
    kept = _select(stub)
    singles = {k[0] for k in stub.asked if len(k) == 1}
    pairs = {k for k in stub.asked if len(k) == 2}
    assert singles == {5, 2, 1, 4, 0}  # the 3 partners and the 2 band candidates, once each
    assert pairs == {(4, 5), (4, 2)}  # unit 0 and partner 1 have negative effects
    assert kept == FAP_SET  # unit 0 gets no synergy, unit 4 only a clipped one
    assert stub.extras["single_effect"] == pytest.approx({5: 2.0, 2: 1.0, 1: -0.5, 4: 0.8, 0: -0.6})


def test_lambda_zero_is_exactly_fap_and_measures_nothing():
    stub = Stub(lam=0.0)
    kept = synergy_select(stub, SCORES, K, 0.0)
    assert set(kept.tolist()) == FAP_SET and kept.numel() == K
    assert stub.asked == []


def _reference(scores, k, lam, bp, cap, n_partners, single, syn):
    """FAP-Synergy in plain Python (docs/METHODS.md §4) with every partner drawn (so no
    sampling)."""
    n = len(scores)
    order = sorted(range(n), key=lambda i: (-abs(scores[i]), i))
    k = min(k, n)
    h = round(bp / 100 * k * 0.5)
    core = order[: k - h]
    band = order[k - h : min(n, k + h)][:cap]
    if h == 0 or not band or lam == 0:
        return set(order[:k]), {}
    partners = core[:n_partners]
    base = max(statistics.median(abs(scores[i]) for i in order[:k]), 1e-6)
    pscale = max(statistics.median(abs(single[p]) for p in partners), 1e-6)
    boosted = {}
    for c in band:
        s = [syn[(c, p)] for p in partners if single[p] > 0 and single[c] > 0]
        stat = statistics.median(s) if s else 0.0
        boosted[c] = abs(scores[c]) / base + lam * max(0.0, stat) / (pscale + 1e-6)
    ranked = sorted(band, key=lambda c: (-boosted[c], band.index(c)))
    return set(core) | set(ranked[: k - len(core)]), boosted


def test_reference_agrees_on_the_hand_case():
    scores = SCORES.tolist()
    keep, boosted = _reference(scores, K, 3.0, 40.0, 32, 3, SINGLE, SYN)
    assert keep == {5, 2, 1, 7, 0}
    assert boosted[4] == pytest.approx(1 / 3)
    assert boosted[0] == pytest.approx(0.3 + 3.0 / (1 + 1e-6))


def _case(seed):
    rng = random.Random(seed)
    n = rng.randint(6, 30)
    # odd K: base_scale is a median over K values, and with an even K the code's torch median
    # takes the lower middle value where statistics.median takes the mean of the two
    k = rng.choice([x for x in range(3, n + 1) if x % 2])
    return dict(
        scores=[rng.choice([-1, 1]) * rng.uniform(0.01, 5) for _ in range(n)],
        k=k,
        lam=rng.choice([0.0, 0.1, 1.0, 3.0]),
        bp=rng.choice([0.0, 25.0, 50.0, 100.0]),
        cap=32,
        n_partners=rng.choice([1, 3, 5]),
        single={u: rng.uniform(-1, 2) for u in range(n)},
        syn={(c, p): rng.uniform(-2, 2) for c in range(n) for p in range(n) if c != p},
    )


SEEDS = range(40)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_cases_match_the_plain_python_reference(seed):
    case = _case(seed)
    stub = Stub(
        lam=case["lam"], single=case["single"], syn=case["syn"], partners=case["n_partners"]
    )
    stub.config.boundary_percent = case["bp"]
    got = synergy_select(stub, torch.tensor(case["scores"]), case["k"], case["lam"])
    want, _ = _reference(**case)
    assert got.numel() == case["k"] and set(got.tolist()) == want


def test_the_random_cases_include_reranks():
    # the cases above are not all plain FAP: synergy changes the kept set in several of them
    changed = sum(
        _reference(**_case(s))[0] != _reference(**{**_case(s), "lam": 0.0})[0] for s in SEEDS
    )
    assert changed >= 5
