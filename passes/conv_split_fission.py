"""conv-split-fission: a convolution whose output is only split along the channels becomes one
convolution per piece.

The inverse of a horizontal merge. ``Split(Conv(x, W, B), axis=1)`` computes, for piece ``i``, the
convolution of ``x`` with the ``i``-th block of output channels of ``W`` and ``B``; writing it as that
convolution gives each piece its own layer, which writes its result where it is read (a Concat's
buffer) instead of TensorRT copying it out of the merged result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from passes.conv_bias_activation_fusion import conv_call_info
from trtcompile import ir
from trtcompile.pass_manager import Pass, PassContext, PassResult


@dataclass(frozen=True)
class ConvSplitFission(Pass):
    """Replace ``Split(conv, axis=1)`` by one convolution per Split output.

    Rules:
      1. The producer is a ``Conv`` with constant weights (and constant bias, if any) or a call of
         a fused conv function (``conv-bias-activation-fusion``) without a residual input; its
         only reader is one ``Split`` on axis 1 and its output is not a graph output.
      2. The Split's sizes are known: its ``split`` input or attribute is a constant, or it splits
         evenly (``num_outputs``, or as many outputs as the channels divide into).
      3. ``group`` must be 1: a grouped convolution's output channel blocks read only their own
         input channels, so a piece would not be a convolution of the whole input.
      4. Piece ``i`` is the same op (same attributes, same fused function: the activation is
         per channel) with weights ``W[o_i:o_i+n_i]`` and bias ``B[o_i:o_i+n_i]`` (zeros when the
         Conv has none), writing the Split's ``i``-th output under its own name.

    Measured on TensorRT-RTX 1.7 with a YOLOv8n-style network (C2f blocks: ``cv1`` conv, Split in
    halves, the second half read by the bottleneck and both halves by the block's Concat): the
    builder lowers such a Split to a slice copy and a slice-into-Concat copy per block, two
    layers a convolution per half does not need (see docs/benchmarks.md). Exact: every output
    channel is the same sum of products as before. Adds no MACs. Requires: nothing. Preserves:
    graph inputs and outputs, topological order. Counts: ``split_convs``, ``conv_pieces``.
    """

    name: ClassVar[str] = "conv-split-fission"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = PassResult()
        graph_outputs = ir.output_names(graph)
        replaced: dict[int, list[gs.Node]] = {}
        removed: set[int] = set()
        scope: ir.NameScope | None = None
        for node in graph.nodes:
            split = self._sole_split(node, graph_outputs, result)
            if split is None:
                continue
            parts = self._parts(graph, node, split, result)
            if parts is None:
                continue
            weights, bias, make = parts
            sizes = _split_sizes(split, weights.shape[0])
            if sizes is None:
                result.reject([node, split], "the Split's sizes are not constant")
                continue
            if not ctx.may_rewrite("split-conv", [node, split], result):
                continue
            if scope is None:
                scope = ir.NameScope(graph)
            pieces = []
            offset = 0
            x = node.inputs[0]
            for index, (size, output) in enumerate(zip(sizes, list(split.outputs))):
                w = gs.Constant(scope.fresh(f"{node.name}_weights_{index}"),
                                np.ascontiguousarray(weights[offset:offset + size]))
                b = gs.Constant(scope.fresh(f"{node.name}_bias_{index}"),
                                np.ascontiguousarray(bias[offset:offset + size]))
                pieces.append(make(scope.fresh(f"{node.name}_part{index}"), [x, w, b], output))
                offset += size
            sizes_source = ir.producer(split.inputs[1]) if len(split.inputs) > 1 else None
            split.inputs.clear()
            split.outputs.clear()
            if (sizes_source is not None and sizes_source.op == "Constant"
                    and not any(t.outputs or t.name in graph_outputs for t in sizes_source.outputs)):
                removed.add(id(sizes_source))  # the sizes fed only this Split
            node.inputs.clear()
            node.outputs.clear()
            replaced[id(node)] = pieces
            removed.add(id(split))
            result.count("split_convs")
            result.count("conv_pieces", len(pieces))
        if replaced:
            nodes: list[gs.Node] = []
            for node in graph.nodes:
                if id(node) in removed:
                    continue
                nodes.extend(replaced.get(id(node), [node]))
            graph.nodes = nodes
        return result

    @staticmethod
    def _sole_split(node: gs.Node, graph_outputs: set[str], result: PassResult) -> gs.Node | None:
        if len(node.outputs) != 1 or not (node.op == "Conv" or ir.is_fused_layer(node)):
            return None
        output = node.outputs[0]
        if not ir.has_single_use(output, graph_outputs):
            splits = [r for r in output.outputs if r.op == "Split"]
            if splits:
                result.reject([node, splits[0]], "the conv's output is read besides the Split "
                                                 "(or is a graph output): its readers need it whole")
            return None
        reader = output.outputs[0]
        if reader.op != "Split" or not ir.is_onnx_op(reader) or reader.inputs[0] is not output:
            return None
        axis = int(reader.attrs.get("axis", 0))
        if axis < 0:
            weights = ir.constant_value(node.inputs[1]) if len(node.inputs) > 1 else None
            rank = (len(output.shape) if output.shape is not None
                    else weights.ndim if weights is not None else None)  # conv output rank
            axis = axis + rank if rank is not None else axis
        if axis != 1:
            result.reject([node, reader], f"the Split is on axis {axis}, not the channels")
            return None
        return reader

    @staticmethod
    def _parts(graph: gs.Graph, node: gs.Node, split: gs.Node, result: PassResult):
        """(W, B, make piece) for a splittable conv, or None with the rejection recorded."""
        if node.op == "Conv" and ir.is_onnx_op(node):
            weights = ir.constant_value(node.inputs[1]) if len(node.inputs) > 1 else None
            if weights is None:
                result.reject([node, split], "weights are not constant")
                return None
            has_bias = len(node.inputs) > 2 and not node.inputs[2].is_empty()
            bias = ir.constant_value(node.inputs[2]) if has_bias else np.zeros(
                weights.shape[0], weights.dtype)
            if bias is None:
                result.reject([node, split], "conv bias is not constant")
                return None
            group = int(node.attrs.get("group", 1))
            attrs = dict(node.attrs)

            def make(name, inputs, output):
                return gs.Node("Conv", name=name, attrs=dict(attrs), inputs=inputs, outputs=[output])
        else:
            info = conv_call_info(graph, node)
            if info is None:
                return None
            if info.residual is not None:
                result.reject([node, split], "the fused conv adds a residual input, which would "
                                             "need splitting too")
                return None
            weights, bias, group = info.weights.values, info.bias.values, info.attrs["group"]

            def make(name, inputs, output):
                return ir.call(info.function, name, inputs, [output])
        if group != 1:
            result.reject([node, split], f"grouped convolution (group={group}): a block of its "
                                         "output channels reads only its own input channels")
            return None
        return weights, np.asarray(bias).reshape(-1), make


def _split_sizes(split: gs.Node, channels: int) -> list[int] | None:
    """The channel count of each Split output, or None when not known at compile time."""
    count = len(split.outputs)
    if len(split.inputs) > 1 and not split.inputs[1].is_empty():
        sizes = ir.constant_value(split.inputs[1])
        if sizes is None:
            return None
        sizes = [int(v) for v in np.asarray(sizes).reshape(-1)]
    elif "split" in split.attrs:
        sizes = [int(v) for v in split.attrs["split"]]
    else:
        if channels % count:
            return None  # opset 18's uneven num_outputs split: left alone
        sizes = [channels // count] * count
    if len(sizes) != count or sum(sizes) != channels or min(sizes) <= 0:
        return None
    return sizes


__all__ = ["ConvSplitFission"]
