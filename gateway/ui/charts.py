"""Charts drawn on the server as SVG with pygal, inlined in the page.

pygal writes a <style> and a <script> into each chart; the pages' Content-Security-Policy allows
neither inline, so both are taken out of the tree and the charts are styled by the site's own
style sheet (static/style.css, `.pygal-chart` rules); so is pygal's one style attribute, on the
tooltip box the script would move. The title is the chart's accessible name; the page shows
it as HTML (pygal's own would be cut on a narrow chart). Without the script there are no hover
tooltips: each chart sits beside a table of the same figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from xml.etree import ElementTree as ET

import pygal
from markupsafe import Markup
from pygal.graph.graph import Graph

SIZE = {"width": 720, "height": 320}
Series = Mapping[str, Sequence[float | None]]


def _svg(chart: Graph, title: str, dashed: Sequence[int] = ()) -> Markup:
    """The chart's tree without pygal's inline style and script; the series at the indexes in
    `dashed` get the class `dashed` (drawn dashed by the style sheet)."""
    tree = chart.render_tree()
    for parent in list(tree.iter()):
        for child in list(parent):
            if (str(child.tag).rpartition("}")[2] in ("style", "script")
                    or child.get("class") == "tooltip"):  # the script's, hidden by a style
                parent.remove(child)
        classes = parent.get("class", "").split()
        if any(f"serie-{i}" in classes for i in dashed):
            parent.set("class", " ".join([*classes, "dashed"]))
    tree.attrib.pop("id", None)  # empty with no_prefix: pages hold several charts
    tree.set("role", "img")
    tree.set("aria-label", title)
    return Markup(ET.tostring(tree, encoding="unicode"))  # noqa: S704 (pygal's escaped tree)




def line_chart(title: str, labels: Sequence[str], series: Series, *,
               dashed: Sequence[str] = ()) -> Markup:
    """Lines over `labels`; the series named in `dashed` are drawn dashed (a pace, a limit)."""
    chart = pygal.Line(js=[], disable_xml_declaration=True, no_prefix=True,
                       show_dots=len(labels) <= 62, x_label_rotation=30,
                       show_minor_x_labels=False, x_labels_major_every=max(1, len(labels) // 8),
                       legend_at_bottom=True, **SIZE)
    chart.x_labels = list(labels)
    for name, values in series.items():
        chart.add(name, list(values))
    return _svg(chart, title, [i for i, name in enumerate(series) if name in dashed])


def bar_chart(title: str, labels: Sequence[str], series: Series) -> Markup:
    chart = pygal.Bar(js=[], disable_xml_declaration=True, no_prefix=True,
                      legend_at_bottom=True, x_label_rotation=30, **SIZE)
    chart.x_labels = list(labels)
    for name, values in series.items():
        chart.add(name, list(values))
    return _svg(chart, title)
