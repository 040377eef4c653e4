"""Checks that judge right: a half-precision model is judged at half precision's tolerances, and
parity runs both models as written (ONNX Runtime's own graph optimizer off)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from trtcompile import verify
from trtcompile.calibration import precision_tolerances
from trtcompile.flow import Compilation, CompileOptions


def fp16_conv_bias_relu() -> onnx.ModelProto:
    """float16 in, Conv, a separate bias Add, Relu, float16 out: fusing the bias into the conv
    changes only where float16 rounds."""
    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array((rng.standard_normal((8, 4, 3, 3)) * 3).astype(np.float16), "w")
    bias = numpy_helper.from_array((rng.standard_normal((1, 8, 1, 1)) * 3).astype(np.float16), "b")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Add", ["c", "b"], ["a"], name="add"),
             helper.make_node("Relu", ["a"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "fp16", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT16, [1, 4, 8, 8])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT16, [1, 8, 8, 8])], [weights, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def test_a_float16_model_is_judged_at_float16_tolerances() -> None:
    compilation = Compilation(fp16_conv_bias_relu(), CompileOptions(engine=False, progress=False))
    compilation.load()
    fitting = precision_tolerances("fp16")
    assert (compilation.options.atol, compilation.options.rtol) == (fitting.atol, fitting.rtol)
    assert compilation.tolerance_note.startswith("the model computes in float16")
    compilation.optimize()
    assert compilation.check_parity().passed
    report = compilation.report()
    assert report["parity"]["tolerances"]["atol"] == fitting.atol
    assert "float16" in report["parity"]["tolerances"]["note"]


def test_tolerances_the_user_gives_stay_for_a_float16_model() -> None:
    compilation = Compilation(fp16_conv_bias_relu(),
                              CompileOptions(engine=False, progress=False, atol=0.5, rtol=0.0))
    compilation.load()
    assert (compilation.options.atol, compilation.options.rtol) == (0.5, 0.0)
    assert compilation.tolerance_note is None


def test_a_float32_model_keeps_float32_tolerances() -> None:
    model = fp16_conv_bias_relu()
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.elem_type = TensorProto.FLOAT
    for init in model.graph.initializer:
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float32),
                                              init.name))
    compilation = Compilation(model, CompileOptions(engine=False, progress=False))
    compilation.load()
    assert (compilation.options.atol, compilation.options.rtol) == (verify.DEFAULT_ATOL,
                                                                  verify.DEFAULT_RTOL)


def test_parity_runs_models_as_written() -> None:
    """ONNX Runtime's graph optimizer is off in every session parity runs: its rewrites (and its
    defects) are not charged to the model or to the passes."""
    options = verify.session_options()
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = verify.inference_session(fp16_conv_bias_relu())
    assert session.get_session_options().graph_optimization_level == \
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL
