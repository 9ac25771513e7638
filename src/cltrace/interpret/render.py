"""Turning stored example windows into text: ``<<marked>>`` prompts, HTML, token summaries."""

from __future__ import annotations

from collections import Counter
from html import escape

HIGHLIGHT_FRACTION = 0.6
"""Tokens above this fraction of the example's maximum activation are highlighted (docs/METHODS.md
§6)."""


def _runs(tokens: list[str], acts: list[float], fraction: float):
    """``(text, highlighted)`` runs: consecutive tokens share one highlight state."""
    peak = max(acts) if acts else 0.0
    cut = fraction * peak
    runs: list[tuple[str, bool]] = []
    for tok, a in zip(tokens, acts, strict=True):
        hot = peak > 0 and a > cut
        if runs and runs[-1][1] == hot:
            runs[-1] = (runs[-1][0] + tok, hot)
        else:
            runs.append((tok, hot))
    return runs


def _split_space(text: str) -> tuple[str, str]:
    # keep a run's leading whitespace outside the marker, as the model saw it before the word
    stripped = text.lstrip()
    return text[: len(text) - len(stripped)], stripped


def marked_text(example: dict, fraction: float = HIGHLIGHT_FRACTION) -> str:
    """The example's text with strongly active runs wrapped in ``<<`` ``>>``."""
    out = []
    for text, hot in _runs(example["tokens"], example["tokens_acts_list"], fraction):
        if hot:
            lead, body = _split_space(text)
            out.append(f"{lead}<<{body or text}>>")
        else:
            out.append(text)
    return "".join(out)


def example_html(example: dict, fraction: float = HIGHLIGHT_FRACTION) -> str:
    """HTML of one example: every text escaped, strongly active runs in ``<span class='hl'>``."""
    out = []
    for text, hot in _runs(example["tokens"], example["tokens_acts_list"], fraction):
        body = escape(text).replace("\n", "⏎")
        out.append(f"<span class='hl'>{body}</span>" if hot else body)
    return "".join(out)


def top_token_summary(examples: list[dict], n: int = 5) -> list[tuple[str, int]]:
    """The tokens at which the examples peak, most frequent first (ties: stronger first)."""
    counts: Counter[str] = Counter()
    strength: dict[str, float] = {}
    for ex in examples:
        tok = ex["tokens"][ex["max_pos"]]
        counts[tok] += 1
        strength[tok] = max(strength.get(tok, 0.0), ex["max_value"])
    order = sorted(counts, key=lambda t: (-counts[t], -strength[t], t))
    return [(t, counts[t]) for t in order[:n]]


def quote_tokens(tokens: list[str]) -> str:
    """Tokens shown with their spaces visible: ``" red", " blue"``."""
    return ", ".join('"' + t.replace("\n", "\\n") + '"' for t in tokens)
