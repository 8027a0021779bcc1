"""Line charts as SVG: where the points land, ticks, marks, legend, and bad input."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

import pytest

from feedprop.chart_svg import Series, line_chart, nice_ticks
from feedprop.errors import InvalidInputError

SVG = "{http://www.w3.org/2000/svg}"


def polyline_points(svg: str) -> list[list[tuple[float, float]]]:
    root = ET.fromstring(svg)
    return [
        [tuple(float(v) for v in pair.split(",")) for pair in (p.get("points") or "").split()]  # type: ignore[misc]
        for p in root.iter(f"{SVG}polyline")
    ]


def test_points_map_onto_the_plot_in_order_and_higher_scores_are_higher() -> None:
    svg = line_chart([Series("val", [(0, 0.0), (1, 0.5), (2, 1.0)])], y_range=(0, 1))
    (line,) = polyline_points(svg)
    xs, ys = [x for x, _ in line], [y for _, y in line]
    assert xs == sorted(xs) and len(set(xs)) == 3
    assert ys[0] > ys[1] > ys[2]  # SVG's y grows downwards
    assert math.isclose(ys[0] - ys[1], ys[1] - ys[2])


def test_a_step_series_holds_each_value_until_the_next() -> None:
    (line,) = polyline_points(line_chart([Series("kept", [(0, 0.0), (2, 1.0)], style="step")]))
    assert len(line) == 3 and line[1] == (line[2][0], line[0][1])


def test_markers_only_series_draw_no_line_and_every_point_has_a_tooltip() -> None:
    svg = line_chart([Series("test", [(0, 0.2), (3, 0.8)], style="markers", labels=["before", "after"])])
    root = ET.fromstring(svg)
    assert polyline_points(svg) == []
    assert [t.text for t in root.iter(f"{SVG}title")] == ["before", "after"]
    assert len(list(root.iter(f"{SVG}circle"))) == 3  # two points and the legend's sample


def test_marks_legend_and_escaping() -> None:
    svg = line_chart([Series("a<b", [(0, 1.0)], marker="cross")], marks=[(0.5, "1:p & more")], title="<t>")
    assert "a&lt;b" in svg and "1:p &amp; more" in svg and "&lt;t&gt;" in svg
    root = ET.fromstring(svg)
    assert any(line.get("class") == "mark" for line in root.iter(f"{SVG}line"))


def test_integer_axes_for_steps() -> None:
    svg = line_chart([Series("s", [(0, 0.0), (3, 1.0)])], integer_x=True)
    labels = re.findall(r'text-anchor="middle" fill="#555">([^<]+)<', svg)
    assert labels == ["0", "1", "2", "3"]


def test_an_empty_chart_says_so() -> None:
    assert "no points recorded" in line_chart([])


def test_nice_ticks_cover_the_range_with_round_steps() -> None:
    assert nice_ticks(0, 1) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    ticks = nice_ticks(3, 47_000, 5)
    assert ticks[0] <= 3 and ticks[-1] >= 47_000 and ticks[1] - ticks[0] == 10_000
    assert nice_ticks(5, 5)[0] <= 5 <= nice_ticks(5, 5)[-1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"style": "bars"}, "style"),
        ({"marker": "star"}, "marker"),
        ({"labels": ["one", "two"]}, "2 labels for 1 points"),
        ({"points": [(0.0, math.nan)]}, "not finite"),
    ],
)
def test_bad_series_are_refused(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"name": "s", "points": [(0.0, 1.0)], **kwargs}
    with pytest.raises(InvalidInputError, match=message):
        Series(**args)  # type: ignore[arg-type]
