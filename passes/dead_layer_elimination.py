"""dead-layer-elimination: remove layers that cannot affect any graph output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx
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
      5. Layers that copy their input unchanged are removed like an Identity (rule 1's output
         naming holds): a ``Pad`` whose pads are a constant of zeros (every mode is then the
         identity); a ``Cast`` to the element type its input already has; a ``Slice`` whose constant
         starts, ends, axes and steps cover every element of a statically shaped input in order
         (step 1); an ``Expand`` by a constant shape of ones no longer than its input's known rank;
         a ``Reshape`` to a constant shape that, resolved as Reshape resolves it (0 copies a
         dimension unless ``allowzero``, one -1 takes the rest), is its input's static shape.
         Anything not known at compile time (a shape computed at run time, an unknown input shape
         or element type) leaves the layer in place: the peers' "eliminate no-op" rules, which
         TensorRT rewards with one layer fewer for each (a zero Pad is a copy kernel).

    Requires: nothing. Preserves: graph inputs and outputs (names, shapes, dtypes), including unused
    graph inputs; every output value. Options: ``identity``, ``dropout`` and ``no-op`` turn rules 1, 2 and 5 off.
    """

    name: ClassVar[str] = "dead-layer-elimination"

    identity: bool = True
    dropout: bool = True
    no_op: bool = True

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = PassResult()
        graph_outputs = ir.output_names(graph)
        shapes = ir.ShapeFacts(graph, ctx.log, self.name)
        if self.no_op and any(node.op in _SHAPE_CHECKED for node in graph.nodes):
            shapes.inferred  # noqa: B018 - infer on the graph as given, before any rewrite
        for node in list(graph.nodes):
            if node.op == "Identity" and self.identity:
                if self._bypass(node, graph_outputs, result, ctx):
                    result.count("removed_identity")
            elif node.op == "Dropout" and self.dropout:
                if not self._is_inference_dropout(node, graph_outputs, result):
                    continue
                if self._bypass(node, graph_outputs, result, ctx):
                    result.count("removed_dropout")
            elif self.no_op and node.op in _NO_OP_CHECKS and ir.is_onnx_op(node):
                if _NO_OP_CHECKS[node.op](node, shapes) and self._bypass(node, graph_outputs, result, ctx):
                    result.count(f"removed_noop_{node.op.lower()}")

        bypassed = sum(v for k, v in result.counts.items() if k.startswith(("removed_identity",
                                                                            "removed_dropout",
                                                                            "removed_noop_")))
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
        ir.rewrite.cleanup(graph)
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


def _constant_ints(node: gs.Node, index: int, absent: list[int] | None = None) -> list[int] | None:
    """Input ``index`` of ``node`` as a list of ints when it is a compile-time constant (None when
    it is not); ``absent`` when the optional input is not given."""
    if len(node.inputs) <= index or not node.inputs[index].name:
        return absent
    return ir.constant_ints(node.inputs[index])


def _static(tensor: gs.Tensor, shapes: ir.ShapeFacts) -> tuple[int, ...] | None:
    dims = shapes.shape(tensor)
    return dims if dims is not None and all(isinstance(d, int) for d in dims) else None


def _zero_pad(node: gs.Node, shapes: ir.ShapeFacts) -> bool:
    # Opset < 11 keeps the pads in an attribute.
    pads = node.attrs.get("pads") if len(node.inputs) < 2 else _constant_ints(node, 1)
    return pads is not None and all(p == 0 for p in pads)


def _same_type_cast(node: gs.Node, shapes: ir.ShapeFacts) -> bool:
    source, target = node.inputs[0].dtype, node.attrs.get("to")
    if source is None or target is None:
        return False
    try:
        return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(source)) == int(target)
    except (TypeError, KeyError, ValueError):  # an ONNX type numpy lacks: unknown here, keep it
        return False


def _full_slice(node: gs.Node, shapes: ir.ShapeFacts) -> bool:
    starts, ends = _constant_ints(node, 1), _constant_ints(node, 2)
    if starts is None or ends is None or len(starts) != len(ends):
        return False
    shape = _static(node.inputs[0], shapes)
    if shape is None:
        return False
    axes = _constant_ints(node, 3, absent=list(range(len(starts))))
    steps = _constant_ints(node, 4, absent=[1] * len(starts))
    if axes is None or steps is None or len(axes) != len(starts) or len(steps) != len(starts):
        return False
    for axis, start, end, step in zip(axes, starts, ends, steps):
        if not -len(shape) <= axis < len(shape):
            return False
        dim = shape[axis]
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step != 1 or start > 0 or end < dim:
            return False
    return True


def _ones_expand(node: gs.Node, shapes: ir.ShapeFacts) -> bool:
    shape = _constant_ints(node, 1)
    if shape is None or any(d != 1 for d in shape):
        return False
    dims = shapes.shape(node.inputs[0])
    return dims is not None and len(shape) <= len(dims)


def _same_shape_reshape(node: gs.Node, shapes: ir.ShapeFacts) -> bool:
    shape = _constant_ints(node, 1)
    static = _static(node.inputs[0], shapes)
    if shape is None or static is None or len(shape) != len(static):
        return False
    # Resolve the target as Reshape does: 0 copies the input's dimension (unless allowzero), one -1
    # takes what the other dimensions leave of the element count.
    allowzero = int(node.attrs.get("allowzero", 0))
    target = [static[i] if d == 0 and not allowzero else d for i, d in enumerate(shape)]
    if target.count(-1) > 1:
        return False
    if -1 in target:
        known = int(np.prod([d for d in target if d != -1]))
        if known == 0:
            return False
        target[target.index(-1)] = int(np.prod(static)) // known
    return tuple(target) == static


#: Rule 5's ops whose check needs the input's shape.
_SHAPE_CHECKED = frozenset({"Slice", "Expand", "Reshape"})
#: Rule 5: op type -> whether a node of it copies its first input unchanged.
_NO_OP_CHECKS = {"Pad": _zero_pad, "Cast": _same_type_cast, "Slice": _full_slice,
                 "Expand": _ones_expand, "Reshape": _same_shape_reshape}
