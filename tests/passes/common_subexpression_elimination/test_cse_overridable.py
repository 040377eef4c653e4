"""common-subexpression-elimination never merges an overridable initializer (a graph input with
a default) with a constant of the same value: the caller may feed it another value."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser

from tests.property import adversarial, oracle
from trtcompile import ir
from trtcompile.pass_manager import PassManager


def test_overridable_scale_is_not_merged_with_an_equal_constant() -> None:
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,3] x, float[3] s) => (float[2,3] y) <float[3] s = {1, 2, 3}, float[3] t = {1, 2, 3}> {
      a = Mul(x, s)
      b = Mul(x, t)
      y = Add(a, b)
    }""")
    graph = ir.import_model(model)
    report = PassManager("common-subexpression-elimination").run(graph)
    optimized = ir.export_model(graph)
    assert not report.records[0].counts
    assert [n.op_type for n in optimized.graph.node] == ["Mul", "Mul", "Add"]
    assert ir.overridable_initializer_names(optimized) == ["s"]
    feeds = adversarial.feeds(model)
    assert not np.array_equal(feeds["s"], [1, 2, 3])
    problems = adversarial.compare(oracle.run_onnxruntime(model, feeds),
                                   oracle.run_onnxruntime(optimized, feeds), 0.0, 0.0)
    assert not problems, problems
