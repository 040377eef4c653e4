"""--why-not PASS: the candidates a pass considered and left alone, with nodes and reasons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trtcompile import cli, report
from trtcompile.flow import CompileOptions, compile_model
from trtcompile.errors import InputError

MODEL = Path(__file__).resolve().parent / "golden" / "nhwc_transposes.onnx"
PIPELINE = "transpose-cancellation,conv-bias-activation-fusion"


def test_why_not_lists_each_rejected_candidate(tmp_path: Path, capsys) -> None:
    code = cli.main(["compile", str(MODEL), "-o", str(tmp_path / "out"), "--no-engine",
                     "--no-progress", "--pipeline", PIPELINE, "--why-not", "transpose-cancellation",
                     "--why-not", "conv-bias-activation-fusion"])
    out = capsys.readouterr().out
    assert code == 0
    result_section = out[out.index("why not transpose-cancellation"):].splitlines()
    records = json.loads((tmp_path / "out" / "report.json").read_text())["passes"]
    rejections = [r for record in records if record["name"] == "transpose-cancellation"
                  for r in record["rejections"]]
    assert rejections, "the model has transposes the pass must leave alone"
    reasons = {r["reason"] for r in rejections}
    assert result_section[0].startswith(
        f"why not transpose-cancellation: {len(rejections)} candidates left alone, "
        f"{len(reasons)} reason{'s' if len(reasons) != 1 else ''} (1 run; it rewrote: ")
    assert result_section[1].split() == ["nodes", "reason"]
    rows = result_section[2:2 + len(rejections)]
    for row, rejection in zip(rows, rejections):
        assert row.strip().endswith(rejection["reason"])
        assert f"{rejection['nodes'][0]} (Transpose)" in row  # op types of the input model's nodes
    assert "why not conv-bias-activation-fusion: no candidate was left alone (1 run; it rewrote: " \
           "fused_conv_relu=2" in out


def test_why_not_api_and_formatting(tmp_path: Path) -> None:
    result = compile_model(MODEL, tmp_path / "out", CompileOptions(pipeline=PIPELINE, engine=False,
                                                                   progress=False))
    rejections = result.why_not("transpose-cancellation")
    assert rejections == result.pipeline_report.rejections("transpose-cancellation")
    assert all(r.nodes and r.reason for r in rejections)
    with pytest.raises(InputError, match="pass 'horizontal-fusion' did not run"):
        result.why_not("horizontal-fusion")
    lines = report.format_why_not(result.report, "horizontal-fusion")
    assert lines == [f"why not horizontal-fusion: the pass did not run (pipeline: {result.report['pipeline']})"]


def test_why_not_deduplicates_fixed_point_runs() -> None:
    rejection = {"nodes": ["conv", "add"], "reason": "Add of two computed tensors is not a bias"}
    records = [{"name": "fuse", "counts": {"fused": 2}, "rejections": [rejection]},
               {"name": "fuse", "counts": {}, "rejections": [rejection]}]
    lines = report.format_why_not({"passes": records, "pipeline": "fixed-point(fuse)"}, "fuse",
                                  {"conv": "Conv"})
    assert lines == [
        "why not fuse: 1 candidate left alone, 1 reason (2 runs; it rewrote: fused=2)",
        "  nodes             reason",
        "  conv (Conv), add  Add of two computed tensors is not a bias",
    ]


@pytest.mark.parametrize("name,problem", [
    ("fold-constantz", "--why-not fold-constantz: no such pass"),
    ("horizontal-fusion", "--why-not horizontal-fusion: the pass does not run in this pipeline "
                          "(conv-bias-activation-fusion, transpose-cancellation)"),
])
def test_why_not_refuses_passes_outside_the_pipeline(tmp_path: Path, capsys, name, problem) -> None:
    code = cli.main(["compile", str(MODEL), "-o", str(tmp_path / "out"), "--no-engine",
                     "--pipeline", PIPELINE, "--why-not", name])
    assert code == 2
    assert capsys.readouterr().err.startswith(f"trtcompile: error: {problem}")
    assert not (tmp_path / "out").exists()


def test_a_pass_the_manager_skipped_says_so_in_why_not_and_the_table(tmp_path: Path,
                                                                      capsys) -> None:
    """The built-in ONNX example holds no Transpose and no Split: the manager does not run the
    passes that need them, and both the table and --why-not say why."""
    code = cli.main(["compile", "--example", "googlenet-onnx", "-o", str(tmp_path / "out"),
                     "--no-engine", "--no-progress", "--pipeline",
                     "transpose-cancellation,conv-split-fission,dead-layer-elimination",
                     "--why-not", "transpose-cancellation"])
    out = capsys.readouterr().out
    assert code == 0
    table = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert table["transpose-cancellation"].endswith("skipped: no Transpose in the graph")
    assert table["conv-split-fission"].endswith("skipped: no Split in the graph")
    assert "skipped" not in table["dead-layer-elimination"]
    assert "why not transpose-cancellation: the pass manager skipped it (1 run): no Transpose " \
           "in the graph" in out
    records = json.loads((tmp_path / "out" / "report.json").read_text())["passes"]
    assert [r.get("skipped", "") for r in records] == [
        "no Transpose in the graph", "no Split in the graph", ""]
