"""Small inline SVG charts and badges (pure string building; the template escapes nothing else).

Every value placed in the SVG is a number formatted here or text passed through
``html.escape``: the output is safe to mark as markup.
"""
from __future__ import annotations

import html

from lib.units import parse_iso

WIDTH = 320

HEIGHT = 72

PAD = 4

COLOURS = {"ok": "#2e7d32", "warning": "#b26a00", "inconclusive": "#6d4c9f", "failed": "#c62828",
           "unknown": "#757575"}


def human(value: float, unit: str) -> str:
    """``1.5 h``, ``12.0 MB``, ``$0.0150``, ``3.2 s``: numbers for a glance."""
    if unit == "seconds":
        for size, name in ((86400, "d"), (3600, "h"), (60, "min")):
            if value >= size:
                return f"{value / size:.1f} {name}"
        return f"{value:.1f} s"
    if unit == "bytes":
        for size, name in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
            if value >= size:
                return f"{value / size:.1f} {name}"
        return f"{value:.0f} B"
    if unit == "usd":
        return f"${value:.4f}"
    return f"{value:g}"


def line_chart(points: list[list], title: str, unit: str) -> str:
    """An SVG sparkline of ``[[iso time, value], ...]`` (oldest first) with its range in words."""
    label = html.escape(title)
    if not points:
        return (f'<svg class="chart" role="img" aria-label="{label}: no data" viewBox="0 0 {WIDTH} {HEIGHT}">'
                f'<text x="{PAD}" y="{HEIGHT // 2}">no data yet</text></svg>')
    times = [parse_iso(t).timestamp() for t, _ in points]
    values = [float(v) for _, v in points]
    t0, t1 = min(times), max(times)
    low, high = min(values), max(values)
    span_t, span_v = (t1 - t0) or 1.0, (high - low) or 1.0
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD - 14

    def xy(t: float, v: float) -> str:
        x = PAD + (t - t0) / span_t * inner_w if len(points) > 1 else WIDTH / 2
        y = PAD + 14 + inner_h - (v - low) / span_v * inner_h
        return f"{x:.1f},{y:.1f}"

    path = " ".join(xy(t, v) for t, v in zip(times, values))
    last = xy(times[-1], values[-1]).split(",")
    summary = f"{label}: now {html.escape(human(values[-1], unit))}, " \
              f"range {html.escape(human(low, unit))} to {html.escape(human(high, unit))}"
    return (f'<svg class="chart" role="img" aria-label="{summary}" viewBox="0 0 {WIDTH} {HEIGHT}">'
            f'<title>{summary}</title>'
            f'<text x="{PAD}" y="12" class="chart-label">{label}: {html.escape(human(values[-1], unit))}</text>'
            f'<text x="{WIDTH - PAD}" y="12" text-anchor="end" class="chart-range">'
            f'{html.escape(human(low, unit))} – {html.escape(human(high, unit))}</text>'
            f'<polyline fill="none" stroke="#1565c0" stroke-width="1.8" points="{path}"/>'
            f'<circle cx="{last[0]}" cy="{last[1]}" r="2.5" fill="#1565c0"/></svg>')


def badge(label: str, status: str) -> str:
    """A shields.io-style flat badge (``label | status``) as a standalone SVG document."""
    colour = COLOURS.get(status, COLOURS["unknown"])
    left, right = 7 * len(label) + 12, 7 * len(status) + 12
    width = left + right
    lab, stat = html.escape(label), html.escape(status)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img" '
            f'aria-label="{lab}: {stat}"><title>{lab}: {stat}</title>'
            f'<rect width="{left}" height="20" fill="#555"/>'
            f'<rect x="{left}" width="{right}" height="20" fill="{colour}"/>'
            f'<g fill="#fff" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11" text-anchor="middle">'
            f'<text x="{left / 2:.1f}" y="14">{lab}</text><text x="{left + right / 2:.1f}" y="14">{stat}</text>'
            f'</g></svg>\n')
