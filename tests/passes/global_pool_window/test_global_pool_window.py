"""global-pool-window beyond its pass cases: the names of what a windowed mean adds, and the
shape of the window's result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from tests import pass_cases
from trtcompile import ir
from trtcompile.pass_manager import PassManager

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
