"""The compile report as one self-contained HTML page (``trtcompile compile --report-html PATH``).

The page is drawn from the same dict as ``report.json`` and the terminal table
(:func:`trtcompile.report.build_report`), so the three cannot disagree. It needs no network: the CSS
is inline, the chart and the graph pictures are inline SVG, there is no script and no external font
or image, so it can be attached to a CI run or mailed and read anywhere.

Sections: summary (verdict, layers, engine, parity, time), a chart of the layers after each pass,
the graph before and after (both drawn as SVG by :func:`graph_svg`, fused layers marked), the
per-pass table, the candidates each pass left alone and why, the op histogram before and after,
the engine layers with the ONNX nodes fused into each and the original nodes those stand for,
the parity table, tool versions.

The package, by page section: :mod:`~trtcompile.html_report.overview` (summary, layers chart),
:mod:`~trtcompile.html_report.graphs` (the graph pictures), :mod:`~trtcompile.html_report.passes`
(pass table, rejections, op histogram), :mod:`~trtcompile.html_report.engine` (engine layers,
partition, parity), drawn with :mod:`~trtcompile.html_report.markup` and put together by
:mod:`~trtcompile.html_report.page`. Every name is importable from ``trtcompile.html_report``.
"""

from trtcompile.html_report.graphs import (
    GRAPH_OPEN_NODES,
    LABEL_CHARS,
    NODE_GAP,
    NODE_HEIGHT,
    NODE_WIDTH,
    ROW_HEIGHT,
    graph_layout,
    graph_svg,
)
from trtcompile.html_report.markup import STYLE
from trtcompile.html_report.overview import layers_chart_svg
from trtcompile.html_report.page import render_html

__all__ = [
    "GRAPH_OPEN_NODES", "LABEL_CHARS", "NODE_GAP", "NODE_HEIGHT", "NODE_WIDTH", "ROW_HEIGHT", "STYLE",
    "graph_layout", "graph_svg", "layers_chart_svg", "render_html",
]
