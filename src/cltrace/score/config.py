"""Options of stage III (saved beside the scores in ``scores_summary.json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

FADE_ALPHAS: tuple[float, ...] = (-50.0, -10.0, -1.0, 0.0, 1.0, 10.0, 50.0)


@dataclass(frozen=True)
class ScoreConfig:
    """How descriptions are scored; the defaults follow FADE (docs/METHODS.md §7)."""

    reduce: str = "fade"
    """Sequence score: ``fade`` (signed value at the largest |activation|) or ``max`` (PIE)."""
    max_tokens: int = 128
    """Texts are cut to this many tokens (BOS included) before scoring."""
    batch_size: int = 16
    """Texts per forward pass."""
    n_generate: int = 15
    """Generation requests for the synthetic (clarity) set."""
    sampling: str = "bins"
    """Natural texts to rate: ``bins`` (FADE percentile bins) or ``top_random`` (PIE)."""
    n_rated: int = 500
    """Natural texts rated per feature with ``bins``."""
    top_share: float = 0.1
    """Share of ``n_rated`` filled with the highest-activation texts."""
    n_top: int = 10
    """``top_random``: highest-activation texts rated."""
    n_random: int = 10
    """``top_random``: random texts rated besides."""
    min_nonzero: int = 15
    """Fewer non-zero ratings than this triggers one extra round (FADE's sparse concepts)."""
    n_extra: int = 100
    """Texts rated in that extra round: the highest-activation ones not rated yet."""
    faithfulness: bool = True
    """Compute faithfulness (steered generation) when the gates below pass."""
    gate: float = 0.5
    """Faithfulness needs clarity and responsiveness both at least this."""
    alphas: tuple[float, ...] = FADE_ALPHAS
    """Clamp factors: the feature is set to ``alpha * max |activation on the corpus|``."""
    n_faith_prompts: int = 50
    """Random natural texts used as prompts for steered generation."""
    n_new_tokens: int = 30
    """Tokens generated per prompt (greedy)."""
    max_prompt_tokens: int = 64
    """Prompts are cut to this many tokens."""
    n_detect: int = 10
    """Activating and non-activating examples each, for detection (activating ones for fuzzing)."""
    highlight_share: float = 0.6
    """Fuzzing marks tokens above this fraction of the example's largest activation."""
    seed: int = 0
    """Seed of every sample drawn."""
    rules: str = "fade"
    """How the separation scores treat ties and ratings. ``fade``: ties count one half, texts
    rated 1 are left out, purity is undefined without a text rated 2. ``pie`` (PIE's stage
    III): strict ``>`` (ties count against), texts rated 1 are negatives, purity is 0 without a
    text rated 2, and purity is the average precision of the activations as they are (not of
    the separating direction)."""

    @classmethod
    def pie(cls, **overrides) -> ScoreConfig:
        """PIE's simplified evaluation (docs/METHODS.md §7): max pooling, one generation request,
        10 top + 10 random texts rated, no faithfulness, and PIE's rules (``rules="pie"``)."""
        base = cls(reduce="max", n_generate=1, sampling="top_random", faithfulness=False,
                   seed=42, rules="pie")  # fmt: skip
        return replace(base, **overrides)

    @classmethod
    def pie_fade_rules(cls, **overrides) -> ScoreConfig:
        """PIE's sampling with FADE's rules (ties one half, rating 1 left out): what
        :meth:`pie` was before it followed PIE's rules (``--variant pie-fade``)."""
        return cls.pie(rules="fade", **overrides)

    def to_json(self) -> dict:
        d = asdict(self)
        d["alphas"] = list(self.alphas)
        return d
