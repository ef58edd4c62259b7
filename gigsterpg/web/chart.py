"""The runs chart: an inline SVG drawn on the server (no script, no library).

Bars are the runs' durations (left scale), the line their documents per
second (right scale), oldest run on the left. A failed or interrupted run's
bar is red, a running one's grey; each bar and point has a tooltip.
"""
from html import escape
from typing import List

from gigsterpg.lib.pg.db.states import FAILED, FOLLOW, INTERRUPTED, RUNNING, SUCCEEDED

WIDTH, HEIGHT = 560, 220
LEFT, RIGHT, TOP, BOTTOM = 52, 60, 16, 34
BAR_COLOURS = {SUCCEEDED: "#4c78a8", FAILED: "#d62728", INTERRUPTED: "#e45756", RUNNING: "#9d9d9d"}
LINE_COLOUR = "#f58518"


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k at or above ``value`` (a readable top of a scale)."""
    if value <= 0:
        return 1.0
    step = 10 ** (len(str(int(value))) - 1) if value >= 1 else 1.0
    while step > value:
        step /= 10
    for factor in (1, 2, 2.5, 5, 10):
        if factor * step >= value:
            return factor * step
    return 10 * step


def short(value: float) -> str:
    if value >= 10000:
        return f"{value / 1000:,.0f}k"
    if value >= 1000:
        return f"{value / 1000:,.1f}k".replace(".0k", "k")
    return f"{value:,.2f}".rstrip("0").rstrip(".") if value < 10 else f"{value:,.0f}"


def runs_chart(runs: List[dict]) -> str:
    """The SVG of ``runs`` (newest first, as ``gigsterpg.lib.status.runs`` gives them); empty without runs.

    A follower's stretches are left out: they read no collection, and last hours.
    """
    shown = [run for run in reversed(runs) if run["mode"] != FOLLOW]
    if not shown:
        return ""
    seconds_top = nice_ceiling(max((run["seconds"] or 0) for run in shown))
    rate_top = nice_ceiling(max((run["rate"] or 0) for run in shown))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / len(shown)
    bar_w = max(4.0, min(40.0, slot * 0.6))
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" xmlns="http://www.w3.org/2000/svg"'
             f' aria-label="Duration and documents per second of the last {len(shown)} runs">']
    for fraction in (0, 0.5, 1):
        y = TOP + plot_h * (1 - fraction)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">'
                     f'{short(seconds_top * fraction)} s</text>')
        parts.append(f'<text x="{WIDTH - RIGHT + 6}" y="{y + 4:.1f}" class="axis rate">'
                     f'{short(rate_top * fraction)}/s</text>')
    points = []
    for index, run in enumerate(shown):
        centre = LEFT + slot * (index + 0.5)
        seconds = run["seconds"] or 0
        height = plot_h * seconds / seconds_top
        tip = escape(f"run {run['id']} ({run['mode']}, {run['status']}): "
                     + (f"{seconds:.1f} s" if run["seconds"] is not None else "still running")
                     + (f", {run['rate']:,.0f} documents/s" if run["rate"] else ""))
        colour = BAR_COLOURS.get(run["status"], "#9d9d9d")
        parts.append(f'<rect x="{centre - bar_w / 2:.1f}" y="{TOP + plot_h - height:.1f}" width="{bar_w:.1f}"'
                     f' height="{max(height, 1):.1f}" fill="{colour}" class="bar"><title>{tip}</title></rect>')
        parts.append(f'<text x="{centre:.1f}" y="{HEIGHT - BOTTOM + 14}" text-anchor="middle" class="axis">'
                     f'{run["id"]}</text>')
        if run["rate"]:
            points.append((centre, TOP + plot_h * (1 - run["rate"] / rate_top), tip))
    if len(points) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{LINE_COLOUR}" stroke-width="2"/>')
    for x, y, tip in points:
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{LINE_COLOUR}" class="point">'
                     f'<title>{tip}</title></circle>')
    parts.append(f'<text x="{LEFT}" y="{HEIGHT - 4}" class="axis">run</text>')
    parts.append(f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 4}" text-anchor="end" class="axis">'
                 '<tspan class="key-bar">&#9632;</tspan> duration (s)  '
                 f'<tspan fill="{LINE_COLOUR}">&#9679;</tspan> documents/s</text>')
    parts.append("</svg>")
    return "".join(parts)
