"""The graph before and after the passes as inline SVG pictures: a layered layout, a box per node,
fused layers and the input nodes they absorbed coloured, and the table of fused layers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from trtcompile.html_report.markup import esc

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


def partition_marks(partition: Mapping[str, Any] | None) -> tuple[dict[str, str], dict[str, str]]:
    """``({node: segment name}, {fallback node: reason})`` of a report's partition (empty
    without one): what the optimized graph's picture marks."""
    if not partition:
        return {}, {}
    members = {node: segment["name"] for segment in partition.get("segments", [])
               for node in segment["nodes"]}
    return members, {entry["node"]: entry["reason"] for entry in partition.get("fallback", [])}


def graph_svg(graph: Mapping[str, Any], which: str, fused_names: set[str] = frozenset(),
              partition: Mapping[str, Any] | None = None) -> str:
    """An inline SVG of one recorded graph (``report["graphs"]["input"|"optimized"]``): a box per
    node in the :func:`graph_layout`, edges producer to consumer, fused layers and the input
    nodes they absorbed coloured, each box's tooltip naming the node, its fused ops and where it
    came from or went.

    With ``partition`` (the optimized graph of a partitioned compile): each TensorRT segment is
    outlined and named, fallback nodes (ONNX Runtime) are marked, and the edges that cross a
    segment boundary are drawn as boundaries."""
    nodes, edges = graph["nodes"], graph["edges"]
    members, fallback = partition_marks(partition)
    side = [members.get(node["name"], "fallback" if node["name"] in fallback else None)
            for node in nodes]
    position = graph_layout(len(nodes), edges)
    widest = max((x for x, _ in position.values()), default=0) + 1
    rows = max((row for _, row in position.values()), default=0) + 1
    pad = 18 if partition else 10  # room above a top row's segment name
    width = int(pad * 2 + widest * (NODE_WIDTH + NODE_GAP) - NODE_GAP)
    height = int(pad * 2 + rows * ROW_HEIGHT - (ROW_HEIGHT - NODE_HEIGHT))

    def corner(i: int) -> tuple[float, float]:
        x, row = position[i]
        return pad + x * (NODE_WIDTH + NODE_GAP), pad + row * ROW_HEIGHT

    out = [f'<svg role="img" class="graph-picture" id="graph-{which}" data-nodes="{len(nodes)}" '
           f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           'font-family="system-ui, sans-serif" font-size="11">',
           f'<title>The {which} graph: {len(nodes)} nodes</title>']
    for segment in (partition or {}).get("segments", []):
        inside = [corner(i) for i, node in enumerate(nodes) if side[i] == segment["name"]]
        if not inside:
            continue
        x0, y0 = min(x for x, _ in inside) - 5, min(y for _, y in inside) - 5
        x1, y1 = (max(x for x, _ in inside) + NODE_WIDTH + 5,
                  max(y for _, y in inside) + NODE_HEIGHT + 5)
        engine = segment.get("engine") or f'no engine: {segment.get("why_not_engine")}'
        out.append(f'<g class="segment-box" data-segment="{esc(segment["name"])}"><title>'
                   f'{esc(segment["name"])}: {len(segment["nodes"])} nodes on TensorRT '
                   f'({esc(engine)})</title><rect x="{x0:.0f}" y="{y0:.0f}" width="{x1 - x0:.0f}" '
                   f'height="{y1 - y0:.0f}" rx="8"/><text x="{x0 + 4:.0f}" y="{y0 - 3:.0f}">'
                   f'{esc(segment["name"])}</text></g>')
    for a, b in edges:
        (x1, y1), (x2, y2) = corner(int(a)), corner(int(b))
        x1, y1, x2 = x1 + NODE_WIDTH / 2, y1 + NODE_HEIGHT, x2 + NODE_WIDTH / 2
        bend = max((y2 - y1) / 2, 8)
        crossing = partition and side[int(a)] != side[int(b)]
        out.append(f'<path class="graph-edge{" boundary" if crossing else ""}" '
                   f'd="M{x1:.0f},{y1:.0f} C{x1:.0f},{y1 + bend:.0f} '
                   f'{x2:.0f},{y2 - bend:.0f} {x2:.0f},{y2:.0f}"/>')
    for i, node in enumerate(nodes):
        x, y = corner(i)
        css = _node_class(node, which, fused_names)
        title = _node_title(node, css)
        placement = ""
        if node["name"] in fallback:
            css += " fallback"
            title += f"\nruns on ONNX Runtime (fallback): {fallback[node['name']]}"
        elif node["name"] in members:
            css += " segment"
            placement = f' data-segment="{esc(members[node["name"]])}"'
            title += f"\nruns on TensorRT in {members[node['name']]}"
        out.append(f'<g class="graph-node {css}" data-name="{esc(node["name"])}"{placement} '
                   f'data-op="{esc(node["op"])}"><title>{esc(title)}</title>'
                   f'<rect x="{x:.0f}" y="{y:.0f}" width="{NODE_WIDTH}" height="{NODE_HEIGHT}" rx="5"/>'
                   f'<text x="{x + NODE_WIDTH / 2:.0f}" y="{y + 16:.0f}" text-anchor="middle">'
                   f'{esc(_node_label(node))}</text></g>')
    out.append("</svg>")
    return "\n".join(out)


def graphs_section(report: Mapping[str, Any]) -> str:
    """The graph before and after the passes, side by side, with a legend and the fused layers."""
    graphs = report.get("graphs")
    if not graphs:
        return ""
    before, after = graphs["input"], graphs["optimized"]
    fused_names = {node["name"] for node in after.get("nodes") or [] if "fused" in node}
    partition = report.get("partition")
    legend = ('<p class="legend graph-legend">'
              '<span><i class="swatch fused"></i>fused layer (a call to a '
              '<code>trtcompile</code> local function)</span>'
              '<span><i class="swatch into-fused"></i>input node absorbed into a fused layer</span>'
              '<span><i class="swatch rewritten"></i>rewritten otherwise (merged, replaced)</span>'
              '<span><i class="swatch removed"></i>removed (input) or added (optimized) by a pass'
              '</span><span><i class="swatch"></i>as it was</span>'
              + ('<span><i class="swatch segment"></i>TensorRT segment (outlined, named; its '
                 'edges to other parts are boundaries)</span><span><i class="swatch fallback">'
                 '</i>fallback node: runs on ONNX Runtime</span>' if partition else '')
              + '</p>')
    panels = []
    for which, graph, heading in (("input", before, "before: the model as the passes received it"),
                                  ("optimized", after, "after: the optimized model")):
        if graph.get("nodes") is None:
            body = (f'<p class="note">Not drawn: {graph["node_count"]} nodes, above the '
                    f'{graphs.get("recorded_nodes")} a report records node by node.</p>')
        else:
            marks = partition if which == "optimized" else None
            body = f'<div class="graph-scroll">{graph_svg(graph, which, fused_names, marks)}</div>'
        panels.append(f'<div class="graph-panel"><h3>{esc(heading)} '
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
    rows = [f'<tr class="fused-row"><td class="mono">{esc(node["name"])}</td>'
            f'<td class="mono">{esc(" -> ".join(node["fused"]))}</td>'
            f'<td class="mono">{esc(", ".join(node.get("origins", [node["name"]])))}</td></tr>'
            for node in after.get("nodes") or [] if "fused" in node]
    table = ""
    if rows:
        table = (f'<details class="fused-layers"{" open" if len(rows) <= 12 else ""}><summary>'
                 f'{len(rows)} fused layer{"s" if len(rows) != 1 else ""} and the input nodes each '
                 'stands for</summary><div class="table-scroll"><table id="fused-layers"><thead><tr>'
                 '<th>fused layer</th><th>function body</th><th>original nodes</th></tr></thead>'
                 f'<tbody>{"".join(rows)}</tbody></table></div></details>')
    return legend + note + pair + table
