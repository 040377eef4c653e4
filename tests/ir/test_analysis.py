"""Analyses shared by passes (trtcompile.ir.analysis): shape inference run once per graph
fingerprint, each caller with its own copy, and the shape fallback passes read shapes through."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import onnx_graphsurgeon as gs
import pytest

from trtcompile import ir
from trtcompile.ir import cost

MODEL = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) {
    w = Constant <value = float[4, 3, 1, 1] {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}> ()
    c = Conv (x, w)
    y = Relu (c)
}
"""


@pytest.fixture
def failing_inference(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """ONNX shape inference fails (as on a graph it cannot type); counts its calls."""
    calls: list[int] = []

    def fail(*args, **kwargs):
        calls.append(1)
        raise onnx.shape_inference.InferenceError("[ShapeInferenceError] cannot type 'c'")

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", fail)
    return calls


@pytest.fixture
def inference_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the calls of ONNX shape inference."""
    calls: list[int] = []
    real = onnx.shape_inference.infer_shapes
    monkeypatch.setattr(onnx.shape_inference, "infer_shapes",
                        lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    return calls


def test_inference_runs_once_per_fingerprint(inference_runs: list[int]) -> None:
    graph = ir.import_model(onnx.parser.parse_model(MODEL))
    first = ir.inferred_dims(graph)
    assert first["c"] == ["N", 4, 8, 8] and len(inference_runs) == 1
    first["c"].append(99)  # the caller's copy: the cached result is not touched
    assert ir.inferred_dims(graph)["c"] == ["N", 4, 8, 8] and len(inference_runs) == 1

    graph.outputs[0].shape = None  # a change the fingerprint sees: inference runs again
    assert ir.inferred_dims(graph)["y"] == ["N", 4, 8, 8] and len(inference_runs) == 2
    copy = graph.copy()  # another graph object starts with no cache
    ir.inferred_dims(copy)
    assert len(inference_runs) == 3


def test_a_failure_is_cached_and_raised_again(failing_inference: list[int]) -> None:
    graph = ir.import_model(onnx.parser.parse_model(MODEL))
    for _ in range(2):
        with pytest.raises(ValueError, match="shape inference failed: .*cannot type 'c'"):
            ir.inferred_dims(graph)
    assert len(failing_inference) == 1


def test_shape_facts_fall_back_to_known_shapes_and_log_once(failing_inference: list[int]) -> None:
    graph = ir.import_model(onnx.parser.parse_model(MODEL))
    lines: list[str] = []
    facts = ir.ShapeFacts(graph, lines.append, "some-pass")
    x, c = graph.inputs[0], graph.nodes[1].outputs[0]
    assert facts.shape(c) is None and facts.known(c) is None
    assert facts.known(x) == ("N", 3, 8, 8)
    assert facts.shape(x) is None  # static_shape: the batch is a symbol
    assert len(lines) == 1 and lines[0].startswith("some-pass: shape inference failed: ")
    assert lines[0].endswith("; using known shapes")


def test_shape_facts_complete_unknown_shapes_from_inference() -> None:
    graph = ir.import_model(onnx.parser.parse_model(MODEL.replace("float[N, 3, 8, 8]",
                                                                  "float[2, 3, 8, 8]")))
    c = graph.nodes[1].outputs[0]
    assert c.shape is None
    facts = ir.ShapeFacts(graph)
    assert facts.shape(c) == (2, 4, 8, 8) and facts.known(c) == (2, 4, 8, 8)


def test_tensor_shapes_are_cached_and_each_caller_gets_its_own(inference_runs: list[int]) -> None:
    graph = ir.import_model(onnx.parser.parse_model(MODEL))
    shapes = cost.tensor_shapes(graph)
    assert shapes["c"] == (1, 4, 8, 8)  # priced per sample
    shapes["c"] = (7,)
    assert cost.tensor_shapes(graph)["c"] == (1, 4, 8, 8)
    assert len(inference_runs) == 1


def test_known_dims() -> None:
    assert ir.known_dims([1, "N", np.int64(3)]) == (1, "N", 3)
    assert ir.known_dims([1, None]) is None and ir.known_dims([1, ""]) is None
    assert ir.known_dims(None) is None and ir.known_dims([-1]) is None


def test_is_fused_conv_reads_the_body_not_the_weights() -> None:
    """A fused layer whose body starts with a Conv of its first input is a fused conv whatever
    its weights are (run-time tensors here, which conv_call_info does not describe)."""
    graph = gs.Graph(opset=17)
    function = ir.fused_layer.conv_function(graph, {"kernel_shape": [1, 1], "strides": [1, 1],
                                                    "pads": [0, 0, 0, 0], "dilations": [1, 1],
                                                    "group": 1}, "relu")
    x, w, b, y = (gs.Variable(name, np.float32) for name in ("x", "w", "b", "y"))
    call = ir.call(function, "layer", [x, w, b], [y])
    graph.nodes.append(call)
    assert ir.fused_layer.is_fused_conv(graph, call)
    assert ir.fused_layer.conv_call_info(graph, call) is None
    relu = gs.Node("Relu", name="relu", inputs=[y], outputs=[gs.Variable("z")])
    assert not ir.fused_layer.is_fused_conv(graph, relu)


def test_infer_missing_shapes_refines_symbols_an_earlier_inference_left() -> None:
    """A dim stored as a symbol (an export's, or an inference's before folding made a Reshape's
    shape constant) gets the value inference finds now; a named input dim stays symbolic, and a
    tensor inference knows no better is left as it is."""
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 12] x) => (float[N, 3, 4] y) {
        shape = Constant <value = int64[3] {0, 3, 4}> ()
        r = Reshape (x, shape)
        y = Relu (r)
    }
    """)
    graph = ir.import_model(model)
    reshaped = graph.tensors()["r"]
    reshaped.shape = ["N", "unk__1", "unk__2"]
    assert ir.analysis.infer_missing_shapes(graph) is True
    assert reshaped.shape == ["N", 3, 4]
    assert ir.analysis.infer_missing_shapes(graph) is False  # nothing more to learn
    assert reshaped.shape == ["N", 3, 4]
