"""precision-fp16 beyond the pass cases: tensor types, Cast placement, function specializations,
composition with fusion, and TensorRT running the converted layers in Half."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import pytest

from tests import pass_cases
from tests.passes.quantize_int8.engine_datatypes import engine_layers, layers_running
from trtcompile import calibration, ir, verify
from trtcompile.pass_manager import PassManager

CASES = [c for c in pass_cases.all_cases() if c.path.parent.parent.name == "precision_fp16"]


def optimize(model: onnx.ModelProto, pipeline: str = "precision-fp16"):
    graph = ir.import_model(model)
    report = PassManager(pipeline).run(graph)
    return ir.export_model(graph), report


def conv_chain(batch: int = 1, big_weight: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)
    b1 = rng.normal(0, 0.1, 8).astype(np.float32)
    w2 = rng.normal(0, 0.2, (8, 8, 3, 3)).astype(np.float32)
    if big_weight:
        w2[0, 0, 0, 0] = 1e5
    nodes = [
        oh.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        oh.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        oh.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        oh.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        oh.make_node("Softmax", ["r2"], ["y"], name="softmax", axis=1),
    ]
    graph = oh.make_graph(
        nodes, "g", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [batch, 3, 16, 16])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [batch, 8, 16, 16])],
        [onh.from_array(a, n) for n, a in [("w1", w1), ("b1", b1), ("w2", w2)]])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = ir.IR_VERSION
    return model


def casts_back_to_back(model: onnx.ModelProto) -> list[str]:
    pairs = []
    for nodes in [model.graph.node, *[f.node for f in model.functions]]:
        producers = {o: n for n in nodes for o in n.output}
        for node in nodes:
            if node.op_type == "Cast" and node.input[0] in producers \
                    and producers[node.input[0]].op_type == "Cast":
                pairs.append(f"{producers[node.input[0]].name} -> {node.name}")
    return pairs


def elem_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info]}
    types.update({i.name: i.data_type for i in inferred.graph.initializer})
    return types


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_golden_outputs_type_check_and_leave_no_cast_pairs(case):
    _, model, optimized = pass_cases.run_case(case)
    # No Cast pair the pass made: a lossy pair of the input (float -> int32 -> float) stays.
    # (Counted, not named: the input's nodes may be unnamed.)
    assert len(casts_back_to_back(optimized)) <= len(casts_back_to_back(model))
    onnx.shape_inference.infer_shapes(optimized, strict_mode=True)  # types are consistent
    for before, after in zip([*model.graph.input, *model.graph.output],
                             [*optimized.graph.input, *optimized.graph.output]):
        assert before.type == after.type  # the interface keeps its float32 types


def test_conv_chain_computes_in_float16_and_softmax_in_float32():
    optimized, report = optimize(conv_chain())
    types = elem_types(optimized)
    by_name = {n.name: n for n in optimized.graph.node}
    for conv in ("conv1", "conv2"):
        assert all(types[t] == onnx.TensorProto.FLOAT16 for t in by_name[conv].input)
        assert types[by_name[conv].output[0]] == onnx.TensorProto.FLOAT16
    assert types[by_name["softmax"].input[0]] == onnx.TensorProto.FLOAT
    assert [n.op_type for n in optimized.graph.node] == \
        ["Cast", "Conv", "Relu", "Conv", "Relu", "Cast", "Softmax"]
    assert report.rejections("precision-fp16")[0].reason == "Softmax is on the float32 keep-list"
    atol, rtol, _ = calibration.parity_tolerances("fp16")
    parity = verify.compare_models(conv_chain(), optimized, atol=atol, rtol=rtol)
    assert parity.passed, parity.summary()


def test_weights_that_overflow_float16_keep_their_layer_in_float32():
    optimized, report = optimize(conv_chain(big_weight=True))
    initializers = {i.name: onh.to_array(i) for i in optimized.graph.initializer}
    assert initializers["w2"].dtype == np.float32 and initializers["w2"].max() == 1e5
    assert initializers["w1"].dtype == np.float16
    reasons = {r.nodes[0]: r.reason for r in report.rejections("precision-fp16")}
    assert reasons["conv2"] == "weights overflow float16 (max |w| = 1e+05 > 65504)"


def test_shared_weight_read_in_both_precisions_gets_a_float16_copy():
    w = np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32)
    nodes = [oh.make_node("MatMul", ["x", "w"], ["h"], name="half"),
             oh.make_node("MatMul", ["h", "w"], ["s"], name="kept"),
             oh.make_node("Relu", ["s"], ["y"], name="relu")]
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 4])],
                          [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 4])],
                          [onh.from_array(w, "w")])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = ir.IR_VERSION
    optimized, _ = optimize(model, "precision-fp16{keep-nodes=kept}")
    initializers = {i.name: onh.to_array(i).dtype for i in optimized.graph.initializer}
    assert initializers == {"w": np.float32, "w_fp16": np.float16}
    assert casts_back_to_back(optimized) == []
    parity = verify.compare_models(model, optimized, atol=1e-2, rtol=1e-2)
    assert parity.passed, parity.summary()


def test_function_body_keeps_casts_inside_only_around_keep_list_ops():
    case = next(c for c in CASES if c.path.stem == "function_with_keep_op")
    _, _, optimized = pass_cases.run_case(case)
    (function,) = optimized.functions
    assert function.name == "ConvSoftmax_fp16"
    assert [n.op_type for n in function.node] == ["Conv", "Cast", "Softmax", "Cast", "Relu"]
    call = next(n for n in optimized.graph.node if n.domain == ir.TRTCOMPILE_DOMAIN)
    weights = {i.name: onh.to_array(i).dtype for i in optimized.graph.initializer}
    assert weights[call.input[1]] == np.float16 and weights[call.input[2]] == np.float16


def test_tensorrt_runs_converted_convolutions_in_half():
    optimized, _ = optimize(conv_chain())
    layers = engine_layers(optimized)
    for conv in ("conv1", "conv2"):
        running = layers_running(layers, conv)
        assert running, [(layer.name, layer.type, layer.metadata) for layer in layers]
        assert all(layer.inputs == ["Half"] and "Half" in layer.constants for layer in running)


def test_fused_calls_compose_with_float16_and_run_in_half():
    optimized, report = optimize(conv_chain(), "conv-bias-activation-fusion,precision-fp16")
    calls = [n for n in optimized.graph.node if n.domain == ir.TRTCOMPILE_DOMAIN]
    assert [n.name for n in calls] == ["conv1", "conv2"]
    assert report.records[-1].counts["converted_layers"] == 2
    assert casts_back_to_back(optimized) == []
    parity = verify.compare_models(conv_chain(), optimized, atol=1e-2, rtol=1e-2)
    assert parity.passed, parity.summary()
    layers = engine_layers(optimized)
    for conv in ("conv1", "conv2"):
        running = layers_running(layers, conv)
        assert running and all(layer.inputs == ["Half"] for layer in running)
