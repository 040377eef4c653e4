"""partition: the nodes TensorRT supports become segments, each one call to a local function.

TF-TRT's segmentation as an explicit pass: connected groups of supported nodes become
``TensorRTSegment_N`` calls (TF-TRT's TRTEngineOp), the rest stays as it is for ONNX Runtime, and
groups smaller than ``min-segment-size`` compute nodes fall back (TF-TRT's
``minimum_segment_size``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import networkx as nx
import onnx
import onnx_graphsurgeon as gs

from trtcompile import ir
from trtcompile.ir import (
    NON_COMPUTE_OPS,
    SEGMENT_PREFIX,
    compute_node_count,
    is_segment,
)
from trtcompile.ir.fused_layer import PARAMETER_PREFIX
from trtcompile.pm import Pass, PassContext, PassResult

# The segment convention (SEGMENT_PREFIX, is_segment, NON_COMPUTE_OPS and compute_node_count, which
# reports count segments with) and the parameter namespace of outlined functions (PARAMETER_PREFIX,
# ``trtcompile.<tensor>``) live in the IR; this module's names for them stay importable.

#: Why a node is not in any segment, by cause.
EXCLUDED_REASON = "op excluded by exclude-ops"
OUTER_SCOPE_REASON = "its subgraphs read outer-scope tensors, which a function body cannot see"
SEGMENT_REASON = "already a TensorRT segment"

#: What ``ctx.resources["partition"]`` may hold: node name -> reason for the nodes TensorRT rejects,
#: an object with such an ``unsupported`` mapping (trtcompile.backend.SupportReport), or a callable
#: computing either from the graph.
Support = Mapping[str, str] | Any | Callable[[gs.Graph], Any]


def unsupported_nodes(graph: gs.Graph, support: Support | None) -> dict[str, str]:
    """Node name -> reason of the nodes the classification rejects (none when there is none)."""
    if support is None:
        return {}
    if callable(support) and not isinstance(support, Mapping):
        support = support(graph)
    if not isinstance(support, Mapping):
        support = support.unsupported
    return {str(name): str(reason) for name, reason in support.items()}


@dataclass(frozen=True)
class Partition(Pass):
    """Group the nodes TensorRT supports into segments, each one call to a local function.

    Requires: named nodes; the support classification in ``ctx.resources["partition"]`` (node
    name -> reason for each node TensorRT's parser rejects, as ``trtcompile.backend.query_support``
    computes it; without one every node counts as supported and only ``exclude-ops`` decides).
    Rules:
      1. A node falls back (stays a plain node, run by ONNX Runtime) when TensorRT rejects it,
         its op is in ``exclude-ops``, it already is a segment call, or its subgraphs read
         outer-scope tensors. Each such node is a rejection with its reason.
      2. Supported nodes joined by a tensor merge into one segment, in topological order, unless
         the merge would make a cycle between segments: a path from one to the other through a
         fallback node (networkx reachability on the contracted graph). Such pairs stay in
         separate segments, recorded with the nodes on the path.
      3. A segment with fewer than ``min-segment-size`` compute nodes (Constant, Identity,
         Shape and Size do not count) falls back, recorded with its size; so does a group whose
         results nothing reads (dead nodes: dead-layer-elimination removes them).
      4. Each remaining segment becomes ONE node calling the local function
         ``trtcompile.TensorRTSegment_N`` (N in topological order) whose body is the segment's
         nodes unchanged; its parameters are named ``trtcompile.<tensor>``. The call reads every
         tensor the segment reads from outside (weights included) and produces every tensor read
         outside it or that is a graph output, under the original names.
    Preserves: the computation (the graph runs on ONNX Runtime as before, functions inlined),
    graph inputs and outputs, node and tensor names (inside the bodies).
    """

    name: ClassVar[str] = "partition"
    #: Counts of the classification (rules 1-3), reported whether or not a segment is outlined:
    #: under a rewrite limit (``ctx.may_rewrite``) only rule 4 asks, once per segment.
    classification_counts: ClassVar[tuple[str, ...]] = (
        "fallback_nodes", "small_segment_nodes", "dead_nodes", "cycle_splits")

    #: Segments with fewer compute nodes fall back (TF-TRT's minimum_segment_size).
    min_segment_size: int = 3
    #: Op types forced to fall back even where TensorRT supports them.
    exclude_ops: tuple[str, ...] = ()

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        if self.min_segment_size < 1:
            raise ValueError(f"min-segment-size must be >= 1, got {self.min_segment_size}")
        result = PassResult()
        ir.toposort(graph)
        rejected = unsupported_nodes(graph, ctx.resources.get(self.name))
        excluded = set(self.exclude_ops)
        nodes = list(graph.nodes)
        eligible: list[bool] = []
        for node in nodes:
            reason = None
            if is_segment(node):
                reason = SEGMENT_REASON
            elif node.name in rejected:
                reason = rejected[node.name]
            elif node.op in excluded:
                reason = EXCLUDED_REASON
            elif _reads_outer_scope(node):
                reason = OUTER_SCOPE_REASON
            eligible.append(reason is None)
            if reason is not None:
                result.reject(node, reason)
                result.count("fallback_nodes")

        clusters = _clusters(graph, nodes, eligible, result)
        segments = []
        for members in clusters:
            member_nodes = [nodes[i] for i in members]
            size = compute_node_count(member_nodes)
            if size < self.min_segment_size:
                result.reject(member_nodes, f"segment of {size} compute node"
                              f"{'s' if size != 1 else ''}, fewer than min-segment-size="
                              f"{self.min_segment_size}" + ("" if size else
                                                            " (Constant, Identity, Shape, Size "
                                                            "compute nothing)"))
                result.count("small_segment_nodes", len(member_nodes))
                continue
            if not _results(graph, member_nodes):  # dead nodes: dead-layer-elimination's work
                result.reject(member_nodes, "nothing reads what these nodes compute")
                result.count("dead_nodes", len(member_nodes))
                continue
            if not ctx.may_rewrite("outline-segment", member_nodes, result):
                continue
            segments.append(member_nodes)
        scope = ir.NameScope(graph)
        for member_nodes in segments:
            _outline(graph, member_nodes, scope.fresh(_segment_name(graph)), scope)
            result.count("segments")
            result.count("segment_nodes", len(member_nodes))
        ir.toposort(graph)
        return result


def _segment_name(graph: gs.Graph) -> str:
    """The next free ``TensorRTSegment_N``."""
    taken = {f.name for f in graph.functions}
    index = 0
    while f"{SEGMENT_PREFIX}{index}" in taken:
        index += 1
    return f"{SEGMENT_PREFIX}{index}"


def _reads_outer_scope(node: gs.Node) -> bool:
    """True if a subgraph of ``node`` reads a tensor defined outside it."""
    for subgraph in ir.subgraphs(node):
        defined = {t.name for t in subgraph.inputs}
        for inner in ir.iter_nodes(subgraph):
            defined.update(t.name for t in inner.outputs)
        for inner in ir.iter_nodes(subgraph):
            for tensor in inner.inputs:
                if tensor.name and not isinstance(tensor, gs.Constant) and tensor.name not in defined:
                    return True
    return False


def _clusters(graph: gs.Graph, nodes: list[gs.Node], eligible: list[bool],
              result: PassResult) -> list[list[int]]:
    """Rule 2: groups of eligible node indices, in topological order of their first node, such
    that contracting each group leaves the graph acyclic."""
    dag = ir.to_networkx(graph)
    condensed = dag.copy()  # one node per current group (named by its first member)
    group_of = list(range(len(nodes)))
    members: dict[int, list[int]] = {i: [i] for i in range(len(nodes))}
    for producer, consumer in sorted(dag.edges()):
        if not (eligible[producer] and eligible[consumer]):
            continue
        first, second = group_of[producer], group_of[consumer]
        if first == second:
            continue
        # Any other path first -> second runs through a node outside both groups: merging would
        # put that node both after and before the merged segment.
        condensed.remove_edge(first, second)
        try:
            detour = nx.shortest_path(condensed, first, second)
        except nx.NetworkXNoPath:
            detour = None
        condensed.add_edge(first, second)
        if detour is not None:
            through = [nodes[i].name for group in detour[1:-1] for i in members[group][:1]]
            result.reject([nodes[producer], nodes[consumer]],
                          "joining them would make a cycle through " + ", ".join(through))
            result.count("cycle_splits")
            continue
        keep, gone = min(first, second), max(first, second)
        nx.contracted_nodes(condensed, keep, gone, self_loops=False, copy=False)
        for index in members[gone]:
            group_of[index] = keep
        members[keep] = sorted(members[keep] + members.pop(gone))
    return [group for key, group in sorted(members.items()) if eligible[key]]


def _results(graph: gs.Graph, segment: list[gs.Node]) -> list[gs.Tensor]:
    """Tensors of ``segment`` read outside it or that are graph outputs, in node order."""
    inside = {id(node) for node in segment}
    graph_outputs = {id(t) for t in graph.outputs}
    return [tensor for node in segment for tensor in node.outputs
            if id(tensor) in graph_outputs
            or any(id(consumer) not in inside for consumer in tensor.outputs)]


def _outline(graph: gs.Graph, segment: list[gs.Node], function_name: str,
             scope: ir.NameScope) -> gs.Node:
    """Rule 4: move ``segment``'s nodes into a new local function and call it in their place."""
    inside = {id(node) for node in segment}
    produced = {id(t) for node in segment for t in node.outputs}
    parameters: dict[int, gs.Variable] = {}

    def parameter(tensor: gs.Tensor) -> gs.Variable:
        if id(tensor) not in parameters:
            parameters[id(tensor)] = gs.Variable(scope.fresh(PARAMETER_PREFIX + tensor.name),
                                                 dtype=tensor.dtype, shape=tensor.shape)
        return parameters[id(tensor)]

    arguments: list[gs.Tensor] = []
    for node in segment:
        for tensor in node.inputs:
            if tensor.is_empty() or id(tensor) in produced:
                continue
            if id(tensor) not in parameters:
                arguments.append(tensor)
            parameter(tensor)
    results = _results(graph, segment)
    if not results:
        raise ValueError(f"segment {function_name} produces nothing read outside it")
    body_inputs = [parameters[id(t)] for t in arguments]
    body_outputs = [parameter(t) for t in results]
    for node in segment:  # rewire the nodes onto the parameters
        for index, tensor in enumerate(node.inputs):
            if id(tensor) in parameters:
                node.inputs[index] = parameters[id(tensor)]
        for index, tensor in enumerate(node.outputs):
            if id(tensor) in parameters:
                # Internal readers of an exported tensor read the parameter as well.
                for consumer in list(tensor.outputs):
                    if id(consumer) in inside:
                        for slot, read in enumerate(consumer.inputs):
                            if read is tensor:
                                consumer.inputs[slot] = parameters[id(tensor)]
                node.outputs[index] = parameters[id(tensor)]
    function = gs.Function(function_name, domain=ir.TRTCOMPILE_DOMAIN, nodes=list(segment),
                           inputs=body_inputs, outputs=body_outputs, opset=ir.opset(graph))
    domains = {entry.domain: entry for entry in getattr(graph, "import_domains", None) or []}
    for node in segment:  # calls of fused layers inside the body need their domain imported
        if node.domain and node.domain not in domains:
            domains[node.domain] = onnx.helper.make_opsetid(node.domain, 1)
    domains.setdefault("", onnx.helper.make_opsetid("", ir.opset(graph)))
    function.import_domains = list(domains.values())
    graph.functions.append(function)
    call = ir.call(function, function_name, arguments, results)  # a fresh name (scope)
    graph.nodes = [node for node in graph.nodes if id(node) not in inside] + [call]
    return call


__all__ = ["NON_COMPUTE_OPS", "PARAMETER_PREFIX", "SEGMENT_PREFIX", "Partition",
           "compute_node_count", "is_segment", "unsupported_nodes"]
