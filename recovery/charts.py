"""Charts drawn on the server as inline SVG, for the admin's recovery overview.

No script and no inline style (the site's CSP allows neither): colours are presentation
attributes, text takes the page's colour (`currentColor`), and recovery/overview.css sizes the
text for a phone. ElementTree writes the markup, so every label is escaped and the result is
well-formed XML. Each chart is an image with a <title> and a <desc> for screen readers; the
page puts the same figures in a table beside it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from django.utils.safestring import SafeString, mark_safe

SVG_NAMESPACE = "http://www.w3.org/2000/svg"


@dataclass(frozen=True)
class Series:
    """One stacked part of a bar: its key in the bars' counts, its name and its colour."""

    key: str
    label: str
    colour: str


@dataclass(frozen=True)
class Bar:
    """One bar: what hovering it says, and its counts by series key."""

    tooltip: str
    counts: Mapping[str, int]


def nice_scale(top: int, ticks: int = 4) -> tuple[int, int]:
    """(axis maximum, step): the smallest step of 1, 2 or 5 times a power of ten that reaches `top` in at
    most `ticks` steps, so the gridlines fall on round numbers."""
    top = max(top, 1)
    magnitude = 1
    while True:
        for multiple in (1, 2, 5):
            step = multiple * magnitude
            if step * ticks >= top:
                return step * -(-top // step), step
        magnitude *= 10


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _element(parent: ET.Element, tag: str, text: str | None = None, **attrs: object) -> ET.Element:
    """A child element; attribute names use _ for - (text_anchor → text-anchor)."""
    element = ET.SubElement(
        parent,
        tag,
        {
            name.rstrip("_").replace("_", "-"): _number(value)
            if isinstance(value, float)
            else str(value)
            for name, value in attrs.items()
        },
    )
    if text is not None:
        element.text = text
    return element


def _svg(chart_id: str, width: int, height: int, title: str, desc: str) -> ET.Element:
    svg = ET.Element(
        "svg",
        {
            "xmlns": SVG_NAMESPACE,
            "viewBox": f"0 0 {width} {height}",
            "role": "img",
            "aria-labelledby": f"{chart_id}-title {chart_id}-desc",
            "id": chart_id,
            "class": "recovery-chart",
            "font-size": "12",
            "fill": "currentColor",
        },
    )
    _element(svg, "title", title, id=f"{chart_id}-title")
    _element(svg, "desc", desc, id=f"{chart_id}-desc")
    return svg


def _markup(svg: ET.Element) -> SafeString:
    # ElementTree escapes every text and attribute value it writes.
    return mark_safe(ET.tostring(svg, encoding="unicode"))  # noqa: S308


def stacked_bars(
    chart_id: str,
    bars: Sequence[Bar],
    series: Sequence[Series],
    *,
    marks: Sequence[tuple[int, str]],
    title: str,
    desc: str,
    y_title: str,
    x_title: str,
    step: float = 4.0,
    labels_on_ticks: bool = False,
) -> SafeString:
    """Vertical bars stacked by series, bottom to top in the order of `series`, with a count
    axis and gridlines on the left and, below, a tick and a label at each of `marks` (bar index,
    label: a label is centred under its stretch of bars when there is room for it, or with
    `labels_on_ticks` under its tick, as a clock time is). Each bar is `step` units wide: a
    week of hours fits in narrow bars, a day of hours in wide ones."""
    left, right, top, bottom, plot_height = 64, 8, 20, 64, 200
    plot_width = step * len(bars)
    width, height = int(left + plot_width + right), top + plot_height + bottom
    svg = _svg(chart_id, width, height, title, desc)
    base = top + plot_height
    peak = max((sum(bar.counts.values()) for bar in bars), default=0)
    axis_max, axis_step = nice_scale(peak)
    scale = plot_height / axis_max

    grid = _element(svg, "g", class_="grid", stroke="currentColor", stroke_opacity=0.15)
    for value in range(0, axis_max + 1, axis_step):
        y = base - value * scale
        _element(grid, "line", x1=left, x2=left + plot_width, y1=float(y), y2=float(y))
        _element(
            svg,
            "text",
            str(value),
            x=left - 6,
            y=float(y),
            text_anchor="end",
            dominant_baseline="middle",
            class_="tick",
        )
    ends = [index for index, _ in marks[1:]] + [len(bars)]
    for (index, label), end in zip(marks, ends, strict=True):
        x = left + index * step
        # A tick below the axis, and a gridline as faint as the count gridlines (a darker one
        # would read as a bar).
        _element(grid, "line", x1=x, x2=x, y1=top, y2=base)
        _element(svg, "line", x1=x, x2=x, y1=base, y2=base + 6, stroke="currentColor")
        if label and (end - index) * step >= 48:
            _element(
                svg,
                "text",
                label,
                x=x if labels_on_ticks else left + (index + end) * step / 2,
                y=base + 8,
                text_anchor="middle",
                dominant_baseline="hanging",
                class_="tick",
            )

    for index, bar in enumerate(bars):
        if not any(bar.counts.values()):
            continue
        group = _element(svg, "g")
        _element(group, "title", bar.tooltip)
        y = float(base)
        for part in series:
            count = bar.counts.get(part.key, 0)
            if not count:
                continue
            y -= count * scale
            _element(
                group,
                "rect",
                x=left + index * step + 0.25,
                y=y,
                width=step - 0.5,
                height=count * scale,
                fill=part.colour,
                class_="segment",
            )

    _element(
        svg,
        "line",
        x1=left,
        x2=left + plot_width,
        y1=base,
        y2=base,
        class_="axis",
        stroke="currentColor",
    )
    _element(svg, "line", x1=left, x2=left, y1=top, y2=base, class_="axis", stroke="currentColor")
    _element(
        svg,
        "text",
        y_title,
        x=14,
        y=top + plot_height / 2,
        transform=f"rotate(-90 14 {_number(top + plot_height / 2)})",
        text_anchor="middle",
        dominant_baseline="middle",
        class_="axis-title",
    )
    _element(
        svg,
        "text",
        x_title,
        x=left + plot_width / 2,
        y=height - 6,
        text_anchor="middle",
        class_="axis-title",
    )
    return _markup(svg)


def horizontal_bars(
    chart_id: str,
    rows: Sequence[tuple[str, int]],
    *,
    colour: str,
    title: str,
    desc: str,
    y_title: str,
    x_title: str,
) -> SafeString:
    """One horizontal bar per (label, count) row, top to bottom, the count at its end: a
    histogram whose bucket labels stay readable on a phone."""
    left, right, top, bottom, row_height = 104, 40, 28, 44, 26
    plot_width = 336
    width = left + plot_width + right
    height = top + row_height * len(rows) + bottom
    svg = _svg(chart_id, width, height, title, desc)
    base = top + row_height * len(rows)
    axis_max, axis_step = nice_scale(max((count for _, count in rows), default=0))
    scale = plot_width / axis_max

    grid = _element(svg, "g", class_="grid", stroke="currentColor", stroke_opacity=0.15)
    for value in range(0, axis_max + 1, axis_step):
        x = float(left + value * scale)
        _element(grid, "line", x1=x, x2=x, y1=top, y2=base)
        _element(
            svg,
            "text",
            str(value),
            x=x,
            y=base + 8,
            text_anchor="middle",
            dominant_baseline="hanging",
            class_="tick",
        )
    for index, (label, count) in enumerate(rows):
        middle = float(top + (index + 0.5) * row_height)
        _element(
            svg,
            "text",
            label,
            x=left - 8,
            y=middle,
            text_anchor="end",
            dominant_baseline="middle",
            class_="tick",
        )
        if count:
            group = _element(svg, "g")
            _element(group, "title", f"{label}: {count}")
            _element(
                group,
                "rect",
                x=left,
                y=top + index * row_height + 4.0,
                width=float(count * scale),
                height=row_height - 8,
                fill=colour,
            )
        _element(
            svg,
            "text",
            str(count),
            x=float(left + count * scale + 6),
            y=middle,
            dominant_baseline="middle",
            class_="tick value",
        )
    _element(svg, "line", x1=left, x2=left, y1=top, y2=base, class_="axis", stroke="currentColor")
    _element(svg, "text", y_title, x=0, y=16, class_="axis-title")
    _element(
        svg,
        "text",
        x_title,
        x=left + plot_width / 2,
        y=height - 6,
        text_anchor="middle",
        class_="axis-title",
    )
    return _markup(svg)
