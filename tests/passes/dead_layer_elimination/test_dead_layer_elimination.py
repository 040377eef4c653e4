"""dead-layer-elimination beyond its pass cases: the rewrites it asks for by rule (what ``bisect``
and ``--why-not`` show) and how it behaves when the rewrite limit refuses them."""

from __future__ import annotations

from pathlib import Path

from passes.dead_layer_elimination import DeadLayerElimination
from tests import pass_cases
from trtcompile import ir
from trtcompile.pm import PassContext
from trtcompile.pm.base import REWRITE_LIMIT_REASON

CASES = Path(__file__).parent / "cases"


def _graph(case_name: str):
    return ir.import_model(pass_cases.load_case(CASES / f"{case_name}.onnxtxt").model())


def test_each_rewrite_is_asked_for_by_its_rule() -> None:
    graph = _graph("identity_chain")
    ctx = PassContext(current_pass=DeadLayerElimination.name)
    result = DeadLayerElimination().run(graph, ctx)
    assert [(r.rule, r.nodes) for r in ctx.rewrites] == [
        ("bypass-identity", ("Identity_0",)),
        ("bypass-identity", ("Identity_0_1",)),
        ("bypass-dropout", ("Dropout_0",)),
        ("remove-unreachable", ("unreachable nodes",)),
    ]
    assert result.counts == {"removed_identity": 2, "removed_dropout": 1, "removed_dead": 1}


def test_a_rewrite_limit_of_zero_leaves_the_graph_and_says_why() -> None:
    graph = _graph("identity_chain")
    ops_before = [n.op for n in graph.nodes]
    ctx = PassContext(rewrite_limit=0)
    result = DeadLayerElimination().run(graph, ctx)
    assert [n.op for n in graph.nodes] == ops_before
    assert result.counts == {}
    assert ctx.rewrites == [] and ctx.refused == 4
    assert [(r.nodes, r.reason) for r in result.rejections] == [
        (("Identity_0",), REWRITE_LIMIT_REASON),
        (("Identity_0_1",), REWRITE_LIMIT_REASON),
        (("Dropout_0",), REWRITE_LIMIT_REASON),
        (("unreachable nodes",), REWRITE_LIMIT_REASON),
    ]


_FUNCTION_MODEL = """
<ir_version: 10, opset_import: ["" : 17, "local" : 1]>
g (float[1,4] x) => (float[1,4] y) {{
  y = local.Twice(x)
}}
<domain: "local", opset_import: ["" : 17]>
Twice (a) => (b) {{
  {body}
}}
"""


def _function_graph(body: str):
    import onnx.parser

    return ir.import_model(onnx.parser.parse_model(_FUNCTION_MODEL.format(body=body)))


def test_a_dead_node_inside_a_local_function_is_removed() -> None:
    graph = _function_graph("unused = Sigmoid(a)\n  b = Add(a, a)")
    result = DeadLayerElimination().run(graph, PassContext())
    assert [n.op for n in graph.functions[0].nodes] == ["Add"]
    assert result.counts == {"removed_dead": 1}


def test_a_graph_whose_functions_are_all_live_is_left_as_it_is_and_still_asks() -> None:
    """Nothing to remove, so no cleanup walk; the rewrite is asked for all the same, as it was
    before graphs with functions had the shortcut (rewrite limits count the same rewrites)."""
    graph = _function_graph("b = Add(a, a)")
    before = ir.fingerprint(graph)
    ctx = PassContext(current_pass=DeadLayerElimination.name)
    result = DeadLayerElimination().run(graph, ctx)
    assert ir.fingerprint(graph) == before and result.counts == {}
    assert [(r.rule, r.nodes) for r in ctx.rewrites] == [
        ("remove-unreachable", ("unreachable nodes",))]
