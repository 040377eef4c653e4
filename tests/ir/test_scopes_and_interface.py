"""Scopes and the graph's interface in the IR: what a body reads from its outer graph is used
there, overridable initializers stay graph inputs through import, copy and export, string
constants export after being read, a local function is reused only for an equal body, and
local functions are sorted after the functions they call."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import onnx_graphsurgeon as gs

from trtcompile import ir

#: ``k`` is read only inside the If's then-branch; ``dead`` is read by nothing.
BODY_READS_OUTER = """
<ir_version: 10, opset_import: ["" : 17]>
g (float[2,3] x, bool c) => (float[2,3] y) {
  k = Relu(x)
  dead = Sigmoid(x)
  y = If(c) <then_branch = t () => (float[2,3] r) { r = Neg(k) },
             else_branch = e () => (float[2,3] s) { unused = Tanh(x)
                                                    s = Abs(x) }>
}
"""

#: ``w`` is a graph input with a default (IR >= 4): an overridable initializer, read in the
#: main graph and in a branch.
OVERRIDABLE = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2,3] x, float[3] w, bool c) => (float[2,3] y, float[2,3] z) <float[3] w = {1, 2, 3}> {
  y = Mul(x, w)
  z = If(c) <then_branch = t () => (float[2,3] r) { r = Add(x, w) },
             else_branch = e () => (float[2,3] s) { s = Sub(x, w) }>
}
"""


def _nodes_by_op(graph: gs.Graph) -> dict[str, gs.Node]:
    return {node.op: node for node in ir.scope_nodes(graph)}


def test_a_value_a_body_reads_is_live_and_unread_nodes_are_dead() -> None:
    graph = ir.import_model(onnx.parser.parse_model(BODY_READS_OUTER))
    nodes = _nodes_by_op(graph)
    live = ir.live_nodes(graph)
    assert id(nodes["Relu"]) in live  # read only by the then-branch's Neg
    assert {id(nodes[op]) for op in ("If", "Neg", "Abs")} <= live
    assert sorted(node.op for node in ir.dead_nodes(graph)) == ["Sigmoid", "Tanh"]


def test_an_outer_value_only_dead_body_nodes_read_is_dead() -> None:
    graph = ir.import_model(onnx.parser.parse_model("""
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[2,3] x, bool c) => (float[2,3] y) {
          k = Relu(x)
          y = If(c) <then_branch = t () => (float[2,3] r) { unused = Neg(k)
                                                            r = Abs(x) },
                     else_branch = e () => (float[2,3] s) { s = Abs(x) }>
        }"""))
    assert sorted(node.op for node in ir.dead_nodes(graph)) == ["Neg", "Relu"]


def test_outer_reads_are_the_tensors_a_body_reads_from_outside() -> None:
    graph = ir.import_model(onnx.parser.parse_model(BODY_READS_OUTER))
    if_node = _nodes_by_op(graph)["If"]
    assert sorted(t.name for t in ir.outer_reads(if_node)) == ["k", "x"]
    assert ir.outer_scope_reads(if_node) == {"k", "x"}


def test_overridable_initializer_stays_an_input_with_its_default() -> None:
    model = onnx.parser.parse_model(OVERRIDABLE)
    assert ir.overridable_initializer_names(model) == ["w"]
    graph = ir.import_model(model)
    assert [t.name for t in graph.inputs] == ["x", "w", "c"]
    (weights,) = ir.overridable_initializers(graph)
    assert ir.is_overridable(weights) and isinstance(weights, gs.Variable)
    assert ir.constant_value(weights) is None  # passes see a variable, not a constant
    readers = sorted(node.op for node in weights.outputs)
    assert readers == ["Add", "Mul", "Sub"]  # the branches read the input too
    for exported in (ir.export_model(graph), ir.export_model(graph.copy())):
        onnx.checker.check_model(exported, full_check=True)
        assert [v.name for v in exported.graph.input] == ["x", "w", "c"]
        (default,) = [i for i in exported.graph.initializer if i.name == "w"]
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(default), [1, 2, 3])
        assert ir.overridable_initializer_names(exported) == ["w"]
    again = ir.export_model(ir.import_model(ir.export_model(graph)))
    assert ir.model_digest(again) == ir.model_digest(ir.export_model(graph))


def test_initializers_before_ir_4_are_not_overridable() -> None:
    model = onnx.parser.parse_model(OVERRIDABLE.replace("ir_version: 8", "ir_version: 3"))
    assert ir.overridable_initializer_names(model) == []
    graph = ir.import_model(model)
    assert [t.name for t in graph.inputs] == ["x", "c"]
    assert ir.overridable_initializers(graph) == []


def test_a_string_constant_exports_after_its_values_were_read() -> None:
    model = onnx.parser.parse_model("""
    <ir_version: 10, opset_import: ["" : 17]>
    g (string[2] words) => (string[4] joined) {
      suffix = Constant<value_strings = ["a", "b"]>()
      joined = Concat<axis = 0>(words, suffix)
    }""")
    graph = ir.import_model(model)
    constant = next(node for node in graph.nodes if node.op == "Constant")
    ir.lower_constant(constant)  # as fold-constants does: the values are now a numpy array
    graph.cleanup()
    exported = ir.export_model(graph)
    onnx.checker.check_model(exported, full_check=True)
    (suffix,) = exported.graph.initializer
    assert onnx.numpy_helper.to_array(suffix).tolist() == ["a", "b"]


def _function(op: str) -> gs.Function:
    x, y = gs.Variable("x"), gs.Variable("y")
    return gs.Function("Act", domain=ir.TRTCOMPILE_DOMAIN,
                       nodes=[gs.Node(op, name="act", inputs=[x], outputs=[y])],
                       inputs=[x], outputs=[y], opset=17)


def test_a_local_function_is_reused_only_for_an_equal_body() -> None:
    graph = gs.Graph(opset=17)
    first = ir.add_local_function(graph, _function("Relu"))
    assert ir.add_local_function(graph, _function("Relu")) is first
    other = ir.add_local_function(graph, _function("Sigmoid"))
    assert other is not first and other.name == "Act_1"
    assert ir.add_local_function(graph, _function("Sigmoid")) is other
    assert [f.name for f in graph.functions] == ["Act", "Act_1"]
    assert ir.function_body_key(first) != ir.function_body_key(other)


def test_toposort_puts_each_local_function_after_the_functions_it_calls() -> None:
    """F calls G, G calls H: sorted, H comes first, whatever the order they were defined in."""
    model = onnx.parser.parse_model("""
        <ir_version: 10, opset_import: ["" : 17, "local" : 1]>
        g (float[2,3] x) => (float[2,3] y) {
          y = local.F(x)
        }
        <domain: "local", opset_import: ["" : 17, "local" : 1]>
        F (v) => (w) {
          w = local.G(v)
        }
        <domain: "local", opset_import: ["" : 17, "local" : 1]>
        G (v) => (w) {
          w = local.H(v)
        }
        <domain: "local", opset_import: ["" : 17]>
        H (v) => (w) {
          w = Sigmoid(v)
        }""")
    graph = ir.import_model(model)
    assert [f.name for f in ir.toposort(graph).functions] == ["H", "G", "F"]
