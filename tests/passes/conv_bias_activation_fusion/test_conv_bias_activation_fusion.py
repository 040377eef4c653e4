"""conv-bias-activation-fusion beyond its golden cases: the public helpers, folded weight values,
options, and TensorRT accepting the fused calls."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import onnx_graphsurgeon as gs
import pytest

from passes.conv_bias_activation_fusion import (
    CONV_ATTRS,
    ConvBiasActivationFusion,
    conv_call_info,
    conv_function,
)
from tests import golden
from trtcompile import ir, verify
from trtcompile.errors import InputError
from trtcompile.pass_manager import PassContext, PassManager, parse_pipeline

CASES = Path(__file__).parent / "cases"


def fused(case_name: str, pipeline: str | None = None) -> tuple[onnx.ModelProto, gs.Graph]:
    """The case's input model and its graph after the pass."""
    case = golden.load_case(CASES / f"{case_name}.onnxtxt")
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
    assert parse_pipeline(pass_.to_text()) == (pass_,)
    with pytest.raises(InputError, match="unknown activation"):
        parse_pipeline("conv-bias-activation-fusion{activations=relu,swish}")


def test_one_walk_no_tensor_map(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pass follows producer/consumer links; it never builds the graph's tensor map."""
    _, graph_before = fused("chained_convs_share_function", "dead-layer-elimination")

    def forbidden(*args, **kwargs):
        raise AssertionError("graph.tensors() called")

    monkeypatch.setattr(gs.Graph, "tensors", forbidden)
    result = ConvBiasActivationFusion().run(graph_before, PassContext())
    assert result.counts["fused_convs"] == 2


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


@pytest.mark.parametrize("case_name", ["conv_bn_relu6", "chained_convs_share_function"])
def test_tensorrt_builds_fused_calls(case_name: str) -> None:
    _, graph = fused(case_name)
    model = ir.export_model(graph)
    report = build_layer_report(model)
    for call in graph.nodes:
        assert f"| {call.name} ({call.op})]" in report, report
