"""The support query asks TensorRT's parser itself; these pin down what it classifies and says."""

from __future__ import annotations

from tests.backend import models
from trtcompile.backend import query_support


def test_bitshift_on_uint32_nodes_and_reasons() -> None:
    report = query_support(models.rejected_op_model("BitShift"))
    assert report.backend in ("tensorrt", "tensorrt_rtx")
    assert set(report.unsupported) == {"to_uint32", "shift_right", "to_float"}
    # The uint32 initializer is attributed to the node reading it, the uint32 tensor to its reader.
    assert "initializer 'shift_amount' of type uint32" in report.unsupported["shift_right"]
    assert "tensor 'shifted' of type uint32" in report.unsupported["to_float"]
    assert "Cast" in report.unsupported["to_uint32"]
    assert all(report.is_supported(name) for name in ("head0", "head2", "tail0", "tail2", "abs"))
    assert report.queries >= 2  # the initializer hides everything else from the first query


def test_unique_reason_is_never_a_bare_false() -> None:
    report = query_support(models.rejected_op_model("Unique"))
    assert list(report.unsupported) == ["unique"]
    reason = report.unsupported["unique"]
    assert reason.lower() != "false" and "Unique" in reason and "checkUnique" in reason
    # Nodes after Unique read tensors with data-dependent shapes and are still supported.
    assert report.is_supported("unflatten") and report.is_supported("tail0")


def test_a_supported_model_takes_one_query() -> None:
    report = query_support(models.conv_relu_model())
    assert report.all_supported and report.queries == 1
    assert report.nodes == (models.CONV_NODE, models.RELU_NODE)


def test_dynamic_batch_model_is_classified_like_the_static_one() -> None:
    static = query_support(models.rejected_op_model("BitShift"))
    dynamic = query_support(models.rejected_op_model("BitShift", batch="N"))
    assert dynamic.unsupported == static.unsupported


def test_unranked_tensors_get_the_rank_they_have_on_onnxruntime() -> None:
    """Where shape inference gives a tensor no rank, the probe would hand the parser a rankless
    input: the rank observed on ONNX Runtime (with symbolic dimensions) is used instead."""
    import onnx

    from trtcompile.backend import support

    model = models.rejected_op_model("Unique")
    types = support.value_types(model)
    types["inverse"] = onnx.helper.make_tensor_type_proto(onnx.TensorProto.INT64, None)
    support._add_observed_ranks(model, types)
    dims = types["inverse"].tensor_type.shape.dim
    assert len(dims) == 1 and dims[0].dim_param and not dims[0].HasField("dim_value")
