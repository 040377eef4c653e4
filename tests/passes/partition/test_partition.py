"""The partition pass beyond its pass cases: how it takes the support classification, the shape
of the segment functions, and random graphs (every partition must stay acyclic and exact)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import onnx_graphsurgeon as gs
import pytest

from passes.partition import PARAMETER_PREFIX, Partition, is_segment
from trtcompile import ir, verify
from trtcompile.errors import PassFailed
from trtcompile.pass_manager import PassContext, PassManager

CHAIN = """
<ir_version: 10, opset_import: ["" : 17]>
g (float[N,8] x) => (float[N,8] y, float[N,8] side) {
  a = Relu(x)
  b = Tanh(a)
  side = Sigmoid(b)
  c = Mul(b, side)
  d = Abs(c)
  y = Neg(d)
}
"""


def partition(text: str, support=None, **options):
    model = onnx.parser.parse_model(text)
    graph = ir.import_model(model)
    ctx = PassContext(resources={"partition": support} if support is not None else {})
    report = PassManager([Partition(**options)], ctx=ctx).run(graph)
    return model, graph, report.records[0]


def test_support_mapping_reasons_become_rejections() -> None:
    model, graph, record = partition(CHAIN, {"Sigmoid_0": "TensorRT says no"})
    # Tanh feeds Mul directly and through the rejected Sigmoid: one segment cannot hold both, and
    # Relu+Tanh alone are fewer than three compute nodes.
    assert [(r.nodes, r.reason) for r in record.rejections] == [
        (("Sigmoid_0",), "TensorRT says no"),
        (("Tanh_0", "Mul_0"), "joining them would make a cycle through Sigmoid_0"),
        (("Relu_0", "Tanh_0"), "segment of 2 compute nodes, fewer than min-segment-size=3")]
    assert [ir.op_key(n) for n in graph.nodes] == [
        "Relu", "Tanh", "Sigmoid", "trtcompile.TensorRTSegment_0"]
    assert verify.compare_models(model, ir.export_model(graph), input_shapes={"x": [2, 8]}).passed


def test_support_from_an_object_or_a_callable() -> None:
    class Report:
        unsupported = {"Mul_0": "no Mul today"}

    _, graph, record = partition(CHAIN, Report())
    assert record.rejections[0].reason == "no Mul today"
    seen = []

    def oracle(graph: gs.Graph) -> dict[str, str]:
        seen.append(len(graph.nodes))
        return {"Abs_0": "no Abs"}

    _, graph, record = partition(CHAIN, oracle, min_segment_size=1)
    assert seen == [6]
    assert [r.reason for r in record.rejections] == ["no Abs"]


def test_segment_function_keeps_names_and_namespaces_its_parameters() -> None:
    _, graph, _ = partition(CHAIN, {"Mul_0": "no"}, min_segment_size=1)
    first = graph.nodes[0]
    assert is_segment(first) and first.name == "TensorRTSegment_0"
    function = ir.function_of(graph, first)
    assert [n.name for n in function.nodes] == ["Relu_0", "Tanh_0", "Sigmoid_0"]
    assert [t.name for t in function.inputs] == [PARAMETER_PREFIX + "x"]
    # b is read by Mul outside the segment, side is a graph output: both leave the call.
    assert sorted(t.name for t in first.outputs) == ["b", "side"]
    assert sorted(t.name for t in function.outputs) == [PARAMETER_PREFIX + "b",
                                                       PARAMETER_PREFIX + "side"]
    model = ir.export_model(graph)
    onnx.checker.check_model(model)
    assert [o.name for o in model.graph.output] == ["y", "side"]


def test_weights_are_call_arguments() -> None:
    text = """
    <ir_version: 10, opset_import: ["" : 17]>
    g (float[1,4] x) => (float[1,4] y) {
      w = Constant <value = float[4,4] {1,0,0,0, 0,1,0,0, 0,0,1,0, 0,0,0,1}> ()
      a = MatMul(x, w)
      b = Relu(a)
      y = Sigmoid(b)
    }
    """
    model = onnx.parser.parse_model(text)
    graph = ir.import_model(model)
    graph.fold_constants().cleanup()  # the weight becomes an initializer
    PassManager("partition{min-segment-size=2 exclude-ops=Sigmoid}").run(graph)
    call = graph.nodes[0]
    assert any(isinstance(t, gs.Constant) for t in call.inputs)
    assert verify.compare_models(model, ir.export_model(graph)).passed


def test_invalid_min_segment_size_fails_the_pass() -> None:
    with pytest.raises(PassFailed, match="min-segment-size must be >= 1, got 0"):
        partition(CHAIN, min_segment_size=0)


def test_pipeline_text_round_trips() -> None:
    manager = PassManager("partition{min-segment-size=5 exclude-ops=TopK,NonMaxSuppression}")
    assert manager.text == "partition{min-segment-size=5 exclude-ops=TopK,NonMaxSuppression}"


UNARY = ("Relu", "Tanh", "Abs", "Neg", "Sigmoid")
BINARY = ("Add", "Mul", "Sub")


def random_dag(rng: np.random.Generator, size: int) -> onnx.ModelProto:
    """A random DAG of elementwise ops on [2, 3] tensors; every unused tensor is an output."""
    graph = gs.Graph(opset=17)
    x = gs.Variable("x", np.float32, (2, 3))
    graph.inputs = [x]
    tensors = [x]
    for index in range(size):
        out = gs.Variable(f"t{index}", np.float32, (2, 3))
        if rng.random() < 0.5 and len(tensors) > 1:
            first, second = rng.choice(len(tensors), 2, replace=False)
            op, inputs = str(rng.choice(BINARY)), [tensors[first], tensors[second]]
        else:
            op, inputs = str(rng.choice(UNARY)), [tensors[int(rng.integers(len(tensors)))]]
        graph.nodes.append(gs.Node(op, f"n{index}", inputs=inputs, outputs=[out]))
        tensors.append(out)
    graph.outputs = [t for t in tensors[1:] if not t.outputs] or [tensors[-1]]
    return ir.export_model(graph)


@pytest.mark.parametrize("seed", range(12))
def test_random_graphs_partition_acyclically_and_exactly(seed: int) -> None:
    rng = np.random.default_rng(seed)
    model = random_dag(rng, int(rng.integers(8, 24)))
    rejected = {node.name: "rejected at random" for node in model.graph.node if rng.random() < 0.25}
    graph = ir.import_model(model)
    ctx = PassContext(resources={"partition": rejected})
    record = PassManager([Partition(min_segment_size=1)], ctx=ctx).run(graph).records[0]
    partitioned = ir.export_model(graph)
    onnx.checker.check_model(partitioned)
    # Every node is either a rejected node left in place or inside exactly one segment.
    inside = [n.name for f in partitioned.functions for n in f.node]
    outside = [n.name for n in partitioned.graph.node if not n.op_type.startswith("TensorRTSegment")]
    assert sorted(inside + outside) == sorted(n.name for n in model.graph.node)
    assert set(outside) == set(rejected)
    assert len(inside) == len(set(inside))
    # The top-level graph is a DAG in graph order (exporting toposorted it; ORT would refuse a cycle).
    assert ir.to_networkx(ir.import_model(partitioned)).number_of_nodes() == len(partitioned.graph.node)
    import networkx as nx

    assert nx.is_directed_acyclic_graph(ir.to_networkx(ir.import_model(partitioned)))
    assert record.counts.get("segments", 0) == len(partitioned.functions)
    assert verify.compare_models(model, partitioned, seed=seed).passed
