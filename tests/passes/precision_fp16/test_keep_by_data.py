"""precision-fp16 rule 5: the keep-list measured on the user's data (``keep=auto``), the precision
risk table, and how a compile given ``--calib-data`` or ``--inputs`` uses both."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import onnx_graphsurgeon as gs
import pytest

from tests.helpers import run_main
from trtcompile import calibration, ir, verify
from trtcompile.errors import InputError, PipelineError
from trtcompile.flow import CompileOptions, compile_model
from trtcompile.pass_manager import PassContext, PassManager


def overflow_model(head: bool = True) -> onnx.ModelProto:
    """The issue's model: inputs of magnitude ~300 times a 1024-wide weight, times 4, then
    LayerNormalization (and a small MatMul head on the normalized values)."""
    rng = np.random.default_rng(0)
    arrays = {"w": rng.normal(0, 1.75, (1024, 1024)).astype(np.float32),
              "scale": np.array(4.0, np.float32), "gamma": np.ones(1024, np.float32),
              "beta": np.zeros(1024, np.float32),
              "w_head": rng.normal(0, 0.05, (1024, 16)).astype(np.float32)}
    nodes = [oh.make_node("MatMul", ["x", "w"], ["h"], name="matmul"),
             oh.make_node("Mul", ["h", "scale"], ["s"], name="mul"),
             oh.make_node("LayerNormalization", ["s", "gamma", "beta"], ["n"], name="layernorm",
                          axis=-1)]
    if head:
        nodes.append(oh.make_node("MatMul", ["n", "w_head"], ["y"], name="head"))
    else:
        nodes[-1].output[0] = "y"
        del arrays["w_head"]
    graph = oh.make_graph(nodes, "overflow", [oh.make_tensor_value_info("x", 1, ["n", 1024])],
                          [oh.make_tensor_value_info("y", 1, ["n", 16 if head else 1024])],
                          [onh.from_array(a, k) for k, a in arrays.items()])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = ir.IR_VERSION
    return model


def samples(magnitude: float = 300.0, count: int = 16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"x": rng.uniform(-magnitude, magnitude, (count, 1024)).astype(np.float32)}


def convert(model: onnx.ModelProto, pipeline: str, data=None):
    """(converted model, the pass's record)."""
    graph = ir.import_model(model)
    ctx = PassContext()
    if data is not None:
        ctx.resources["precision-fp16"] = calibration.CalibrationData(data, source="test")
    report = PassManager(pipeline, ctx=ctx).run(graph)
    return ir.export_model(graph), report.records[-1]


def infinite_float16_values(model: onnx.ModelProto, feeds) -> dict[str, int]:
    """Per float16 tensor of ``model``: how many of its values are NaN or infinite on ``feeds``
    (each read as a graph output, so ONNX Runtime cannot fold it away)."""
    graph = ir.import_model(model)
    tensors = graph.tensors()
    halves = [t for t in tensors.values() if isinstance(t, gs.Variable) and t.dtype == np.float16
              and t not in graph.outputs]
    graph.outputs = [*graph.outputs, *halves]
    session = verify.inference_session(ir.export_model(graph))
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(None, feeds)))
    return {t.name: int(np.count_nonzero(~np.isfinite(values[t.name]))) for t in halves}


def reasons(record) -> dict[str, str]:
    return {name: r.reason for r in record.rejections for name in r.nodes}


def test_the_static_list_leaves_the_overflow_in_float16() -> None:
    """The issue's measurement, kept as the baseline rule 5 improves on."""
    feeds = samples()
    converted, record = convert(overflow_model(), "precision-fp16{keep=static}", feeds)
    infinite = infinite_float16_values(converted, feeds)
    assert "matmul" not in reasons(record) and "mul" not in reasons(record)
    assert sum(infinite.values()) > 1000  # 16 samples: about 1 in 10 values of the Mul's result


def test_keep_auto_keeps_every_float16_tensor_finite_on_the_data() -> None:
    feeds = samples()
    converted, record = convert(overflow_model(), "precision-fp16{keep=auto}", feeds)
    infinite = infinite_float16_values(converted, feeds)
    assert infinite and sum(infinite.values()) == 0  # the head still runs in float16
    kept = reasons(record)
    for node in ("matmul", "mul"):
        assert kept[node].startswith("overflow risk: |x| exceeds data-max=512 on the data")
    assert kept["layernorm"] == "LayerNormalization is on the float32 keep-list"
    assert "head" not in kept
    assert record.counts["kept_for_overflow"] == 2
    table = {row["name"]: row for row in record.tables["precision_risk"]}
    assert [row["name"] for row in record.tables["precision_risk"]][:2] == ["mul", "matmul"]
    assert table["mul"]["alone_error"] == "inf"  # float16 overflows its 1.5e5
    assert table["matmul"]["max_abs_fp32"] > 16384 and table["matmul"]["kept_by"] == "overflow"
    assert table["head"] == {**table["head"], "kept": False, "kept_by": None, "reason": None}
    assert 0 < table["head"]["alone_error"] < 1e-2
    assert table["layernorm"]["alone_error"] is None  # kept by the list: not measured alone


def test_small_data_keeps_nothing_beyond_the_static_list() -> None:
    feeds = samples(magnitude=0.01)
    static, static_record = convert(overflow_model(), "precision-fp16{keep=static}")
    auto, auto_record = convert(overflow_model(), "precision-fp16{keep=auto}", feeds)
    assert reasons(auto_record) == reasons(static_record) == {
        "layernorm": "LayerNormalization is on the float32 keep-list"}
    assert [n.op_type for n in auto.graph.node] == [n.op_type for n in static.graph.node]
    assert "kept_for_overflow" not in auto_record.counts
    assert "kept_for_error" not in auto_record.counts


def test_keep_default_measures_when_the_context_holds_data() -> None:
    _, record = convert(overflow_model(), "precision-fp16", samples())
    assert record.counts["kept_for_overflow"] == 2
    _, record = convert(overflow_model(), "precision-fp16")
    assert "precision_risk" not in record.tables and "measured_samples" not in record.counts


def test_keep_auto_without_data_is_one_line_naming_what_to_give() -> None:
    with pytest.raises(InputError) as raised:
        convert(overflow_model(), "precision-fp16{keep=auto}")
    message = str(raised.value)
    assert "\n" not in message and "--calib-data" in message and "--inputs" in message


@pytest.mark.parametrize("options", ["keep=always", "data-max=0", "data-max=inf", "samples=0"])
def test_bad_options_are_refused_when_the_pipeline_is_parsed(options: str) -> None:
    with pytest.raises(PipelineError, match=r"^pass 'precision-fp16': "):
        PassManager(f"precision-fp16{{{options}}}")


def cancellation_model() -> onnx.ModelProto:
    """``y = ((x + 300) - 300) * 2`` on x in [-1, 1]: no value near data-max, but float16 keeps
    x + 300 to a quarter, so the Sub's output is off by up to 0.125 (its error alone is the
    largest, relative to its small range), the Add's is 4e-4 of its range, the Mul's exact."""
    offset = onh.from_array(np.array(300.0, np.float32), "offset")
    two = onh.from_array(np.array(2.0, np.float32), "two")
    nodes = [oh.make_node("Add", ["x", "offset"], ["shifted"], name="add"),
             oh.make_node("Sub", ["shifted", "offset"], ["back"], name="sub"),
             oh.make_node("Mul", ["back", "two"], ["y"], name="mul")]
    graph = oh.make_graph(nodes, "cancel", [oh.make_tensor_value_info("x", 1, ["n", 64])],
                          [oh.make_tensor_value_info("y", 1, ["n", 64])], [offset, two])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = ir.IR_VERSION
    return model


def test_the_greedy_rounds_keep_the_highest_error_node_first() -> None:
    feeds = {"x": np.random.default_rng(2).uniform(-1, 1, (16, 64)).astype(np.float32)}
    _, one_round = convert(cancellation_model(), "precision-fp16{keep=auto max-rounds=1}", feeds)
    errors = {row["name"]: row["alone_error"] for row in one_round.tables["precision_risk"]}
    assert errors["sub"] > errors["add"] > errors["mul"] >= 0
    assert set(reasons(one_round)) == {"sub"}
    assert reasons(one_round)["sub"].startswith("among the largest float16 errors alone")
    # One node was not enough: the Add's rounded result still reaches the Sub.
    assert one_round.counts["outputs_outside_fp16_tolerance"] == 1

    converted, enough = convert(cancellation_model(), "precision-fp16{keep=auto}", feeds)
    assert set(reasons(enough)) == {"sub", "add"}  # the Mul, kept in the same round, given back
    assert "outputs_outside_fp16_tolerance" not in enough.counts
    reference = verify.inference_session(cancellation_model()).run(None, feeds)[0]
    produced = verify.inference_session(converted).run(None, feeds)[0]
    assert np.all(verify.within_tolerance(reference, produced, atol=1e-2, rtol=1e-2,
                                          atol_range=1e-2))


# Through a compile: --calib-data and --inputs --------------------------------------------------


@pytest.fixture(scope="module")
def overflow_files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("overflow")
    onnx.save(overflow_model(), folder / "model.onnx")
    np.savez(folder / "data.npz", **samples())
    return folder


def test_cli_fp16_with_calib_data_measures_and_reports(overflow_files: Path, tmp_path: Path,
                                                       capsys) -> None:
    html = tmp_path / "report.html"
    code, out, err = run_main(
        ["compile", str(overflow_files / "model.onnx"), "-o", str(tmp_path / "out"),
         "--precision", "fp16", "--calib-data", str(overflow_files / "data.npz"), "--no-engine",
         "--report-html", str(html), "--why-not", "precision-fp16"], capsys)
    assert code == 0, err
    assert "precision-fp16{keep=auto}" in out
    risk_lines = out[out.index("precision risk ("):].splitlines()
    assert risk_lines[0].startswith("precision risk (precision-fp16{keep=auto}, 16 samples, "
                                    "data-max 512): 4 float nodes, 3 kept in FP32, 2 of them by "
                                    "the data")
    assert risk_lines[2].split()[:2] == ["mul", "Mul"] and "inf" in risk_lines[2]
    assert risk_lines[3].split()[:2] == ["matmul", "MatMul"]
    assert "inputs: all 16 samples given for FP16" in out
    why_not = out[out.index("why not precision-fp16"):]
    assert "matmul (MatMul)" in why_not and "overflow risk" in why_not

    report = json.loads((tmp_path / "out" / "report.json").read_text())
    risk = report["precision_risk"]
    assert risk["pass"] == "precision-fp16{keep=auto}" and risk["data_max"] == 512.0
    assert risk["samples"] == 16
    assert {row["name"]: row["kept_by"] for row in risk["nodes"]} == {
        "mul": "overflow", "matmul": "overflow", "layernorm": None, "head": None}
    assert report["parity"]["tolerances"]["inputs"]["kind"] == "measured samples"
    page = html.read_text()
    assert 'id="precision-risk"' in page
    assert page.count('class="risk-row"') == 4
    assert 'data-node="mul" data-kept="FP32"' in page and 'data-node="head" data-kept="FP16"' in page

    optimized = onnx.load(tmp_path / "out" / "optimized.onnx")
    assert sum(infinite_float16_values(optimized, samples()).values()) == 0


def test_inputs_count_as_data_and_keep_static_wins_in_the_pipeline(overflow_files: Path,
                                                                    tmp_path: Path) -> None:
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, x=samples(count=4)["x"])
    result = compile_model(overflow_files / "model.onnx", tmp_path / "auto", CompileOptions(
        precision="fp16", inputs=inputs, engine=False, progress=False))
    assert result.report["precision_risk"]["samples"] == 4
    assert {"matmul", "mul"} <= {r.nodes[0] for r in result.why_not("precision-fp16")}

    result = compile_model(overflow_files / "model.onnx", tmp_path / "static", CompileOptions(
        precision="fp16", pipeline="precision-fp16{keep=static}",
        calib_data=overflow_files / "data.npz", engine=False, progress=False))
    assert result.report["pipeline"] == "precision-fp16{keep=static}"
    assert result.report["precision_risk"] is None
    assert {r.nodes[0] for r in result.why_not("precision-fp16")} == {"layernorm"}


def test_calib_cache_is_refused_for_fp16(overflow_files: Path, tmp_path: Path, capsys) -> None:
    code, out, err = run_main(
        ["compile", str(overflow_files / "model.onnx"), "-o", str(tmp_path / "out"),
         "--precision", "fp16", "--calib-cache", str(tmp_path / "ranges.json"), "--no-engine"],
        capsys)
    assert code == 2
    assert err.strip().splitlines()[-1] == ("trtcompile: error: --calib-cache applies to "
                                            "--precision int8 only (fp16 measures --calib-data "
                                            "afresh)")
    assert not (tmp_path / "out").exists()


def test_a_float16_tensor_that_overflows_keeps_its_producer_whatever_data_max_says() -> None:
    feeds = samples()
    converted, record = convert(overflow_model(), "precision-fp16{keep=auto data-max=1e6}", feeds)
    kept = reasons(record)
    assert kept["mul"] == "float16 result not finite on the data"
    assert "matmul" not in kept  # its 3.8e4 fits float16
    assert record.counts["kept_not_finite"] == 1
    assert sum(infinite_float16_values(converted, feeds).values()) == 0


def test_an_input_beyond_float16_keeps_the_nodes_reading_it() -> None:
    """The Cast the pass puts after the input overflows: the model's readers of it are blamed."""
    graph = oh.make_graph([oh.make_node("Relu", ["x"], ["r"], name="relu"),
                           oh.make_node("Neg", ["r"], ["y"], name="neg")], "wide",
                          [oh.make_tensor_value_info("x", 1, ["n", 8])],
                          [oh.make_tensor_value_info("y", 1, ["n", 8])])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = ir.IR_VERSION
    feeds = {"x": np.full((4, 8), 1e5, np.float32)}
    converted, record = convert(model, "precision-fp16{keep=auto data-max=1e6}", feeds)
    assert reasons(record) == {"relu": "float16 result not finite on the data",
                               "neg": "float16 result not finite on the data"}
    assert infinite_float16_values(converted, feeds) == {}


def test_inputs_with_strings_are_measured_too(tmp_path: Path) -> None:
    """--inputs gives strings as NumPy unicode arrays; the samples FP16 measures on take them."""
    nodes = [oh.make_node("LabelEncoder", ["s"], ["v"], domain="ai.onnx.ml", name="encode",
                          keys_strings=["a", "b"], values_floats=[1.0, 2.0], default_float=0.0),
             oh.make_node("Mul", ["v", "x"], ["m"], name="mul"),
             oh.make_node("Relu", ["m"], ["y"], name="relu")]
    graph = oh.make_graph(nodes, "strings",
                          [oh.make_tensor_value_info("s", onnx.TensorProto.STRING, ["n"]),
                           oh.make_tensor_value_info("x", 1, ["n"])],
                          [oh.make_tensor_value_info("y", 1, ["n"])])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17),
                                                oh.make_opsetid("ai.onnx.ml", 2)])
    model.ir_version = ir.IR_VERSION
    onnx.save(model, tmp_path / "strings.onnx")
    np.savez(tmp_path / "inputs.npz", s=np.array(["a", "b", "a", "c"]),
             x=np.array([1000.0, 2.0, 3.0, 4.0], np.float32))
    result = compile_model(tmp_path / "strings.onnx", tmp_path / "out", CompileOptions(
        precision="fp16", inputs=tmp_path / "inputs.npz", engine=False, progress=False))
    assert result.error is None, result.error
    kept_by = {row["name"]: row["kept_by"] for row in result.report["precision_risk"]["nodes"]}
    assert kept_by == {"mul": "overflow", "relu": "overflow", "encode": None}


def test_cli_keep_auto_without_data_exits_2_with_one_line(overflow_files: Path, tmp_path: Path,
                                                          capsys) -> None:
    code, _, err = run_main(
        ["compile", str(overflow_files / "model.onnx"), "-o", str(tmp_path / "out"),
         "--precision", "fp16", "--pipeline", "precision-fp16{keep=auto}", "--no-engine"], capsys)
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("trtcompile: error: precision-fp16{keep=auto} measures the model on "
                           "data: give --calib-data FILE or --inputs FILE")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("tolerances, kept", [
    ((None, None), {"sub", "add"}),  # FP16's: atol=1e-2 + 1e-2 x range, rtol=1e-2
    ((1e-5, 1e-5), {"sub", "add", "mul"}),  # tighter: the rounding of the Mul counts too
    ((0.3, 0.3), set()),  # looser than the Sub's 0.125 error alone: nothing need stay FP32
], ids=["precision-default", "tighter", "looser"])
def test_the_keep_list_meets_the_tolerances_parity_judges_by(tmp_path: Path, tolerances, kept) -> None:
    """A compile's --atol/--rtol are what parity judges the FP16 model by, so they are what the
    keep-list's rounds aim at: a tighter bound keeps more nodes in FP32 (and parity passes under
    it), a looser one fewer."""
    model_path, data_path = tmp_path / "model.onnx", tmp_path / "data.npz"
    onnx.save(cancellation_model(), model_path)
    np.savez(data_path, x=np.random.default_rng(2).uniform(-1, 1, (16, 64)).astype(np.float32))
    atol, rtol = tolerances
    given = {} if atol is None else {"atol": atol, "rtol": rtol}
    result = compile_model(model_path, tmp_path / "out", CompileOptions(
        precision="fp16", calib_data=data_path, engine=False, progress=False, **given))
    assert result.report["parity"]["passed"] is True
    assert {r.nodes[0] for r in result.why_not("precision-fp16")
            if r.reason.startswith("among the largest")} == kept
