"""Partitioning end to end: compile a model with an op TensorRT rejects, read the report, run the
result, check the EPContext export against ONNX Runtime's EP context design."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import trtcompile
from tests.backend import models
from tests.helpers import run_main
from trtcompile import ir
from trtcompile.flow.partitioning import EPCONTEXT_SOURCES, segment_calls
from trtcompile.runtime import StagedExecutor


@pytest.fixture(scope="module")
def bitshift_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "bitshift.onnx"
    ir.save(models.rejected_op_model("BitShift"), path)
    return path


@pytest.fixture(scope="module")
def compiled(bitshift_model: Path, tmp_path_factory) -> tuple[Path, str]:
    """One compile of the BitShift model shared by the tests that only read its outputs."""
    out = tmp_path_factory.mktemp("out") / "out"
    code = trtcompile.cli.main([
        "compile", str(bitshift_model), "-o", str(out), "--no-progress", "-q"])
    assert code == 0
    return out, ""


def feeds() -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(0).standard_normal((1, 4, 8, 8)).astype(np.float32)}


def test_bitshift_model_compiles_into_segment_engines(compiled) -> None:
    out, _ = compiled
    report = json.loads((out / "report.json").read_text())
    assert report["status"]["passed"]
    partition = report["partition"]
    assert partition["min_segment_size"] == 3
    assert [(s["name"], s["engine"]) for s in partition["segments"]] == [
        ("TensorRTSegment_0", "segments/segment_0.engine"),
        ("TensorRTSegment_1", "segments/segment_1.engine")]
    for segment in partition["segments"]:
        assert (out / segment["engine"]).stat().st_size > 0
        assert segment["compute_layers"] > 0 and segment["why_not_engine"] is None
        assert segment["engine_report"]["layers"]
    assert [(f["node"], f["op"]) for f in partition["fallback"]] == [
        ("to_uint32", "Cast"), ("shift_right", "BitShift"), ("to_float", "Cast")]
    assert all(f["reason"] and f["reason"].lower() != "false" for f in partition["fallback"])
    assert 0 < partition["coverage"] < 1
    expected = sum(s["compute_nodes"] for s in partition["segments"]) / partition["compute_nodes"]
    assert partition["coverage"] == pytest.approx(expected, abs=1e-6)
    assert partition["parity"]["passed"]
    assert report["engine"]["built"] is False and not (out / "model.engine").exists()


def test_partitioned_onnx_matches_the_input_on_onnxruntime(compiled, bitshift_model) -> None:
    out, _ = compiled
    partitioned = onnx.load(str(out / "partitioned.onnx"))
    ops = [ir.op_key(n) for n in ir.import_model(partitioned).nodes]
    assert ops == ["trtcompile.TensorRTSegment_0", "Cast", "BitShift", "Cast",
                   "trtcompile.TensorRTSegment_1"]
    reference = ort.InferenceSession(str(bitshift_model)).run(None, feeds())[0]
    got = ort.InferenceSession(str(out / "partitioned.onnx")).run(None, feeds())[0]
    np.testing.assert_array_equal(got, reference)


def test_load_runs_on_onnxruntime_without_a_gpu(compiled, bitshift_model) -> None:
    out, _ = compiled
    model = trtcompile.load(out)
    assert model.device == "onnxruntime" and "GPU" in model.reason
    reference = ort.InferenceSession(str(bitshift_model)).run(None, feeds())[0]
    np.testing.assert_allclose(model.run(feeds())["y"], reference, rtol=1e-6, atol=1e-6)
    with pytest.raises(trtcompile.errors.InputError, match="no data for input"):
        model.run({})


def test_staged_executor_stitches_segments_and_fallback_runs(compiled, bitshift_model) -> None:
    """The TensorRT path's plumbing, with each segment run on ONNX Runtime instead of its engine."""
    out, _ = compiled
    partitioned = onnx.load(str(out / "partitioned.onnx"))
    from trtcompile.backend.support import value_types
    from trtcompile.flow.partitioning import segment_model

    types = value_types(partitioned)
    sessions = {call.name: ort.InferenceSession(segment_model(partitioned, call, function, types)
                                                .SerializeToString())
                for call, function in segment_calls(partitioned)}
    calls = []

    def run_segment(call, inputs):
        calls.append(call.name)
        session = sessions[call.name]
        wanted = [o.name for o in session.get_outputs()]
        names = [i.name for i in session.get_inputs()]
        return dict(zip(wanted, session.run(wanted, {n: inputs[n] for n in names})))

    executor = StagedExecutor(partitioned, run_segment)
    assert [kind for kind, _ in executor.stages] == ["segment", "onnxruntime", "segment"]
    reference = ort.InferenceSession(str(bitshift_model)).run(None, feeds())[0]
    np.testing.assert_array_equal(executor.run(feeds())["y"], reference)
    assert calls == ["TensorRTSegment_0", "TensorRTSegment_1"]


def test_epcontext_model_follows_the_ep_context_design(compiled) -> None:
    out, _ = compiled
    ctx = onnx.load(str(out / "partitioned_ctx.onnx"))
    report = json.loads((out / "report.json").read_text())
    backend = report["partition"]["segments"][0]["engine_report"]["backend"]
    context_nodes = [n for n in ctx.graph.node if n.op_type == "EPContext"]
    assert [n.name for n in context_nodes] == ["TensorRTSegment_0", "TensorRTSegment_1"]
    assert any(o.domain == "com.microsoft" for o in ctx.opset_import)
    for node, segment in zip(context_nodes, report["partition"]["segments"]):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert node.domain == "com.microsoft"
        assert attrs["main_context"] == 1 and attrs["embed_mode"] == 0
        # embed_mode=0: ep_cache_context is the engine's path relative to the model file.
        assert attrs["ep_cache_context"].decode() == segment["engine"]
        assert (out / attrs["ep_cache_context"].decode()).is_file()
        assert attrs["source"].decode() == EPCONTEXT_SOURCES[backend]
        assert attrs["partition_name"].decode() == segment["name"]
        assert attrs["ep_sdk_version"].decode()
        # The node's inputs and outputs are the engine's: no weights (they are in the plan).
        assert list(node.input) == segment["inputs"] and list(node.output) == segment["outputs"]
    assert not any(f.name.startswith("TensorRTSegment") for f in ctx.functions)
    assert {n.op_type for n in ctx.graph.node} == {"EPContext", "Cast", "BitShift"}


def test_min_segment_size_changes_which_islands_become_engines(bitshift_model, tmp_path,
                                                               capsys) -> None:
    code, stdout, _ = run_main(["compile", str(bitshift_model), "-o", str(tmp_path / "out"),
                                "--no-progress", "--min-segment-size", "4"], capsys)
    assert code == 0
    partition = json.loads((tmp_path / "out" / "report.json").read_text())["partition"]
    assert [s["name"] for s in partition["segments"]] == ["TensorRTSegment_0"]
    small = [f for f in partition["fallback"] if f["node"].startswith("tail")]
    assert small and all("fewer than min-segment-size=4" in f["reason"] for f in small)
    assert "fallback node" in stdout and "fewer than min-segment-size=4" in stdout
    assert sorted(p.name for p in (tmp_path / "out" / "segments").iterdir()) == [
        "segment_0.engine", "segment_0.onnx"]


def test_unique_model_compiles(tmp_path, capsys) -> None:
    model = tmp_path / "unique.onnx"
    ir.save(models.rejected_op_model("Unique"), model)
    code, stdout, _ = run_main(["compile", str(model), "-o", str(tmp_path / "out"),
                                "--no-progress"], capsys)
    assert code == 0, stdout
    partition = json.loads((tmp_path / "out" / "report.json").read_text())["partition"]
    assert [f["op"] for f in partition["fallback"]] == ["Unique"]
    assert all(s["engine"] for s in partition["segments"]) and len(partition["segments"]) == 2
    # The segment after Unique reads its inverse indices, whose shape ONNX cannot infer: the
    # profile is the shape seen when the model runs at the compile's input shapes (4*8*8).
    tail = partition["segments"][1]["engine_report"]["profiles"]
    assert tail == [{"inverse": {"min": [256], "opt": [256], "max": [256]}}]


def test_partition_only_is_a_dry_run(bitshift_model, tmp_path, capsys) -> None:
    code, stdout, _ = run_main(["compile", str(bitshift_model), "-o", str(tmp_path / "out"),
                                "--no-progress", "--partition-only"], capsys)
    assert code == 0
    partition = json.loads((tmp_path / "out" / "report.json").read_text())["partition"]
    assert partition["dry_run"] and all(s["engine"] is None for s in partition["segments"])
    assert not list((tmp_path / "out" / "segments").glob("*.engine"))
    assert not (tmp_path / "out" / "partitioned_ctx.onnx").exists()
    assert "not built (dry run)" in stdout


def test_supported_model_keeps_one_whole_engine(tmp_path, capsys) -> None:
    model = tmp_path / "conv.onnx"
    ir.save(models.conv_relu_model(), model)
    code, _, _ = run_main(["compile", str(model), "-o", str(tmp_path / "out"), "--no-progress",
                           "-q"], capsys)
    assert code == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["partition"] is None and report["engine"]["built"]
    assert not (tmp_path / "out" / "partitioned.onnx").exists()


def test_exclude_ops_partitions_a_supported_model(bitshift_model, tmp_path, capsys) -> None:
    code, _, _ = run_main(["compile", str(bitshift_model), "-o", str(tmp_path / "out"),
                           "--no-progress", "-q", "--exclude-ops", "Abs", "--min-segment-size",
                           "1"], capsys)
    assert code == 0
    fallback = json.loads((tmp_path / "out" / "report.json").read_text())["partition"]["fallback"]
    assert {"node": "abs", "op": "Abs", "reason": "op excluded by exclude-ops"} in fallback


@pytest.mark.parametrize(("flags", "message"), [
    (["--min-segment-size", "0"], "--min-segment-size 0: expected an integer >= 1"),
    (["--exclude-ops", "NoSuchOp"], "--exclude-ops NoSuchOp: not an ONNX op nor an op of the model"),
    (["--exclude-ops", "Top K"], "--exclude-ops 'Top K': expected op types"),
    (["--partition-only", "--engine-parity", "require"], "--partition-only builds no engine"),
])
def test_bad_partition_flags_fail_in_one_line(bitshift_model, tmp_path, capsys, flags,
                                              message) -> None:
    code, _, stderr = run_main(["compile", str(bitshift_model), "-o", str(tmp_path / "out"),
                                "--no-progress", "-q", *flags], capsys)
    assert code == 2
    [line] = stderr.strip().splitlines()
    assert line.startswith("trtcompile: error: ") and message in line
    assert not (tmp_path / "out").exists()


def test_run_command_writes_outputs_and_says_where_it_ran(compiled, tmp_path, capsys) -> None:
    out, _ = compiled
    np.savez(tmp_path / "x.npz", **feeds())
    code, stdout, stderr = run_main(["run", str(out), "--inputs", str(tmp_path / "x.npz"),
                                     "-o", str(tmp_path / "y.npz")], capsys)
    assert code == 0
    assert "running on onnxruntime" in stderr and "y: float32 [1, 4, 8, 8]" in stdout
    assert np.load(tmp_path / "y.npz")["y"].shape == (1, 4, 8, 8)
    code, _, stderr = run_main(["run", str(out), "--inputs", str(tmp_path / "x.npz"),
                                "--device", "tensorrt"], capsys)
    assert code == 3 and "cannot run" in stderr
    np.savez(tmp_path / "wrong.npz", z=np.zeros(1))
    code, _, stderr = run_main(["run", str(out), "--inputs", str(tmp_path / "wrong.npz")], capsys)
    assert code == 2 and "no data for input(s) x" in stderr


def test_html_report_shows_the_partition(compiled) -> None:
    from trtcompile.html_report import render_html

    out, _ = compiled
    page = render_html(json.loads((out / "report.json").read_text()))
    assert 'id="section-partition"' in page
    assert page.count('class="segment-row"') == 2 and page.count('class="fallback-row"') == 3
    assert "shift_right" in page and "BitShift" in page and "shift_amount" in page


def test_html_report_shows_the_segment_engines_built_and_marks_the_graph(compiled) -> None:
    """The summary card and the engine section count the segment engines (not "not built"); the
    optimized graph's picture outlines each segment, marks the fallback nodes and the edges that
    cross a segment boundary."""
    import re

    from trtcompile.html_report import render_html

    out, _ = compiled
    report = json.loads((out / "report.json").read_text())
    page = render_html(report)
    assert "not built" not in page.lower()
    card = re.search(r'<div class="label">segment engines</div><div class="value">(.*?)</div>'
                     r'<div class="detail">(.*?)</div>', page)
    assert card and card.group(1) == "2 built" and card.group(2).startswith("70.0% of 10 compute")
    rows = re.findall(r'<tr class="segment-engine-row"><td class="mono">(.*?)</td>'
                      r'<td class="mono">(.*?)</td>', page)
    assert rows == [("TensorRTSegment_0", "segments/segment_0.engine"),
                    ("TensorRTSegment_1", "segments/segment_1.engine")]
    optimized = page[page.index('id="graph-optimized"'):]
    optimized = optimized[:optimized.index("</svg>")]
    fallback = re.findall(r'<g class="graph-node [^"]*\bfallback" data-name="([^"]+)"', optimized)
    assert fallback == ["to_uint32", "shift_right", "to_float"]
    placed = dict(re.findall(r'<g class="graph-node [^"]*\bsegment" data-name="([^"]+)" '
                             r'data-segment="([^"]+)"', optimized))
    assert placed == {node: segment["name"] for segment in report["partition"]["segments"]
                      for node in segment["nodes"]}
    assert re.findall(r'<g class="segment-box" data-segment="([^"]+)"', optimized) == [
        "TensorRTSegment_0", "TensorRTSegment_1"]
    # The chain runs segment 0 -> the three fallback nodes -> segment 1: two boundary edges.
    assert optimized.count('class="graph-edge boundary"') == 2
    before = page[page.index('id="graph-input"'):]
    assert "boundary" not in before[:before.index("</svg>")]


@pytest.mark.slow
def test_tensorflow_model_with_right_shift_compiles(tmp_path) -> None:
    """A SavedModel whose lowering holds BitShift on uint32 compiles through the CLI: engines
    for the convolutions, the shift and its casts on ONNX Runtime, parity against TensorFlow."""
    import subprocess
    import sys

    from tests.helpers import REPO, run_trtcompile

    saved = tmp_path / "saved_model"
    subprocess.run([sys.executable, str(REPO / "fixtures" / "make_tf_rejected_op_model.py"),
                    str(saved)], check=True, capture_output=True, timeout=300)
    result = run_trtcompile("compile", str(saved), "-o", str(tmp_path / "out"), "--no-progress")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    partition = report["partition"]
    assert [f["op"] for f in partition["fallback"]] == ["Cast", "BitShift", "Cast"]
    assert len(partition["segments"]) == 2 and all(s["engine"] for s in partition["segments"])
    comparisons = {(c["candidate"], c["reference"]): c["passed"]
                   for c in partition["parity"]["comparisons"]}
    assert comparisons[("partitioned", "tensorflow")]
    assert "BitShift" in result.stdout and "fallback node" in result.stdout
