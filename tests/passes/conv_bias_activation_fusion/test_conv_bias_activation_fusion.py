"""conv-bias-activation-fusion beyond its pass cases: the public helpers, folded weight values,
options, and TensorRT accepting the fused calls."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import onnx_graphsurgeon as gs
import pytest

from passes.conv_bias_activation_fusion import ACTIVATION_NAMES, ConvBiasActivationFusion
from tests import pass_cases
from trtcompile import calibration, ir, verify
from trtcompile.calibration import Calibration, CalibrationData
from trtcompile.errors import InputError
from trtcompile.ir import cost
from trtcompile.ir.fused_layer import (
    CONV_ATTRS,
    RESIDUAL_PARAMETERS,
    conv_call_info,
    conv_function,
)
from trtcompile.pass_manager import PassContext, PassManager, parse_pipeline

CASES = Path(__file__).parent / "cases"


def fused(case_name: str, pipeline: str | None = None) -> tuple[onnx.ModelProto, gs.Graph]:
    """The case's input model and its graph after the pass."""
    case = pass_cases.load_case(CASES / f"{case_name}.onnxtxt")
    model = case.model()
    graph = ir.import_model(model)
    PassManager(pipeline or case.pipeline).run(graph)
    return model, graph


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}


def parse_graph(text: str) -> gs.Graph:
    return ir.import_model(onnx.parser.parse_model(text))


def test_conv_call_info_reads_back_folded_batchnorm_and_clip() -> None:
    model, graph = fused("conv_bn_relu6")
    (call,) = graph.nodes
    info = conv_call_info(graph, call)
    assert info is not None
    assert info.node is call and call.name == "Conv_0"
    assert info.attrs == {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
                          "dilations": [1, 1], "group": 1}
    assert info.activation == "clip"
    assert info.activation_params == {"min": 0.0, "max": 6.0}
    assert info.function.name == "ConvBiasClip_k3x3_s2x2_p1x1x1x1_d1x1_g1_lo0_hi6"

    values = initializers(model)
    scale = values["gamma"] / np.sqrt(values["var"] + 1e-3)
    expected_w = values["W"] * scale[:, None, None, None]
    expected_b = (values["B"] - values["mean"]) * scale + values["beta"]
    assert info.weights.values.dtype == np.float32 and info.bias.values.dtype == np.float32
    np.testing.assert_allclose(info.weights.values, expected_w, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(info.bias.values, expected_b, rtol=1e-6, atol=1e-7)


def test_conv_call_info_leaky_relu_parameters_and_plain_nodes() -> None:
    _, graph = fused("conv_add_bn_leaky")
    info = conv_call_info(graph, graph.nodes[0])
    assert info is not None and info.activation == "leaky-relu"
    assert info.activation_params == {"alpha": pytest.approx(0.1)}

    _, plain = fused("conv_alone")
    assert [conv_call_info(plain, node) for node in plain.nodes] == [None, None]


def test_conv_function_is_reused_per_specialization() -> None:
    graph = gs.Graph(opset=17)
    attrs = {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1],
             "group": 1}
    first = conv_function(graph, attrs, "leaky-relu", {"alpha": 0.2})
    again = conv_function(graph, dict(attrs), "leaky-relu", {"alpha": 0.2})
    other = conv_function(graph, attrs, "leaky-relu", {"alpha": 0.3})
    assert first is again and other is not first
    assert [f.name for f in graph.functions] == [
        "ConvBiasLeakyRelu_k3x3_s1x1_p1x1x1x1_d1x1_g1_a0p2",
        "ConvBiasLeakyRelu_k3x3_s1x1_p1x1x1x1_d1x1_g1_a0p3",
    ]
    conv, activation = first.nodes
    assert conv.op == "Conv" and sorted(conv.attrs) == sorted(CONV_ATTRS)
    assert activation.op == "LeakyRelu" and activation.attrs == {"alpha": 0.2}
    assert first.domain == ir.TRTCOMPILE_DOMAIN
    with pytest.raises(ValueError, match="pads"):
        conv_function(graph, {k: v for k, v in attrs.items() if k != "pads"})



def test_a_function_under_our_name_is_reused_only_while_its_body_is_ours() -> None:
    """The body of the function a graph holds under the specialization name is read at every
    call: one changed since (or a model's own) gets a suffixed function of the right body."""
    graph = gs.Graph(opset=17)
    attrs = {"kernel_shape": [1, 1], "strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1],
             "group": 1}
    first = conv_function(graph, attrs, "relu")
    assert conv_function(graph, dict(attrs), "relu") is first
    first.nodes[1].op = "Sigmoid"  # no longer the body its name stands for
    second = conv_function(graph, attrs, "relu")
    assert second is not first and second.name == first.name + "_1"
    assert [n.op for n in second.nodes] == ["Conv", "Relu"]
    assert conv_function(graph, attrs, "relu") is second

def test_shared_weights_are_not_modified() -> None:
    graph = parse_graph("""<ir_version: 10, opset_import: ["" : 17]>
    g (float[1,2,4,4] x) => (float[1,2,4,4] y, float[1,2,4,4] z) {
      c1 = Conv(x, W)
      y = Mul(c1, s1)
      c2 = Conv(x, W)
      z = Mul(c2, s2)
    }""")
    weights = np.arange(4, dtype=np.float32).reshape(2, 2, 1, 1)
    shared = gs.Constant("W", weights.copy())
    for node in (graph.nodes[0], graph.nodes[2]):
        node.inputs[1] = shared
    graph.nodes[1].inputs[1] = gs.Constant("s1", np.array([2.0, 3.0], np.float32).reshape(1, 2, 1, 1))
    graph.nodes[3].inputs[1] = gs.Constant("s2", np.array([5.0, 7.0], np.float32).reshape(1, 2, 1, 1))
    result = ConvBiasActivationFusion().run(graph, PassContext())
    assert result.counts == {"fused_conv_scale": 2, "fused_convs": 2}
    np.testing.assert_array_equal(shared.values, weights)
    first, second = (conv_call_info(graph, node) for node in graph.nodes)
    np.testing.assert_array_equal(first.weights.values, weights * np.array([2, 3])[:, None, None, None])
    np.testing.assert_array_equal(second.weights.values, weights * np.array([5, 7])[:, None, None, None])
    assert first.weights.name != second.weights.name != "W"
    assert len(graph.functions) == 1


SAME_STRIDE_2 = """<ir_version: 10, opset_import: ["" : 17]>
g (float[1,3,{h},{w}] x, float[4,3,3,3] W) => (float[1,4,{oh},{ow}] y) {{
  c = Conv<auto_pad="{mode}", strides=[{s},{s}]>(x, W)
  y = Relu(c)
}}"""


@pytest.mark.parametrize("mode, stride, expected_pads", [
    ("SAME_UPPER", 1, [1, 1, 1, 1]), ("SAME_LOWER", 2, [1, 1, 0, 0]), ("VALID", 2, [0, 0, 0, 0])])
def test_auto_pad_becomes_explicit_pads(mode: str, stride: int, expected_pads: list[int]) -> None:
    size = 8
    out = size // stride if mode != "VALID" else (size - 3) // stride + 1
    model = onnx.parser.parse_model(SAME_STRIDE_2.format(h=size, w=size, oh=out, ow=out, mode=mode,
                                                         s=stride))
    rng = np.random.default_rng(0)
    weights = rng.uniform(-1, 1, (4, 3, 3, 3)).astype(np.float32)
    model.graph.initializer.append(onnx.numpy_helper.from_array(weights, "W"))
    del model.graph.input[1]
    graph = ir.import_model(model)
    ConvBiasActivationFusion().run(graph, PassContext())
    info = conv_call_info(graph, graph.nodes[0])
    assert info is not None and info.attrs["pads"] == expected_pads
    assert verify.compare_models(model, ir.export_model(graph)).passed


def test_same_padding_with_stride_needs_static_spatial_shape() -> None:
    text = SAME_STRIDE_2.format(h="H", w="W_", oh="OH", ow="OW", mode="SAME_UPPER", s=2)
    graph = parse_graph(text)
    graph.nodes[0].inputs[1] = gs.Constant("W", np.ones((4, 3, 3, 3), np.float32))
    result = ConvBiasActivationFusion().run(graph, PassContext())
    assert [n.op for n in graph.nodes] == ["Conv", "Relu"]
    assert [r.reason for r in result.rejections] == [
        "auto_pad SAME_UPPER with strides [2, 2] needs a static input spatial shape"]


def test_fold_batchnorm_off_leaves_batchnorm() -> None:
    _, graph = fused("conv_bn", "conv-bias-activation-fusion{fold-batchnorm=false}")
    assert [n.op for n in graph.nodes] == ["Conv", "BatchNormalization"]


def test_options_round_trip_and_unknown_activation() -> None:
    (pass_,) = parse_pipeline("conv-bias-activation-fusion{activations=relu,clip fold-batchnorm=false}")
    assert pass_ == ConvBiasActivationFusion(activations=("relu", "clip"), fold_batchnorm=False)
    (no_residual,) = parse_pipeline("conv-bias-activation-fusion{residual=false}")
    assert no_residual == ConvBiasActivationFusion(residual=False)
    assert parse_pipeline(no_residual.to_text()) == (no_residual,)
    assert parse_pipeline(pass_.to_text()) == (pass_,)
    with pytest.raises(InputError, match="unknown activation") as raised:
        parse_pipeline("conv-bias-activation-fusion{activations=relu,swish}")
    # The message lists the choices as the option takes them.
    assert str(raised.value).endswith("choose from " + ", ".join(ACTIVATION_NAMES))


def test_one_walk_no_tensor_map(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pass follows producer/consumer links; it never builds the graph's tensor map."""
    _, graph_before = fused("chained_convs_share_function", "dead-layer-elimination")

    def forbidden(*args, **kwargs):
        raise AssertionError("graph.tensors() called")

    monkeypatch.setattr(gs.Graph, "tensors", forbidden)
    result = ConvBiasActivationFusion().run(graph_before, PassContext())
    assert result.counts["fused_convs"] == 2


# --------------------------------------------------------------------------------------------
# Residual fusion and the passes that read fused calls
# --------------------------------------------------------------------------------------------


def assert_topologically_sorted(graph: gs.Graph) -> None:
    produced = {t.name for t in graph.inputs} | {
        name for name, t in graph.tensors().items() if isinstance(t, gs.Constant)}
    for node in graph.nodes:
        missing = [t.name for t in node.inputs if not t.is_empty() and t.name not in produced]
        assert not missing, f"{node.name} reads {missing} before they are computed"
        produced.update(t.name for t in node.outputs)


def test_conv_call_info_reports_the_residual_input() -> None:
    model, graph = fused("residual_identity_block")
    first, second = graph.nodes
    assert conv_call_info(graph, first).residual is None
    info = conv_call_info(graph, second)
    assert info is not None and info.activation == "relu"
    assert info.residual is graph.inputs[0]  # the block input x
    assert info.output is graph.outputs[0]
    assert [n.op for n in info.function.nodes] == ["Conv", "Add", "Relu"]
    assert [t.name for t in info.function.inputs] == list(RESIDUAL_PARAMETERS)
    values = initializers(model)
    scale = values["s2"] / np.sqrt(values["v2"] + 1e-5)
    np.testing.assert_allclose(info.bias.values, values["b2"] - values["m2"] * scale, rtol=1e-5,
                               atol=1e-6)


def test_conv_function_residual_body_and_name() -> None:
    graph = gs.Graph(opset=17)
    attrs = {"kernel_shape": [1, 1], "strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1],
             "group": 1}
    with_relu = conv_function(graph, attrs, "relu", residual=True)
    linear = conv_function(graph, attrs, None, residual=True)
    plain = conv_function(graph, attrs, "relu")
    assert [f.name for f in (with_relu, linear, plain)] == [
        "ConvBiasAddRelu_k1x1_s1x1_p0x0x0x0_d1x1_g1", "ConvBiasAdd_k1x1_s1x1_p0x0x0x0_d1x1_g1",
        "ConvBiasRelu_k1x1_s1x1_p0x0x0x0_d1x1_g1"]
    conv, add, relu = with_relu.nodes
    assert add.inputs[0] is conv.outputs[0] and add.inputs[1] is with_relu.inputs[3]
    assert relu.inputs[0] is add.outputs[0] and relu.outputs[0] is with_relu.outputs[0]
    assert [n.op for n in linear.nodes] == ["Conv", "Add"]
    assert conv_function(graph, dict(attrs), "relu", residual=True) is with_relu


def test_residual_call_sits_after_its_residual() -> None:
    """Z (Sigmoid of the conv input) is computed after the Conv in node order: the call takes the
    Add's place, so the graph stays topologically sorted."""
    _, graph = fused("residual_of_conv_input")
    assert [n.op for n in graph.nodes] == ["Sigmoid", "ConvBiasAddLeakyRelu_k3x3_s1x1_p1x1x1x1_d1x1_g1_a0p1"]
    assert_topologically_sorted(graph)
    for case_name in ("residual_projection_shortcut", "residual_projection_shortcut_last"):
        _, graph = fused(case_name)
        assert_topologically_sorted(graph)
        residual_calls = [n for n in graph.nodes if conv_call_info(graph, n).residual is not None]
        assert len(residual_calls) == 1
        z = conv_call_info(graph, residual_calls[0]).residual
        assert ir.producer(z) is not None and conv_call_info(graph, ir.producer(z)) is not None


def test_residual_shape_unknown_is_not_fused() -> None:
    """Without a provable shape (Z's size comes from a runtime Reshape), the Add may broadcast."""
    graph = parse_graph("""<ir_version: 10, opset_import: ["" : 17]>
    g (float[1,4,6,6] x, float[144] flat, int64[4] shape) => (float[1,4,6,6] y) {
      c = Conv<pads = [1, 1, 1, 1]>(x, W)
      z = Reshape(flat, shape)
      a = Add(c, z)
      y = Relu(a)
    }""")
    graph.nodes[0].inputs[1] = gs.Constant("W", np.ones((4, 4, 3, 3), np.float32))
    result = ConvBiasActivationFusion().run(graph, PassContext())
    assert [n.op for n in graph.nodes] == ["Conv", "Reshape", "Add", "Relu"]
    # Shape inference names each unknown dimension with its own symbol: not provably equal.
    assert [r.reason for r in result.rejections] == [
        ("residual Add: 'z' (shape ['unk__0', 'unk__1', 'unk__2', 'unk__3']) is not provably the "
        "conv result's shape [1, 4, 6, 6], so the Add may broadcast")]


def test_residual_named_like_a_function_parameter_is_not_fused() -> None:
    """TensorRT's parser binds call arguments to parameters by name, one after the other: a
    residual named like the X parameter would be read as X."""
    graph = parse_graph("""<ir_version: 10, opset_import: ["" : 17]>
    g (float[1,4,6,6] x, float[1,4,6,6] z) => (float[1,4,6,6] y) {
      c = Conv<pads = [1, 1, 1, 1]>(x, W)
      a = Add(c, z)
      y = Relu(a)
    }""")
    graph.nodes[0].inputs[1] = gs.Constant("W", np.ones((4, 4, 3, 3), np.float32))
    graph.inputs[1].name = RESIDUAL_PARAMETERS[0]
    result = ConvBiasActivationFusion().run(graph, PassContext())
    assert [n.op for n in graph.nodes] == ["Conv", "Add", "Relu"]
    assert [r.nodes for r in result.rejections] == [(graph.nodes[0].name, graph.nodes[1].name)]
    assert [r.reason for r in result.rejections] == [
        (f"residual '{RESIDUAL_PARAMETERS[0]}' is named like a parameter of the fused function, "
        "which TensorRT's parser would bind to the wrong tensor")]


RESIDUAL_PAIR = """<ir_version: 10, opset_import: ["" : 17]>
g (float[1,4,6,6] x, float[1,4,6,6] z1, float[1,4,6,6] z2) => (float[1,8,6,6] y) {
  c1 = Conv(x, W1)
  a1 = Add(c1, z1)
  r1 = Relu(a1)
  c2 = Conv(x, W2)
  a2 = Add(c2, z2)
  r2 = Relu(a2)
  y = Concat<axis = 1>(r1, r2)
}"""


def residual_pair_model() -> onnx.ModelProto:
    model = onnx.parser.parse_model(RESIDUAL_PAIR)
    rng = np.random.default_rng(0)
    for name in ("W1", "W2"):
        model.graph.initializer.append(onnx.numpy_helper.from_array(
            rng.uniform(-1, 1, (4, 4, 1, 1)).astype(np.float32), name))
    model.ir_version = ir.IR_VERSION
    return model


def test_horizontal_fusion_refuses_calls_with_residuals() -> None:
    model = residual_pair_model()
    graph = ir.import_model(model)
    report = PassManager("conv-bias-activation-fusion,horizontal-fusion").run(graph)
    assert [n.op for n in graph.nodes] == ["ConvBiasAddRelu_k1x1_s1x1_p0x0x0x0_d1x1_g1"] * 2 + ["Concat"]
    reasons = {r.reason for r in report.rejections("horizontal-fusion")}
    assert reasons == {
        ("adds a residual input 'z1': a merged layer would need the branches' residuals "
        "concatenated at run time"),
        ("adds a residual input 'z2': a merged layer would need the branches' residuals "
        "concatenated at run time")}
    assert verify.compare_models(model, ir.export_model(graph)).passed


def test_average_pool_fusion_leaves_residual_calls_alone() -> None:
    graph = parse_graph("""<ir_version: 10, opset_import: ["" : 17]>
    g (float[1,4,6,6] x, float[1,4,6,6] z) => (float[1,4,6,6] y) {
      p = AveragePool<kernel_shape = [3, 3], pads = [1, 1, 1, 1], count_include_pad = 1>(x)
      c = Conv(p, W)
      a = Add(c, z)
      y = Relu(a)
    }""")
    graph.nodes[1].inputs[1] = gs.Constant("W", np.ones((4, 4, 1, 1), np.float32))
    report = PassManager("conv-bias-activation-fusion,average-pool-conv-fusion").run(graph)
    assert [n.op for n in graph.nodes] == ["AveragePool", "ConvBiasAddRelu_k1x1_s1x1_p0x0x0x0_d1x1_g1"]
    assert [r.reason for r in report.rejections("average-pool-conv-fusion")] == [
        "the convolution adds a residual input 'z', which the pooled layer's functions do not take"]


def test_precision_fp16_casts_the_residual_like_the_input() -> None:
    model, _ = fused("residual_identity_block")
    graph = ir.import_model(model)
    PassManager("conv-bias-activation-fusion,precision-fp16").run(graph)
    optimized = ir.export_model(graph)
    inferred = onnx.shape_inference.infer_shapes(optimized)
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]}
    calls = [n for n in optimized.graph.node if n.domain == ir.TRTCOMPILE_DOMAIN]
    residual_call = calls[-1]
    assert len(residual_call.input) == 4
    assert types[residual_call.input[0]] == types[residual_call.input[3]] == onnx.TensorProto.FLOAT16
    atol, rtol, _ = calibration.parity_tolerances("fp16")
    assert verify.compare_models(model, optimized, atol=atol, rtol=rtol).passed


def test_quantize_int8_puts_qdq_on_x_and_w_and_keeps_the_residual_float() -> None:
    model, _ = fused("residual_identity_block")
    graph = ir.import_model(model)
    data = np.random.default_rng(1).normal(0, 1, (32, 8, 6, 6)).astype(np.float32)
    setup = Calibration(data=CalibrationData({"x": data}), progress=False)
    # The block's last call writes the graph output: by default quantize-int8 keeps it float
    # (rule 8); this test is about where Q/DQ go on a quantized residual call.
    default = PassManager("conv-bias-activation-fusion,quantize-int8{method=minmax}",
                          ctx=PassContext(resources={"quantize-int8": setup})).run(graph.copy())
    assert default.records[-1].counts["quantized_fused_conv"] == 1
    assert [r.reason for r in default.records[-1].rejections] == [
        "network output layer stays in higher precision"]
    report = PassManager(
        "conv-bias-activation-fusion,quantize-int8{method=minmax keep-output-layers=false}",
        ctx=PassContext(resources={"quantize-int8": setup})).run(graph)
    assert report.records[-1].counts["quantized_fused_conv"] == 2
    call = graph.nodes[-1]
    assert call.op == "ConvBiasAddRelu_k3x3_s1x1_p1x1x1x1_d1x1_g1"
    x, w, b, z = call.inputs
    assert ir.producer(x).op == "DequantizeLinear" and ir.producer(w).op == "DequantizeLinear"
    assert isinstance(b, gs.Constant) and b.values.dtype == np.float32
    assert z is graph.inputs[0] and z.dtype == np.float32


def test_residual_call_macs_are_the_convolution_macs() -> None:
    _, graph = fused("residual_identity_block")
    summary = cost.graph_macs(graph)
    # 1x1 conv 8->4 and 3x3 conv 4->8 on 6x6 outputs; the Add and the Relu cost no MACs.
    assert summary.macs == 36 * (4 * 8) + 36 * (8 * 4 * 9)
    assert summary.unknown == []


# --------------------------------------------------------------------------------------------
# TensorRT accepts the fused calls
# --------------------------------------------------------------------------------------------


def _tensorrt():
    for name in ("tensorrt", "tensorrt_rtx"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    pytest.skip("neither tensorrt nor tensorrt_rtx is installed")


def build_layer_report(model: onnx.ModelProto) -> str:
    """Parse and build ``model`` with TensorRT; return the builder's ``Layers:`` log message."""
    trt = _tensorrt()

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            super().__init__()
            self.messages: list[str] = []

        def log(self, severity, message) -> None:
            self.messages.append(message)

    logger = Logger()
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(model.SerializeToString()), [parser.get_error(i).desc()
                                                     for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    plan = builder.build_serialized_network(network, config)
    assert plan is not None and plan.nbytes > 0
    reports = [m for m in logger.messages if m.startswith("Layers:")]
    assert reports, "the builder logged no layer report"
    return reports[-1]


@pytest.mark.parametrize("case_name", ["conv_bn_relu6", "chained_convs_share_function",
                                       "residual_identity_block", "residual_projection_shortcut",
                                       "residual_linear_bottleneck"])
def test_tensorrt_builds_fused_calls(case_name: str) -> None:
    _, graph = fused(case_name)
    model = ir.export_model(graph)
    report = build_layer_report(model)
    for call in graph.nodes:
        assert f"| {call.name} ({call.op})]" in report, report


def test_folded_parameters_are_named_after_the_conv() -> None:
    """Weights and bias rewritten by a folded BatchNormalization take the conv's name, so a
    report or an engine layer traces them back to it."""
    _, graph = fused("conv_bn")
    (call,) = graph.nodes
    assert call.name == "Conv_0"
    assert [t.name for t in call.inputs] == ["x", "Conv_0_weights", "Conv_0_bias"]
