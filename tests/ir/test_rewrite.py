"""The local-rewrite driver (trtcompile.ir.rewrite): matching in node order, a check's reason recorded
as the rejection, ctx.may_rewrite asked and honoured, the node list rebuilt once, Constant nodes
dropped only when nothing else reads them, and one scope per graph (If/Loop/Scan bodies apart)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import onnx
import onnx.parser
import onnx_graphsurgeon as gs
import pytest

from trtcompile import ir, verify
from trtcompile.ir.rewrite import SCOPE_REASON, Match, Reject, RewriteRule, Scope, apply_rule
from trtcompile.pass_manager import REWRITE_LIMIT_REASON, PassContext, PassResult


def graph_of(text: str) -> gs.Graph:
    return ir.import_model(onnx.parser.parse_model(text))


def ops(graph: gs.Graph) -> list[str]:
    return [node.op for node in graph.nodes]


class DoubleRelu(RewriteRule):
    """``Relu(Relu(x))`` becomes ``Relu(x)``: the outer Relu (the anchor) reads ``x``."""

    anchor_ops: ClassVar[frozenset[str]] = frozenset({"Relu"})
    rule: ClassVar[str] = "double-relu"

    def match(self, node: gs.Node, scope: Scope) -> Match | Reject | None:
        inner = ir.producer(node.inputs[0])
        if inner is None:
            return None
        if inner.op == "LeakyRelu":
            return Reject([inner, node], "a LeakyRelu keeps negative values")
        if inner.op != "Relu":
            return None
        return Match([inner, node], anchor=node)

    def check(self, match: Match, scope: Scope) -> str | None:
        inner = match.nodes[0]
        if inner.outputs[0].name in scope.outputs:
            return f"'{inner.outputs[0].name}' is a graph output"
        return None

    def rewrite(self, match: Match, scope: Scope) -> list[gs.Node]:
        inner, outer = match.nodes
        outer.inputs[0] = inner.inputs[0]
        scope.count("double_relus")
        return [outer]


class AddZero(RewriteRule):
    """``Add(x, c)`` with an all-zero constant ``c`` becomes ``x`` (the Add goes)."""

    anchor_ops: ClassVar[frozenset[str]] = frozenset({"Add"})
    rule: ClassVar[str] = "add-zero"

    def match(self, node: gs.Node, scope: Scope) -> Match | None:
        value = ir.constant_value(node.inputs[1])
        if value is None or np.any(value):
            return None
        return Match([node])

    def check(self, match: Match, scope: Scope) -> str | None:
        output = match.nodes[0].outputs[0]
        return f"'{output.name}' is a graph output" if output.name in scope.outputs else None

    def rewrite(self, match: Match, scope: Scope) -> list[gs.Node]:
        (add,) = match.nodes
        ir.replace_uses(add.outputs[0], add.inputs[0])
        add.inputs.clear()
        add.outputs.clear()
        scope.count("removed_adds")
        return []


def run(rule: RewriteRule, graph: gs.Graph, ctx: PassContext | None = None,
        **options) -> tuple[PassResult, PassContext]:
    ctx = ctx or PassContext()
    ctx.current_pass = rule.rule
    result = PassResult()
    apply_rule(rule, graph, ctx, result, **options)
    return result, ctx


TWO_CHAINS = """
<ir_version: 8, opset_import: ["" : 17]>
chains (float[1, 4] x, float[1, 4] z) => (float[1, 4] y, float[1, 4] w) {
    a = Relu (x)
    y = Relu (a)
    b = Relu (z)
    w = Relu (b)
}
"""


def test_each_match_is_rewritten_and_the_node_list_rebuilt() -> None:
    model = onnx.parser.parse_model(TWO_CHAINS)
    graph = ir.import_model(model)
    result, ctx = run(DoubleRelu(), graph)
    assert result.counts == {"double_relus": 2}
    assert result.rejections == []
    assert [node.name for node in graph.nodes] == ["Relu_0_1", "Relu_0_3"]
    assert [node.inputs[0].name for node in graph.nodes] == ["x", "z"]
    # Each grant names the rule and the matched nodes, in node order.
    assert [(r.rule, r.nodes) for r in ctx.rewrites] == [
        ("double-relu", ("Relu_0", "Relu_0_1")), ("double-relu", ("Relu_0_2", "Relu_0_3"))]
    assert verify.compare_models(model, ir.export_model(graph), seed=0).passed


def test_a_check_reason_is_recorded_as_the_rejection_and_nothing_changes() -> None:
    graph = graph_of("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 4] x) => (float[1, 4] y, float[1, 4] a) {
            a = Relu (x)
            y = Relu (a)
        }""")
    result, ctx = run(DoubleRelu(), graph)
    assert result.counts == {}
    assert [(r.nodes, r.reason) for r in result.rejections] == [
        (("Relu_0", "Relu_0_1"), "'a' is a graph output")]
    assert ctx.rewrites == []  # a rejected candidate is never granted a rewrite number
    assert ops(graph) == ["Relu", "Relu"] and graph.nodes[1].inputs[0].name == "a"


def test_a_pattern_rejection_is_recorded_in_node_order() -> None:
    graph = graph_of("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 4] x, float[1, 4] z) => (float[1, 4] y, float[1, 4] w) {
            a = LeakyRelu (x)
            y = Relu (a)
            b = Relu (z)
            w = Relu (b)
        }""")
    result, _ = run(DoubleRelu(), graph)
    assert [(r.nodes, r.reason) for r in result.rejections] == [
        (("LeakyRelu_0", "Relu_0"), "a LeakyRelu keeps negative values")]
    assert result.counts == {"double_relus": 1}
    assert ops(graph) == ["LeakyRelu", "Relu", "Relu"]


def test_the_rewrite_limit_is_honoured() -> None:
    graph = graph_of(TWO_CHAINS)
    result, ctx = run(DoubleRelu(), graph, PassContext(rewrite_limit=1))
    assert result.counts == {"double_relus": 1}
    assert [r.nodes for r in ctx.rewrites] == [("Relu_0", "Relu_0_1")]
    assert ctx.refused == 1
    assert [(r.nodes, r.reason) for r in result.rejections] == [
        (("Relu_0_2", "Relu_0_3"), REWRITE_LIMIT_REASON)]
    assert [node.name for node in graph.nodes] == ["Relu_0_1", "Relu_0_2", "Relu_0_3"]


def test_a_matched_node_still_read_elsewhere_stays() -> None:
    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 4] x) => (float[1, 4] y, float[1, 4] s) {
            a = Relu (x)
            y = Relu (a)
            s = Sigmoid (a)
        }""")
    graph = ir.import_model(model)
    result, _ = run(DoubleRelu(), graph)
    assert result.counts == {"double_relus": 1}
    assert ops(graph) == ["Relu", "Relu", "Sigmoid"]
    assert graph.nodes[1].inputs[0].name == "x" and graph.nodes[2].inputs[0].name == "a"
    assert verify.compare_models(model, ir.export_model(graph), seed=0).passed


def test_constant_nodes_go_only_when_nothing_else_reads_them() -> None:
    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 4] x, float[1, 4] z) => (float[1, 4] y, float[1, 4] w, float[1, 4] m) {
            zero = Constant <value = float[1, 4] {0, 0, 0, 0}> ()
            shared = Constant <value = float[1, 4] {0, 0, 0, 0}> ()
            p = Add (x, zero)
            q = Add (z, shared)
            y = Relu (p)
            w = Relu (q)
            m = Mul (z, shared)
        }""")
    graph = ir.import_model(model)
    result, _ = run(AddZero(), graph)
    assert result.counts == {"removed_adds": 2}
    # "zero" fed only a rewritten Add; "shared" is still read by the Mul.
    assert [(node.op, [t.name for t in node.inputs]) for node in graph.nodes] == [
        ("Constant", []), ("Relu", ["x"]), ("Relu", ["z"]), ("Mul", ["z", "shared"])]
    assert graph.nodes[0].outputs[0].name == "shared"
    assert verify.compare_models(model, ir.export_model(graph), seed=0).passed


def test_no_match_across_a_subgraph_boundary() -> None:
    graph = graph_of("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[4] x, bool c) => (float[4] y) {
            a = Relu (x)
            y = If (c) <then_branch = then_body () => (float[4] t) { t = Relu (a) },
                        else_branch = else_body () => (float[4] e) { e = Neg (a) }>
        }""")
    then_body = ir.subgraphs(graph.nodes[1])[0]
    result, ctx = run(DoubleRelu(), graph, bodies=True)
    # The body's Relu reads the main graph's Relu: the pair spans two scopes and stays.
    assert result.counts == {} and ctx.rewrites == []
    assert [(r.nodes, r.reason) for r in result.rejections] == [
        ((graph.nodes[0].name, then_body.nodes[0].name), SCOPE_REASON)]
    assert ops(graph) == ["Relu", "If"] and ops(then_body) == ["Relu"]
    assert then_body.nodes[0].inputs[0] is graph.nodes[0].outputs[0]


NESTED = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[4] x, bool c) => (float[4] y) {
    y = If (c) <then_branch = then_body () => (float[4] t) { u = Relu (x)  t = Relu (u) },
                else_branch = else_body () => (float[4] e) { e = Neg (x) }>
}
"""


def test_a_body_is_a_scope_of_its_own() -> None:
    graph = graph_of(NESTED)
    then_body = ir.subgraphs(graph.nodes[0])[0]
    result, _ = run(DoubleRelu(), graph)
    assert result.counts == {} and ops(then_body) == ["Relu", "Relu"]  # main scope only

    model = onnx.parser.parse_model(NESTED)
    graph = ir.import_model(model)
    then_body = ir.subgraphs(graph.nodes[0])[0]
    result, _ = run(DoubleRelu(), graph, bodies=True)
    assert result.counts == {"double_relus": 1}
    assert ops(graph) == ["If"] and ops(then_body) == ["Relu"]
    assert then_body.nodes[0].inputs[0].name == "x"
    assert verify.compare_models(model, ir.export_model(graph), seed=0).passed


class CheapestFirst(DoubleRelu):
    """Matches every candidate first, then rewrites them in reverse node order."""

    match_all_first: ClassVar[bool] = True

    def order(self, matches: list[Match], scope: Scope) -> list[Match]:
        return list(reversed(matches))


def test_matching_everything_first_rewrites_in_the_rule_order() -> None:
    graph = graph_of(TWO_CHAINS)
    result, ctx = run(CheapestFirst(), graph)
    assert [r.nodes for r in ctx.rewrites] == [("Relu_0_2", "Relu_0_3"), ("Relu_0", "Relu_0_1")]
    assert result.counts == {"double_relus": 2}
    assert [node.name for node in graph.nodes] == ["Relu_0_1", "Relu_0_3"]


class FreshDoubleRelu(DoubleRelu):
    """Replaces the pair by a new Relu node (the matched nodes both go); matches all first."""

    match_all_first: ClassVar[bool] = True

    def rewrite(self, match: Match, scope: Scope) -> list[gs.Node]:
        inner, outer = match.nodes
        fresh = gs.Node("Relu", name=scope.names.fresh(f"{outer.name}_fresh"),
                        inputs=[inner.inputs[0]], outputs=[outer.outputs[0]])
        outer.inputs.clear()
        outer.outputs.clear()
        scope.count("double_relus")
        return [fresh]


def test_a_candidate_whose_node_an_earlier_rewrite_took_is_skipped() -> None:
    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 4] x) => (float[1, 4] y) {
            a = Relu (x)
            b = Relu (a)
            y = Relu (b)
        }""")
    graph = ir.import_model(model)
    result, ctx = run(FreshDoubleRelu(), graph)
    # Both pairs match on the untouched graph; rewriting the first removes Relu_0_1, the second
    # pair's inner node, so the second candidate no longer exists.
    assert [r.nodes for r in ctx.rewrites] == [("Relu_0", "Relu_0_1")]
    assert result.counts == {"double_relus": 1} and result.rejections == []
    assert [(node.name, node.inputs[0].name) for node in graph.nodes] == [
        ("Relu_0_1_fresh", "x"), ("Relu_0_2", "b")]
    assert verify.compare_models(model, ir.export_model(graph), seed=0).passed


class SameAnchor(DoubleRelu):
    """A faulty rule whose two candidates put their replacement at the same node."""

    def match(self, node: gs.Node, scope: Scope) -> list[Match] | None:
        if node is not scope.graph.nodes[0]:
            return None
        return [Match([node], rule="first"), Match([node], rule="second")]

    def rewrite(self, match: Match, scope: Scope) -> list[gs.Node]:
        return list(match.nodes)


def test_two_rewrites_at_one_anchor_are_a_rule_bug() -> None:
    with pytest.raises(ValueError, match="anchors two rewrites"):
        run(SameAnchor(), graph_of(TWO_CHAINS))


def test_bypass_keeps_a_graph_output_name() -> None:
    graph = graph_of("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 4] x) => (float[1, 4] y, float[1, 4] w) {
            a = Relu (x)
            y = Identity (a)
            w = Identity (x)
        }""")
    outputs = ir.output_names(graph)
    relu, renaming, from_input = graph.nodes
    assert ir.rewrite.can_bypass(renaming, outputs)
    assert not ir.rewrite.can_bypass(from_input, outputs)  # a graph input cannot take 'w'
    ir.rewrite.bypass(renaming, outputs)
    assert relu.outputs[0].name == "y" and not renaming.inputs and not renaming.outputs


CLEANUP_CASES = {
    "dead nodes": """
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[2] x) => (float[2] y) {
            a = Relu(x)
            dead = Neg(a)
            deader = Abs(dead)
            y = Sigmoid(a)
        }""",
    "a body (onnx-graphsurgeon's cleanup)": """
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[2] x, bool c) => (float[2] y) {
            dead = Neg(x)
            y = If(c) <then_branch = t () => (float[2] r) { r = Relu(x) },
                       else_branch = e () => (float[2] r) { u = Abs(x)  r = Neg(x) }>
        }""",
}


@pytest.mark.parametrize("case", sorted(CLEANUP_CASES))
def test_cleanup_removes_what_onnx_graphsurgeons_cleanup_removes(case: str) -> None:
    ours, theirs = graph_of(CLEANUP_CASES[case]), graph_of(CLEANUP_CASES[case])
    ours_nodes, theirs_nodes = list(ir.scope_nodes(ours)), list(ir.scope_nodes(theirs))
    ir.rewrite.cleanup(ours)
    theirs.cleanup(remove_unused_node_outputs=False, recurse_subgraphs=True,
                   remove_unused_graph_inputs=False)
    assert ir.model_digest(ir.export_model(ours)) == ir.model_digest(ir.export_model(theirs))
    assert [(bool(a.inputs), bool(a.outputs)) for a in ours_nodes] == [
        (bool(b.inputs), bool(b.outputs)) for b in theirs_nodes]


def _two_tensors_named_t() -> gs.Graph:
    x, y = gs.Variable("x", np.float32, [2]), gs.Variable("y", np.float32, [2])
    first, second = gs.Variable("t", np.float32, [2]), gs.Variable("t", np.float32, [2])
    return gs.Graph(nodes=[gs.Node("Relu", "r1", inputs=[x], outputs=[first]),
                           gs.Node("Abs", "r2", inputs=[x], outputs=[second]),
                           gs.Node("Add", "add", inputs=[first, second], outputs=[y])],
                    inputs=[x], outputs=[y], opset=17)


def test_cleanup_follows_names_as_onnx_graphsurgeon_does_when_two_tensors_share_one() -> None:
    """Followed by identity, both producers of a ``t`` would stay; onnx-graphsurgeon follows the
    first ``t`` it meets only, and removes the other's producer: so does the cleanup."""
    theirs = _two_tensors_named_t()
    theirs.cleanup(remove_unused_node_outputs=False, recurse_subgraphs=True,
                   remove_unused_graph_inputs=False)
    ours = _two_tensors_named_t()
    ir.rewrite.cleanup(ours)
    assert [node.name for node in ours.nodes] == [node.name for node in theirs.nodes]
    assert len(ours.nodes) == 2
