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
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from trtcompile import report as text_report

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
.legend i.swatch { display: inline-block; width: 14px; height: 10px; border-radius: 2px; margin-right: 5px;
          vertical-align: -1px; border: 1px solid #9aa5b8; }
.legend i.swatch.fused { background: #fde3c8; border: 1.6px solid #d9730d; }
.legend i.swatch.into-fused { background: #fff4e8; border-color: #d9730d; }
.legend i.swatch.rewritten { background: #e3edfc; border-color: var(--accent); }
.legend i.swatch.removed { background: #f4f5f7; border-style: dashed; }
details { margin: 4px 0; } summary { cursor: pointer; }
.note { color: var(--muted); font-size: 12.5px; }
footer { margin-top: 32px; color: var(--muted); font-size: 12px; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any) -> str:
    return f'<td class="num">{_e(value)}</td>'


def _delta_cell(delta: int, colored: bool = True) -> str:
    """A signed delta; fewer layers read green, more red (``colored``), no change grey."""
    css = ("down" if delta < 0 else "up" if delta > 0 else "same") if colored else \
        ("same" if delta == 0 else "")
    text = f"{delta:+d}" if delta else "0"
    return f'<td class="num {css}">{text}</td>'


def _error_text(value: Any) -> str:
    return value if isinstance(value, str) else f"{value:.3g}"


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def _summary(report: Mapping[str, Any]) -> str:
    status = report["status"]
    model = report["model"]
    layers = report["layers"]
    engine = report["engine"]
    parity = report["parity"]
    verdict = ('<span class="badge passed">passed</span>' if status["passed"]
               else f'<span class="badge failed">failed (exit {status["exit_code"]})</span>')
    parts = [
        f'<h1>trtcompile report {verdict}</h1>',
        f'<p class="subtitle">{_e(model.get("description") or model.get("source") or "model")}</p>',
    ]
    if status.get("error"):
        parts.append(f'<p class="error">{_e(status["error"])}</p>')
    parts.append(f'<div class="pipeline"><span class="note">pipeline</span> '
                 f'<code>{_e(report["pipeline"] or "(no passes)")}</code></div>')

    delta = layers["optimized"] - layers["input"]
    cards = [("graph layers", f'{layers["input"]} &rarr; {layers["optimized"]}',
              f'{delta:+d} layers over {len(report["passes"])} pass runs' if delta
              else f'unchanged over {len(report["passes"])} pass runs')]
    if engine.get("built"):
        profile0 = [layer for layer in engine.get("layers", []) if layer.get("profile", 0) == 0]
        cards.append(("engine compute layers", str(engine["compute_layers"]),
                      f'{len(profile0)} engine layers; built in '
                      f'{text_report.format_seconds(engine["build_seconds"])}'))
    else:
        cards.append(("engine", "not built", _e(engine.get("reason", ""))))
    if parity["checked"]:
        worst = max((o["max_abs"] for o in parity["outputs"].values()
                     if not isinstance(o["max_abs"], str)), default=None)
        cards.append(("parity", "passed" if parity["passed"] else "FAILED",
                      f'worst max_abs {worst:.3g}' if worst is not None else "no outputs compared"))
    else:
        cards.append(("parity", "not checked", ""))
    total = report.get("seconds", {}).get("total")
    if total is not None:
        cards.append(("total time", text_report.format_seconds(total),
                      f'passes {text_report.format_seconds(report.get("passes_seconds", 0.0))}'))
    parts.append('<div class="cards" id="summary">' + "".join(
        f'<div class="card"><div class="label">{_e(label)}</div><div class="value">{value}</div>'
        f'<div class="detail">{detail}</div></div>' for label, value, detail in cards) + "</div>")
    return "\n".join(parts)


def layers_chart_svg(report: Mapping[str, Any]) -> str:
    """An inline SVG line chart of the graph's layer count: the input, then after each pass run
    (x), with the count at every point that changed it."""
    points = [("input", report["layers"]["input"])]
    points += [(text_report.pass_label(r), r["layers_after"]) for r in report["passes"]]
    step = 56
    left, right, top, bottom = 56, 40, 30, 150
    width = max(920, left + right + step * max(len(points) - 1, 1))
    height = 330
    plot_h = height - top - bottom
    values = [v for _, v in points]
    low, high = min(values), max(values)
    if high == low:
        low, high = max(0, low - 1), high + 1
    span = high - low
    low, high = max(0, low - span * 0.1), high + span * 0.1

    def x(i: int) -> float:
        if len(points) == 1:
            return left + (width - left - right) / 2
        return left + i * (width - left - right) / (len(points) - 1)

    def y(v: float) -> float:
        return top + plot_h * (1 - (v - low) / (high - low))

    out = [f'<svg role="img" id="layers-chart" '
           f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'font-family="system-ui, sans-serif" font-size="11">',
           '<title>Graph layers after each pass</title>']
    for k in range(5):  # horizontal grid with the count it marks
        v = low + (high - low) * k / 4
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                   'stroke="#e6e9ef"/>')
        out.append(f'<text x="{left - 8}" y="{y(v) + 4:.1f}" text-anchor="end" fill="#5d6678">'
                   f'{v:.0f}</text>')
    polyline = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, (_, v) in enumerate(points))
    out.append(f'<polyline class="layers-line" points="{polyline}" fill="none" stroke="#2f6fde" '
               'stroke-width="2.2" stroke-linejoin="round"/>')
    previous = None
    for i, (label, v) in enumerate(points):
        changed = previous is None or v != previous
        out.append(f'<circle class="layers-point" data-pass="{_e(label)}" data-layers="{v}" '
                   f'cx="{x(i):.1f}" cy="{y(v):.1f}" r="{4.5 if changed else 3}" '
                   f'fill="{"#2f6fde" if changed else "#fff"}" stroke="#2f6fde" stroke-width="1.6">'
                   f'<title>{_e(label)}: {v} layers</title></circle>')
        if changed:  # the first label starts right of its point, clear of the axis labels
            anchor, dx = ("start", 7) if i == 0 else ("middle", 0)
            out.append(f'<text x="{x(i) + dx:.1f}" y="{y(v) - 9:.1f}" text-anchor="{anchor}" '
                       f'font-weight="600" fill="#1d2330">{v}</text>')
        short = label if len(label) <= 30 else label[:29] + "\u2026"
        out.append(f'<text x="{x(i):.1f}" y="{height - bottom + 16}" text-anchor="end" '
                   f'fill="#5d6678" transform="rotate(-40 {x(i):.1f} {height - bottom + 16})">'
                   f'{_e(short)}</text>')
        previous = v
    out.append(f'<text x="14" y="{top + plot_h / 2:.1f}" fill="#5d6678" text-anchor="middle" '
               f'transform="rotate(-90 14 {top + plot_h / 2:.1f})">layers</text>')
    out.append("</svg>")
    return "\n".join(out)


#: Graph pictures: node box width and height, gap between boxes, row height (px).
NODE_WIDTH, NODE_HEIGHT, NODE_GAP, ROW_HEIGHT = 128, 24, 12, 48
#: Above this many nodes (either graph) the before/after pictures start folded (click to open).
GRAPH_OPEN_NODES = 400
#: Characters of an op label that fit a node box.
LABEL_CHARS = 19


def graph_layout(node_count: int, edges: Sequence[Sequence[int]]) -> dict[int, tuple[float, int]]:
    """A layered layout: node index -> (x slot, row). Rows are dataflow depth: networkx's
    topological generations (one row below the deepest producer), then each node moved down to
    just above its first consumer; within a row, nodes are ordered by the mean slot of their
    producers (one barycentre sweep, ties by index) and the row is centred."""
    import networkx as nx

    dag = nx.DiGraph()
    dag.add_nodes_from(range(node_count))
    dag.add_edges_from((int(a), int(b)) for a, b in edges)
    try:
        depth = {v: d for d, generation in enumerate(nx.topological_generations(dag))
                 for v in generation}
    except nx.NetworkXUnfeasible:  # not a DAG (a malformed model): one node per row, in order
        depth = {v: v for v in range(node_count)}
    else:
        # Then as late as possible: each node just above its first consumer, so what only feeds
        # a layer far below (Constant, ConstantOfShape and the shape arithmetic after them, a
        # short branch) sits next to it rather than crowding the first rows. Along the longest
        # path the two depths agree.
        for v in reversed(list(nx.topological_sort(dag))):
            if dag.out_degree(v):
                depth[v] = min(depth[s] for s in dag.successors(v)) - 1
    rows = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for v in range(node_count):
        rows[depth[v]].append(v)
    widest = max((len(row) for row in rows), default=1)
    position: dict[int, tuple[float, int]] = {}
    for depth, row in enumerate(rows):
        def barycentre(v: int) -> tuple[float, int]:
            slots = [position[p][0] for p in dag.predecessors(v) if p in position]
            return (sum(slots) / len(slots) if slots else widest / 2, v)

        ordered = sorted(row, key=barycentre) if depth else row
        offset = (widest - len(ordered)) / 2
        for slot, v in enumerate(ordered):
            position[v] = (offset + slot, depth)
    return position


def _node_label(node: Mapping[str, Any]) -> str:
    fused = [op for op in node.get("fused") or [] if op != "Constant"]
    label = "+".join(fused) if fused else node["op"]
    return label if len(label) <= LABEL_CHARS else label[:LABEL_CHARS - 1] + "\u2026"


def _node_class(node: Mapping[str, Any], which: str, fused_names: set[str]) -> str:
    """``fused``/``rewritten``/``added`` (optimized graph) or ``into-fused``/``rewritten``/
    ``removed`` (input graph); ``kept`` for a node left as it was."""
    if which == "optimized":
        if "fused" in node:
            return "fused"
        if "origins" in node:
            return "rewritten" if node["origins"] else "added"
        return "kept"
    if "became" not in node:
        return "kept"
    if not node["became"]:
        return "removed"
    return "into-fused" if any(name in fused_names for name in node["became"]) else "rewritten"


def _node_title(node: Mapping[str, Any], css: str) -> str:
    lines = [f'{node["name"]} ({node["op"]})']
    if css == "fused":
        lines.append("fused layer: " + " \u2192 ".join(node["fused"]))
    if "origins" in node:
        lines.append("stands for: " + (", ".join(node["origins"]) or "no input node (added by a pass)"))
    if "became" in node:
        lines.append("became: " + (", ".join(node["became"]) or "nothing (removed by a pass)"))
    return "\n".join(lines)


def graph_svg(graph: Mapping[str, Any], which: str, fused_names: set[str] = frozenset()) -> str:
    """An inline SVG of one recorded graph (``report["graphs"]["input"|"optimized"]``): a box per
    node in the :func:`graph_layout`, edges producer to consumer, fused layers and the input
    nodes they absorbed coloured, each box's tooltip naming the node, its fused ops and where it
    came from or went."""
    nodes, edges = graph["nodes"], graph["edges"]
    position = graph_layout(len(nodes), edges)
    widest = max((x for x, _ in position.values()), default=0) + 1
    rows = max((row for _, row in position.values()), default=0) + 1
    pad = 10
    width = int(pad * 2 + widest * (NODE_WIDTH + NODE_GAP) - NODE_GAP)
    height = int(pad * 2 + rows * ROW_HEIGHT - (ROW_HEIGHT - NODE_HEIGHT))

    def corner(i: int) -> tuple[float, float]:
        x, row = position[i]
        return pad + x * (NODE_WIDTH + NODE_GAP), pad + row * ROW_HEIGHT

    out = [f'<svg role="img" class="graph-picture" id="graph-{which}" data-nodes="{len(nodes)}" '
           f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           'font-family="system-ui, sans-serif" font-size="11">',
           f'<title>The {which} graph: {len(nodes)} nodes</title>']
    for a, b in edges:
        (x1, y1), (x2, y2) = corner(int(a)), corner(int(b))
        x1, y1, x2 = x1 + NODE_WIDTH / 2, y1 + NODE_HEIGHT, x2 + NODE_WIDTH / 2
        bend = max((y2 - y1) / 2, 8)
        out.append(f'<path class="graph-edge" d="M{x1:.0f},{y1:.0f} C{x1:.0f},{y1 + bend:.0f} '
                   f'{x2:.0f},{y2 - bend:.0f} {x2:.0f},{y2:.0f}"/>')
    for i, node in enumerate(nodes):
        x, y = corner(i)
        css = _node_class(node, which, fused_names)
        out.append(f'<g class="graph-node {css}" data-name="{_e(node["name"])}" '
                   f'data-op="{_e(node["op"])}"><title>{_e(_node_title(node, css))}</title>'
                   f'<rect x="{x:.0f}" y="{y:.0f}" width="{NODE_WIDTH}" height="{NODE_HEIGHT}" rx="5"/>'
                   f'<text x="{x + NODE_WIDTH / 2:.0f}" y="{y + 16:.0f}" text-anchor="middle">'
                   f'{_e(_node_label(node))}</text></g>')
    out.append("</svg>")
    return "\n".join(out)


def _graphs(report: Mapping[str, Any]) -> str:
    """The graph before and after the passes, side by side, with a legend and the fused layers."""
    graphs = report.get("graphs")
    if not graphs:
        return ""
    before, after = graphs["input"], graphs["optimized"]
    fused_names = {node["name"] for node in after.get("nodes") or [] if "fused" in node}
    legend = ('<p class="legend graph-legend">'
              '<span><i class="swatch fused"></i>fused layer (a call to a '
              '<code>trtcompile</code> local function)</span>'
              '<span><i class="swatch into-fused"></i>input node absorbed into a fused layer</span>'
              '<span><i class="swatch rewritten"></i>rewritten otherwise (merged, replaced)</span>'
              '<span><i class="swatch removed"></i>removed (input) or added (optimized) by a pass'
              '</span><span><i class="swatch"></i>as it was</span></p>')
    panels = []
    for which, graph, heading in (("input", before, "before: the model as the passes received it"),
                                  ("optimized", after, "after: the optimized model")):
        if graph.get("nodes") is None:
            body = (f'<p class="note">Not drawn: {graph["node_count"]} nodes, above the '
                    f'{graphs.get("recorded_nodes")} a report records node by node.</p>')
        else:
            body = f'<div class="graph-scroll">{graph_svg(graph, which, fused_names)}</div>'
        panels.append(f'<div class="graph-panel"><h3>{_e(heading)} '
                      f'<span class="note">({graph["node_count"]} nodes)</span></h3>{body}</div>')
    pair = f'<div class="graph-pair">{"".join(panels)}</div>'
    largest = max(before["node_count"], after["node_count"])
    note = ('<p class="note">Each picture scrolls inside its box; hover a node for its name, its '
            'fused ops and the nodes it stands for. Rows are dataflow depth. Graphs above '
            f'{GRAPH_OPEN_NODES} nodes start folded, above {graphs.get("recorded_nodes")} they '
            'are not drawn.</p>')
    if largest > GRAPH_OPEN_NODES:
        pair = (f'<details class="graph-fold"><summary>Draw the graphs ({before["node_count"]} '
                f'&rarr; {after["node_count"]} nodes; folded above {GRAPH_OPEN_NODES})</summary>'
                f'{pair}</details>')
    rows = [f'<tr class="fused-row"><td class="mono">{_e(node["name"])}</td>'
            f'<td class="mono">{_e(" -> ".join(node["fused"]))}</td>'
            f'<td class="mono">{_e(", ".join(node.get("origins", [node["name"]])))}</td></tr>'
            for node in after.get("nodes") or [] if "fused" in node]
    table = ""
    if rows:
        table = (f'<details class="fused-layers"{" open" if len(rows) <= 12 else ""}><summary>'
                 f'{len(rows)} fused layer{"s" if len(rows) != 1 else ""} and the input nodes each '
                 'stands for</summary><div class="table-scroll"><table id="fused-layers"><thead><tr>'
                 '<th>fused layer</th><th>function body</th><th>original nodes</th></tr></thead>'
                 f'<tbody>{"".join(rows)}</tbody></table></div></details>')
    return legend + note + pair + table


def _pass_table(report: Mapping[str, Any]) -> str:
    rows = []
    lowering = report.get("lowering")
    if lowering:
        rows.append(
            f'<tr><td></td><td>lowering ({_e(lowering["tool"])}, {_e(lowering["mode"])})</td>'
            f'{_num(str(lowering["source_ops"]) + " TF ops")}{_num(str(lowering["onnx_nodes"]) + " nodes")}'
            f'<td></td>{_num(text_report.format_seconds(lowering["seconds"]))}<td></td><td></td></tr>')
    for record in report["passes"]:
        rejected = len(record.get("rejections", []))
        rows.append(
            f'<tr class="pass-row" data-pass="{_e(record["name"])}">{_num(record["index"])}'
            f'<td><code>{_e(text_report.pass_label(record))}</code></td>'
            f'{_num(record["layers_before"])}{_num(record["layers_after"])}'
            f'{_delta_cell(record["delta"])}{_num(text_report.format_seconds(record["seconds"]))}'
            f'<td class="mono">{_e(text_report.format_counts(record["stats"]))}</td>'
            f'{_num(rejected if rejected else "")}</tr>')
    layers = report["layers"]
    rows.append(
        f'<tr class="total"><td></td><td>total</td>{_num(layers["input"])}{_num(layers["optimized"])}'
        f'{_delta_cell(layers["optimized"] - layers["input"])}'
        f'{_num(text_report.format_seconds(report.get("passes_seconds", 0.0)))}<td></td><td></td></tr>')
    table = ('<table id="pass-table"><thead><tr><th class="num">#</th><th>pass</th>'
             '<th class="num">layers before</th><th class="num">layers after</th>'
             '<th class="num">delta</th><th class="num">time</th><th>counts</th>'
             '<th class="num">skipped</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")
    notes = []
    for fixed_point in report.get("fixed_points", []):
        state = "converged" if fixed_point["converged"] else "did NOT converge"
        notes.append(f'<p class="note"><code>{_e(fixed_point["pipeline"])}</code>: {state} after '
                     f'{fixed_point["iterations"]} iteration{"s" if fixed_point["iterations"] != 1 else ""}</p>')
    return table + "".join(notes)


def _rejections(report: Mapping[str, Any]) -> str:
    names = list(dict.fromkeys(r["name"] for r in report["passes"]))
    blocks = []
    for name in names:
        rejections = text_report.rejections_of(report["passes"], name)
        if not rejections:
            continue
        reasons: dict[str, int] = {}
        for rejection in rejections:
            reasons[rejection["reason"]] = reasons.get(rejection["reason"], 0) + 1
        reason_text = (f"1 reason: {_e(next(iter(reasons)))}" if len(reasons) == 1
                       else f"{len(reasons)} distinct reasons")
        rows = "".join(f'<tr><td class="mono">{_e(", ".join(r["nodes"]) or "-")}</td>'
                       f'<td>{_e(r["reason"])}</td></tr>' for r in rejections)
        blocks.append(
            f'<details class="rejections" data-pass="{_e(name)}"><summary><code>{_e(name)}</code>: '
            f'{len(rejections)} candidate{"s" if len(rejections) != 1 else ""} left alone '
            f'<span class="note">({reason_text})</span></summary>'
            f'<table><thead><tr><th>nodes</th><th>reason</th></tr></thead><tbody>{rows}</tbody>'
            f'</table></details>')
    if not blocks:
        return '<p class="note">No pass left a candidate alone.</p>'
    return ('<p class="note">Candidates each pass considered and did not rewrite, with the reason '
            '(<code>trtcompile compile --why-not PASS</code> prints the same).</p>' + "".join(blocks))


def _histogram(report: Mapping[str, Any]) -> str:
    before = report["histogram"]["input"]
    after = report["histogram"]["optimized"]
    ops = sorted(set(before) | set(after), key=lambda op: (-max(before.get(op, 0), after.get(op, 0)), op))
    biggest = max([*before.values(), *after.values(), 1])
    rows = []
    for op in ops:
        b, a = before.get(op, 0), after.get(op, 0)
        bars = (f'<div class="bar before" style="width:{100 * b / biggest:.1f}%"></div>'
                f'<div class="bar after" style="width:{100 * a / biggest:.1f}%"></div>')
        rows.append(f'<tr class="op-row" data-op="{_e(op)}"><td class="mono">{_e(op)}</td>{_num(b)}'
                    f'{_num(a)}{_delta_cell(a - b, colored=False)}<td class="bars">{bars}</td></tr>')
    legend = ('<div class="legend"><span><i style="background:#b7c2d6"></i>input</span>'
              '<span><i style="background:#2f6fde"></i>optimized</span></div>')
    return (legend + '<table id="histogram"><thead><tr><th>op</th><th class="num">input</th>'
            '<th class="num">optimized</th><th class="num">delta</th><th></th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>")


def _engine(report: Mapping[str, Any]) -> str:
    engine = report["engine"]
    if not engine.get("built"):
        detail = f': {_e(engine["error"])}' if engine.get("error") else ""
        return f'<p id="engine-status">Not built ({_e(engine.get("reason", "not built"))}){detail}.</p>'
    layers = [layer for layer in engine.get("layers", []) if layer.get("profile", 0) == 0]
    types = text_report.format_counts(engine.get("compute_layer_types", {}))
    profiles = len(engine.get("profiles") or []) or 1
    parts = [f'<p id="engine-status">{_e(engine["backend"])} {_e(engine["version"])}; '
             f'{len(layers)} engine layers, <b>{engine["compute_layers"]} compute</b>'
             f' ({_e(types)}); graph layers {report["layers"]["input"]} &rarr; '
             f'{report["layers"]["optimized"]}; build {text_report.format_seconds(engine["build_seconds"])}; '
             f'plan {engine.get("plan_bytes", 0):,} bytes.</p>']
    precisions = engine.get("compute_layer_precisions")
    if layers and precisions:
        parts.append(f'<p id="engine-precisions">Compute layers by precision: '
                     f'{_e(text_report.format_counts(precisions))}.</p>')
    for problem in engine.get("layer_report_problems", []):
        parts.append(f'<p class="note engine-problem">Not fully read: {_e(problem)}</p>')
    if profiles > 1:
        parts.append(f'<p class="note">The engine holds one copy of the network per optimization '
                     f'profile ({profiles}); the first profile\'s layers are listed.</p>')
    if not layers:
        parts.append('<p class="note">The builder did not report its layers.</p>')
        return "".join(parts)
    rows = []
    for i, layer in enumerate(layers, 1):
        nodes = layer.get("onnx_nodes", [])
        node_text = ", ".join(nodes) if nodes else "-"
        css = "engine-row" + ("" if layer.get("compute") else " noncompute")
        rows.append(f'<tr class="{css}" data-type="{_e(layer["type"])}">{_num(i)}'
                    f'<td class="mono">{_e(layer["name"])}</td><td>{_e(layer["type"])}</td>'
                    f'{_num(len(nodes))}<td class="mono">{_e(node_text)}</td>'
                    f'<td class="mono">{_e(", ".join(layer.get("original_nodes", nodes)) or "-")}</td>'
                    f'<td>{_e(layer.get("precision", "-"))}</td>'
                    f'<td>{_e(", ".join(layer.get("datatypes", [])))}</td>'
                    f'<td>{"yes" if layer.get("compute") else "no"}</td></tr>')
    parts.append('<div class="table-scroll"><table id="engine-layers"><thead><tr>'
                 '<th class="num">#</th><th>engine layer</th><th>type</th>'
                 '<th class="num">fused nodes</th><th>ONNX nodes</th><th>original nodes</th>'
                 '<th>precision</th>'
                 '<th>output datatypes</th><th>compute</th></tr></thead><tbody>'
                 + "".join(rows) + "</tbody></table></div>")
    return "".join(parts)


def _engine_parity_status(report: Mapping[str, Any]) -> str:
    """One paragraph: the engine parity verdict, or why it did not run."""
    engine = report["parity"].get("engine") or text_report.ENGINE_PARITY_NOT_RECORDED
    if engine["status"] == "not run":
        return f'<p id="engine-parity-status">Engine parity: not run &mdash; {_e(engine["reason"])}</p>'
    verdict = ('<span class="ok">passed</span>' if engine["status"] == "passed"
               else '<span class="fail">FAILED</span>')
    note = f' <span class="note">{_e(engine["note"])}</span>' if engine.get("note") else ""
    return (f'<p id="engine-parity-status">Engine parity {verdict}: the engine against the optimized '
            f'model on ONNX Runtime (atol={engine["atol"]:g}, rtol={engine["rtol"]:g}).{note}</p>')


def _parity(report: Mapping[str, Any]) -> str:
    parity = report["parity"]
    tolerances = parity["tolerances"]
    if not parity["checked"]:
        return '<p id="parity-status">Not checked (--no-parity).</p>' + _engine_parity_status(report)
    verdict = '<span class="ok">passed</span>' if parity["passed"] else '<span class="fail">FAILED</span>'
    settings = (f'seed {_e(tolerances.get("seed", 0))}, atol={tolerances["atol"]:g}, '
                f'rtol={tolerances["rtol"]:g}')
    # The rule of trtcompile.verify.within_tolerance, with the range term when it applies.
    range_term = ""
    if tolerances.get("atol_range"):
        settings += f', atol_range={tolerances["atol_range"]:g}'
        range_term = " + atol_range &middot; max|reference|"
    parts = [f'<p id="parity-status">Parity {verdict} ({settings}): '
             f'<code>|candidate - reference| &le; atol{range_term} + rtol &middot; |reference|</code> '
             'elementwise (NaN matches NaN, an infinity only itself).</p>']
    if tolerances.get("note"):
        parts.append(f'<p class="note">{_e(tolerances["note"])}</p>')
    checked = parity.get("input_shapes") or []
    if checked:
        parts.append('<p class="note">Input shapes checked: <code>'
                     + _e("; ".join(text_report.shape_set_text(s) for s in checked)) + "</code></p>")
    rows = []
    engine_comparisons = (parity.get("engine") or {}).get("comparisons", [])
    for comparison in [*parity["comparisons"], *engine_comparisons]:
        label = f'{comparison["candidate"]} vs {comparison["reference"]}'
        if len(checked) > 1:  # several profile shape sets: say which one each comparison ran at
            label += f' at {text_report.shape_set_text(comparison.get("input_shapes", {}))}'
        css = "parity-row" + (" engine-parity-row" if comparison in engine_comparisons else "")
        if not comparison["outputs"]:
            rows.append(f'<tr class="{css}"><td>{_e(label)}</td><td>(no outputs)</td><td></td><td></td>'
                        '<td class="fail">FAILED</td></tr>')
        for name, output in comparison["outputs"].items():
            result = '<td class="ok">ok</td>' if output["passed"] else '<td class="fail">FAILED</td>'
            rows.append(f'<tr class="{css}"><td>{_e(label)}</td><td class="mono">{_e(name)}</td>'
                        f'{_num(_error_text(output["max_abs"]))}{_num(_error_text(output["max_rel"]))}'
                        f'{result}</tr>')
    parts.append(_engine_parity_status(report))
    parts.append('<table id="parity-table"><thead><tr><th>comparison</th><th>output</th>'
                 '<th class="num">max abs error</th><th class="num">max rel error</th><th>result</th>'
                 '</tr></thead><tbody>' + "".join(rows) + "</tbody></table>")
    return "".join(parts)


def _partition(report: Mapping[str, Any]) -> str:
    """The partition: coverage, the segments with their engines, every fallback node and why."""
    partition = report.get("partition")
    if not partition:
        return ""
    covered = "planned in segments (dry run)" if partition.get("dry_run") else "in engines"
    parity = partition.get("parity")
    verdict = "" if parity is None else (
        ' Partitioned model vs input on ONNX Runtime: '
        + ('<span class="ok">passed</span>.' if parity["passed"] else '<span class="fail">FAILED</span>.'))
    parts = [f'<p id="partition-status">{_e(partition["trigger"])}: '
             f'<b>{partition["coverage"]:.1%}</b> of {partition["compute_nodes"]} compute nodes '
             f'{covered}; {len(partition["segments"])} segments, {len(partition["fallback"])} '
             f'fallback nodes (min-segment-size {partition["min_segment_size"]}).{verdict}</p>']
    rows = []
    for segment in partition["segments"]:
        engine = (f'{_e(segment["engine"])} ({segment["compute_layers"]} compute layers)'
                  if segment["engine"] else _e(segment["why_not_engine"] or "not built (dry run)"))
        rows.append(f'<tr class="segment-row"><td class="mono">{_e(segment["name"])}</td>'
                    f'{_num(len(segment["nodes"]))}{_num(segment["compute_nodes"])}'
                    f'<td class="mono">{_e(", ".join(segment["nodes"]))}</td><td>{engine}</td></tr>')
    if rows:
        parts.append('<table id="partition-segments"><thead><tr><th>segment</th>'
                     '<th class="num">nodes</th><th class="num">compute</th><th>ONNX nodes</th>'
                     '<th>engine</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")
    rows = [f'<tr class="fallback-row"><td class="mono">{_e(entry["node"])}</td>'
            f'<td>{_e(entry["op"])}</td><td>{_e(entry["reason"])}</td></tr>'
            for entry in partition["fallback"]]
    if rows:
        parts.append('<table id="partition-fallback"><thead><tr><th>fallback node</th><th>op</th>'
                     '<th>reason</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")
    return "".join(parts)


def _footer(report: Mapping[str, Any]) -> str:
    tools = ", ".join(f"{name} {version}" for name, version in report.get("tools", {}).items())
    files = ", ".join(report.get("files", {}).values())
    return (f'<footer>Tools: {_e(tools)}.<br>Files written: {_e(files)}. The same data is in '
            '<code>report.json</code>.</footer>')


def render_html(report: Mapping[str, Any]) -> str:
    """The whole page for a ``report.json`` dict."""
    model = report["model"]
    title = f'trtcompile report: {model.get("description") or model.get("source") or "model"}'
    sections: Sequence[tuple[str, str, str]] = (
        ("layers", "Layers after each pass", f'<div class="chart">{layers_chart_svg(report)}</div>'),
        ("graph", "The graph before and after", _graphs(report)),
        ("passes", "Passes", _pass_table(report)),
        ("skipped", "Candidates left alone", _rejections(report)),
        ("ops", "Op histogram, before and after", _histogram(report)),
        ("engine", "Engine layers", _engine(report)),
        ("partition", "Partition: TensorRT segments and fallback nodes", _partition(report)),
        ("parity", "Parity", _parity(report)),
    )
    sections = [section for section in sections if section[2]]
    body = [_summary(report)]
    body += [f'<section id="section-{key}"><h2>{_e(heading)}</h2>{content}</section>'
             for key, heading, content in sections]
    body.append(_footer(report))
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{_e(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


__all__ = ["graph_layout", "graph_svg", "layers_chart_svg", "render_html"]
