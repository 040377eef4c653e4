"""concat-elimination: remove Concat layers (and the Splits and Slices around them) that move nothing.

A Concat is a copy unless its inputs already lie side by side in one tensor. This pass finds the
cases where ONNX semantics make that visible in the graph (pieces of one tensor put back together,
concats of concats, a Concat undone by a Split) and rewrites them away. Every Concat it cannot remove
is recorded with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from trtcompile import ir
from trtcompile.pm import Pass, PassContext, PassResult

#: Slice ends at or beyond this mean "to the end of the axis" (ONNX uses INT64_MAX, tf2onnx INT32_MAX).
_TO_END = np.iinfo(np.int32).max


@dataclass
class _Piece:
    """A tensor that is the range ``[start, stop)`` of ``source`` along ``axis`` (stop None: to
    the end), produced by ``node`` (a Split output or a Slice)."""

    tensor: gs.Tensor
    node: gs.Node
    source: gs.Tensor
    axis: int
    start: int | None
    stop: int | None


@dataclass(frozen=True)
class ConcatElimination(Pass):
    """Remove Concats whose inputs already lie side by side, and the Splits and Slices they undo.

    Rules (axis means the same axis after normalizing negative values with the tensor rank: from
    the tensor's shape or, without one, read back through the producers that keep their data
    input's rank (Split, Slice, Concat, pooling, Pad, Resize, pointwise and normalization ops) to
    a shape, a Transpose's ``perm`` or a convolution's constant weights; a convolution's channels
    come from its weights too, a Concat's size on its axis is the sum of its inputs'):
      1. A Concat with one input is that input: consumers read it directly (when the Concat's output
         is a graph output, the input's producer writes it under the output's name).
      2. A Concat input produced by another Concat on the same axis, read by nothing else and not a
         graph output, is replaced by that Concat's inputs (nested concats are flattened).
      3. Consecutive Concat inputs that are consecutive outputs of one Split on the same axis, each
         read only by this Concat, become one Split output; a Split left with one output is its input
         (so Split -> Concat of all its outputs in order is the Split's input). This narrows the
         Split that ``horizontal-fusion`` puts after a merged layer whose branches feed a Concat.
         Adjacency and the rewrite go by element ranges: zero-size outputs between the joined
         ones join too (one that something else reads stays, as a zero-size output). The new
         sizes take the opset's form of Split: the ``split`` attribute before opset 13, the
         ``split`` input from 13 (an equal Split, or one with ``num_outputs`` from 18, gets
         explicit sizes).
      4. Consecutive Concat inputs that are Slices (steps 1, one constant axis, constant bounds:
         inputs from opset 10, attributes in Slice-1 before) of one tensor covering adjacent
         ranges, each read only by this Concat, become one Slice in the opset's form; a Slice
         covering the whole axis is its input. Bounds are normalized as ONNX does (a
         negative bound adds the dim, then every bound is clamped to ``[0, dim]``), so ranges
         compare by the elements they pick; a Slice with another step picks no range and stays.
      5. A Split whose input is a Concat on the same axis with the same boundaries gives back the
         Concat's inputs: the Split's readers read them directly (the Concat stays only if something
         else reads it). Split outputs that are graph outputs keep the rewrite from happening.
      6. Every Concat that remains is recorded with the reason (its inputs come from different
         producers, so putting them side by side is a copy unless the backend writes each producer
         straight into the Concat's buffer, as TensorRT does).

    Requires: nothing. Preserves: graph inputs and outputs, topological order, every value exactly
    (only data movement is removed); a joined Slice's result carries its shape when its source's
    is known.
    """

    name: ClassVar[str] = "concat-elimination"
    needs_ops: ClassVar[frozenset[str]] = frozenset({"Concat"})

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = PassResult()
        graph_outputs = ir.output_names(graph)
        opset = ir.opset(graph)
        scope: ir.NameScope | None = None
        removed_any = False
        for node in list(graph.nodes):
            if node.op == "Split" and ir.is_onnx_op(node) and node.inputs:
                removed_any |= self._split_of_concat(graph, node, graph_outputs, opset, result,
                                                     ctx)
        for node in list(graph.nodes):
            if node.op != "Concat" or not ir.is_onnx_op(node) or not node.outputs:
                continue
            if not node.outputs[0].outputs and node.outputs[0].name not in graph_outputs:
                continue  # read by nothing any more (rule 5 bypassed it): cleanup removes it
            axis = _axis(node.attrs.get("axis", 0), node.outputs[0], *node.inputs, graph=graph)
            if axis is None:
                result.reject(node, "concat axis is negative and the output rank is unknown")
                continue
            self._flatten(graph, node, axis, graph_outputs, result, ctx)
            if scope is None:
                scope = ir.NameScope(graph)
            self._join_pieces(graph, node, axis, graph_outputs, opset, scope, result, ctx)
            if len(node.inputs) == 1:
                if not ctx.may_rewrite("remove-single-input-concat", node, result):
                    continue
                if ir.rewrite.can_bypass(node, graph_outputs):
                    ir.rewrite.bypass(node, graph_outputs)
                    result.count("removed_single_input_concat")
                    removed_any = True
                else:
                    result.reject(node, "single-input Concat writes a graph output whose name its "
                                        "input cannot take")
                continue
            result.reject(node, _why_kept(node))
        if removed_any or result.counts:
            graph.cleanup(remove_unused_node_outputs=False, remove_unused_graph_inputs=False)
        return result

    # Rule 2 --------------------------------------------------------------------------------------

    @staticmethod
    def _flatten(graph: gs.Graph, concat: gs.Node, axis: int, graph_outputs: set[str],
                 result: PassResult, ctx: PassContext) -> None:
        inputs: list[gs.Tensor] = []
        flattened = 0
        for tensor in concat.inputs:
            inner = ir.producer(tensor)
            if (inner is not None and inner.op == "Concat" and ir.is_onnx_op(inner)
                    and ir.has_single_use(tensor, graph_outputs)
                    and _axis(inner.attrs.get("axis", 0), tensor, *inner.inputs,
                              graph=graph) == axis
                    and ctx.may_rewrite("flatten-nested-concat", [concat, inner], result)):
                inputs.extend(inner.inputs)
                inner.inputs.clear()
                inner.outputs.clear()
                flattened += 1
            else:
                inputs.append(tensor)
        if flattened:
            concat.inputs.clear()
            concat.inputs.extend(inputs)
            result.count("flattened_nested_concat", flattened)

    # Rules 3 and 4 -------------------------------------------------------------------------------

    def _join_pieces(self, graph: gs.Graph, concat: gs.Node, axis: int, graph_outputs: set[str],
                     opset: int, scope: ir.NameScope, result: PassResult,
                     ctx: PassContext) -> None:
        inputs = list(concat.inputs)
        joined: list[gs.Tensor] = []
        i = 0
        changed = False
        while i < len(inputs):
            first = _piece(inputs[i], axis, graph_outputs, opset, graph)
            j = i + 1
            if first is not None:
                last = first
                while j < len(inputs):
                    nxt = _piece(inputs[j], axis, graph_outputs, opset, graph)
                    if nxt is None or not _adjacent(last, nxt):
                        break
                    last = nxt
                    j += 1
            if first is None or j - i < 2:
                joined.append(inputs[i])
                i += 1
                continue
            pieces = [_piece(t, axis, graph_outputs, opset, graph) for t in inputs[i:j]]
            producers = list({id(piece.node): piece.node for piece in pieces}.values())
            if not ctx.may_rewrite(f"join-{first.node.op.lower()}-pieces", [concat, *producers],
                                   result):
                joined.extend(inputs[i:j])
                i = j
                continue
            joined.append(self._join(graph, pieces, graph_outputs, opset, scope, result))
            changed = True
            i = j
        if changed:
            concat.inputs.clear()
            concat.inputs.extend(joined)

    @staticmethod
    def _narrow_split(graph: gs.Graph, pieces: list[_Piece], graph_outputs: set[str], opset: int,
                      scope: ir.NameScope, result: PassResult) -> gs.Tensor:
        """Join adjacent outputs of one Split into one output, by element ranges.

        The pieces cover ``[first.start, last.stop)``. The outputs whose positions lie between
        the pieces' are the pieces and zero-size outputs (Split outputs tile the axis in order),
        so the range is the run of positions from the lowest piece to the highest; a zero-size
        output in it that something else reads stays, as a zero-size output after the joined one
        (all zero-size pieces of one Split hold the same empty tensor).
        """
        first, last = pieces[0], pieces[-1]
        node = first.node
        sizes = _split_sizes(node, opset, graph)
        positions = [node.outputs.index(p.tensor) for p in pieces]
        low, high = min(positions), max(positions)
        joined = {id(p.tensor) for p in pieces}
        kept_empty = [t for t in node.outputs[low:high + 1]
                      if id(t) not in joined and (t.outputs or t.name in graph_outputs)]
        count = len(pieces)
        if low == 0 and high == len(node.outputs) - 1 and not kept_empty:
            # Every output: the Split's input itself.
            node.inputs.clear()
            node.outputs.clear()
            result.count("removed_split", 1)
            result.count("joined_split_outputs", count)
            return first.source
        merged = first.tensor
        merged_size = last.stop - first.start
        new_sizes = sizes[:low] + [merged_size] + [0] * len(kept_empty) + sizes[high + 1:]
        kept = node.outputs[:low] + [merged] + kept_empty + node.outputs[high + 1:]
        node.outputs.clear()
        node.outputs.extend(kept)
        if merged.shape is not None:
            merged.shape = list(merged.shape)
            merged.shape[first.axis] = merged_size
        _set_split_sizes(node, new_sizes, opset, scope)
        result.count("narrowed_split", 1)
        result.count("joined_split_outputs", count)
        return merged

    @staticmethod
    def _join(graph: gs.Graph, pieces: list[_Piece], graph_outputs: set[str], opset: int,
              scope: ir.NameScope, result: PassResult) -> gs.Tensor:
        """One tensor holding the adjacent ``pieces``: a narrowed Split output or a wider Slice."""
        first, last = pieces[0], pieces[-1]
        node = first.node
        if node.op == "Split":
            return ConcatElimination._narrow_split(graph, pieces, graph_outputs, opset, scope,
                                                  result)
        # Slices: one Slice over the union, or the source itself when it covers the whole axis.
        for piece in pieces:
            piece.node.outputs.clear()
        for piece in pieces[1:]:
            piece.node.inputs.clear()
        result.count("joined_slices", len(pieces))
        dim = _dim(first.source, first.axis, graph)
        if first.start == 0 and (last.stop is None or (dim is not None and last.stop >= dim)):
            first.node.inputs.clear()
            return first.source
        out = gs.Variable(scope.fresh(f"{first.tensor.name}_joined"), dtype=first.tensor.dtype,
                          shape=None if first.tensor.dtype is None else
                          _joined_shape(first.source, first.axis, first.start, last.stop))
        constant = lambda role, value: gs.Constant(  # noqa: E731 - four one-line constants
            scope.fresh(f"{first.node.name}_{role}"), np.array([value], dtype=np.int64))
        stop = _TO_END if last.stop is None else last.stop
        # The first Slice becomes the joined one: it keeps its place in the node list and reads
        # the same source, so the order stays topological.
        owner = first.node
        owner.inputs.clear()
        if opset < 10:  # Slice-1: bounds as attributes
            owner.inputs.append(first.source)
            owner.attrs.update(starts=[first.start], ends=[stop], axes=[first.axis])
        else:
            owner.inputs.extend([first.source, constant("starts", first.start),
                                 constant("ends", stop), constant("axes", first.axis)])
        owner.outputs.append(out)
        return out

    # Rule 5 --------------------------------------------------------------------------------------

    @staticmethod
    def _split_of_concat(graph: gs.Graph, split: gs.Node, graph_outputs: set[str], opset: int,
                         result: PassResult, ctx: PassContext) -> bool:
        concat = ir.producer(split.inputs[0])
        if concat is None or concat.op != "Concat" or not ir.is_onnx_op(concat):
            return False
        axis = _axis(split.attrs.get("axis", 0), split.inputs[0], *split.outputs, graph=graph)
        if axis is None or axis != _axis(concat.attrs.get("axis", 0), *concat.inputs, graph=graph):
            result.reject([concat, split], "Split and Concat use different axes")
            return False
        concat_sizes = [_dim(t, axis, graph) for t in concat.inputs]
        sizes = _split_sizes(split, opset, graph)
        if None in concat_sizes or sizes is None or sizes != concat_sizes:
            result.reject([concat, split], "Split boundaries differ from the Concat's (or are "
                                           "unknown)")
            return False
        if any(t.name in graph_outputs for t in split.outputs):
            result.reject([concat, split], "a Split output is a graph output and would be renamed")
            return False
        if not ctx.may_rewrite("remove-concat-split-pair", [concat, split], result):
            return False
        for piece, original in zip(split.outputs, concat.inputs):
            ir.replace_uses(piece, original)
        split.inputs.clear()
        split.outputs.clear()
        result.count("removed_concat_split_pair")
        return True


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


#: Ops whose first output has the same shape as their first input (``_dim`` and ``_rank`` look
#: through them).
_SAME_SHAPE = frozenset({
    "Abs", "BatchNormalization", "Cast", "Celu", "Clip", "Dropout", "Elu", "Erf", "Exp", "Gelu",
    "HardSigmoid", "HardSwish", "Identity", "InstanceNormalization", "LRN", "LeakyRelu", "Log",
    "LogSoftmax", "Mish", "Neg", "PRelu", "Reciprocal", "Relu", "Selu", "Sigmoid", "Softmax",
    "Softplus", "Softsign", "Sqrt", "Tanh", "ThresholdedRelu",
})

#: Ops whose first output has the rank of their first input (beyond ``_SAME_SHAPE``).
_SAME_RANK = frozenset({
    "AveragePool", "Concat", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "MaxPool", "Pad",
    "Resize", "Slice", "Split", "Upsample",
})

#: How many producers ``_rank`` and ``_dim`` walk back through.
_TRACE_DEPTH = 32


def _axis(axis: int, *tensors: gs.Tensor, graph: gs.Graph | None = None) -> int | None:
    """``axis`` made non-negative with the rank of the first of ``tensors`` whose rank is known
    (a Concat's or Split's inputs and outputs all share one rank; see ``_rank``)."""
    axis = int(axis)
    if axis >= 0:
        return axis
    for tensor in tensors:
        if tensor.shape is not None:
            return axis + len(tensor.shape)
    for tensor in tensors:
        rank = _rank(tensor, graph)
        if rank is not None:
            return axis + rank
    return None


def _rank(tensor: gs.Tensor, graph: gs.Graph | None) -> int | None:
    """The rank of ``tensor``: from its shape, else from the producers that keep their data
    input's rank, back to a tensor with a shape, a Transpose with a ``perm`` or a convolution
    (Conv, ConvTranspose or fused conv layer, whose functions ``graph`` holds) with constant
    weights, whose output has the weights' rank.

    Without it a negative Concat or Split axis stays unknown until shape inference has run: the
    pipeline's first run would leave a Concat another run (on the exported model, with shapes)
    removes.
    """
    for _ in range(_TRACE_DEPTH):
        if tensor.shape is not None:
            return len(tensor.shape)
        weights = _conv_weights(tensor, graph)
        if weights is not None:
            return len(weights)
        node = ir.producer(tensor)
        if node is None or not ir.is_onnx_op(node) or not node.inputs:
            return None
        if node.op == "Transpose" and node.attrs.get("perm") is not None:
            return len(node.attrs["perm"])
        if node.op not in _SAME_SHAPE and node.op not in _SAME_RANK:
            return None
        tensor = node.inputs[0]
    return None


def _dim(tensor: gs.Tensor, axis: int, graph: gs.Graph | None = None) -> int | None:
    """The static size of ``tensor`` along ``axis``: from its shape; else the channels (axis 1)
    of a convolution's output from its weights, or the sum of a Concat's inputs on that axis,
    looking through ops that keep their input's shape."""
    for _ in range(_TRACE_DEPTH):
        shape = tensor.shape
        if shape is not None:
            if axis >= len(shape) or not isinstance(shape[axis], (int, np.integer)):
                return None
            return int(shape[axis])
        if axis == 1:
            weights = _conv_weights(tensor, graph)
            if weights is not None:
                return weights[0] if ir.producer(tensor).op != "ConvTranspose" else None
        node = ir.producer(tensor)
        if node is None or not ir.is_onnx_op(node) or not node.inputs:
            return None
        if node.op == "Concat":
            if _axis(node.attrs.get("axis", 0), tensor, *node.inputs, graph=graph) != axis:
                return None
            dims = [_dim(t, axis, graph) for t in node.inputs]
            return None if None in dims else sum(dims)
        if node.op not in _SAME_SHAPE:
            return None
        tensor = node.inputs[0]
    return None


def _joined_shape(source: gs.Tensor, axis: int, start: int, stop: int | None) -> list | None:
    """The shape of ``source[start:stop]`` along ``axis`` when ``source``'s shape and the range
    are known (written down, as the shape inference of a next compile would)."""
    if source.shape is None or stop is None or axis >= len(source.shape):
        return None
    dim = source.shape[axis]
    if not isinstance(dim, (int, np.integer)) or stop > dim:
        return None
    shape = list(source.shape)
    shape[axis] = stop - start
    return shape


def _conv_weights(tensor: gs.Tensor, graph: gs.Graph | None) -> list[int] | None:
    """The shape of the constant weights of the Conv, ConvTranspose or fused conv layer (whose
    functions ``graph`` holds) that writes ``tensor``, else None."""
    node = ir.producer(tensor)
    is_conv = node is not None and (
        (ir.is_onnx_op(node) and node.op in ("Conv", "ConvTranspose"))
        or (graph is not None and ir.fused_layer.is_fused_conv(graph, node)))
    if not is_conv or len(node.inputs) < 2:
        return None
    return ir.constant_shape(node.inputs[1])


def _split_sizes(split: gs.Node, opset: int, graph: gs.Graph | None = None) -> list[int] | None:
    """The Split's output sizes along its axis (:func:`trtcompile.ir.split_sizes`), or None when
    they are not known."""
    axis = _axis(split.attrs.get("axis", 0), split.inputs[0], *split.outputs, graph=graph)
    dim = _dim(split.inputs[0], axis, graph) if axis is not None else None
    return ir.split_sizes(split, dim, opset)


def _set_split_sizes(split: gs.Node, sizes: list[int], opset: int, scope: ir.NameScope) -> None:
    """Give the Split explicit ``sizes`` in its opset's form: the ``split`` attribute before
    opset 13 (Split-2/11 take one input), the ``split`` input from 13 (without ``num_outputs``,
    which may not accompany it)."""
    split.attrs.pop("num_outputs", None)
    if opset < 13:
        split.attrs["split"] = [int(v) for v in sizes]
        return
    split.attrs.pop("split", None)
    value = gs.Constant(scope.fresh(f"{split.name}_sizes"), np.array(sizes, dtype=np.int64))
    if len(split.inputs) > 1:
        split.inputs[1] = value
    else:
        split.inputs.append(value)


def _piece(tensor: gs.Tensor, axis: int, graph_outputs: set[str], opset: int,
           graph: gs.Graph | None = None) -> _Piece | None:
    """``tensor`` as a range of another tensor along ``axis``, if it is one and only the Concat
    reads it."""
    node = ir.producer(tensor)
    if node is None or not ir.is_onnx_op(node) or not ir.has_single_use(tensor, graph_outputs):
        return None
    if node.op == "Split":
        if _axis(node.attrs.get("axis", 0), node.inputs[0], *node.outputs, graph=graph) != axis:
            return None
        sizes = _split_sizes(node, opset, graph)
        position = node.outputs.index(tensor)
        if sizes is None:
            return None
        start = sum(sizes[:position])
        return _Piece(tensor, node, node.inputs[0], axis, start, start + sizes[position])
    if node.op == "Slice" and opset < 10 and len(node.inputs) == 1 and "starts" in node.attrs:
        # Slice-1: the bounds are attributes, and there are no steps.
        starts, ends = (np.asarray(node.attrs.get(key, []), dtype=np.int64)
                        for key in ("starts", "ends"))
        axes = np.asarray(node.attrs["axes"], dtype=np.int64) if "axes" in node.attrs else None
        steps = None
        if starts.size != 1 or ends.size != 1:
            return None
    elif node.op == "Slice" and len(node.inputs) >= 3:
        values = [ir.constant_value(t) if not t.is_empty() else None for t in node.inputs[1:]]
        starts, ends = values[0], values[1]
        axes = values[2] if len(values) > 2 else None
        steps = values[3] if len(values) > 3 else None
        if starts is None or ends is None or starts.size != 1 or ends.size != 1:
            return None
        if (len(node.inputs) > 3 and not node.inputs[3].is_empty() and axes is None) or (
                len(node.inputs) > 4 and not node.inputs[4].is_empty() and steps is None):
            return None
    else:
        return None
    slice_axis = _axis(int(axes.reshape(-1)[0]) if axes is not None else 0, node.inputs[0],
                       tensor, graph=graph)
    if slice_axis != axis or (steps is not None and int(steps.reshape(-1)[0]) != 1):
        return None
    dim = _dim(node.inputs[0], axis, graph)
    start, stop = int(starts.reshape(-1)[0]), int(ends.reshape(-1)[0])
    if start < 0 or stop < 0:
        if dim is None:
            return None
        # ONNX adds the dim to a negative bound, then clamps it to [0, dim].
        start = max(0, start + dim) if start < 0 else start
        stop = max(0, stop + dim) if stop < 0 else stop
    if stop >= _TO_END or (dim is not None and stop >= dim):
        stop = None if dim is None else dim
    if dim is not None:
        start = min(start, dim)
    if stop is not None and stop <= start:
        return None
    return _Piece(tensor, node, node.inputs[0], axis, start, stop)


def _adjacent(left: _Piece, right: _Piece) -> bool:
    """True if ``right`` starts where ``left`` ends, in the same tensor, from the same kind of node
    (two outputs of one Split, or two Slices)."""
    if left.source is not right.source or left.stop is None or left.stop != right.start:
        return False
    if left.node.op == "Split":
        return right.node is left.node
    return right.node.op == "Slice"


def _why_kept(concat: gs.Node) -> str:
    producers = {id(p): p for t in concat.inputs if (p := ir.producer(t)) is not None}
    if any(ir.producer(t) is None for t in concat.inputs):
        return "concat reads graph inputs or constants: putting them side by side is a copy"
    if len(producers) == 1:
        (only,) = producers.values()
        return (f"inputs are outputs of {only.op} '{only.name}' that do not lie side by side in "
                "order on the concat axis: the Concat rearranges data")
    ops = sorted({p.op for p in producers.values()})
    return (f"concat inputs come from {len(producers)} different producers ({', '.join(ops)}): a "
            "copy is needed unless the backend writes each producer into the concat's buffer")
