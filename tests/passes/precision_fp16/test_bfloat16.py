"""precision-fp16{dtype=bfloat16} (``--precision bf16``): bfloat16 types in the graph, parity on
ONNX Runtime through the float32 emulation, the refusal below opset 13, and TensorRT-RTX building
the converted layers in BF16."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import pytest

from tests.passes.precision_fp16.test_precision_fp16 import casts_back_to_back, elem_types
from tests.passes.quantize_int8.engine_datatypes import engine_layers, layers_running
from trtcompile import calibration, ir, verify
from trtcompile.errors import EXIT_UNSUPPORTED, PassFailed, UnsupportedPrecision
from trtcompile.pass_manager import PassContext, PassManager

BF16 = "precision-fp16{dtype=bfloat16}"
BFLOAT16 = onnx.TensorProto.BFLOAT16
FLOAT = onnx.TensorProto.FLOAT


def optimize(model: onnx.ModelProto, pipeline: str = BF16, ctx: PassContext | None = None):
    graph = ir.import_model(model)
    report = PassManager(pipeline, ctx=ctx).run(graph)
    return ir.export_model(graph), report


def conv_head(opset: int = 22) -> onnx.ModelProto:
    """Conv -> Relu -> Conv -> Flatten -> MatMul -> Softmax, seeded weights."""
    rng = np.random.default_rng(0)
    weights = {"w1": rng.normal(0, 0.3, (8, 3, 3, 3)), "b1": rng.normal(0, 0.1, 8),
               "w2": rng.normal(0, 0.2, (8, 8, 3, 3)), "wh": rng.normal(0, 0.1, (8 * 8 * 8, 10))}
    nodes = [
        oh.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        oh.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        oh.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1],
                     strides=[2, 2]),
        oh.make_node("Flatten", ["c2"], ["f"], name="flatten"),
        oh.make_node("MatMul", ["f", "wh"], ["logits"], name="head"),
        oh.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=1),
    ]
    graph = oh.make_graph(
        nodes, "g", [oh.make_tensor_value_info("x", FLOAT, [2, 3, 16, 16])],
        [oh.make_tensor_value_info("y", FLOAT, [2, 10])],
        [onh.from_array(np.asarray(v, np.float32), k) for k, v in weights.items()])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)])
    model.ir_version = ir.IR_VERSION
    return model


def test_layers_compute_in_bfloat16_and_the_keep_list_in_float32():
    optimized, report = optimize(conv_head())
    types = elem_types(optimized)  # strict inference: the bfloat16 types are consistent
    nodes = {n.name: n for n in optimized.graph.node}
    for name in ("conv1", "relu1", "conv2", "flatten", "head"):
        assert types[nodes[name].output[0]] == BFLOAT16, name
        assert all(types[t] == BFLOAT16 for t in nodes[name].input if t), name
    assert types[nodes["softmax"].input[0]] == FLOAT
    assert [n.op_type for n in optimized.graph.node] == \
        ["Cast", "Conv", "Relu", "Conv", "Flatten", "MatMul", "Cast", "Softmax"]
    weights = {i.name: i.data_type for i in optimized.graph.initializer}
    assert weights == dict.fromkeys(("w1", "b1", "w2", "wh"), BFLOAT16)
    assert casts_back_to_back(optimized) == []
    (run,) = report.records
    assert run.counts == {"converted_layers": 5, "converted_weights": 4, "inserted_casts": 2}
    assert [(r.nodes, r.reason) for r in run.rejections] == \
        [(("softmax",), "Softmax is on the float32 keep-list")]
    # The interface keeps its names and float32 types.
    assert [(v.name, v.type) for v in optimized.graph.input] == \
        [(v.name, v.type) for v in conv_head().graph.input]


def test_parity_runs_the_bfloat16_graph_on_onnx_runtime_and_sees_its_rounding():
    """The CPU provider has no bfloat16 Conv or MatMul: parity runs the float32 emulation. Its
    results are bfloat16's (outside FP32 tolerances, inside BF16's), seed 0."""
    model = conv_head()
    optimized, _ = optimize(model)
    feed = verify.feed_data(model, seed=0)
    tolerances = calibration.precision_tolerances("bf16")
    parity = verify.compare_models(model, optimized, atol=tolerances.atol, rtol=tolerances.rtol,
                                   atol_range=tolerances.atol_range, data=[feed])
    assert parity.passed, parity.summary()
    strict = verify.compare_models(model, optimized, atol=1e-4, rtol=1e-3, data=[feed])
    assert not strict.passed  # the emulation rounds: a float32 run would pass here


def test_the_emulation_rounds_every_stored_tensor_to_bfloat16():
    """One MatMul in bfloat16: ONNX Runtime computes it in float32 on the bfloat16 inputs and
    weights and rounds the result, as a GPU kernel accumulating in float32 stores it."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 32)).astype(np.float32)
    w = rng.normal(size=(32, 8)).astype(np.float32)
    nodes = [oh.make_node("Cast", ["x"], ["xb"], to=BFLOAT16),
             oh.make_node("MatMul", ["xb", "w"], ["yb"]),
             oh.make_node("Cast", ["yb"], ["y"], to=FLOAT)]
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", FLOAT, [4, 32])],
                          [oh.make_tensor_value_info("y", FLOAT, [4, 8])],
                          [onh.from_array(w.astype(ml_dtypes.bfloat16), "w")])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = ir.IR_VERSION
    assert ir.bfloat16.computes_in_bfloat16(model)
    (y,) = verify.inference_session(model).run(None, {"x": x})

    def bf16(a):
        return a.astype(ml_dtypes.bfloat16).astype(np.float32)

    np.testing.assert_array_equal(y, bf16(bf16(x) @ bf16(w)))
    assert not np.array_equal(y, x @ w)


def test_without_bfloat16_a_model_runs_as_written():
    model = conv_head(opset=17)
    assert not ir.bfloat16.computes_in_bfloat16(model)


def test_a_model_below_opset_13_is_refused_with_its_own_exit_code():
    model = conv_head(opset=12)
    with pytest.raises(UnsupportedPrecision) as refused:
        optimize(model)
    assert not isinstance(refused.value, PassFailed)
    assert refused.value.exit_code == EXIT_UNSUPPORTED == 6
    assert str(refused.value) == ("bfloat16 needs ONNX opset 13 or later (Cast to bfloat16); the "
                                  "model is at opset 12: convert it to opset 13+ or use "
                                  "--precision fp16")
    optimize(model, "precision-fp16")  # float16 has no such floor


def test_integer_paths_stay_float32_with_bfloat16s_bound():
    """256 is the last integer run of bfloat16 (8 significant bits): ids cast to float and back
    keep float32 (negative case, with the reason)."""
    nodes = [oh.make_node("Cast", ["ids"], ["f"], name="to_float", to=FLOAT),
             oh.make_node("Add", ["f", "x"], ["s"], name="shift"),
             oh.make_node("Cast", ["f"], ["back"], name="to_int", to=onnx.TensorProto.INT64)]
    graph = oh.make_graph(nodes, "g",
                          [oh.make_tensor_value_info("ids", onnx.TensorProto.INT64, [4]),
                           oh.make_tensor_value_info("x", FLOAT, [4])],
                          [oh.make_tensor_value_info("s", FLOAT, [4]),
                           oh.make_tensor_value_info("back", onnx.TensorProto.INT64, [4])])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = ir.IR_VERSION
    optimized, report = optimize(model)
    reasons = {r.nodes[0]: r.reason for r in report.rejections("precision-fp16")}
    assert reasons["to_float"] == ("casts integers to float that end up as integers again (exact "
                                   "in float32 up to 2^24, in bfloat16 only up to 256)")
    ids = np.array([257, 1000, 4097, 65537], np.int64)
    (s, back) = verify.inference_session(optimized).run(None, {"ids": ids,
                                                               "x": np.zeros(4, np.float32)})
    np.testing.assert_array_equal(back, ids)  # exact: not through bfloat16 (257 would be 256)


def test_overridable_initializers_stay_float32_graph_inputs():
    """An initializer that is also a graph input may be overridden at run time with float32
    values: its name and type stay, and the layer reading it reads it through a Cast."""
    model = conv_head()
    model.graph.input.append(oh.make_tensor_value_info("wh", FLOAT, [8 * 8 * 8, 10]))
    model.ir_version = 9
    optimized, _ = optimize(model)
    inputs = {v.name: v.type.tensor_type.elem_type for v in optimized.graph.input}
    assert inputs["wh"] == FLOAT
    head = next(n for n in optimized.graph.node if n.name == "head")
    assert head.input[1] != "wh"  # a bfloat16 Cast of the overridable weights
    feed = verify.feed_data(conv_head(), seed=0)
    wh = np.full((8 * 8 * 8, 10), 0.01, np.float32)
    (expected,) = verify.inference_session(model).run(None, {**feed, "wh": wh})
    (got,) = verify.inference_session(optimized).run(None, {**feed, "wh": wh})
    np.testing.assert_allclose(got, expected, atol=5e-2)


def test_keep_auto_measures_on_data_and_reports_bf16():
    """keep=auto measures the error of each node alone in bfloat16 through the emulation; with
    bfloat16's range nothing is kept for overflow at values float16 could not hold."""
    model = conv_head()
    rng = np.random.default_rng(2)
    data = calibration.CalibrationData(
        {"x": (rng.normal(size=(8, 3, 16, 16)) * 1000).astype(np.float32)}, source="test")
    ctx = PassContext(resources={"precision-fp16": data})
    optimized, report = optimize(model, "precision-fp16{dtype=bfloat16 keep=auto}", ctx)
    (run,) = report.records
    assert run.tables["precision_risk_setting"] == [
        {"precision": "bf16", "data_max": float(ml_dtypes.finfo(ml_dtypes.bfloat16).max) / 128}]
    rows = {row["name"]: row for row in run.tables["precision_risk"]}
    assert rows["conv1"]["max_abs_fp32"] > 512  # float16's data-max would keep it
    assert rows["conv1"]["kept_by"] is None and rows["conv1"]["alone_error"] > 0
    assert run.counts["measured_samples"] == 8
    assert "kept_for_overflow" not in run.counts


def test_tensorrt_builds_the_converted_layers_in_bf16():
    """TensorRT-RTX 1.7 on the CPU builds the strongly typed bfloat16 graph with no builder flag:
    the convolutions and the matrix multiply read BFloat16 tensors and weights."""
    optimized, _ = optimize(conv_head())
    layers = engine_layers(optimized)
    for name, layer_type in (("conv1", "correlation"), ("conv2", "correlation"), ("head", "gemm")):
        running = layers_running(layers, name, layer_type)
        assert running, [(layer.name, layer.type, layer.metadata) for layer in layers]
        assert all(layer.inputs == ["BFloat16"] and layer.constants[0] == "BFloat16"
                   and layer.outputs == ["BFloat16"] for layer in running), \
            [(layer.name, layer.inputs, layer.constants, layer.outputs) for layer in running]
