"""flatten-gemm-conv beyond its pass cases: the names of the layers it writes, after the Gemm
they replace (engine layers and reports trace back to it), and the shape of the map it writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.parser

from passes.flatten_gemm_conv import FlattenGemmConv
from tests import pass_cases
from trtcompile import ir
from trtcompile.pass_manager import PassContext, PassManager

CASES = Path(__file__).parent / "cases"


def test_the_conv_and_flatten_are_named_after_the_gemm() -> None:
    case = pass_cases.load_case(CASES / "gemm_alpha_beta.onnxtxt")
    graph = ir.import_model(case.model())
    PassManager(case.pipeline).run(graph)
    conv, flatten, _ = graph.nodes
    assert (conv.op, conv.name, conv.attrs["kernel_shape"]) == ("Conv", "Gemm_0_conv", [2, 2])
    assert [t.name for t in conv.inputs] == ["x", "Gemm_0_kernel", "Gemm_0_bias"]
    assert conv.outputs[0].name == "Gemm_0_map"
    assert (flatten.op, flatten.name, flatten.attrs["axis"]) == ("Flatten", "Gemm_0_flatten", 1)
    assert flatten.inputs == conv.outputs and flatten.outputs[0].name == "h"


def test_the_conv_result_has_its_shape_and_type() -> None:
    """The ``[N, units, 1, 1]`` map the conv writes carries its shape and element type, as the
    shape inference of a next compile would give it: the exported model is a fixed point."""
    case = pass_cases.load_case(CASES / "gemm_alpha_beta.onnxtxt")
    graph = ir.import_model(case.model())
    PassManager(case.pipeline).run(graph)
    conv_map = graph.nodes[0].outputs[0]
    assert conv_map.shape == ["N", 4, 1, 1]
    assert conv_map.dtype == np.float32


def test_a_map_of_symbolic_spatial_size_is_rejected_with_the_reason() -> None:
    graph = ir.import_model(onnx.parser.parse_model("""
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[1,2,H,W] x, float[3,8] F) => (float[1,3] y) <float[3,8] F = {
            1,2,3,4,5,6,7,8, 1,2,3,4,5,6,7,8, 1,2,3,4,5,6,7,8}> {
          f = Flatten<axis = 1>(x)
          y = Gemm<transB = 1>(f, F)
        }"""))
    result = FlattenGemmConv().run(graph, PassContext())
    assert [n.op for n in graph.nodes] == ["Flatten", "Gemm"]
    assert [(r.nodes, r.reason) for r in result.rejections] == [
        (("Flatten_0", "Gemm_0"), "the channels and spatial dimensions are not all known")]


def test_a_failed_shape_inference_is_logged_under_the_pass_name(monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise onnx.shape_inference.InferenceError("[ShapeInferenceError] cannot type 'f'")

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", fail)
    graph = ir.import_model(pass_cases.load_case(CASES / "vgg_classifier.onnxtxt").model())
    lines: list[str] = []
    FlattenGemmConv().run(graph, PassContext(log=lines.append))
    assert len(lines) == 1 and lines[0].startswith("flatten-gemm-conv: shape inference failed: ")


def test_an_empty_map_is_not_made_a_convolution() -> None:
    """A map with no channels flattens to no features: there is no kernel to write."""
    graph = ir.import_model(onnx.parser.parse_model("""
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[1,0,2,2] x) => (float[1,3] y) <float[3,0] F = {}> {
          f = Flatten<axis = 1>(x)
          y = Gemm<transB = 1>(f, F)
        }"""))
    result = FlattenGemmConv().run(graph, PassContext())
    assert [n.op for n in graph.nodes] == ["Flatten", "Gemm"]
    assert [(r.nodes, r.reason) for r in result.rejections] == [
        (("Flatten_0", "Gemm_0"), "the channels and spatial dimensions are not all known")]
