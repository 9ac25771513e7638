"""Small self-contained SVG line charts with confidence bands (no plotting dependency)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#17becf", "#7f7f7f", "#bcbd22")  # fmt: skip


DASHES = ("none", "6 3", "2 2", "8 3 2 3", "4 4", "1 3", "10 2", "6 2 2 2 2 2")
"""SVG dash patterns, one per series (so lines differ without colour)."""


def _marker(i: int, x: float, y: float, color: str) -> str:
    """The i-th series' marker: circle, square, triangle, diamond, cross, in turn."""
    kind, r = i % 5, 3.5
    if kind == 0:
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{color}"/>'
    if kind == 1:
        return (f'<rect x="{x - r:.1f}" y="{y - r:.1f}" width="{2 * r}" height="{2 * r}" '
                f'fill="{color}"/>')  # fmt: skip
    if kind == 2:
        pts = f"{x:.1f},{y - r - 1:.1f} {x - r:.1f},{y + r:.1f} {x + r:.1f},{y + r:.1f}"
        return f'<polygon points="{pts}" fill="{color}"/>'
    if kind == 3:
        pts = f"{x:.1f},{y - r - 1:.1f} {x + r + 1:.1f},{y:.1f} {x:.1f},{y + r + 1:.1f} " \
              f"{x - r - 1:.1f},{y:.1f}"  # fmt: skip
        return f'<polygon points="{pts}" fill="none" stroke="{color}" stroke-width="1.5"/>'
    d = f"M{x - r:.1f},{y - r:.1f}L{x + r:.1f},{y + r:.1f}M{x - r:.1f},{y + r:.1f}L{x + r:.1f},"
    return f'<path d="{d}{y - r:.1f}" stroke="{color}" stroke-width="2"/>'


@dataclass
class Series:
    """One line: x values, means and the CI band around them."""

    name: str
    x: list[float]
    y: list[float]
    low: list[float]
    high: list[float]


def _finite(v: float) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def line_chart(
    series: list[Series],
    title: str,
    x_label: str,
    y_label: str,
    log_x: bool = True,
    width: int = 640,
    height: int = 380,
    log_y: bool = False,
    x_ticks: list[float] | None = None,
) -> str:
    """An SVG chart; x on a log scale by default (budgets double). ``log_y`` puts y on a log
    scale (values at or below 0 are left out), so curves that differ at 1e-3 stay apart.
    Each series has its own colour, dash pattern and marker shape (readable in grey). The x
    axis is labelled at ``x_ticks`` (default: every x of every series)."""
    ok_y = (lambda v: _finite(v) and v > 0) if log_y else _finite
    pts = [(x, v) for s in series for x, y, lo, hi in zip(s.x, s.y, s.low, s.high, strict=True)
           for v in (y, lo, hi) if ok_y(v) and x > 0]  # fmt: skip
    if not pts:
        return f"<p>{escape(title)}: no data</p>"
    fx = (lambda x: math.log10(x)) if log_x else (lambda x: x)
    gy = (lambda y: math.log10(y)) if log_y else (lambda y: y)
    xs = [fx(p[0]) for p in pts]
    ys = [gy(p[1]) for p in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = (math.floor(min(ys)), math.ceil(max(ys))) if log_y else (min(0.0, min(ys)), max(ys))
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1
    ml, mr, mt, mb = 60, 150, 30, 45
    pw, ph = width - ml - mr, height - mt - mb

    def px(x: float) -> float:
        return ml + (fx(x) - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return mt + (1 - (gy(y) - y0) / (y1 - y0)) * ph

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<text x="{ml}" y="18" font-size="13" font-weight="bold">{escape(title)}</text>',
        f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>',
    ]
    ticks = ([10.0**e for e in range(int(y0), int(y1) + 1)] if log_y
             else [y0 + (y1 - y0) * i / 4 for i in range(5)])  # fmt: skip
    for yv in ticks:
        parts.append(f'<text x="{ml - 6}" y="{py(yv) + 4:.1f}" text-anchor="end">{yv:.3g}</text>')
        parts.append(
            f'<line x1="{ml}" x2="{ml + pw}" y1="{py(yv):.1f}" y2="{py(yv):.1f}" stroke="#eee"/>'
        )
    xticks = sorted({x for s in series for x in s.x if x > 0} if x_ticks is None else x_ticks)
    for xv in xticks:
        parts.append(
            f'<text x="{px(xv):.1f}" y="{mt + ph + 15}" text-anchor="middle">{xv:g}</text>'
        )
    parts.append(
        f'<text x="{ml + pw / 2}" y="{height - 8}" text-anchor="middle">{escape(x_label)}</text>'
    )
    parts.append(
        f'<text x="14" y="{mt + ph / 2}" transform="rotate(-90 14 {mt + ph / 2})" '
        f'text-anchor="middle">{escape(y_label)}</text>'
    )
    for i, s in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        ok = [(x, y, lo, hi) for x, y, lo, hi in zip(s.x, s.y, s.low, s.high, strict=True)
              if x > 0 and ok_y(y) and ok_y(lo) and ok_y(hi)]  # fmt: skip
        if not ok:
            continue
        band = [f"{px(x):.1f},{py(hi):.1f}" for x, _, _, hi in ok]
        band += [f"{px(x):.1f},{py(lo):.1f}" for x, _, lo, _ in reversed(ok)]
        parts.append(f'<polygon points="{" ".join(band)}" fill="{color}" opacity="0.15"/>')
        line = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y, _, _ in ok)
        dash = DASHES[i % len(DASHES)]
        parts.append(f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="2" '
                     f'stroke-dasharray="{dash}"/>')  # fmt: skip
        for x, y, _, _ in ok:
            parts.append(_marker(i, px(x), py(y), color))
        ly = mt + 12 + 16 * i
        parts.append(
            f'<line x1="{ml + pw + 10}" x2="{ml + pw + 28}" y1="{ly - 4}" y2="{ly - 4}" '
            f'stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/>'
        )
        parts.append(_marker(i, ml + pw + 19, ly - 4, color))
        parts.append(f'<text x="{ml + pw + 32}" y="{ly}">{escape(s.name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)
