"""conv-bias-activation-fusion leaves alone what it cannot fold exactly: a BatchNorm whose
var + epsilon is zero, weights that are overridable initializers (graph inputs with a default),
and it never reuses a model's own function that merely has a fused layer's name."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser

from tests.property import adversarial, oracle
from trtcompile import ir
from trtcompile.pass_manager import PassManager


def _model(text: str, **weights: np.ndarray) -> onnx.ModelProto:
    model = onnx.parser.parse_model(text)
    model.graph.initializer.extend(onnx.numpy_helper.from_array(v, k) for k, v in weights.items())
    onnx.checker.check_model(model, full_check=True)
    return model


def _optimize(model: onnx.ModelProto, pipeline: str = "conv-bias-activation-fusion"):
    graph = ir.import_model(model)
    report = PassManager(pipeline).run(graph)
    optimized = ir.export_model(graph)
    onnx.checker.check_model(optimized, full_check=True)
    return optimized, report


def _same_outputs(model: onnx.ModelProto, optimized: onnx.ModelProto, *, defaults: bool = False):
    feeds = adversarial.feeds(model, defaults=defaults)
    problems = adversarial.compare(oracle.run_onnxruntime(model, feeds),
                                   oracle.run_onnxruntime(optimized, feeds), 1e-4, 1e-3)
    assert not problems, problems


def _rejections(report) -> list[str]:
    return [rejection.reason for record in report.records for rejection in record.rejections]


WEIGHTS = np.random.default_rng(0).uniform(-1, 1, (2, 3, 1, 1)).astype(np.float32)


def test_batchnorm_whose_variance_plus_epsilon_is_zero_stays() -> None:
    model = _model("""
    <ir_version: 10, opset_import: ["" : 17]>
    g (float[1,3,4,4] x) => (float[1,2,4,4] y)
      <float[2] gamma = {1, 2}, float[2] beta = {0.5, -0.5}, float[2] mean = {0, 0},
       float[2] var = {0, 1}> {
      c = Conv(x, W)
      y = BatchNormalization<epsilon = 0.0>(c, gamma, beta, mean, var)
    }""", W=WEIGHTS)
    optimized, report = _optimize(model)
    assert [n.op_type for n in optimized.graph.node] == ["Conv", "BatchNormalization"]
    assert ("BatchNormalization var + epsilon is not positive in every channel (the folded "
            "weights would be infinite or NaN)") in _rejections(report)
    _same_outputs(model, optimized)  # the same infinities and NaNs, the same finite channel


def test_overridable_weights_are_not_folded_and_stay_an_input() -> None:
    model = _model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,3,4,4] x, float[2,3,1,1] W) => (float[1,2,4,4] y)
      <float[2] gamma = {1, 2}, float[2] beta = {0.5, -0.5}, float[2] mean = {0.1, 0.2},
       float[2] var = {1, 2}> {
      c = Conv(x, W)
      b = BatchNormalization(c, gamma, beta, mean, var)
      y = Relu(b)
    }""", W=WEIGHTS)
    optimized, report = _optimize(model, "default")
    assert [v.name for v in optimized.graph.input] == ["x", "W"]
    assert ir.overridable_initializer_names(optimized) == ["W"]
    assert [n.op_type for n in optimized.graph.node] == ["Conv", "BatchNormalization", "Relu"]
    assert "weights are not constant" in _rejections(report)
    _same_outputs(model, optimized)  # W fed a value other than its default


def test_model_function_named_like_a_fused_layer_is_not_reused() -> None:
    name = "ConvBiasRelu_k1x1_s1x1_p0x0x0x0_d1x1_g1"
    model = _model(f"""
    <ir_version: 10, opset_import: ["" : 17, "trtcompile" : 1]>
    g (float[1,3,4,4] x) => (float[1,2,4,4] y, float[1,2,4,4] z) {{
      c = Conv(x, W)
      y = Relu(c)
      z = trtcompile.{name}(x, W, B)
    }}
    <domain: "trtcompile", opset_import: ["" : 17]>
    {name} (x, w, b) => (y) {{
      conv_out = Conv<kernel_shape = [1, 1], strides = [1, 1], pads = [0, 0, 0, 0],
                      dilations = [1, 1], group = 1>(x, w, b)
      y = Sigmoid(conv_out)
    }}""", W=WEIGHTS, B=np.array([0.25, -0.25], np.float32))
    optimized, _ = _optimize(model)
    assert sorted(f.name for f in optimized.functions) == [name, f"{name}_1"]
    assert [n.op_type for n in optimized.graph.node] == [f"{name}_1", name]
    _same_outputs(model, optimized)


def _run(text: str):
    graph = ir.import_model(onnx.parser.parse_model(text))
    report = PassManager("conv-bias-activation-fusion").run(graph)
    return graph, [(r.nodes, r.reason) for r in report.records[0].rejections]


def test_batchnorm_whose_running_statistics_are_read_stays() -> None:
    """From opset 14 the running-statistics outputs belong to training mode; one declared and read
    in inference is still not folded away."""
    graph, rejections = _run("""
        <ir_version: 10, opset_import: ["" : 15]>
        g (float[1,2,3,3] x) => (float[1,2,3,3] y, float[2] mean)
          <float[2,2,1,1] W = {1, 0, 0, 1}, float[2] s = {1, 1}, float[2] b = {0, 0},
           float[2] m = {0, 0}, float[2] v = {1, 1}> {
          c = Conv(x, W)
          y, mean = BatchNormalization(c, s, b, m, v)
        }""")
    assert [n.op for n in graph.nodes] == ["Conv", "BatchNormalization"]
    assert rejections == [(("Conv_0", "BatchNormalization_0"),
                           "BatchNormalization running-statistics outputs are requested")]


def test_batchnorm_without_one_value_per_channel_stays() -> None:
    graph, rejections = _run("""
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[1,2,3,3] x) => (float[1,2,3,3] y)
          <float[2,2,1,1] W = {1, 0, 0, 1}, float[1] s = {2}, float[2] b = {0, 0},
           float[2] m = {0, 0}, float[2] v = {1, 1}> {
          c = Conv(x, W)
          y = BatchNormalization(c, s, b, m, v)
        }""")
    assert [n.op for n in graph.nodes] == ["Conv", "BatchNormalization"]
    assert rejections == [(("Conv_0", "BatchNormalization_0"),
                           "BatchNormalization scale has shape [1], not one value per channel ([2])")]


def test_a_residual_add_with_an_operand_of_unknown_shape_stays_naming_it() -> None:
    """The operand whose shape is unknown is named: the residual's, or the conv result's."""
    text = """
        <ir_version: 10, opset_import: ["" : 17, "custom" : 1]>
        g (float[1,2,3,3] x, float[1,2,3,3] z) => (float[1,2,3,3] y)
          <float[2,2,1,1] W = {1, 0, 0, 1}, float[2] B = {1, 2}> {
          u = custom.Op(z)
          c = Conv(x, W, B)
          y = Add(c, u)
        }"""
    _, rejections = _run(text)
    assert rejections == [(("Conv_0", "Add_0"), "residual Add: the shape of 'u' is unknown, so the "
                                                "Add may broadcast")]
    _, rejections = _run(text.replace("u = custom.Op(z)", "u = custom.Op(x)").replace(
        "c = Conv(x, W, B)", "c = Conv(u, W, B)").replace("y = Add(c, u)", "y = Add(c, z)"))
    assert rejections == [(("Conv_0", "Add_0"), "residual Add: the shape of 'c' is unknown, so the "
                                                "Add may broadcast")]
