"""concat-elimination beyond its pass cases: each rewrite is asked for by its rule (what ``bisect``
and ``--why-not`` show), a rewrite limit of zero leaves every candidate, saying why, and a joined
Slice's result carries its shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import pytest

from passes.concat_elimination import ConcatElimination
from tests import pass_cases
from trtcompile import ir
from trtcompile.pm import REWRITE_LIMIT_REASON, PassContext

CASES = Path(__file__).parent / "cases"

RULES = {
    "single_input_concat": [("remove-single-input-concat", ("Concat_0",)),
                            ("remove-single-input-concat", ("Concat_0_1",))],
    "nested_concat": [("flatten-nested-concat", ("Concat_0_2", "Concat_0"))],
    "slices_concat": [("join-slice-pieces", ("Concat_0", "Slice_0", "Slice_0_1")),
                      ("remove-single-input-concat", ("Concat_0",)),
                      ("join-slice-pieces", ("Concat_0_1", "Slice_0_2", "Slice_0_3")),
                      ("remove-single-input-concat", ("Concat_0_1",))],
    "split_default_axis_concat": [("join-split-pieces", ("Concat_0", "Split_0")),
                                  ("remove-single-input-concat", ("Concat_0",))],
    "concat_then_split": [("remove-concat-split-pair", ("Concat_0", "Split_0"))],
}


def _graph(case_name: str):
    return ir.import_model(pass_cases.load_case(CASES / f"{case_name}.onnxtxt").model())


@pytest.mark.parametrize("case_name", sorted(RULES))
def test_each_rewrite_is_asked_for_by_its_rule(case_name: str) -> None:
    ctx = PassContext()
    ConcatElimination().run(_graph(case_name), ctx)
    assert [(r.rule, r.nodes) for r in ctx.rewrites] == RULES[case_name]


@pytest.mark.parametrize("case_name", sorted(RULES))
def test_a_rewrite_limit_of_zero_changes_nothing(case_name: str) -> None:
    graph = _graph(case_name)
    ops_before = [n.op for n in graph.nodes]
    ctx = PassContext(rewrite_limit=0)
    result = ConcatElimination().run(graph, ctx)
    assert [n.op for n in graph.nodes] == ops_before
    assert result.counts == {}
    limited = [r.nodes for r in result.rejections if r.reason == REWRITE_LIMIT_REASON]
    # The first rewrite each candidate asks for is refused (later ones never come).
    first_asked = [nodes for rule, nodes in RULES[case_name]
                   if rule != "remove-single-input-concat" or case_name == "single_input_concat"]
    assert limited == first_asked


#: Two Slices of one tensor joined into one, beside another Concat input: the joined Slice stays.
_PARTIAL_JOIN = """
<ir_version: 10, opset_import: ["" : 17]>
g (float[1,8,4] x, float[1,2,4] other) => (float[1,6,4] y) {
  s0 = Constant<value=int64[1] {0}>()
  s2 = Constant<value=int64[1] {2}>()
  s4 = Constant<value=int64[1] {4}>()
  ax = Constant<value=int64[1] {1}>()
  t = Relu(x)
  a = Slice(t, s0, s2, ax)
  b = Slice(t, s2, s4, ax)
  y = Concat<axis=1>(a, b, other)
}
"""


def test_a_joined_slice_has_its_shape_and_type() -> None:
    """The joined Slice's result carries the shape of its range, as the shape inference of a next
    compile would give it (the model carries its tensors' types, as exported models do)."""
    model = onnx.shape_inference.infer_shapes(onnx.parser.parse_model(_PARTIAL_JOIN))
    graph = ir.import_model(model)
    ConcatElimination().run(graph, PassContext())
    (joined,) = [node for node in graph.nodes if node.op == "Slice"]
    assert joined.outputs[0].shape == [1, 4, 4]
    assert joined.outputs[0].dtype == np.float32


def test_a_joined_slice_reads_constants_named_after_its_role() -> None:
    graph = _graph("slices_concat")
    ConcatElimination().run(graph, PassContext())
    (joined,) = [n for n in graph.nodes if n.op == "Slice"]
    assert [t.name for t in joined.inputs] == ["u", "Slice_0_2_starts", "Slice_0_2_ends",
                                               "Slice_0_2_axes"]
    assert [t.values.tolist() for t in joined.inputs[1:]] == [[0], [5], [1]]


def _model(text: str):
    return ir.import_model(onnx.parser.parse_model(text))


def test_a_concat_of_another_domain_is_left_alone() -> None:
    graph = _model("""
        <ir_version: 10, opset_import: ["" : 17, "custom" : 1]>
        g (float[2,3] x) => (float[2,3] y) {
          c = custom.Concat<axis = 1>(x)
          y = Relu(c)
        }""")
    result = ConcatElimination().run(graph, PassContext())
    assert [n.op for n in graph.nodes] == ["Concat", "Relu"]
    assert result.counts == {} and result.rejections == []


def test_a_negative_axis_of_unknown_rank_is_rejected_with_the_reason() -> None:
    graph = _model("""
        <ir_version: 10, opset_import: ["" : 17, "custom" : 1]>
        g (float[2,3] x) => (float[2,6] y) {
          a = custom.Op(x)
          b = custom.Op(x)
          c = Concat<axis = -1>(a, b)
          y = Relu(c)
        }""")
    result = ConcatElimination().run(graph, PassContext())
    assert [n.op for n in graph.nodes] == ["Op", "Op", "Concat", "Relu"]
    assert [(r.nodes, r.reason) for r in result.rejections] == [
        (("Concat_0",), "concat axis is negative and the output rank is unknown")]


def test_a_narrowed_split_declares_the_joined_output_shape() -> None:
    graph = _model("""
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[1,6,4] x, float[1,2,4] z) => (float[1,5,4] y, float[1,3,4] r)
          <float[1,1,4] a, float[1,2,4] b, float[1,3,4] c> {
          S = Constant<value=int64[3] {1, 2, 3}>()
          t = Relu(x)
          a, b, c = Split<axis=1>(t, S)
          y = Concat<axis=1>(a, b, z)
          r = Tanh(c)
        }""")
    ConcatElimination().run(graph, PassContext())
    (split,) = [n for n in graph.nodes if n.op == "Split"]
    assert [(t.name, t.shape) for t in split.outputs] == [("a", [1, 3, 4]), ("c", [1, 3, 4])]
