"""fold-constants on what is not a constant: overridable initializers (graph inputs with a
default), sequences (ONNX's own backend test model), and values only an If body reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.parser

from tests.property import adversarial, oracle
from trtcompile import ir
from trtcompile.pass_manager import PassManager

#: ONNX's backend test model: a sequence built by SequenceEmpty and SequenceInsert, read by
#: SequenceAt; its positions ``pos`` and ``pos_at`` are overridable initializers (IR 7).
SEQUENCE_MODEL = (Path(onnx.__file__).parent / "backend" / "test" / "data" / "simple"
                  / "test_sequence_model1" / "model.onnx")


def _run(model: onnx.ModelProto, pipeline: str):
    graph = ir.import_model(model)
    report = PassManager(pipeline).run(graph)
    optimized = ir.export_model(graph)
    onnx.checker.check_model(optimized, full_check=True)
    return optimized, report


def _same_outputs(model: onnx.ModelProto, optimized: onnx.ModelProto, **feed_options) -> None:
    feeds = adversarial.feeds(model, **feed_options)
    problems = adversarial.compare(oracle.run_onnxruntime(model, feeds),
                                   oracle.run_onnxruntime(optimized, feeds), 1e-5, 1e-5)
    assert not problems, problems


def test_sequences_and_their_overridable_positions_are_left_alone() -> None:
    model = onnx.load(str(SEQUENCE_MODEL))
    assert ir.overridable_initializer_names(model) == ["pos", "pos_at"]
    for pipeline in ("fold-constants", "default"):
        optimized, _ = _run(model, pipeline)
        assert [n.op_type for n in optimized.graph.node] == [n.op_type for n in model.graph.node]
        assert [v.name for v in optimized.graph.input] == ["X", "Y", "Z", "pos", "pos_at"]
        _same_outputs(model, optimized)  # pos 1 -> 0 and pos_at 2 -> 1: another element


def test_if_on_an_overridable_condition_is_not_flattened() -> None:
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,3] x, bool flag) => (float[2,3] y) <bool flag = {1}> {
      y = If(flag) <then_branch = t () => (float[2,3] r) { r = Relu(x) },
                    else_branch = e () => (float[2,3] s) { s = Neg(x) }>
    }""")
    optimized, report = _run(model, "fold-constants")
    assert [n.op_type for n in optimized.graph.node] == ["If"]
    assert not any(record.counts for record in report.records)
    _same_outputs(model, optimized)  # flag fed false: the else branch


def test_constant_read_only_by_a_body_is_counted_as_folded() -> None:
    # The ranged Shape makes the pass fold the whole graph; the Add only the branches read folds
    # (it is used there, not dead), and so do the branches' Neg and Abs of it.
    model = onnx.parser.parse_model("""
    <ir_version: 10, opset_import: ["" : 17]>
    g (float[2,3] x, bool c) => (float[3] y, int64[1] s)
      <float[3] a = {1, 2, 3}, float[3] b = {4, 5, 6}> {
      k = Add(a, b)
      s = Shape<start = 1>(x)
      y = If(c) <then_branch = t () => (float[3] r) { r = Neg(k) },
                 else_branch = e () => (float[3] q) { q = Abs(k) }>
    }""")
    optimized, report = _run(model, "fold-constants")
    (record,) = report.records
    assert record.counts == {"folded_nodes": 3, "folded_shape_ops": 1}
    assert [n.op_type for n in optimized.graph.node] == ["If"]
    for condition in (True, False):
        feeds = {"x": np.ones((2, 3), np.float32), "c": np.array(condition)}
        assert all(np.array_equal(a, b) for a, b in zip(
            oracle.run_onnxruntime(model, feeds).values(),
            oracle.run_onnxruntime(optimized, feeds).values()))
