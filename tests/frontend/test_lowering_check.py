"""The check of a lowered model (trtcompile.frontend.tf_lowering.check): what tf2onnx leaves is
cleaned, what the checker rejects names the TensorFlow op. TensorFlow is not imported."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from trtcompile.frontend.tf_lowering import check


def leftover_model(output_shape=None) -> onnx.ModelProto:
    """A two-input Identity (what tf2onnx makes of TensorListFromTensor) inside a Loop body and at
    the top level, and a graph output without a shape."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["state", "outer_shape"], ["next_state"],
                          name="while/TensorListFromTensor"),
         helper.make_node("Identity", ["cond"], ["cond_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("next_state", TensorProto.FLOAT, [2])])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x", "element_shape"], ["listed"],
                          name="gru/TensorArrayUnstack/TensorListFromTensor"),
         helper.make_node("Loop", ["trip", "", "listed"], ["y"], body=body, name="gru/while"),
         helper.make_node("Relu", ["y"], ["out"], name="relu"),
         helper.make_node("Relu", ["x"], ["activated"], name="activation")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("activated", TensorProto.FLOAT, output_shape)],
        [helper.make_tensor("element_shape", TensorProto.INT32, [1], [2]),
         helper.make_tensor("outer_shape", TensorProto.INT32, [1], [2]),
         helper.make_tensor("trip", TensorProto.INT64, [], [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def test_leftovers_are_cleaned_and_the_model_passes_the_checker() -> None:
    model = leftover_model()
    assert "Field 'shape' of 'type' is required" in check.checker_problem(model)
    counts = check.clean_lowered(model)
    assert dict(counts) == {"identity_extra_inputs": 2, "unused_initializers": 2,
                            "output_shapes": 1}
    assert check.checker_problem(model) is None
    assert sorted(t.name for t in model.graph.initializer) == ["trip"]
    assert [d.dim_value for d in model.graph.output[1].type.tensor_type.shape.dim] == [2]


def test_a_rejected_lowering_names_the_tensorflow_op() -> None:
    problem = check.checker_problem(leftover_model(output_shape=[2]))
    assert "has input size 2 not in range [min=1, max=1]" in problem
    tf_ops = {"gru/TensorArrayUnstack/TensorListFromTensor": "TensorListFromTensor",
              "gru/while": "While"}
    message = check.lowering_error(problem, tf_ops, "tf2onnx-optimized")
    assert message.startswith("tf2onnx lowered TensorFlow op TensorListFromTensor (node "
                              "'gru/TensorArrayUnstack/TensorListFromTensor') to ONNX the checker "
                              "rejects (tf2onnx-optimized lowering): ")
    # Nodes tf2onnx adds carry a suffix on the TensorFlow name, or live in its scope.
    assert check.tensorflow_op("gru/while__71", tf_ops) == ("While", "gru/while")
    assert check.tensorflow_op("gru/while/zeros/packed_Unsqueeze__84", tf_ops) == \
        ("While", "gru/while")
    assert check.tensorflow_op("elsewhere", tf_ops) is None
