"""The backend sections of the HTML report: the engine's layers, the partition into TensorRT
segments and fallback nodes, and parity (the optimized model's and the engine's)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trtcompile import report as text_report
from trtcompile.html_report.markup import error_text, esc, num_cell


def engine_section(report: Mapping[str, Any]) -> str:
    """The engine: backend, layer counts, precisions, and every layer with the ONNX nodes fused
    into it and the original nodes those stand for."""
    engine = report["engine"]
    if not engine.get("built") and text_report.segment_engines(report):
        return segment_engines_section(report)
    if not engine.get("built"):
        detail = f': {esc(engine["error"])}' if engine.get("error") else ""
        return f'<p id="engine-status">Not built ({esc(engine.get("reason", "not built"))}){detail}.</p>'
    layers = [layer for layer in engine.get("layers", []) if layer.get("profile", 0) == 0]
    types = text_report.format_counts(engine.get("compute_layer_types", {}))
    profiles = len(engine.get("profiles") or []) or 1
    parts = [f'<p id="engine-status">{esc(engine["backend"])} {esc(engine["version"])}; '
             f'{len(layers)} engine layers, <b>{engine["compute_layers"]} compute</b>'
             f' ({esc(types)}); graph layers {report["layers"]["input"]} &rarr; '
             f'{report["layers"]["optimized"]}; build {text_report.format_seconds(engine["build_seconds"])}; '
             f'plan {engine.get("plan_bytes", 0):,} bytes.</p>']
    precisions = engine.get("compute_layer_precisions")
    if layers and precisions:
        parts.append(f'<p id="engine-precisions">Compute layers by precision: '
                     f'{esc(text_report.format_counts(precisions))}.</p>')
    for problem in engine.get("layer_report_problems", []):
        parts.append(f'<p class="note engine-problem">Not fully read: {esc(problem)}</p>')
    if engine.get("int8"):
        parts.append(int8_accounting_section(engine["int8"]))
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
        rows.append(f'<tr class="{css}" data-type="{esc(layer["type"])}">{num_cell(i)}'
                    f'<td class="mono">{esc(layer["name"])}</td><td>{esc(layer["type"])}</td>'
                    f'{num_cell(len(nodes))}<td class="mono">{esc(node_text)}</td>'
                    f'<td class="mono">{esc(", ".join(layer.get("original_nodes", nodes)) or "-")}</td>'
                    f'<td>{esc(layer.get("precision", "-"))}</td>'
                    f'<td>{esc(", ".join(layer.get("datatypes", [])))}</td>'
                    f'<td>{"yes" if layer.get("compute") else "no"}</td></tr>')
    parts.append('<div class="table-scroll"><table id="engine-layers"><thead><tr>'
                 '<th class="num">#</th><th>engine layer</th><th>type</th>'
                 '<th class="num">fused nodes</th><th>ONNX nodes</th><th>original nodes</th>'
                 '<th>precision</th>'
                 '<th>output datatypes</th><th>compute</th></tr></thead><tbody>'
                 + "".join(rows) + "</tbody></table></div>")
    return "".join(parts)


def int8_accounting_section(accounting: Mapping[str, Any]) -> str:
    """The INT8 layer accounting (:mod:`trtcompile.backend.int8_accounting`): its summary, one row
    per quantized layer with the engine layers it became by class, and the Q/DQ placements that
    cost extra layers with the reason."""
    rows = []
    for layer in accounting["layers"]:
        names = [*layer["products"], *layer["epilogues"], *layer["reformats"], *layer["qdq"],
                 *(f"inside {name}" for name in layer.get("inside", []))]
        css = "int8-row" + (" costly" if layer["reformats"] or layer["qdq"] else "")
        rows.append(f'<tr class="{css}"><td class="mono">{esc(layer["node"])}</td>'
                    f'<td>{esc(layer["op"])}</td>{num_cell(len(layer["products"]))}'
                    f'{num_cell(len(layer["epilogues"]))}{num_cell(len(layer["reformats"]))}'
                    f'{num_cell(len(layer["qdq"]))}{num_cell(layer["engine_layers"])}'
                    f'<td>{esc(", ".join(layer["product_precisions"]) or "-")}</td>'
                    f'<td class="mono">{esc(", ".join(names))}</td></tr>')
    parts = [f'<p id="int8-summary">{esc(accounting["summary"])}.</p>',
             '<div class="table-scroll"><table id="int8-accounting"><thead><tr>'
             '<th>quantized layer</th><th>op</th><th class="num">products</th>'
             '<th class="num">epilogues</th><th class="num">reformats</th>'
             '<th class="num">Q/DQ kernels</th><th class="num">engine layers</th>'
             '<th>product precision</th><th>engine layers (names)</th></tr></thead><tbody>'
             + "".join(rows) + "</tbody></table></div>"]
    placements = [f'<tr class="int8-placement{"" if p["between_int8"] else " network-input"}">'
                  f'<td class="mono">{esc(p["node"])}</td>{num_cell(len(p["layers"]))}'
                  f'<td>{"yes" if p["between_int8"] else "no (network input)"}</td>'
                  f'<td>{esc(p["reason"])}</td></tr>' for p in accounting["placements"]]
    if placements:
        parts.append('<table id="int8-placements"><thead><tr><th>quantized layer</th>'
                     '<th class="num">extra layers</th><th>between INT8 layers</th><th>why</th>'
                     '</tr></thead><tbody>' + "".join(placements) + "</tbody></table>")
    return "".join(parts)


def segment_engines_section(report: Mapping[str, Any]) -> str:
    """A partitioned compile's engines: one row per segment engine (backend, engine and compute
    layers, build time, plan size), then each engine's layers."""
    partition = report["partition"]
    segments = text_report.segment_engines(report)
    parts = [f'<p id="engine-status">Partitioned: <b>{len(segments)} segment engines built</b>, '
             f'{partition["coverage"]:.1%} of {partition["compute_nodes"]} compute nodes in '
             f'engines; {len(partition["fallback"])} fallback nodes run on ONNX Runtime (see '
             'the partition below).</p>']
    rows, details = [], []
    for segment in segments:
        engine = segment["engine_report"]
        layers = [layer for layer in engine.get("layers", []) if layer.get("profile", 0) == 0]
        rows.append(f'<tr class="segment-engine-row"><td class="mono">{esc(segment["name"])}</td>'
                    f'<td class="mono">{esc(segment["engine"])}</td>'
                    f'<td>{esc(engine.get("backend"))} {esc(engine.get("version"))}</td>'
                    f'{num_cell(len(layers))}{num_cell(segment["compute_layers"])}'
                    f'<td>{text_report.format_seconds(engine.get("build_seconds") or 0.0)}</td>'
                    f'{num_cell(format(engine.get("plan_bytes", 0), ","))}</tr>')
        listed = "".join(f'<tr><td class="mono">{esc(layer["name"])}</td><td>{esc(layer["type"])}'
                         f'</td><td class="mono">{esc(", ".join(layer.get("onnx_nodes", [])) or "-")}'
                         f'</td><td>{"yes" if layer.get("compute") else "no"}</td></tr>'
                         for layer in layers)
        details.append(f'<details class="segment-layers"><summary>{esc(segment["name"])}: '
                       f'{len(layers)} engine layers</summary><table><thead><tr><th>engine layer'
                       '</th><th>type</th><th>ONNX nodes</th><th>compute</th></tr></thead><tbody>'
                       f'{listed}</tbody></table></details>')
    parts.append('<table id="segment-engines"><thead><tr><th>segment</th><th>plan</th>'
                 '<th>backend</th><th class="num">engine layers</th><th class="num">compute</th>'
                 '<th>build</th><th class="num">bytes</th></tr></thead><tbody>' + "".join(rows)
                 + "</tbody></table>")
    return "".join(parts + details)


def engine_parity_status(report: Mapping[str, Any]) -> str:
    """One paragraph: the engine parity verdict, or why it did not run."""
    engine = report["parity"].get("engine") or text_report.ENGINE_PARITY_NOT_RECORDED
    if engine["status"] == "not run":
        return f'<p id="engine-parity-status">Engine parity: not run &mdash; {esc(engine["reason"])}</p>'
    verdict = ('<span class="ok">passed</span>' if engine["status"] == "passed"
               else '<span class="fail">FAILED</span>')
    note = f' <span class="note">{esc(engine["note"])}</span>' if engine.get("note") else ""
    return (f'<p id="engine-parity-status">Engine parity {verdict}: the engine against the optimized '
            f'model on ONNX Runtime (atol={engine["atol"]:g}, rtol={engine["rtol"]:g}).{note}</p>')


def parity_section(report: Mapping[str, Any]) -> str:
    """The parity verdict and one row per compared output of every comparison (engine parity
    included)."""
    parity = report["parity"]
    tolerances = parity["tolerances"]
    if not parity["checked"]:
        return '<p id="parity-status">Not checked (--no-parity).</p>' + engine_parity_status(report)
    verdict = '<span class="ok">passed</span>' if parity["passed"] else '<span class="fail">FAILED</span>'
    settings = (f'seed {esc(tolerances.get("seed", 0))}, atol={tolerances["atol"]:g}, '
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
        parts.append(f'<p class="note">{esc(tolerances["note"])}</p>')
    checked = parity.get("input_shapes") or []
    if checked:
        parts.append('<p class="note">Input shapes checked: <code>'
                     + esc("; ".join(text_report.shape_set_text(s) for s in checked)) + "</code></p>")
    rows = []
    engine_comparisons = (parity.get("engine") or {}).get("comparisons", [])
    for comparison in [*parity["comparisons"], *engine_comparisons]:
        label = f'{comparison["candidate"]} vs {comparison["reference"]}'
        if len(checked) > 1:  # several profile shape sets: say which one each comparison ran at
            label += f' at {text_report.shape_set_text(comparison.get("input_shapes", {}))}'
        css = "parity-row" + (" engine-parity-row" if comparison in engine_comparisons else "")
        if not comparison["outputs"]:
            rows.append(f'<tr class="{css}"><td>{esc(label)}</td><td>(no outputs)</td><td></td><td></td>'
                        '<td class="fail">FAILED</td></tr>')
        for name, output in comparison["outputs"].items():
            result = '<td class="ok">ok</td>' if output["passed"] else '<td class="fail">FAILED</td>'
            rows.append(f'<tr class="{css}"><td>{esc(label)}</td><td class="mono">{esc(name)}</td>'
                        f'{num_cell(error_text(output["max_abs"]))}{num_cell(error_text(output["max_rel"]))}'
                        f'{result}</tr>')
    parts.append(engine_parity_status(report))
    parts.append('<table id="parity-table"><thead><tr><th>comparison</th><th>output</th>'
                 '<th class="num">max abs error</th><th class="num">max rel error</th><th>result</th>'
                 '</tr></thead><tbody>' + "".join(rows) + "</tbody></table>")
    return "".join(parts)


def partition_section(report: Mapping[str, Any]) -> str:
    """The partition: coverage, the segments with their engines, every fallback node and why."""
    partition = report.get("partition")
    if not partition:
        return ""
    covered = "planned in segments (dry run)" if partition.get("dry_run") else "in engines"
    parity = partition.get("parity")
    verdict = "" if parity is None else (
        ' Partitioned model vs input on ONNX Runtime: '
        + ('<span class="ok">passed</span>.' if parity["passed"] else '<span class="fail">FAILED</span>.'))
    parts = [f'<p id="partition-status">{esc(partition["trigger"])}: '
             f'<b>{partition["coverage"]:.1%}</b> of {partition["compute_nodes"]} compute nodes '
             f'{covered}; {len(partition["segments"])} segments, {len(partition["fallback"])} '
             f'fallback nodes (min-segment-size {partition["min_segment_size"]}).{verdict}</p>']
    rows = []
    for segment in partition["segments"]:
        engine = (f'{esc(segment["engine"])} ({segment["compute_layers"]} compute layers)'
                  if segment["engine"] else esc(segment["why_not_engine"] or "not built (dry run)"))
        rows.append(f'<tr class="segment-row"><td class="mono">{esc(segment["name"])}</td>'
                    f'{num_cell(len(segment["nodes"]))}{num_cell(segment["compute_nodes"])}'
                    f'<td class="mono">{esc(", ".join(segment["nodes"]))}</td><td>{engine}</td></tr>')
    if rows:
        parts.append('<table id="partition-segments"><thead><tr><th>segment</th>'
                     '<th class="num">nodes</th><th class="num">compute</th><th>ONNX nodes</th>'
                     '<th>engine</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")
    rows = [f'<tr class="fallback-row"><td class="mono">{esc(entry["node"])}</td>'
            f'<td>{esc(entry["op"])}</td><td>{esc(entry["reason"])}</td></tr>'
            for entry in partition["fallback"]]
    if rows:
        parts.append('<table id="partition-fallback"><thead><tr><th>fallback node</th><th>op</th>'
                     '<th>reason</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")
    return "".join(parts)
