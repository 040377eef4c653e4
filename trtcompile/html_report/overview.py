"""The head of the HTML report: the verdict and summary cards, and the chart of the graph's layer
count after each pass."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trtcompile import report as text_report
from trtcompile.html_report.markup import esc


def summary_section(report: Mapping[str, Any]) -> str:
    """The page head: verdict, model, pipeline, and cards for layers, engine, parity and time."""
    status = report["status"]
    model = report["model"]
    layers = report["layers"]
    engine = report["engine"]
    parity = report["parity"]
    verdict = ('<span class="badge passed">passed</span>' if status["passed"]
               else f'<span class="badge failed">failed (exit {status["exit_code"]})</span>')
    parts = [
        f'<h1>trtcompile report {verdict}</h1>',
        f'<p class="subtitle">{esc(model.get("description") or model.get("source") or "model")}</p>',
    ]
    if status.get("error"):
        parts.append(f'<p class="error">{esc(status["error"])}</p>')
    parts.append(f'<div class="pipeline"><span class="note">pipeline</span> '
                 f'<code>{esc(report["pipeline"] or "(no passes)")}</code></div>')

    delta = layers["optimized"] - layers["input"]
    cards = [("graph layers", f'{layers["input"]} &rarr; {layers["optimized"]}',
              f'{delta:+d} layers over {len(report["passes"])} pass runs' if delta
              else f'unchanged over {len(report["passes"])} pass runs')]
    if engine.get("built"):
        profile0 = [layer for layer in engine.get("layers", []) if layer.get("profile", 0) == 0]
        cards.append(("engine compute layers", str(engine["compute_layers"]),
                      f'{len(profile0)} engine layers; built in '
                      f'{text_report.format_seconds(engine["build_seconds"])}'))
    elif text_report.segment_engines(report):
        segments = text_report.segment_engines(report)
        partition = report["partition"]
        cards.append(("segment engines", f'{len(segments)} built',
                      f'{partition["coverage"]:.1%} of {partition["compute_nodes"]} compute nodes '
                      f'in engines, {sum(s["compute_layers"] for s in segments)} compute layers; '
                      f'{len(partition["fallback"])} fallback nodes on ONNX Runtime'))
    else:
        cards.append(("engine", "not built", esc(engine.get("reason", ""))))
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
        f'<div class="card"><div class="label">{esc(label)}</div><div class="value">{value}</div>'
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
        out.append(f'<circle class="layers-point" data-pass="{esc(label)}" data-layers="{v}" '
                   f'cx="{x(i):.1f}" cy="{y(v):.1f}" r="{4.5 if changed else 3}" '
                   f'fill="{"#2f6fde" if changed else "#fff"}" stroke="#2f6fde" stroke-width="1.6">'
                   f'<title>{esc(label)}: {v} layers</title></circle>')
        if changed:  # the first label starts right of its point, clear of the axis labels
            anchor, dx = ("start", 7) if i == 0 else ("middle", 0)
            out.append(f'<text x="{x(i) + dx:.1f}" y="{y(v) - 9:.1f}" text-anchor="{anchor}" '
                       f'font-weight="600" fill="#1d2330">{v}</text>')
        short = label if len(label) <= 30 else label[:29] + "\u2026"
        out.append(f'<text x="{x(i):.1f}" y="{height - bottom + 16}" text-anchor="end" '
                   f'fill="#5d6678" transform="rotate(-40 {x(i):.1f} {height - bottom + 16})">'
                   f'{esc(short)}</text>')
        previous = v
    out.append(f'<text x="14" y="{top + plot_h / 2:.1f}" fill="#5d6678" text-anchor="middle" '
               f'transform="rotate(-90 14 {top + plot_h / 2:.1f})">layers</text>')
    out.append("</svg>")
    return "\n".join(out)
