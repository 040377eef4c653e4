"""global-pool-window beyond its pass cases: the names of what a windowed mean adds, and the
shape of the window's result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import pytest

from passes.global_pool_window import GlobalPoolWindow
from tests import pass_cases
from trtcompile import ir
from trtcompile.pass_manager import PassContext, PassManager

CASES = Path(__file__).parent / "cases"


def test_a_mean_without_keepdims_becomes_a_named_pool_and_flatten() -> None:
    """The pool keeps the mean's name (engine layers trace back to it); what it adds is named
    after it."""
    case = pass_cases.load_case(CASES / "reduce_mean_keepdims0.onnxtxt")
    graph = ir.import_model(case.model())
    PassManager(case.pipeline).run(graph)
    _, pool, flatten, _ = graph.nodes
    assert (pool.op, pool.name, pool.outputs[0].name) == ("AveragePool", "ReduceMean_0", "m_window")
    assert (flatten.op, flatten.name, flatten.attrs["axis"]) == ("Flatten", "ReduceMean_0_flatten", 1)
    assert flatten.inputs == pool.outputs and flatten.outputs[0].name == "m"


def test_the_window_result_has_its_shape_and_type() -> None:
    """The ``[N, C, 1, 1]`` result the Flatten reads carries its shape and element type, as the
    shape inference of a next compile would give it: the exported model is a fixed point. (The
    model carries its tensors' types, as exported models do: a shape needs one to be written.)"""
    case = pass_cases.load_case(CASES / "reduce_mean_keepdims0.onnxtxt")
    graph = ir.import_model(onnx.shape_inference.infer_shapes(case.model()))
    PassManager(case.pipeline).run(graph)
    window = graph.nodes[1].outputs[0]
    assert window.shape == ["N", 6, 1, 1]
    assert window.dtype == np.float32


def test_a_pool_of_unknown_input_shape_is_rejected_with_the_reason() -> None:
    graph = ir.import_model(onnx.parser.parse_model("""
        <ir_version: 10, opset_import: ["" : 17, "custom" : 1]>
        g (float[1,3,4,4] x) => (float[1,3,1,1] y) {
          c = custom.Op(x)
          y = GlobalAveragePool(c)
        }"""))
    result = GlobalPoolWindow().run(graph, PassContext())
    assert [(r.nodes, r.reason) for r in result.rejections] == [
        (("GlobalAveragePool_0",), "the input's shape is not known")]


def test_a_failed_shape_inference_is_logged_under_the_pass_name(monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise onnx.shape_inference.InferenceError("[ShapeInferenceError] cannot type 'r'")

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", fail)
    graph = ir.import_model(pass_cases.load_case(CASES / "resnet_head.onnxtxt").model())
    lines: list[str] = []
    GlobalPoolWindow().run(graph, PassContext(log=lines.append))
    assert len(lines) == 1 and lines[0].startswith("global-pool-window: shape inference failed: ")


@pytest.mark.parametrize("x_shape, w_shape", [
    ("1,1,2,2,2,2", "2,1,1,1,1,1"),  # four spatial axes: TensorRT pools over at most three
    ("1,1,0,4", "2,1,1,1"),  # an empty map: no window averages it
])
def test_a_pool_over_no_window_trt_has_stays(x_shape: str, w_shape: str) -> None:
    graph = ir.import_model(onnx.parser.parse_model(f"""
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[{x_shape}] x, float[{w_shape}] W, float[2,5] F) => (float[1,5] y) {{
          c = Conv(x, W)
          p = GlobalAveragePool(c)
          f = Flatten<axis = 1>(p)
          y = MatMul(f, F)
        }}"""))
    result = GlobalPoolWindow().run(graph, PassContext())
    assert "GlobalAveragePool" in [n.op for n in graph.nodes]
    assert [(r.nodes, r.reason) for r in result.rejections] == [
        (("GlobalAveragePool_0",), "the spatial dimensions of the input are not all known")]
