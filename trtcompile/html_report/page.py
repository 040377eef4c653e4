"""The whole HTML report page: the sections in order, inside one self-contained document."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from trtcompile.html_report.engine import (
    engine_section,
    parity_section,
    partition_section,
)
from trtcompile.html_report.graphs import graphs_section
from trtcompile.html_report.markup import STYLE, esc
from trtcompile.html_report.overview import layers_chart_svg, summary_section
from trtcompile.html_report.passes import (
    histogram_section,
    pass_table_section,
    precision_risk_section,
    rejections_section,
)


def footer(report: Mapping[str, Any]) -> str:
    """Tool versions and the files the compile wrote."""
    tools = ", ".join(f"{name} {version}" for name, version in report.get("tools", {}).items())
    files = ", ".join(report.get("files", {}).values())
    return (f'<footer>Tools: {esc(tools)}.<br>Files written: {esc(files)}. The same data is in '
            '<code>report.json</code>.</footer>')


def render_html(report: Mapping[str, Any]) -> str:
    """The whole page for a ``report.json`` dict."""
    model = report["model"]
    title = f'trtcompile report: {model.get("description") or model.get("source") or "model"}'
    sections: Sequence[tuple[str, str, str]] = (
        ("layers", "Layers after each pass", f'<div class="chart">{layers_chart_svg(report)}</div>'),
        ("graph", "The graph before and after", graphs_section(report)),
        ("passes", "Passes", pass_table_section(report)),
        ("skipped", "Candidates left alone", rejections_section(report)),
        ("precision-risk", "Precision risk, measured on the data", precision_risk_section(report)),
        ("ops", "Op histogram, before and after", histogram_section(report)),
        ("engine", "Engine layers", engine_section(report)),
        ("partition", "Partition: TensorRT segments and fallback nodes", partition_section(report)),
        ("parity", "Parity", parity_section(report)),
    )
    sections = [section for section in sections if section[2]]
    body = [summary_section(report)]
    body += [f'<section id="section-{key}"><h2>{esc(heading)}</h2>{content}</section>'
             for key, heading, content in sections]
    body.append(footer(report))
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
