"""flatten-gemm-conv beyond its pass cases: the names of the layers it writes, after the Gemm
they replace (engine layers and reports trace back to it), and the shape of the map it writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests import pass_cases
from trtcompile import ir
from trtcompile.pass_manager import PassManager

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
