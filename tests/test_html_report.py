"""The HTML report: self-contained, drawn from report.json, and readable as rendered by headless
Chromium (the page's DOM after rendering is asserted on, and a screenshot is taken)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import BREAKING_PASS, CONV_BRANCHES, CONV_PIPELINE
from trtcompile import cli, html_report
from trtcompile.report import pass_label

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not on PATH (Debian: apt-get install chromium); the HTML "
                             "report is checked as headless Chromium renders it")

def run_chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    """Headless Chromium as root, offline, with a throwaway profile."""
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--hide-scrollbars", *args],
        capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[Path, dict]:
    """A compile of the conv-branches model with the engine, written with --report-html."""
    folder = tmp_path_factory.mktemp("html")
    page = folder / "report.html"
    code = cli.main(["compile", str(CONV_BRANCHES), "-o", str(folder / "out"),
                     "--pipeline", CONV_PIPELINE, "--report-html", str(page), "-q"])
    assert code == 0
    return page, json.loads((folder / "out" / "report.json").read_text())


def test_page_is_self_contained(compiled) -> None:
    page, _ = compiled
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>")
    lowered = text.lower()
    for needle in ("<script", "<link", "<img", "<iframe", "@import", "url(", "http:", "https:"):
        assert needle not in lowered, f"the page must not load anything ({needle!r})"
    assert "<style>" in text and "<svg" in text


def test_page_escapes_what_passes_say(tmp_path: Path) -> None:
    module = tmp_path / "breaking.py"
    module.write_text(BREAKING_PASS)
    page = tmp_path / "report.html"
    code = cli.main(["compile", str(CONV_BRANCHES), "-o", str(tmp_path / "out"),
                     "--pass-module", str(module), "--pipeline", "scale-first-weight", "-q",
                     "--report-html", str(page)])
    assert code == 1  # parity failed: the page is still written, and says so
    text = page.read_text()
    assert "weights &lt;b&gt;too&lt;/b&gt; small &amp; odd" in text and "<b>too</b>" not in text
    assert '<span class="badge failed">failed (exit 1)</span>' in text
    assert '<p class="error">parity failed' in text
    assert '<td class="fail">FAILED</td>' in text
    assert "Not built (parity failed)." in text


def test_bad_report_html_path_is_refused_before_compiling(tmp_path: Path, capsys) -> None:
    code = cli.main(["compile", str(CONV_BRANCHES), "-o", str(tmp_path / "out"),
                     "--report-html", str(tmp_path)])
    assert code == 2
    assert "--report-html" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_chart_has_a_point_per_pass(compiled) -> None:
    _, report = compiled
    svg = html_report.layers_chart_svg(report)
    points = re.findall(r'<circle class="layers-point" data-pass="([^"]*)" data-layers="(\d+)"', svg)
    expected = [("input", report["layers"]["input"])] + [
        (pass_label(record), record["layers_after"]) for record in report["passes"]]
    assert [(html.unescape(label), int(layers)) for label, layers in points] == \
        [(label, layers) for label, layers in expected]
    polyline = re.search(r'<polyline class="layers-line" points="([^"]+)"', svg).group(1)
    assert len(polyline.split()) == len(expected)


def dom_texts(dom: str, pattern: str) -> list[str]:
    return [html.unescape(re.sub(r"<[^>]+>", "", match)).strip() for match in re.findall(pattern, dom, re.S)]


@needs_chromium
def test_rendered_page_shows_the_report(compiled, tmp_path: Path) -> None:
    page, report = compiled
    result = run_chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile")
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert "<title>trtcompile report: ONNX model conv_branches.onnx" in dom
    assert '<span class="badge passed">passed</span>' in dom

    # The pass table: one row per pass run, in order, with its layers and counts.
    rows = re.findall(r'<tr class="pass-row" data-pass="([^"]+)">(.*?)</tr>', dom, re.S)
    assert [name for name, _ in rows] == [record["name"] for record in report["passes"]]
    for (_, row), record in zip(rows, report["passes"]):
        cells = dom_texts(row, r"<td[^>]*>(.*?)</td>")
        assert cells[2:4] == [str(record["layers_before"]), str(record["layers_after"])]
        assert cells[6] == " ".join(f"{k}={v}" for k, v in record["counts"].items())

    # The chart: a point per pass run plus the input.
    assert dom.count('class="layers-point"') == len(report["passes"]) + 1

    # The op histogram: every op of either graph, with both counts.
    ops = dict(re.findall(r'<tr class="op-row" data-op="([^"]+)">(.*?)</tr>', dom, re.S))
    histogram = report["histogram"]
    assert set(ops) == set(histogram["input"]) | set(histogram["optimized"])
    for op, row in ops.items():
        cells = dom_texts(row, r"<td[^>]*>(.*?)</td>")
        assert cells[1:3] == [str(histogram["input"].get(op, 0)), str(histogram["optimized"].get(op, 0))]

    # The engine layers with the ONNX nodes fused into each.
    engine_rows = re.findall(r'<tr class="engine-row[^"]*" data-type="([^"]+)">(.*?)</tr>', dom, re.S)
    layers = report["engine"]["layers"]
    assert len(engine_rows) == len(layers) > 0
    for (layer_type, row), layer in zip(engine_rows, layers):
        cells = dom_texts(row, r"<td[^>]*>(.*?)</td>")
        assert layer_type == layer["type"] and cells[1] == layer["name"]
        assert cells[4] == (", ".join(layer["onnx_nodes"]) or "-")
        assert cells[5] == (", ".join(layer["original_nodes"]) or "-")
        assert cells[6:8] == [layer["precision"], ", ".join(layer["datatypes"])]
    # The fused stem convolution traces back to the three input nodes it absorbed.
    assert any(cells[4] == "stem_conv" and cells[5] == "stem_conv, stem_bn, stem_relu"
               for cells in (dom_texts(row, r"<td[^>]*>(.*?)</td>") for _, row in engine_rows))
    assert f"<b>{report['engine']['compute_layers']} compute</b>" in dom
    precisions = report["engine"]["compute_layer_precisions"]
    assert sum(precisions.values()) == report["engine"]["compute_layers"]
    assert dom_texts(dom, r'<p id="engine-precisions">(.*?)</p>') == [
        "Compute layers by precision: " + " ".join(f"{k}={v}" for k, v in precisions.items()) + "."]

    # The parity table.
    parity_rows = [dom_texts(row, r"<td[^>]*>(.*?)</td>")
                   for row in re.findall(r'<tr class="parity-row">(.*?)</tr>', dom, re.S)]
    assert [(row[0], row[1], row[4]) for row in parity_rows] == [("optimized vs input", "output", "ok")]


@needs_chromium
def test_rendered_page_screenshot(compiled, tmp_path: Path) -> None:
    page, _ = compiled
    png = tmp_path / "report.png"
    result = run_chromium("--window-size=1280,1600", f"--screenshot={png}", page.as_uri(),
                          profile=tmp_path / "profile")
    assert result.returncode == 0, result.stderr[-2000:]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 1600)
    assert len(data) > 50_000  # a rendered page, not a blank one


@needs_chromium
def test_the_engine_table_fits_a_narrow_page(compiled, tmp_path: Path) -> None:
    """Long layer and node names wrap: no column is clipped at the page's right edge."""
    _, report = compiled
    report = json.loads(json.dumps(report))
    long_nodes = [f"model/block_{i}/branch_{i}/conv2d_with_a_very_long_name_{i}" for i in range(12)]
    report["engine"]["layers"][1]["onnx_nodes"] = long_nodes
    report["engine"]["layers"][1]["name"] = "+".join(long_nodes[:4])
    probe = ("<script>addEventListener('load', () => { const table = document.getElementById("
             "'engine-layers'); const right = Math.max(...[...table.querySelectorAll('th, td')]"
             ".map(c => c.getBoundingClientRect().right)); document.body.setAttribute('data-fit',"
             " right <= document.documentElement.clientWidth + 1 ? 'yes' : 'no ' + right); });"
             "</script>")
    page = tmp_path / "narrow.html"
    page.write_text(html_report.render_html(report).replace("</body>", probe + "</body>"))
    result = run_chromium("--window-size=700,900", "--dump-dom", page.as_uri(),
                          profile=tmp_path / "profile")
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'data-fit="yes"' in result.stdout, re.findall(r'data-fit="[^"]*"', result.stdout)


def test_graph_pictures_mark_the_fused_layers(compiled) -> None:
    """Both graphs are drawn node by node; the optimized graph's fused layers (calls into
    trtcompile local functions) carry the class the legend explains, and their tooltip lists the
    function body's ops and the input nodes they stand for."""
    _, report = compiled
    page = html_report.render_html(report)
    for which in ("input", "optimized"):
        svg = re.search(rf'<svg[^>]*id="graph-{which}".*?</svg>', page, re.S).group(0)
        nodes = re.findall(r'<g class="graph-node ([\w-]+)" data-name="([^"]*)"', svg)
        assert [html.unescape(name) for _, name in nodes] == \
            [node["name"] for node in report["graphs"][which]["nodes"]]
        assert svg.count('class="graph-edge"') == len(report["graphs"][which]["edges"])
    optimized = re.search(r'<svg[^>]*id="graph-optimized".*?</svg>', page, re.S).group(0)
    fused = re.findall(r'<g class="graph-node fused" data-name="([^"]*)"[^>]*><title>([^<]*)</title>',
                       optimized)
    assert [html.unescape(name) for name, _ in fused] == \
        ["stem_conv", "branch0_conv+branch1_conv+branch2_conv"]
    stem_title = html.unescape(fused[0][1])
    assert "fused layer: Conv \u2192 Relu" in stem_title
    assert "stands for: stem_conv, stem_bn, stem_relu" in stem_title
    assert 'class="swatch fused"' in page  # the legend
    before = re.search(r'<svg[^>]*id="graph-input".*?</svg>', page, re.S).group(0)
    classes = dict((html.unescape(n), c) for c, n in
                   re.findall(r'<g class="graph-node ([\w-]+)" data-name="([^"]*)"', before))
    assert classes["stem_bn"] == "into-fused" and classes["branches_concat"] == "removed"
    assert classes["head_conv"] == "kept"
    rows = re.findall(r'<tr class="fused-row">(.*?)</tr>', page, re.S)
    assert [dom_texts(row, r"<td[^>]*>(.*?)</td>")[2] for row in rows][0] == \
        "stem_conv, stem_bn, stem_relu"


def test_graph_layout_puts_every_producer_above_its_consumers() -> None:
    """Layers by dataflow depth; a node nothing feeds sits right above its first consumer."""
    edges = [(0, 1), (1, 2), (2, 3), (0, 3), (4, 3), (5, 6)]
    layout = html_report.graph_layout(7, edges)
    assert all(layout[a][1] < layout[b][1] for a, b in edges)
    assert layout[4][1] == layout[3][1] - 1  # a Constant feeding the last node
    assert len({layout[v] for v in layout}) == 7  # no two boxes in one place
    assert html_report.graph_layout(2, [(0, 1), (1, 0)]) == {0: (0.0, 0), 1: (0.0, 1)}


def test_large_graphs_start_folded_and_huge_ones_are_not_drawn(compiled) -> None:
    _, report = compiled
    report = json.loads(json.dumps(report))
    chain = html_report.GRAPH_OPEN_NODES + 1
    report["graphs"]["input"] = {
        "node_count": chain, "nodes": [{"name": f"n{i}", "op": "Relu"} for i in range(chain)],
        "edges": [[i, i + 1] for i in range(chain - 1)]}
    page = html_report.render_html(report)
    assert '<details class="graph-fold"><summary>' in page  # folded: not open
    assert page.count('<g class="graph-node') == chain + len(report["graphs"]["optimized"]["nodes"])
    report["graphs"]["input"] = {"node_count": 5000, "nodes": None, "edges": None}
    page = html_report.render_html(report)
    assert "Not drawn: 5000 nodes" in page and 'id="graph-input"' not in page


def test_precision_risk_table_lists_every_node_escaped() -> None:
    from trtcompile.html_report.passes import precision_risk_section

    nodes = [{"name": f"conv_{i}", "op": "Conv", "max_abs_fp32": float(i), "alone_error": 1e-3,
              "kept": False, "kept_by": None, "reason": None} for i in range(9)]
    nodes.insert(0, {"name": "<mm>", "op": "MatMul", "max_abs_fp32": 7e4, "alone_error": "inf",
                     "kept": True, "kept_by": "overflow", "reason": "overflow risk: |x| > 512"})
    page = precision_risk_section({"precision_risk": {
        "pass": "precision-fp16{keep=auto}", "data_max": 512.0, "samples": 32, "nodes": nodes}})
    assert page.count('class="risk-row"') == 10  # the whole table, not the terminal's five
    assert 'data-node="&lt;mm&gt;" data-kept="FP32"' in page and "<mm>" not in page
    assert "<td>overflow</td><td>overflow risk: |x| &gt; 512</td>" in page
    assert precision_risk_section({"precision_risk": None}) == ""
