"""ERA and TWERA: virtual weights weighted by how features co-activate on data.

For a source ``s`` in an earlier layer than a target ``t`` (Ameisen, Lindsey et al. 2025):

* ``ERA[s, t] = E[1(a_t > 0) a_s] V[s, t]``: the expected residual-direct attribution, counted
  only on tokens where the target fires;
* ``TWERA[s, t] = (E[a_t a_s] / E[a_t]) V[s, t]``: the same weighted by the target's activation,
  so weak (often polysemantic) target activations count less.

Expectations are over tokens at the same position. Only pairs that co-activate somewhere in
the corpus get a value: a large ``V`` between features that never fire together is
interference, and both scores are zero for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jaxtyping import Float, Int

from cltrace.global_view.coactivation import CoactStats
from cltrace.global_view.virtual import Feature, virtual_weights
from cltrace.transcoders import CrossLayerTranscoder

SCORES = ("v", "era", "twera")
"""The columns a :class:`PairTable` can be ranked by."""


@dataclass
class PairTable:
    """Co-activating ``(source, target)`` pairs with ``l_s < l_t`` and their global weights."""

    features: list[Feature]
    src: Int[np.ndarray, " n"]
    """Index into ``features``."""
    tgt: Int[np.ndarray, " n"]
    v: Float[np.ndarray, " n"]
    era: Float[np.ndarray, " n"]
    twera: Float[np.ndarray, " n"]
    coact: Float[np.ndarray, " n"]
    """``E[a_s a_t]`` (over all tokens)."""

    def __len__(self) -> int:
        return int(self.src.size)

    def order(self, by: str = "twera") -> Int[np.ndarray, " n"]:
        """Pair indices by decreasing ``|score|`` (ties: source, then target index)."""
        score = np.abs(getattr(self, by))
        return np.lexsort((self.tgt, self.src, -score))

    def top(self, by: str = "twera", k: int = 20) -> list[dict]:
        """The ``k`` strongest pairs by ``|by|`` as JSON-ready records."""
        out = []
        for i in self.order(by)[:k]:
            s, t = self.features[self.src[i]], self.features[self.tgt[i]]
            out.append({
                "source": f"{s[0]}/{s[1]}", "target": f"{t[0]}/{t[1]}", "v": float(self.v[i]),
                "era": float(self.era[i]), "twera": float(self.twera[i]),
                "coactivation": float(self.coact[i]),
            })  # fmt: skip
        return out

    def keys(self) -> list[tuple[Feature, Feature]]:
        return [(self.features[s], self.features[t]) for s, t in zip(self.src, self.tgt,
                                                                      strict=True)]  # fmt: skip


def pair_table(transcoder: CrossLayerTranscoder, stats: CoactStats) -> PairTable:
    """ERA and TWERA of every co-activating pair of ``stats`` whose source precedes its target."""
    layer = np.array([f[0] for f in stats.features])
    keep = layer[stats.rows] < layer[stats.cols]
    src, tgt = stats.rows[keep], stats.cols[keep]
    # V over the chosen set, one block per layer pair (the set, not the dictionary)
    v = virtual_weights(transcoder, stats.features, stats.features).double().numpy()[src, tgt]
    n = max(stats.n_tokens, 1)
    mean_t = stats.sum[tgt] / n
    e_ind = stats.ind[keep] / n
    e_prod = stats.prod[keep] / n
    # a co-activating target has E[a_t] > 0; the guard only keeps the division defined
    twera = np.where(mean_t > 0, e_prod / np.where(mean_t > 0, mean_t, 1.0), 0.0) * v
    return PairTable(stats.features, src, tgt, v, e_ind * v, twera, e_prod)
