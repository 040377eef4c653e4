"""dead-layer-elimination: remove layers that cannot affect any graph output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import onnx_graphsurgeon as gs

from trtcompile import ir
from trtcompile.pm import Pass, PassContext, PassResult


@dataclass(frozen=True)
class DeadLayerElimination(Pass):
    """Remove layers that compute nothing the graph's outputs depend on.

    Rules:
      1. Identity: consumers read the Identity's input instead. When the Identity's output is a graph
         output, the producer of its input writes the graph output directly (the output keeps its
         name); if that input is a graph input, a constant or another graph output, the Identity
         stays (an output cannot be renamed).
      2. Dropout in inference (no ``training_mode`` input, or a constant false one) with an unused
         mask output is an Identity and is removed by rule 1. A Dropout whose mask is read, or
         whose ``training_mode`` is not a constant false, stays.
      3. Nodes none of whose outputs reach a graph output are removed, in the main graph and in
         If/Loop/Scan bodies (a body's outputs always count as reached). A removed If/Loop/Scan's
         bodies go with it: their nodes no longer count as readers of the values they read.
      4. Initializers that no node reads are not written back.

    Requires: nothing. Preserves: graph inputs and outputs (names, shapes, dtypes), including unused
    graph inputs; every output value. Options: ``identity`` and ``dropout`` turn rules 1 and 2 off.
    """

    name: ClassVar[str] = "dead-layer-elimination"

    identity: bool = True
    dropout: bool = True

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = PassResult()
        graph_outputs = ir.output_names(graph)
        for node in list(graph.nodes):
            if node.op == "Identity" and self.identity:
                if self._bypass(node, graph_outputs, result, ctx):
                    result.count("removed_identity")
            elif node.op == "Dropout" and self.dropout:
                if not self._is_inference_dropout(node, graph_outputs, result):
                    continue
                if self._bypass(node, graph_outputs, result, ctx):
                    result.count("removed_dropout")

        bypassed = result.counts.get("removed_identity", 0) + result.counts.get("removed_dropout", 0)
        all_live = not bypassed and self._all_live(graph)
        if all_live and not graph.functions:
            return result  # nothing to remove: skip the cleanup walk (most fixed-point iterations)
        if not ctx.may_rewrite("remove-unreachable", "unreachable nodes", result):
            return result
        if all_live:
            # Nothing to remove here either. The grant above stays: graphs with local functions
            # always asked for it, and rewrite limits (bisect) must count the same rewrites.
            return result
        nodes_before = sum(1 for _ in ir.iter_nodes(graph))
        scope_nodes_before = list(ir.scope_nodes(graph))
        graph.cleanup(remove_unused_node_outputs=False, recurse_subgraphs=True,
                      remove_unused_graph_inputs=False)
        # The bodies of a removed If/Loop/Scan still read the outer values they read.
        ir.detach_dropped(graph, scope_nodes_before)
        removed_dead = nodes_before - sum(1 for _ in ir.iter_nodes(graph)) - bypassed
        if removed_dead:
            result.count("removed_dead", removed_dead)
        return result

    @classmethod
    def _all_live(cls, graph: gs.Graph) -> bool:
        """True if every top-level node feeds a graph output, in a graph without subgraphs, and
        every node of each local function feeds one of the function's outputs (cleanup, which
        also cleans function bodies, would then remove nothing)."""
        return cls._all_nodes_live(graph) and all(
            cls._all_nodes_live(function) and not any(t.inputs for t in function.inputs)
            for function in graph.functions)

    @staticmethod
    def _all_nodes_live(graph: gs.Graph) -> bool:
        """True if every node of ``graph`` (a graph or a function body) feeds one of its outputs
        and holds no subgraph (where cleanup could still find dead nodes)."""
        live: set[int] = set()
        stack = [t for t in graph.outputs]
        while stack:
            tensor = stack.pop()
            for node in tensor.inputs:
                if id(node) not in live:
                    live.add(id(node))
                    stack.extend(node.inputs)
        for node in graph.nodes:
            if id(node) not in live or ir.subgraphs(node):
                return False
        return True

    @staticmethod
    def _is_inference_dropout(node: gs.Node, graph_outputs: set[str], result: PassResult) -> bool:
        if len(node.outputs) > 1 and (node.outputs[1].outputs or node.outputs[1].name in graph_outputs):
            result.reject(node, "dropout mask output is read")
            return False
        if len(node.inputs) >= 3 and node.inputs[2].name:
            training = ir.constant_value(node.inputs[2])
            if training is None:
                result.reject(node, "dropout training_mode is not a constant")
                return False
            if bool(training.reshape(-1)[0]):
                result.reject(node, "dropout runs in training mode")
                return False
        return True

    @staticmethod
    def _bypass(node: gs.Node, graph_outputs: set[str], result: PassResult,
                ctx: PassContext) -> bool:
        """Rewire around a node that passes its first input through to its first output."""
        if not ir.rewrite.can_bypass(node, graph_outputs):
            result.reject(node, f"{node.op} output '{node.outputs[0].name}' is a graph output and "
                                "its input cannot take that name")
            return False
        if not ctx.may_rewrite(f"bypass-{node.op.lower()}", node, result):
            return False
        # Readers of the output read the input; a graph output is written by the input's producer.
        ir.rewrite.bypass(node, graph_outputs)
        return True
