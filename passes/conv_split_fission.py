"""conv-split-fission: a convolution whose output is only split along the channels becomes one
convolution per piece.

The inverse of a horizontal merge. ``Split(Conv(x, W, B), axis=1)`` computes, for piece ``i``, the
convolution of ``x`` with the ``i``-th block of output channels of ``W`` and ``B``; writing it as that
convolution gives each piece its own layer, which writes its result where it is read (a Concat's
buffer) instead of TensorRT copying it out of the merged result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from trtcompile import ir
from trtcompile.ir.fused_layer import conv_call_info
from trtcompile.ir.rewrite import Match, Reject, RewriteRule, Scope, apply_rule
from trtcompile.pm import Pass, PassContext, PassResult


@dataclass
class _SplitConv(Match):
    """A convolution (the anchor) and the channel Split that is its only reader: the weights and
    bias to cut, how to make one piece, and (after the check) the pieces' sizes."""

    weights: np.ndarray | None = None
    bias: np.ndarray | None = None
    make: Callable[[str, list[gs.Tensor], gs.Tensor], gs.Node] | None = None
    sizes: list[int] | None = None


@dataclass(frozen=True)
class ConvSplitFission(Pass, RewriteRule):
    """Replace ``Split(conv, axis=1)`` by one convolution per Split output.

    Rules:
      1. The producer is a ``Conv`` with constant weights (and constant bias, if any) or a call of
         a fused conv function (``conv-bias-activation-fusion``) without a residual input; its
         only reader is one ``Split`` on axis 1 and its output is not a graph output.
      2. The Split's sizes are known and positive: its ``split`` input or attribute is a constant,
         or it splits by its output count (equal pieces before opset 18; from 18, ``num_outputs``
         pieces of ``ceil(C / n)`` channels with a smaller last one).
      3. ``group`` must be 1: a grouped convolution's output channel blocks read only their own
         input channels, so a piece would not be a convolution of the whole input.
      4. Piece ``i`` is the same op (same attributes, same fused function: the activation is
         per channel) with weights ``W[o_i:o_i+n_i]`` and bias ``B[o_i:o_i+n_i]`` (zeros when the
         Conv has none), writing the Split's ``i``-th output under its own name. A Split output
         nothing reads (nor a graph output) gets no piece: the pass leaves no dead node.

    Measured on TensorRT-RTX 1.7 with a YOLOv8n-style network (C2f blocks: ``cv1`` conv, Split in
    halves, the second half read by the bottleneck and both halves by the block's Concat): the
    builder lowers such a Split to a slice copy and a slice-into-Concat copy per block, two
    layers a convolution per half does not need (see docs/benchmarks.md). Exact: every output
    channel is the same sum of products as before. Adds no MACs. Requires: nothing. Preserves:
    graph inputs and outputs, topological order. Counts: ``split_convs``, ``conv_pieces``.
    """

    name: ClassVar[str] = "conv-split-fission"
    needs_ops: ClassVar[frozenset[str]] = frozenset({"Split"})

    rule: ClassVar[str] = "split-conv"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        return apply_rule(self, graph, ctx, PassResult(), who=self.name)

    def match(self, node: gs.Node, scope: Scope) -> _SplitConv | Reject | None:
        split = self._sole_split(node, scope.outputs)
        if not isinstance(split, gs.Node):
            return split
        parts = self._parts(scope.graph, node, split)
        if not isinstance(parts, tuple):
            return parts
        weights, bias, make = parts
        return _SplitConv([node, split], node, "", weights, bias, make)

    def check(self, match: _SplitConv, scope: Scope) -> str | None:
        sizes = ir.split_sizes(match.nodes[1], match.weights.shape[0], ir.opset(scope.graph))
        if sizes is None or min(sizes) <= 0:  # (a convolution of no output channels is no piece)
            return "the Split's sizes are not constant"
        match.sizes = sizes
        return None

    def rewrite(self, match: _SplitConv, scope: Scope) -> list[gs.Node]:
        node, split = match.nodes
        names = scope.names
        pieces = []
        offset = 0
        x = node.inputs[0]
        for index, (size, output) in enumerate(zip(match.sizes, list(split.outputs))):
            if not scope.is_read(output):  # a piece nothing reads would be a dead node
                offset += size
                continue
            w = gs.Constant(names.fresh(f"{node.name}_weights_{index}"),
                            np.ascontiguousarray(match.weights[offset:offset + size]))
            b = gs.Constant(names.fresh(f"{node.name}_bias_{index}"),
                            np.ascontiguousarray(match.bias[offset:offset + size]))
            pieces.append(match.make(names.fresh(f"{node.name}_part{index}"), [x, w, b], output))
            offset += size
        for replaced in (split, node):
            replaced.inputs.clear()
            replaced.outputs.clear()
        scope.count("split_convs")
        scope.count("conv_pieces", len(pieces))
        return pieces

    @staticmethod
    def _sole_split(node: gs.Node, graph_outputs: set[str]) -> gs.Node | Reject | None:
        """The channel Split that is the conv's only reader (rule 1), why there is none, or None."""
        if len(node.outputs) != 1 or not (node.op == "Conv" or ir.is_fused_layer(node)):
            return None
        output = node.outputs[0]
        if not ir.has_single_use(output, graph_outputs):
            splits = [r for r in output.outputs if r.op == "Split"]
            if splits:
                return Reject([node, splits[0]], "the conv's output is read besides the Split "
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
            return Reject([node, reader], f"the Split is on axis {axis}, not the channels")
        return reader

    @staticmethod
    def _parts(graph: gs.Graph, node: gs.Node, split: gs.Node):
        """(W, B, make piece) for a splittable conv, why it is not one, or None."""
        if node.op == "Conv" and ir.is_onnx_op(node):
            weights = ir.constant_value(node.inputs[1]) if len(node.inputs) > 1 else None
            if weights is None:
                return Reject([node, split], "weights are not constant")
            has_bias = len(node.inputs) > 2 and not node.inputs[2].is_empty()
            bias = ir.constant_value(node.inputs[2]) if has_bias else np.zeros(
                weights.shape[0], weights.dtype)
            if bias is None:
                return Reject([node, split], "conv bias is not constant")
            group = int(node.attrs.get("group", 1))
            attrs = dict(node.attrs)

            def make(name, inputs, output):
                return gs.Node("Conv", name=name, attrs=dict(attrs), inputs=inputs, outputs=[output])
        else:
            info = conv_call_info(graph, node)
            if info is None:
                return None
            if info.residual is not None:
                return Reject([node, split], "the fused conv adds a residual input, which would "
                                             "need splitting too")
            weights, bias, group = info.weights.values, info.bias.values, info.attrs["group"]

            def make(name, inputs, output):
                return ir.call(info.function, name, inputs, [output])
        if group != 1:
            return Reject([node, split], f"grouped convolution (group={group}): a block of its "
                                         "output channels reads only its own input channels")
        return weights, np.asarray(bias).reshape(-1), make


__all__ = ["ConvSplitFission"]
