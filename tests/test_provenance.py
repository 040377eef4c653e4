"""Provenance: each node of the optimized graph traced back to the input nodes it stands for, by
the pass manager for any pass (trtcompile.ir.trace_provenance), and each engine layer traced back
through it to the original model's nodes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import onnx
import onnx_graphsurgeon as gs

from tests.helpers import CONV_BRANCHES, CONV_PIPELINE, registry_with
from trtcompile import cli, ir
from trtcompile.pass_manager import Pass, PassManager, PassResult


def graph_of(text: str) -> gs.Graph:
    return ir.import_model(onnx.parser.parse_model(text))


CHAIN = """
<ir_version: 8, opset_import: ["" : 17]>
chain (float[1, 4] x) => (float[1, 4] y) {
    a = Relu <alpha: float = 0.0> (x)
    b = Sigmoid (a)
    c = Neg (b)
    y = Abs (c)
}
"""


@dataclass(frozen=True)
class MergeSigmoidNeg(Pass):
    """Replaces Sigmoid -> Neg by one new node of a fresh name (a stand-in for any fusion)."""

    name: ClassVar[str] = "merge-sigmoid-neg"

    def run(self, graph, ctx):
        result = PassResult()
        sigmoid = next(n for n in graph.nodes if n.op == "Sigmoid")
        neg = sigmoid.outputs[0].outputs[0]
        merged = gs.Node("HardSigmoid", name="merged", inputs=[sigmoid.inputs[0]],
                         outputs=[neg.outputs[0]])
        sigmoid.outputs.clear()
        neg.outputs.clear()
        graph.nodes = [n for n in graph.nodes if n not in (sigmoid, neg)] + [merged]
        ir.toposort(graph)
        result.count("merged")
        return result


@dataclass(frozen=True)
class RewriteMerged(Pass):
    """Replaces the node named ``merged`` by a new Softsign named ``merged_again``: a rewrite of
    an already rewritten node, whose provenance must be the chain of both rewrites."""

    name: ClassVar[str] = "wrap-merged"

    def run(self, graph, ctx):
        result = PassResult()
        merged = next(n for n in graph.nodes if n.name == "merged")
        again = gs.Node("Softsign", name="merged_again", inputs=list(merged.inputs),
                        outputs=list(merged.outputs))
        merged.outputs.clear()
        graph.nodes = [n for n in graph.nodes if n is not merged] + [again]
        ir.toposort(graph)
        result.count("wrapped")
        return result


@dataclass(frozen=True)
class AddIdentity(Pass):
    """Inserts an Identity before the graph's last node, replacing nothing."""

    name: ClassVar[str] = "add-identity"

    def run(self, graph, ctx):
        result = PassResult()
        last = graph.nodes[-1]
        fresh = gs.Variable("fresh", dtype=last.inputs[0].dtype, shape=last.inputs[0].shape)
        identity = gs.Node("Identity", name="inserted", inputs=[last.inputs[0]], outputs=[fresh])
        last.inputs[0] = fresh
        graph.nodes.append(identity)
        ir.toposort(graph)
        result.count("inserted")
        return result


REGISTRY = registry_with([MergeSigmoidNeg, RewriteMerged, AddIdentity])


def test_a_new_node_stands_for_the_nodes_it_replaced() -> None:
    graph = graph_of(CHAIN)
    report = PassManager("merge-sigmoid-neg", registry=REGISTRY).run(graph)
    names = {node.op: node.name for node in graph_of(CHAIN).nodes}
    assert report.provenance == {"merged": [names["Sigmoid"], names["Neg"]]}
    assert report.origins(names["Relu"]) == [names["Relu"]]  # left as it was


def test_a_node_rewritten_again_keeps_the_chain() -> None:
    graph = graph_of(CHAIN)
    report = PassManager("merge-sigmoid-neg,wrap-merged", registry=REGISTRY).run(graph)
    names = {node.op: node.name for node in graph_of(CHAIN).nodes}
    assert report.provenance == {"merged_again": [names["Sigmoid"], names["Neg"]]}


def test_a_node_added_next_to_unchanged_ones_stands_for_nothing() -> None:
    graph = graph_of(CHAIN)
    report = PassManager("add-identity", registry=REGISTRY).run(graph)
    assert report.provenance == {"inserted": []}
    assert {node.name for node in graph.nodes} - {"inserted"} == set(report.input_node_names)


def test_fusion_then_horizontal_fusion_compose() -> None:
    """Conv -> BatchNormalization -> Relu fused; three fused branches then merged into one
    convolution: the merged layer stands for all six nodes of the branches."""
    graph = ir.load(CONV_BRANCHES)
    report = PassManager(CONV_PIPELINE).run(graph)
    assert report.provenance == {
        "stem_conv": ["stem_conv", "stem_bn", "stem_relu"],
        "branch0_conv+branch1_conv+branch2_conv": [
            "branch0_conv", "branch0_relu", "branch1_conv", "branch1_relu", "branch2_conv",
            "branch2_relu"],
    }
    assert report.to_dict()["provenance"] == report.provenance


def test_trace_provenance_keeps_untouched_graphs_as_they_are() -> None:
    graph = ir.load(CONV_BRANCHES)
    structure = ir.Structure(graph)
    assert ir.trace_provenance(structure, ir.Structure(graph), {}) == {}
    earlier = {"stem_conv": ("conv_a", "conv_b")}
    assert ir.trace_provenance(structure, ir.Structure(graph), earlier) == earlier


def test_engine_layers_trace_back_to_the_original_nodes(tmp_path: Path) -> None:
    """A real compile with the engine: the engine layer of the fused Conv+Relu call traces back
    through the call node TensorRT names to the model's Conv, BatchNormalization and Relu."""
    code = cli.main(["compile", str(CONV_BRANCHES), "-o", str(tmp_path / "out"), "--pipeline",
                     CONV_PIPELINE, "--no-parity", "-q"])
    assert code == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    layers = {tuple(layer["onnx_nodes"]): layer for layer in report["engine"]["layers"]}
    assert layers[("stem_conv",)]["original_nodes"] == ["stem_conv", "stem_bn", "stem_relu"]
    merged = layers[("branch0_conv+branch1_conv+branch2_conv",)]["original_nodes"]
    assert sorted(merged) == sorted(f"branch{i}_{op}" for i in range(3) for op in ("conv", "relu"))
    assert layers[("head_conv",)]["original_nodes"] == ["head_conv"]
    original = {node.name: node.op_type for node in onnx.load(CONV_BRANCHES).graph.node}
    assert [original[name] for name in layers[("stem_conv",)]["original_nodes"]] == \
        ["Conv", "BatchNormalization", "Relu"]

    # The graphs section says the same per node: what each input node became.
    inputs = {node["name"]: node for node in report["graphs"]["input"]["nodes"]}
    assert inputs["stem_relu"]["became"] == ["stem_conv"]
    assert inputs["branches_concat"]["became"] == []  # removed by concat-elimination
    assert "became" not in inputs["head_conv"]  # left as it was
    optimized = {node["name"]: node for node in report["graphs"]["optimized"]["nodes"]}
    assert optimized["stem_conv"]["fused"] == ["Conv", "Relu"]
    assert "fused" not in optimized["head_conv"]


def test_a_group_engine_guided_undoes_leaves_no_provenance() -> None:
    """engine-guided undoes a group that does not pay: the provenance it traced is undone too."""
    from trtcompile.pass_manager import PassContext

    def judge(layers_pay: bool):
        return lambda graph: len(graph.nodes) if layers_pay else 10 - len(graph.nodes)

    for pays, expected in ((False, {}), (True, {"merged": 2})):
        graph = graph_of(CHAIN)
        report = PassManager("engine-guided(merge-sigmoid-neg)", registry=REGISTRY,
                             ctx=PassContext(resources={"engine-guided": judge(pays)})).run(graph)
        assert {name: len(origins) for name, origins in report.provenance.items()} == expected
