"""What every section of the HTML report shares: the page's stylesheet and the small builders of
escaped text and table cells."""

from __future__ import annotations

import html
from typing import Any

#: The page's stylesheet (inline; system fonts only).
STYLE = """
:root { --ink: #1d2330; --muted: #5d6678; --line: #dfe3ea; --panel: #f6f8fb; --accent: #2f6fde;
        --good: #1f8a4c; --bad: #c6362f; --warn: #a86400; }
* { box-sizing: border-box; }
body { margin: 0; padding: 28px 36px 48px; color: var(--ink); background: #fff;
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 30px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 14px; margin: 16px 0 6px; }
code, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace;
              font-size: 12.5px; }
.subtitle { color: var(--muted); margin: 0 0 16px; }
.pipeline { background: var(--panel); border: 1px solid var(--line); border-radius: 6px;
            padding: 8px 10px; overflow-wrap: anywhere; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0 4px; }
.card { flex: 1 1 170px; background: var(--panel); border: 1px solid var(--line); border-radius: 8px;
        padding: 10px 14px; }
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .value { font-size: 22px; font-weight: 600; margin-top: 2px; }
.card .detail { color: var(--muted); font-size: 12px; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 999px; font-weight: 600;
         font-size: 12px; color: #fff; vertical-align: middle; }
.badge.passed { background: var(--good); } .badge.failed { background: var(--bad); }
.badge.neutral { background: var(--muted); }
.error { color: var(--bad); margin: 6px 0; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 4px; }
th, td { text-align: left; padding: 5px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--panel); font-weight: 600; font-size: 12.5px; color: var(--muted); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.total td { font-weight: 600; border-top: 2px solid var(--line); }
tr.noncompute td { color: var(--muted); }
.down { color: var(--good); } .up { color: var(--bad); } .same { color: var(--muted); }
.ok { color: var(--good); font-weight: 600; } .fail { color: var(--bad); font-weight: 600; }
.bars { width: 220px; }
.bar { height: 7px; border-radius: 3px; margin: 2px 0; }
.bar.before { background: #b7c2d6; } .bar.after { background: var(--accent); }
.legend span { display: inline-block; margin-right: 16px; color: var(--muted); font-size: 12px; }
.legend i { display: inline-block; width: 12px; height: 7px; border-radius: 2px; margin-right: 5px; }
/* Wide tables scroll inside their section rather than being clipped by the page; cells holding
   names (engine layers, fused ONNX nodes) wrap anywhere so the table fits the page first. */
.table-scroll { overflow-x: auto; max-width: 100%; }
td.mono { overflow-wrap: anywhere; word-break: break-word; }
#engine-layers th, #engine-layers td { padding: 5px 6px; }
#engine-layers th { white-space: normal; }
.chart { overflow-x: auto; border: 1px solid var(--line); border-radius: 8px; padding: 6px; }
/* Graph pictures: side by side where the page is wide enough, each scrolling inside a box of
   bounded height, so a graph of thousands of nodes does not make the page that long. */
.graph-pair { display: flex; flex-wrap: wrap; gap: 14px; }
.graph-panel { flex: 1 1 380px; min-width: 0; }
.graph-scroll { overflow: auto; max-height: 560px; border: 1px solid var(--line); border-radius: 8px;
                background: #fcfdfe; }
.graph-node rect { fill: #fff; stroke: #9aa5b8; stroke-width: 1; }
.graph-node text { fill: var(--ink); }
.graph-node.fused rect { fill: #fde3c8; stroke: #d9730d; stroke-width: 1.6; }
.graph-node.into-fused rect { fill: #fff4e8; stroke: #d9730d; }
.graph-node.rewritten rect { fill: #e3edfc; stroke: var(--accent); }
.graph-node.removed rect, .graph-node.added rect { stroke-dasharray: 3 2; fill: #f4f5f7; }
.graph-node.removed text { fill: var(--muted); }
.graph-scroll svg { display: block; margin: 0 auto; }
.graph-edge { fill: none; stroke: #b7c0cf; stroke-width: 1; }
.graph-edge.boundary { stroke: #c62828; stroke-width: 1.8; stroke-dasharray: 4 3; }
.graph-node.fallback rect { fill: #fdecea; stroke: #c62828; stroke-width: 2.2; }
.segment-box rect { fill: rgba(46, 125, 50, 0.06); stroke: #2e7d32; stroke-width: 1.4; stroke-dasharray: 6 3; }
.segment-box text { fill: #2e7d32; font-weight: 600; }
.legend i.swatch { display: inline-block; width: 14px; height: 10px; border-radius: 2px; margin-right: 5px;
          vertical-align: -1px; border: 1px solid #9aa5b8; }
.legend i.swatch.fused { background: #fde3c8; border: 1.6px solid #d9730d; }
.legend i.swatch.into-fused { background: #fff4e8; border-color: #d9730d; }
.legend i.swatch.rewritten { background: #e3edfc; border-color: var(--accent); }
.legend i.swatch.removed { background: #f4f5f7; border-style: dashed; }
.legend i.swatch.segment { background: rgba(46, 125, 50, 0.06); border: 1.4px dashed #2e7d32; }
.legend i.swatch.fallback { background: #fdecea; border: 2px solid #c62828; }
details { margin: 4px 0; } summary { cursor: pointer; }
.note { color: var(--muted); font-size: 12.5px; }
footer { margin-top: 32px; color: var(--muted); font-size: 12px; }
"""


def esc(value: Any) -> str:
    """``value`` as HTML text, quotes escaped (safe inside attributes)."""
    return html.escape(str(value), quote=True)


def num_cell(value: Any) -> str:
    """A right-aligned table cell."""
    return f'<td class="num">{esc(value)}</td>'


def delta_cell(delta: int, colored: bool = True) -> str:
    """A signed delta; fewer layers read green, more red (``colored``), no change grey."""
    css = ("down" if delta < 0 else "up" if delta > 0 else "same") if colored else \
        ("same" if delta == 0 else "")
    text = f"{delta:+d}" if delta else "0"
    return f'<td class="num {css}">{text}</td>'


def error_text(value: Any) -> str:
    """A parity error in three significant digits (``inf``/``nan`` arrive as strings)."""
    return value if isinstance(value, str) else f"{value:.3g}"
