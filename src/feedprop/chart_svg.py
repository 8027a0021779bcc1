"""Line charts as SVG text: axes with ticks, one polyline or set of markers per series, a legend.

No plotting library and no script: the chart is markup, so a page that embeds it is readable
offline and in any browser. Every point carries a ``<title>`` (a native tooltip) with its values.

Example:
    >>> svg = line_chart([Series("validation", [(0, 0.2), (1, 0.5), (2, 0.5)])], x_label="step", y_label="score")
    >>> svg.startswith("<svg") and "<polyline" in svg and "validation" in svg
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape

from feedprop.errors import InvalidInputError

__all__ = ["Series", "line_chart", "nice_ticks"]

#: Series styles: a connected line, a line holding each value until the next (``step``), or markers only.
STYLES = ("line", "step", "markers")


@dataclass(frozen=True)
class Series:
    """One series: ``name`` (legend), ``points`` ``(x, y)``, ``color``, ``style`` (one of :data:`STYLES`),
    ``marker`` (``circle``, ``cross`` or ``none``) and ``labels`` (one tooltip line per point, optional).

    Example:
        >>> Series("test", [(0, 0.1)], style="markers").marker
        'circle'
    """

    name: str
    points: Sequence[tuple[float, float]]
    color: str = "#1f77b4"
    style: str = "line"
    marker: str = "circle"
    labels: Sequence[str] = field(default_factory=tuple)
    dashed: bool = False

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise InvalidInputError(f"Series.style must be one of {STYLES}, got {self.style!r}")
        if self.marker not in ("circle", "cross", "none"):
            raise InvalidInputError(f"Series.marker must be 'circle', 'cross' or 'none', got {self.marker!r}")
        if self.labels and len(self.labels) != len(self.points):
            raise InvalidInputError(f"Series {self.name!r}: {len(self.labels)} labels for {len(self.points)} points")
        for x, y in self.points:
            if not (math.isfinite(x) and math.isfinite(y)):
                raise InvalidInputError(f"Series {self.name!r} has a point that is not finite: ({x}, {y})")


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering ``[low, high]`` (steps of 1, 2 or 5 times a power of ten).

    Example:
        >>> nice_ticks(0, 1)
        [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
        >>> nice_ticks(0, 1234)
        [0.0, 500.0, 1000.0, 1500.0]
    """
    if high <= low:
        high = low + 1
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < high - step * 1e-9:
        ticks.append(round(value, 10))
    return [float(t) for t in ticks]


def _fmt(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        number = int(value)
        return f"{number / 1000:g}k" if abs(number) >= 10_000 else str(number)
    return f"{value:.3g}"


def line_chart(
    series: Sequence[Series],
    *,
    x_label: str = "",
    y_label: str = "",
    title: str = "",
    width: int = 520,
    height: int = 300,
    y_range: tuple[float, float] | None = None,
    marks: Sequence[tuple[float, str]] = (),
    integer_x: bool = False,
) -> str:
    """An SVG line chart of ``series``; ``marks`` are ``(x, label)`` vertical guides (say, phase boundaries).

    ``y_range`` fixes the vertical axis (default: from the data, always including 0);
    ``integer_x`` keeps the horizontal ticks on whole numbers (steps). An empty chart (no points)
    still draws its axes and says so.

    Example:
        >>> svg = line_chart([Series("a", [(0, 1), (10, 3)])], marks=[(5, "phase 2")], title="t")
        >>> svg.count("<polyline"), "phase 2" in svg, 'class="chart"' in svg
        (1, True, True)
    """
    left, right, top, bottom = 52, 12, 28 if title else 12, 44
    legend_rows = math.ceil(len(series) / 3) if series else 0
    total_height = height + 8 + 18 * legend_rows
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [x for s in series for x, _ in s.points] + [x for x, _ in marks]
    ys = [y for s in series for _, y in s.points]
    x_ticks = nice_ticks(min(xs, default=0.0), max(xs, default=1.0), 6)
    if integer_x and len(x_ticks) > 1 and x_ticks[1] - x_ticks[0] < 1:
        x_ticks = [float(t) for t in range(math.floor(x_ticks[0]), math.ceil(x_ticks[-1]) + 1)]
    if y_range is not None:
        y_ticks = nice_ticks(y_range[0], y_range[1], 5)
    else:
        y_ticks = nice_ticks(min([0.0, *ys]), max(ys, default=1.0), 5)
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]

    def px(x: float) -> float:
        return left + (x - x0) / ((x1 - x0) or 1) * plot_w

    def py(y: float) -> float:
        return top + plot_h - (y - y0) / ((y1 - y0) or 1) * plot_h

    out = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{total_height}" '
        f'viewBox="0 0 {width} {total_height}" role="img" aria-label="{escape(title or y_label)}" '
        'font-family="system-ui, sans-serif" font-size="11">'
    ]
    if title:
        out.append(f'<text x="{width / 2:.1f}" y="16" text-anchor="middle" font-size="13">{escape(title)}</text>')
    for t in y_ticks:
        y = py(t)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{_fmt(t)}</text>')
    for t in x_ticks:
        x = px(t)
        out.append(f'<line x1="{x:.1f}" y1="{top + plot_h}" x2="{x:.1f}" y2="{top + plot_h + 4}" stroke="#777"/>')
        out.append(f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle" fill="#555">{_fmt(t)}</text>')
    out.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>'
        f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h + 34}" text-anchor="middle">{escape(x_label)}</text>'
        f'<text transform="translate(14 {top + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle">'
        f"{escape(y_label)}</text>"
    )
    for x, label in marks:
        out.append(
            f'<line class="mark" x1="{px(x):.1f}" y1="{top}" x2="{px(x):.1f}" y2="{top + plot_h}" '
            f'stroke="#aaa" stroke-dasharray="3 3"/>'
            f'<text x="{px(x) + 3:.1f}" y="{top + 11}" fill="#777">{escape(label)}</text>'
        )
    for s in series:
        out.append(_series(s, px, py))
    if not ys:
        out.append(
            f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h / 2:.1f}" text-anchor="middle" fill="#777">'
            "no points recorded</text>"
        )
    for i, s in enumerate(series):
        lx, ly = left + (i % 3) * (plot_w / 3), height + 12 + 18 * (i // 3)
        sample = (
            f'<line x1="{lx:.1f}" y1="{ly - 4}" x2="{lx + 18:.1f}" y2="{ly - 4}" stroke="{s.color}" stroke-width="2"'
            + (' stroke-dasharray="4 3"' if s.dashed else "")
            + "/>"
            if s.style != "markers"
            else _marker(s, lx + 9, ly - 4, "")
        )
        out.append(f'<g class="legend">{sample}<text x="{lx + 24:.1f}" y="{ly}">{escape(s.name)}</text></g>')
    out.append("</svg>")
    return "".join(out)


def _marker(s: Series, x: float, y: float, tip: str) -> str:
    title = f"<title>{escape(tip)}</title>" if tip else ""
    if s.marker == "cross":
        d = f"M{x - 4:.1f},{y - 4:.1f}L{x + 4:.1f},{y + 4:.1f}M{x - 4:.1f},{y + 4:.1f}L{x + 4:.1f},{y - 4:.1f}"
        return f'<path d="{d}" stroke="{s.color}" stroke-width="2">{title}</path>'
    if s.marker == "circle":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{s.color}">{title}</circle>'
    return ""


def _series(s: Series, px: Callable[[float], float], py: Callable[[float], float]) -> str:
    points = list(s.points)
    coords = [(px(x), py(y)) for x, y in points]
    parts = [f'<g class="series" data-name="{escape(s.name)}">']
    if s.style != "markers" and coords:
        path: list[tuple[float, float]] = []
        for i, (x, y) in enumerate(coords):
            if s.style == "step" and i:
                path.append((x, path[-1][1]))
            path.append((x, y))
        dash = ' stroke-dasharray="4 3"' if s.dashed else ""
        parts.append(
            f'<polyline fill="none" stroke="{s.color}" stroke-width="2"{dash} points="'
            + " ".join(f"{x:.1f},{y:.1f}" for x, y in path)
            + '"/>'
        )
    for i, ((x, y), (vx, vy)) in enumerate(zip(coords, points, strict=True)):
        tip = s.labels[i] if s.labels else f"{s.name}: {_fmt(vy)} at {_fmt(vx)}"
        parts.append(_marker(s, x, y, tip))
    parts.append("</g>")
    return "".join(parts)
