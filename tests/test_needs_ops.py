"""A pass that declares the ops its rewrites start from (``Pass.needs_ops``) is not run on a graph
that holds none of them in any scope: the record says why, the pass's code never runs. The
declaration is checked against the passes themselves: on every pass case's input graph that
lacks a pass's ops, running that pass directly changes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import onnx
import onnx.parser
import onnx_graphsurgeon as gs
import pytest

from tests import pass_cases
from tests.test_pass_manager import REGISTRY
from trtcompile import ir
from trtcompile.pass_manager import Pass, PassContext, PassManager, PassResult, default_registry


@dataclass(frozen=True)
class RenameTransposes(Pass):
    """Renames every top-level Transpose; counts how often its code ran (class-wide)."""

    name: ClassVar[str] = "rename-transposes"
    needs_ops: ClassVar[frozenset[str]] = frozenset({"Transpose"})
    runs: ClassVar[list[str]] = []

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        RenameTransposes.runs.append(graph.name)
        result = PassResult()
        for node in graph.nodes:
            if node.op == "Transpose":
                node.name += "_seen"
                result.count("renamed")
        return result


def _manager(pipeline: str) -> PassManager:
    registry = REGISTRY.copy()
    registry.register(RenameTransposes)
    return PassManager(pipeline, registry=registry)


def _graph(text: str, functions: str = "") -> gs.Graph:
    model = onnx.parser.parse_model(text + functions)
    return ir.import_model(model)


_HEADER = '<ir_version: 8, opset_import: ["" : 17, "local" : 1]>\n'


def test_a_graph_without_the_ops_is_not_run_and_the_record_says_why() -> None:
    RenameTransposes.runs.clear()
    graph = _graph(_HEADER + "g (float[2, 3] x) => (float[2, 3] y) { y = Relu(x) }")
    report = _manager("rename-transposes").run(graph)
    (record,) = report.records
    assert RenameTransposes.runs == []
    assert record.skipped == "no Transpose in the graph"
    assert (record.changed, record.counts, record.seconds) == (False, {}, 0.0)
    assert record.to_dict()["skipped"] == "no Transpose in the graph"


def test_a_graph_with_the_op_runs_and_its_record_has_no_skip() -> None:
    RenameTransposes.runs.clear()
    graph = _graph(_HEADER + "g (float[2, 3] x) => (float[3, 2] y) { y = Transpose(x) }")
    report = _manager("rename-transposes").run(graph)
    (record,) = report.records
    assert len(RenameTransposes.runs) == 1
    assert (record.skipped, record.changed, record.counts) == ("", True, {"renamed": 1})
    assert "skipped" not in record.to_dict()


def test_an_op_inside_a_subgraph_body_counts() -> None:
    RenameTransposes.runs.clear()
    graph = _graph(_HEADER + """
        g (bool c, float[2, 2] x) => (float[2, 2] y) {
            y = If(c) <then_branch = t () => (float[2, 2] a) { a = Transpose(x) },
                       else_branch = e () => (float[2, 2] b) { b = Identity(x) }>
        }""")
    report = _manager("rename-transposes").run(graph)
    assert len(RenameTransposes.runs) == 1
    assert report.records[0].skipped == ""


def test_an_op_inside_a_local_function_counts() -> None:
    RenameTransposes.runs.clear()
    graph = _graph(_HEADER + "g (float[2, 3] x) => (float[3, 2] y) { y = local.T(x) }", """
        <domain: "local", opset_import: ["" : 17]>
        T (a) => (b) { b = Transpose(a) }""")
    assert "Transpose" in ir.summarize(graph).ops
    assert "Transpose" not in ir.summarize(graph).histogram
    _manager("rename-transposes").run(graph)
    assert len(RenameTransposes.runs) == 1


def test_the_op_of_another_domain_does_not_count() -> None:
    RenameTransposes.runs.clear()
    graph = _graph(_HEADER + "g (float[2, 3] x) => (float[2, 3] y) { y = local.Transpose(x) }",
                   """
        <domain: "local", opset_import: ["" : 17]>
        Transpose (a) => (b) { b = Relu(a) }""")
    assert "local.Transpose" in ir.summarize(graph).ops
    report = _manager("rename-transposes").run(graph)
    assert RenameTransposes.runs == []
    assert report.records[0].skipped == "no Transpose in the graph"


def test_a_skipped_pass_is_run_once_a_pass_before_it_adds_its_op() -> None:
    """The decision is taken on the graph as the previous pass left it, not as the run began."""

    @dataclass(frozen=True)
    class AddTranspose(Pass):
        name: ClassVar[str] = "add-transpose"

        def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
            y = graph.outputs[0]
            t = gs.Variable("t", dtype=y.dtype)
            relu = graph.nodes[0]
            relu.outputs = [t]
            graph.nodes.append(gs.Node("Transpose", "added", {"perm": [0, 1]}, [t], [y]))
            return PassResult()

    RenameTransposes.runs.clear()
    registry = REGISTRY.copy()
    registry.register(RenameTransposes)
    registry.register(AddTranspose)
    graph = _graph(_HEADER + "g (float[2, 2] x) => (float[2, 2] y) { y = Relu(x) }")
    report = PassManager("rename-transposes,add-transpose,rename-transposes",
                         registry=registry).run(graph)
    assert [r.skipped for r in report.records] == ["no Transpose in the graph", "", ""]
    assert report.records[2].counts == {"renamed": 1}
    assert [node.name for node in graph.nodes] == [graph.nodes[0].name, "added_seen"]


# The declarations of the built-in passes --------------------------------------------------------

DECLARING = sorted((cls for cls in default_registry() if cls.needs_ops), key=lambda c: c.name)
CASES = pass_cases.all_cases()


def test_the_layout_attention_and_fusion_passes_declare_their_ops() -> None:
    declared = {cls.name: sorted(cls.needs_ops) for cls in DECLARING}
    assert declared == {
        "attention-head-layout": ["Softmax"],
        "average-pool-conv-fusion": ["AveragePool"],
        "concat-elimination": ["Concat"],
        "conv-bias-activation-fusion": ["Conv"],
        "conv-split-fission": ["Split"],
        "flatten-gemm-conv": ["Flatten", "Reshape"],
        "grouped-query-attention": ["Expand"],
        "global-pool-window": ["GlobalAveragePool", "ReduceMean"],
        "transpose-cancellation": ["Transpose"],
    }


@pytest.mark.parametrize("cls", DECLARING, ids=[c.name for c in DECLARING])
def test_a_pass_changes_nothing_in_the_graphs_that_lack_its_ops(cls: type[Pass]) -> None:
    """Run directly (the manager would not run it), on every pass case's input graph that holds
    none of the pass's ops in any scope: the fingerprint, i.e. every node, edge, attribute and
    constant, is as before."""
    checked = 0
    for case in CASES:
        model = case.model()
        graph = ir.import_model(model)
        if not cls.needs_ops.isdisjoint(ir.summarize(graph).ops):
            continue
        before = ir.fingerprint(graph)
        cls().run(graph, case.context(model))
        assert ir.fingerprint(graph) == before, f"{cls.name} changed {case.id}"
        checked += 1
    assert checked >= 20, f"only {checked} pass cases lack the ops of {cls.name}"
