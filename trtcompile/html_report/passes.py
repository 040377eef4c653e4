"""The pass sections of the HTML report: the per-pass table, the candidates each pass left alone,
and the op histogram before and after."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trtcompile import report as text_report
from trtcompile.html_report.markup import delta_cell, error_text, esc, num_cell


def pass_table_section(report: Mapping[str, Any]) -> str:
    """The per-pass table (lowering first when there is one) and the fixed-point notes."""
    rows = []
    lowering = report.get("lowering")
    if lowering:
        rows.append(
            f'<tr><td></td><td>lowering ({esc(lowering["tool"])}, {esc(lowering["mode"])})</td>'
            f'{num_cell(str(lowering["source_ops"]) + " TF ops")}'
            f'{num_cell(str(lowering["onnx_nodes"]) + " nodes")}'
            f'<td></td>{num_cell(text_report.format_seconds(lowering["seconds"]))}<td></td><td></td></tr>')
    for record in report["passes"]:
        rejected = len(record.get("rejections", []))
        rows.append(
            f'<tr class="pass-row" data-pass="{esc(record["name"])}">{num_cell(record["index"])}'
            f'<td><code>{esc(text_report.pass_label(record))}</code></td>'
            f'{num_cell(record["layers_before"])}{num_cell(record["layers_after"])}'
            f'{delta_cell(record["delta"])}{num_cell(text_report.format_seconds(record["seconds"]))}'
            f'<td class="mono">{esc(text_report.format_counts(record["counts"]))}</td>'
            f'{num_cell(rejected if rejected else "")}</tr>')
    layers = report["layers"]
    rows.append(
        f'<tr class="total"><td></td><td>total</td>{num_cell(layers["input"])}{num_cell(layers["optimized"])}'
        f'{delta_cell(layers["optimized"] - layers["input"])}'
        f'{num_cell(text_report.format_seconds(report.get("passes_seconds", 0.0)))}<td></td><td></td></tr>')
    table = ('<table id="pass-table"><thead><tr><th class="num">#</th><th>pass</th>'
             '<th class="num">layers before</th><th class="num">layers after</th>'
             '<th class="num">delta</th><th class="num">time</th><th>counts</th>'
             '<th class="num">skipped</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")
    notes = []
    for fixed_point in report.get("fixed_points", []):
        state = "converged" if fixed_point["converged"] else "did NOT converge"
        notes.append(f'<p class="note"><code>{esc(fixed_point["pipeline"])}</code>: {state} after '
                     f'{fixed_point["iterations"]} '
                     f'iteration{"s" if fixed_point["iterations"] != 1 else ""}</p>')
    return table + "".join(notes)


def rejections_section(report: Mapping[str, Any]) -> str:
    """Per pass, the candidates it left alone and why (what ``--why-not PASS`` prints)."""
    names = list(dict.fromkeys(r["name"] for r in report["passes"]))
    blocks = []
    for name in names:
        rejections = text_report.rejections_of(report["passes"], name)
        if not rejections:
            continue
        reasons: dict[str, int] = {}
        for rejection in rejections:
            reasons[rejection["reason"]] = reasons.get(rejection["reason"], 0) + 1
        reason_text = (f"1 reason: {esc(next(iter(reasons)))}" if len(reasons) == 1
                       else f"{len(reasons)} distinct reasons")
        rows = "".join(f'<tr><td class="mono">{esc(", ".join(r["nodes"]) or "-")}</td>'
                       f'<td>{esc(r["reason"])}</td></tr>' for r in rejections)
        blocks.append(
            f'<details class="rejections" data-pass="{esc(name)}"><summary><code>{esc(name)}</code>: '
            f'{len(rejections)} candidate{"s" if len(rejections) != 1 else ""} left alone '
            f'<span class="note">({reason_text})</span></summary>'
            f'<table><thead><tr><th>nodes</th><th>reason</th></tr></thead><tbody>{rows}</tbody>'
            f'</table></details>')
    if not blocks:
        return '<p class="note">No pass left a candidate alone.</p>'
    return ('<p class="note">Candidates each pass considered and did not rewrite, with the reason '
            '(<code>trtcompile compile --why-not PASS</code> prints the same).</p>' + "".join(blocks))


def precision_risk_section(report: Mapping[str, Any]) -> str:
    """The whole precision risk table (empty when no pass measured one): per node its FP32
    range on the data, the error the reduced precision gives it alone, where it runs and why."""
    risk = report.get("precision_risk")
    if not risk:
        return ""
    int8 = risk.get("precision") == "int8"
    low, high = ("INT8", "float") if int8 else (str(risk.get("precision", "fp16")).upper(), "FP32")
    half = "bfloat16" if low == "BF16" else "float16"
    rows = []
    for node in risk["nodes"]:
        error = node["alone_error"]
        runs = high if node["kept"] else low
        rows.append(
            f'<tr class="risk-row" data-node="{esc(node["name"])}" data-kept="{esc(runs)}">'
            f'<td class="mono">{esc(node["name"])}</td><td class="mono">{esc(node["op"])}</td>'
            f'{num_cell(error_text(node["max_abs_fp32"]))}'
            f'{num_cell("-" if error is None else error_text(error))}<td>{runs}</td>'
            f'<td>{esc(node.get("kept_by") or "")}</td><td>{esc(node["reason"] or "")}</td></tr>')
    if int8:
        note = (f'<code>{esc(risk["pass"])}</code> ran each quantized layer alone on '
                f'{risk["samples"]} calibration samples, its activation and weights on their int8 '
                'grids, against the FP32 layer: the error relative to its output range, and the '
                'largest |x| of its activation in FP32.')
    else:
        note = (f'<code>{esc(risk["pass"])}</code> ran the FP32 model on {risk["samples"]} '
                'samples: per node the largest |x| of its float inputs and outputs, and the error '
                f'of its outputs converted to {half} alone (relative to their range). Nodes above '
                f'data-max={risk["data_max"]:g} stay FP32, then the nodes of largest error until '
                f'the outputs meet {low} tolerance.')
    return (f'<p class="note">{note}</p>'
            '<table id="precision-risk"><thead><tr><th>node</th><th>op</th>'
            f'<th class="num">max |x| fp32</th><th class="num">{low.lower()} error alone</th>'
            '<th>runs in</th><th>kept by the data</th><th>reason</th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>")


def histogram_section(report: Mapping[str, Any]) -> str:
    """The op histogram of the input and optimized graphs, with bars."""
    before = report["histogram"]["input"]
    after = report["histogram"]["optimized"]
    ops = sorted(set(before) | set(after), key=lambda op: (-max(before.get(op, 0), after.get(op, 0)), op))
    biggest = max([*before.values(), *after.values(), 1])
    rows = []
    for op in ops:
        b, a = before.get(op, 0), after.get(op, 0)
        bars = (f'<div class="bar before" style="width:{100 * b / biggest:.1f}%"></div>'
                f'<div class="bar after" style="width:{100 * a / biggest:.1f}%"></div>')
        rows.append(f'<tr class="op-row" data-op="{esc(op)}"><td class="mono">{esc(op)}</td>{num_cell(b)}'
                    f'{num_cell(a)}{delta_cell(a - b, colored=False)}<td class="bars">{bars}</td></tr>')
    legend = ('<div class="legend"><span><i style="background:#b7c2d6"></i>input</span>'
              '<span><i style="background:#2f6fde"></i>optimized</span></div>')
    return (legend + '<table id="histogram"><thead><tr><th>op</th><th class="num">input</th>'
            '<th class="num">optimized</th><th class="num">delta</th><th></th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>")
