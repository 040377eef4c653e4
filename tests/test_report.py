"""The report: JSON assembly and the terminal rendering drawn from it."""

from __future__ import annotations

import json
import re

import onnx

from trtcompile import report


def _record(index, name, before, after, seconds, stats, iteration=None, rejections=()):
    return {"index": index, "name": name, "pipeline_text": name, "options": {},
            "iteration": iteration, "layers_before": before, "layers_after": after,
            "delta": after - before, "seconds": seconds, "changed": before != after,
            "histogram_delta": {}, "counts": stats,
            "rejections": [{"nodes": list(n), "reason": r} for n, r in rejections]}


def sample_report(**overrides) -> dict:
    """A report as build_report writes it, for a TensorFlow model with an engine."""
    data = {
        "model": {"description": "Keras model net.keras", "source": "net.keras"},
        "pipeline": "fold-constants,fixed-point(conv-bias-activation-fusion)",
        "lowering": {"tool": "tf2onnx 1.17.0", "mode": "faithful", "source_kind": "keras",
                     "source_ops": 312, "onnx_nodes": 431, "seconds": 2.5, "peak_rss_mb": None},
        "layers": {"input": 431, "optimized": 120},
        "passes": [
            _record(1, "fold-constants", 431, 300, 0.0123, {"folded": 131}),
            _record(2, "conv-bias-activation-fusion", 300, 120, 0.5, {"fused_conv_relu": 53,
                                                                       "fused_conv": 4},
                    iteration=1, rejections=[(("c1",), "bias is not per-channel"),
                                             (("c2",), "bias is not per-channel")]),
            _record(3, "conv-bias-activation-fusion", 120, 120, 1.25, {}, iteration=2,
                    rejections=[(("c1",), "bias is not per-channel")]),
        ],
        "fixed_points": [{"pipeline": "fixed-point(conv-bias-activation-fusion)", "iterations": 2,
                          "converged": True}],
        "passes_seconds": 1.8,
        "parity": {
            "checked": True, "passed": False,
            "tolerances": {"atol": 1e-4, "rtol": 1e-3, "seed": 0},
            "comparisons": [
                {"reference": "tensorflow", "candidate": "lowered",
                 "outputs": {"logits": {"max_abs": 1e-6, "max_rel": 2e-5, "passed": True}}},
                {"reference": "lowered", "candidate": "optimized",
                 "outputs": {"logits": {"max_abs": 0.5, "max_rel": 3.0, "passed": False}}},
            ],
        },
        "engine": {"built": True, "path": "model.engine", "backend": "tensorrt_rtx",
                   "version": "1.7.1.116", "compute_layers": 2, "build_seconds": 12.5,
                   "compute_layer_precisions": {"INT8": 1, "FP16": 0, "FP32": 1},
                   "layers": [
                       {"name": "conv1", "type": "correlation", "onnx_nodes": ["conv1", "relu1"],
                        "compute": True, "profile": 0, "precision": "INT8",
                        "datatypes": ["Int8"]},
                       {"name": "reformat", "type": "kgen", "onnx_nodes": [], "compute": True,
                        "profile": 0},
                       {"name": "marker", "type": "marker", "onnx_nodes": [], "compute": False,
                        "profile": 0},
                   ]},
        "files": {"optimized": "optimized.onnx", "engine": "model.engine", "report": "report.json"},
    }
    data.update(overrides)
    return data


def test_pass_table_starts_with_the_lowering_and_aligns_columns() -> None:
    lines = report.format_pass_table(sample_report())
    header, lowering, fold, fuse1, fuse2, rule, total = lines[:7]
    assert header.split()[:1] == ["pass"]
    assert lowering.startswith("lowering (tf2onnx 1.17.0, faithful)")
    assert "312 TF ops" in lowering and "431 nodes" in lowering and "2.50 s" in lowering
    assert "tensorflow_ops=312 onnx_nodes=431" in lowering
    # Right-aligned numeric columns end at the same character as their header.
    end_before = header.index("layers before") + len("layers before")
    assert fold[:end_before].endswith(" 431") and total[:end_before].endswith(" 431")
    end_after = header.index("layers after") + len("layers after")
    assert fold[:end_after].endswith(" 300") and total[:end_after].endswith(" 120")
    end_delta = header.index("delta") + len("delta")
    assert fold[:end_delta].endswith(" -131") and total[:end_delta].endswith(" -311")
    assert fold.endswith("12.3 ms  folded=131")
    assert fuse1.startswith("conv-bias-activation-fusion #1")
    assert fuse1.endswith("500.0 ms  fused_conv_relu=53 fused_conv=4")
    assert fuse2.startswith("conv-bias-activation-fusion #2") and fuse2.endswith("1.25 s")
    assert set(rule) == {"-"}
    assert total.startswith("total") and "1.80 s" in total
    assert all(line == line.rstrip() for line in lines)


def test_pass_table_lists_fixed_points_and_distinct_rejections() -> None:
    lines = report.format_pass_table(sample_report())
    assert "fixed-point(conv-bias-activation-fusion): converged after 2 iterations" in lines
    # c1 was rejected in both iterations: counted once.
    assert "  conv-bias-activation-fusion: 2 x bias is not per-channel" in lines


def test_pass_table_without_lowering_starts_with_the_first_pass() -> None:
    lines = report.format_pass_table(sample_report(lowering=None))
    assert lines[1].startswith("fold-constants")


def test_parity_lines_mark_each_output() -> None:
    lines = report.format_parity(sample_report())
    assert lines[0] == "parity: FAILED (seed 0, atol=0.0001, rtol=0.001)"
    tf_line = next(line for line in lines if "lowered vs tensorflow" in line)
    assert "logits" in tf_line and "max_abs=1e-06" in tf_line and tf_line.endswith("ok")
    bad_line = next(line for line in lines if "optimized vs lowered" in line)
    assert "max_abs=0.5" in bad_line and "max_rel=3" in bad_line and bad_line.endswith("FAILED")


def test_parity_not_checked() -> None:
    parity = {"checked": False, "passed": None, "tolerances": {"atol": 1e-4, "rtol": 1e-3}}
    assert report.format_parity(sample_report(parity=parity)) == ["parity: not checked (--no-parity)"]


def test_engine_summary_and_excerpt_with_fused_nodes() -> None:
    lines = report.format_engine(sample_report(), "out")
    assert lines[0] == "engine: tensorrt_rtx 1.7.1.116, out/model.engine"
    assert "engine layers: 3 (2 compute)" in lines[1] and "graph layers 431 -> 120" in lines[1]
    assert "build time 12.50 s" in lines[1]
    conv_row = next(line for line in lines if line.strip().startswith("conv1"))
    assert conv_row.split()[1:] == ["correlation", "INT8", "Int8", "conv1,", "relu1"]
    assert "  compute layers by precision: INT8=1 FP16=0 FP32=1" in lines
    assert not any(line.strip().startswith("marker") for line in lines)  # not a compute layer
    assert lines[-1] == "  (2 of 3 engine layers shown; all are in report.json)"


def test_engine_not_built_says_why() -> None:
    engine = {"built": False, "reason": "build failed", "error": "TensorRT could not parse node x"}
    assert report.format_engine(sample_report(engine=engine)) == [
        "engine: not built (build failed): TensorRT could not parse node x"]


def test_render_has_every_section() -> None:
    text = report.render(sample_report(), "out/")
    assert text.index("pass ") < text.index("parity: FAILED") < text.index("engine: tensorrt_rtx")
    assert text.rstrip().endswith("wrote out/: optimized.onnx, model.engine, report.json")


def test_dumps_keeps_infinite_errors_valid_json() -> None:
    text = report.dumps({"parity": {"max_abs": float("inf"), "ok": [1.5, float("nan")]}})
    assert json.loads(text) == {"parity": {"max_abs": "inf", "ok": [1.5, "nan"]}}


def test_tool_versions_name_the_tools() -> None:
    versions = report.tool_versions()
    for name in ("trtcompile", "python", "onnx", "onnxruntime", "onnx-graphsurgeon", "polygraphy"):
        assert versions[name]


def test_many_rejection_reasons_are_capped_in_the_terminal() -> None:
    rejections = [((f"n{i}",), f"reason {i}") for i in range(report.REJECTION_REASONS_SHOWN + 3)]
    passes = [_record(1, "horizontal-fusion", 10, 10, 0.001, {}, rejections=rejections)]
    lines = report.format_pass_table(sample_report(lowering=None, passes=passes, fixed_points=[]))
    shown = [line for line in lines if line.startswith("  horizontal-fusion: 1 x reason")]
    assert len(shown) == report.REJECTION_REASONS_SHOWN
    assert lines[-1] == "  horizontal-fusion: 3 more, for 3 other reasons (all are in report.json)"


def test_graphs_above_the_recorded_limit_keep_only_their_counts(monkeypatch) -> None:
    from tests.helpers import CONV_BRANCHES

    from trtcompile.report import document as report_module  # graph_section reads the limit there

    model = onnx.load(CONV_BRANCHES)
    monkeypatch.setattr(report_module, "GRAPH_RECORDED_NODES", len(model.graph.node) - 1)
    section = report_module.graph_section(model, model, {})
    assert section["input"] == {"node_count": len(model.graph.node), "nodes": None, "edges": None}
    monkeypatch.setattr(report_module, "GRAPH_RECORDED_NODES", len(model.graph.node))
    section = report_module.graph_section(model, model, {})
    assert [node["name"] for node in section["input"]["nodes"]] == \
        [node.name for node in model.graph.node]
    assert [0, 1] in section["input"]["edges"]  # stem_conv -> stem_bn


def _engine_guided_report() -> dict:
    """A compile with --tune-with-engine: the engine-guided run is labelled with the whole
    pipeline, with many counts, a long fixed-point and a long rejection reason."""
    inner = ",".join(["dead-layer-elimination", "fold-constants",
                      "transpose-cancellation{fold-matmul-weights=false}",
                      "fixed-point(conv-bias-activation-fusion,common-subexpression-elimination,"
                      "horizontal-fusion,concat-elimination,dead-layer-elimination)",
                      "global-pool-window", "flatten-gemm-conv", "conv-split-fission"])
    pipeline = f"engine-guided({inner})"
    counts = {"groups_tried": 10, "groups_unchanged": 8, "groups_kept": 2, "engine_builds": 3,
              "engine_layers_before": 27, "engine_layers_after": 25}
    guided = _record(2, "engine-guided", 61, 26, 0.7, counts,
                     rejections=[(("a",), "the branches do not all feed one Concat side by side: "
                                         "TensorRT lowers a Split output that feeds another layer "
                                         "to a copy, so the merge would not reduce engine layers")])
    guided["pipeline_text"] = pipeline
    return sample_report(pipeline=pipeline, passes=[
        _record(1, "conv-bias-activation-fusion", 61, 26, 0.004,
                {"folded_batchnorm": 17, "fused_conv_relu": 17, "fused_convs": 17,
                 "fused_conv_residual": 1, "fused_conv_scale": 3}), guided],
        fixed_points=[{"pipeline": inner.split(",", 3)[3].rsplit(",", 3)[0], "iterations": 2,
                       "converged": True}],
        engine_guided=[{"group": inner.split(",", 3)[3].rsplit(",", 3)[0], "engine_before": 27,
                        "engine_after": 25, "kept": True, "reason": "fewer compute layers"}])


def test_the_terminal_report_fits_120_columns_and_report_json_keeps_the_whole_text() -> None:
    data = _engine_guided_report()
    text = report.render(data, "out/", {"--save-engine": "m.engine"})
    lines = text.splitlines()
    table = report.format_pass_table(data)
    assert max(len(line) for line in table) <= report.TERMINAL_WIDTH
    pipeline_lines = [line for line in lines if line.startswith("pipeline: ")]
    assert pipeline_lines and len(pipeline_lines[0]) <= report.TERMINAL_WIDTH
    rule = next(line for line in table if set(line) == {"-"})
    assert len(rule) <= report.TERMINAL_WIDTH
    guided = next(line for line in table if line.startswith("engine-guided("))
    assert guided.split("\u2026")[0] == data["pipeline"][:guided.index("\u2026")]
    assert "groups_tried=10" in guided
    # Every count is shown, on the row or the continuation lines under its column.
    counts_at = table[0].index("counts")
    start = table.index(guided)
    shown = " ".join(line[counts_at:] for line in table[start:start + 6]
                     if line.startswith((guided[:10], " ")))
    for key, value in data["passes"][1]["counts"].items():
        assert f"{key}={value}" in shown.split()
    # The pipeline line wraps after its commas: joined back, it is the whole pipeline.
    start = lines.index(next(line for line in lines if line.startswith("pipeline: ")))
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith("  "))
    assert "".join(line.strip() for line in lines[start:end]) == "pipeline: " + data["pipeline"]
    assert json.loads(report.dumps(data))["passes"][1]["pipeline_text"] == data["pipeline"]


def test_every_file_written_is_named_on_the_terminal() -> None:
    text = report.render(sample_report(), "out/", {"--save-engine": "m.engine",
                                                   "--report-html": "pages/r.html"})
    assert text.rstrip().splitlines()[-3:] == [
        "wrote out/: optimized.onnx, model.engine, report.json",
        "wrote m.engine (--save-engine)", "wrote pages/r.html (--report-html)"]


def test_a_partitioned_compile_shows_its_segment_engines() -> None:
    segment = {"nodes": ["c1", "c2"], "compute_nodes": 2, "compute_layers": 3,
               "why_not_engine": None,
               "engine_report": {"backend": "tensorrt_rtx", "version": "1.7.1.116",
                                 "build_seconds": 0.25, "compute_layers": 3,
                                 "layers": [{"name": f"l{i}", "profile": 0} for i in range(4)]}}
    partition = {"trigger": "TensorRT's parser rejects 1 node", "coverage": 0.8,
                 "compute_nodes": 5, "min_segment_size": 1, "fallback": [
                     {"node": "shift", "op": "BitShift", "reason": "uint32"}], "segments": [
                     {**segment, "name": "TensorRTSegment_0", "engine": "segments/segment_0.engine"},
                     {**segment, "name": "TensorRTSegment_1", "engine": "segments/segment_1.engine"}]}
    data = sample_report(partition=partition, engine={
        "built": False, "reason": "partitioned: one engine per segment, see partition"})
    lines = report.format_engine(data)
    assert lines == ["engines: 2 segment engines built (tensorrt_rtx 1.7.1.116), 6 compute layers",
                     "  80.0% of 5 compute nodes in engines, the rest on ONNX Runtime (see partition)"]
    rows = report.format_partition(data)
    assert any(row.endswith("segments/segment_1.engine: 4 engine layers (3 compute), built in "
                            "250.0 ms") for row in rows)
    assert "not built" not in report.render(data)
def _risk_record(rows: list[dict]) -> dict:
    record = _record(4, "precision-fp16", 120, 125, 2.0, {"measured_samples": 32})
    record.update(pipeline_text="precision-fp16{keep=auto}", options={"data-max": 512.0},
                  tables={"precision_risk": rows})
    return record


def test_precision_risk_comes_from_the_last_measuring_pass_and_shows_five_nodes() -> None:
    rows = [{"name": f"n{i}", "op": "Conv", "max_abs_fp32": 10.0 * i,
             "alone_error": 1e-3 / (i + 1), "kept": False, "kept_by": None, "reason": None}
            for i in range(7)]
    rows[0].update(name="big", op="MatMul", max_abs_fp32=7e4, alone_error="inf", kept=True,
                   kept_by="overflow", reason="overflow risk")
    passes = [*sample_report()["passes"], _risk_record(rows)]
    section = report.precision_risk_section(passes)
    assert section == {"pass": "precision-fp16{keep=auto}", "precision": "fp16", "data_max": 512.0,
                       "samples": 32,
                       "nodes": rows}
    assert report.precision_risk_section(sample_report()["passes"]) is None

    lines = report.format_precision_risk({"precision_risk": section})
    assert lines[0] == ("precision risk (precision-fp16{keep=auto}, 32 samples, data-max 512): "
                        "7 float nodes, 1 kept in FP32, 1 of them by the data")
    body = lines[2:2 + report.RISK_EXCERPT_NODES]
    assert [line.split()[0] for line in body] == ["big", "n1", "n2", "n3", "n4"]
    assert body[0].split()[2:5] == ["7e+04", "inf", "FP32"]
    assert lines[-1] == ("  (5 of 7 nodes shown, riskiest first; all are in report.json and the "
                         "HTML report)")
    rendered = report.render(sample_report(precision_risk=section))
    assert rendered.index("precision risk (") < rendered.index("parity: ")
    assert "precision risk" not in report.render(sample_report())


def test_only_records_with_tables_carry_them() -> None:
    from trtcompile.pm import PassResult
    from trtcompile.pm.records import PassRecord

    plain = PassRecord(1, "p", "p", {}, None, 1, 1, 0.0, False, {}, {}, [])
    assert "tables" not in plain.to_dict()
    result = PassResult()
    result.tables["precision_risk"] = [{"name": "n"}]
    measured = PassRecord(1, "p", "p", {}, None, 1, 1, 0.0, False, {}, {}, [],
                          tables=result.tables)
    assert measured.to_dict()["tables"] == {"precision_risk": [{"name": "n"}]}


def test_the_counts_wrap_at_the_same_place_whatever_the_times() -> None:
    """The time column has one width for times up to 999.99 s, so a slow run's table differs
    from a fast run's only in its time cells (the docs compare shown tables with today's)."""
    from trtcompile.report.tables import format_pass_table

    counts = {"fused_conv_bias": 3, "fused_conv_relu": 15, "fused_convs": 15, "fused_conv_residual": 1,
              "permuted_constants": 3, "pushed_through_broadcast": 4}

    def table(seconds: float) -> list[str]:
        record = {"name": "conv-bias-activation-fusion", "layers_before": 44, "layers_after": 25,
                  "delta": -19, "seconds": seconds, "counts": counts, "rejections": []}
        report = {"passes": [record], "layers": {"input": 44, "optimized": 25},
                  "passes_seconds": seconds, "lowering": {"tool": "tf2onnx 1.17.0", "mode": "faithful",
                                                          "source_ops": 97, "onnx_nodes": 81,
                                                          "seconds": seconds * 100}}
        return format_pass_table(report)

    def without_times(line: str) -> str:
        return " ".join(re.sub(r"\d+\.\d+ m?s", "", line).split())

    fast, slow = table(0.0001), table(9.87654)
    assert "987.65 s" in slow[1] and "10.0 ms" in fast[1]
    assert len(fast) == len(slow) > 4
    for fast_line, slow_line in zip(fast, slow):
        assert len(fast_line) == len(slow_line) and without_times(fast_line) == without_times(slow_line)
