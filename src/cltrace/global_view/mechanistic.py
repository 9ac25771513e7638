"""Mechanistic faithfulness as curves over depth, averaged over features and prompts.

:func:`cltrace.interventions.mechanistic_faithfulness` compares one perturbation's effect on
the residual stream in the local replacement model and in the real model, ``k`` layers after
the perturbed layer. Here that is repeated for the strongest active features of every layer
(except the last) on several prompts, and the cosine and NMSE are averaged per ``k`` (with a
normal-approximation 95% interval), once with the replacement model's features responding
(iterative) and once with nothing responding (the linear, constrained model).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

import numpy as np
import torch

from cltrace.interventions import Intervention, mechanistic_faithfulness
from cltrace.interventions.spec import clean_state, prompt_tokens
from cltrace.models.adapter import ModelAdapter
from cltrace.transcoders import CrossLayerTranscoder

MODES = {"iterative": True, "constrained": False}
"""Curve name -> whether the local model's features respond (``recompute_features``)."""


@dataclass
class Curve:
    """Mean, interval and count per ``k`` (index 0 is ``k = 1``)."""

    mean: list[float]
    low: list[float]
    high: list[float]
    n: list[int]


def _curve(values: dict[int, list[float]], ks: list[int]) -> Curve:
    mean, low, high, n = [], [], [], []
    for k in ks:
        v = np.asarray([x for x in values.get(k, []) if math.isfinite(x)])
        m = float(v.mean()) if v.size else float("nan")
        half = 1.96 * float(v.std(ddof=1)) / math.sqrt(v.size) if v.size > 1 else 0.0
        mean.append(m)
        low.append(m - half)
        high.append(m + half)
        n.append(int(v.size))
    return Curve(mean, low, high, n)


@dataclass
class FaithfulnessCurves:
    """Cosine and NMSE per ``k = 1 .. L-1`` for each mode in :data:`MODES`."""

    ks: list[int]
    cosine: dict[str, Curve] = field(default_factory=dict)
    nmse: dict[str, Curve] = field(default_factory=dict)
    n_perturbations: int = 0
    scale: float = -1.0
    records: list[dict] = field(default_factory=list)
    """One per perturbation and mode: prompt index, layer, position, feature, curves."""

    def to_json(self) -> dict:
        def c(d):
            return {m: vars(v) for m, v in d.items()}

        return {"ks": self.ks, "n_perturbations": self.n_perturbations, "scale": self.scale,
                "cosine": c(self.cosine), "nmse": c(self.nmse),
                "records": self.records}  # fmt: skip


def strongest_occurrences(
    adapter: ModelAdapter, transcoder: CrossLayerTranscoder, prompt: str, per_layer: int
) -> list[tuple[int, int, int]]:
    """``(layer, position, feature)`` of the ``per_layer`` largest activations of each layer but
    the last, BOS excluded."""
    state = clean_state(adapter, transcoder, prompt_tokens(adapter, prompt))
    a = state.active
    out = []
    for layer in range(transcoder.n_layers - 1):
        m = ((a.layer == layer) & (a.position > 0)).nonzero().squeeze(1)
        top = m[a.value[m].argsort(descending=True)[:per_layer]]
        out += [(layer, int(a.position[i]), int(a.feature[i])) for i in top]
    return out


@torch.no_grad()
def faithfulness_curves(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    prompts: Sequence[str],
    per_layer: int = 2,
    scale: float = -1.0,
) -> FaithfulnessCurves:
    """Curves of local-vs-real agreement over ``k`` (see the module docstring); each
    perturbation multiplies one feature occurrence's activation by ``scale``."""
    L = transcoder.n_layers
    ks = list(range(1, L))
    cos: dict[str, dict[int, list[float]]] = {m: {} for m in MODES}
    nmse: dict[str, dict[int, list[float]]] = {m: {} for m in MODES}
    out = FaithfulnessCurves(ks, scale=scale)
    for pi, prompt in enumerate(prompts):
        for layer, pos, feat in strongest_occurrences(adapter, transcoder, prompt, per_layer):
            iv = Intervention(layer, pos, feat, scale=scale)
            out.n_perturbations += 1
            for mode, recompute in MODES.items():
                res = mechanistic_faithfulness(adapter, transcoder, prompt, [iv], recompute)
                for k in range(1, res.cosine.numel()):
                    cos[mode].setdefault(k, []).append(float(res.cosine[k]))
                    nmse[mode].setdefault(k, []).append(float(res.nmse[k]))
                out.records.append({
                    "prompt": pi, "layer": layer, "position": pos, "feature": feat,
                    "mode": mode, "cosine": res.cosine[1:].tolist(), "nmse": res.nmse[1:].tolist(),
                })  # fmt: skip
    out.cosine = {m: _curve(cos[m], ks) for m in MODES}
    out.nmse = {m: _curve(nmse[m], ks) for m in MODES}
    return out


def render_html(curves: FaithfulnessCurves, title: str = "Mechanistic faithfulness") -> str:
    """A page with the cosine and NMSE curves (inline SVG) and a table of the values."""
    from cltrace.report.svg import Series, line_chart

    def series(d: dict[str, Curve]) -> list[Series]:
        xs = [float(k) for k in curves.ks]
        return [Series(f"local model, {m}", xs, c.mean, c.low, c.high) for m, c in d.items()]

    charts = [
        line_chart(series(curves.cosine), "cos(Δ local, Δ real)", "k (layers after the "
                   "perturbation)", "cosine", log_x=False),
        line_chart(series(curves.nmse), "NMSE |Δ local − Δ real|² / |Δ real|²",
                   "k (layers after the perturbation)", "NMSE", log_x=False),
    ]  # fmt: skip
    rows = "".join(
        f"<tr><td>{k}</td>"
        + "".join(f"<td>{curves.cosine[m].mean[i]:.3f}</td><td>{curves.nmse[m].mean[i]:.3f}</td>"
                  for m in MODES)
        + f"<td>{curves.cosine['iterative'].n[i]}</td></tr>"
        for i, k in enumerate(curves.ks)
    )  # fmt: skip
    heads = "".join(f"<th>cosine ({m})</th><th>NMSE ({m})</th>" for m in MODES)
    return (
        f"<!doctype html><meta charset='utf-8'><title>{escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;"
        "padding:2px 8px;text-align:right}table{border-collapse:collapse}</style>"
        f"<h1>{escape(title)}</h1><p>{curves.n_perturbations} perturbations (activation × "
        f"{curves.scale:g}); the same change in the local replacement model and the real model, "
        "compared on the residual stream k layers later (all positions).</p>"
        + "".join(charts)
        + f"<table><tr><th>k</th>{heads}<th>n</th></tr>{rows}</table>"
    )
