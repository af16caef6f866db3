"""Small bar charts drawn on the server by pygal, inlined as accessible SVG (no script, no fetch)."""

from __future__ import annotations

import functools
import re
from html import escape

import pygal
from markupsafe import Markup
from pygal.style import Style

# GOV.UK colours: text black, secondary grey, brand blue bars; Arial like the pages.
_STYLE = Style(
    background="#ffffff",
    plot_background="#ffffff",
    foreground="#0b0c0c",
    foreground_strong="#0b0c0c",
    foreground_subtle="#505a5f",
    colors=("#1d70b8",),
    opacity="1",
    opacity_hover="1",
    font_family="arial, sans-serif",
    label_font_size=14,
    major_label_font_size=14,
    value_font_size=14,
    title_font_size=16,
    guide_stroke_color="#b1b4b6",
    major_guide_stroke_color="#b1b4b6",
)

_SCRIPT = re.compile(r"<script\b.*?</script>", re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)


def bar_chart(
    *,
    chart_id: str,
    title: str,
    labels: list[str],
    values: list[int],
    spoken: list[str] | None = None,
    rotate: int = 0,
) -> Markup:
    """An inline SVG bar chart with role="img" and a <title> naming every bar and its value.

    `labels` go under the bars; `spoken` (longer, e.g. "Under 1 day" for "<1") name them in the title.
    """
    svg = _pygal_svg(chart_id, tuple(labels), tuple(values), rotate)
    names = spoken or labels
    summary = f"{title}: " + "; ".join(f"{name}: {value}" for name, value in zip(names, values, strict=True))
    svg = svg.replace(
        "<svg ",
        f'<svg role="img" aria-labelledby="{chart_id}-title" focusable="false" class="app-chart__svg" ',
        1,
    )
    head_end = svg.index(">") + 1
    svg = svg[:head_end] + f'<title id="{chart_id}-title">{escape(summary)}</title>' + svg[head_end:]
    return Markup(svg)


# The same numbers draw the same chart: pygal takes ~10 ms a chart, the page's budget is 200 ms.
# The chart id is part of the key so two charts on a page never share pygal's element ids.
@functools.lru_cache(maxsize=128)
def _pygal_svg(chart_id: str, labels: tuple[str, ...], values: tuple[int, ...], rotate: int) -> str:
    chart = pygal.Bar(
        js=[],  # pygal's tooltips load a script from the web: none here (and CSP forbids it)
        disable_xml_declaration=True,
        show_legend=False,
        print_values=True,
        print_zeroes=True,
        width=400,
        height=250,
        margin=12,
        style=_STYLE,
        include_x_axis=True,
        show_y_guides=True,
        min_scale=2,
        max_scale=6,
        truncate_label=-1,  # never "5 …": rotate long labels instead
        x_label_rotation=rotate,
    )
    chart.x_labels = list(labels)
    chart.add("Open referrals", list(values))
    svg: str = chart.render(is_unicode=True)
    # pygal writes an inline <script> with its config even when js=[]: a nonce-less inline
    # script would be refused by our CSP (and reported); the chart needs none.
    return _COMMENT.sub("", _SCRIPT.sub("", svg))
