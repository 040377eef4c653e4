"""transpose-cancellation: remove the NHWC/NCHW Transpose pairs that layout lowering introduces.

The pass is a package, one module per rule family: :mod:`.permutations` (the algebra and the op
kinds), :mod:`.canceller` (the worklist and rules 1, 3 and 4), :mod:`.push_through` (rule 2),
:mod:`.shape_reads` (rule 5), :mod:`.weight_fold` (rule 6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import onnx_graphsurgeon as gs

from passes.transpose_cancellation.canceller import _Canceller
from passes.transpose_cancellation.permutations import (
    BROADCAST_OPS,
    LOOKAHEAD_DEPTH,
    LOOKAHEAD_PLANS,
    PUSH_KINDS,
    REDUCE_OPS,
    SHAPE_TRACE_DEPTH,
    UNARY_OPS,
    Perm,
    compose,
    inverse,
    is_identity,
    surviving_axes_perm,
    unsqueezed_perm,
)
from trtcompile.errors import InputError
from trtcompile.pm import Pass, PassContext, PassResult


@dataclass(frozen=True)
class TransposeCancellation(Pass):
    """Cancel, compose, fold and push Transposes until the layout Transposes meet and disappear.

    Lowering an NHWC model to ONNX (whose Conv, pooling and normalization ops are NCHW) wraps every
    such op in a NHWC->NCHW Transpose before and a NCHW->NHWC Transpose after. This pass works
    through the Transposes with a worklist, pushing each one forward (toward the outputs) until it
    meets its inverse. Counts: ``cancelled_pairs``, ``composed_pairs``, ``removed_identity``,
    ``folded_into_constant``, ``pushed_through_<kind>``, ``permuted_constants``,
    ``absorbed_operand_transposes``, ``inserted_operand_transposes``,
    ``folded_into_matmul_weights``, ``remapped_shape_reads``.

    Rules (``p`` is a Transpose's permutation, ``X`` its input, ``Y`` its output):
      1. Pairs: ``Transpose(q)`` reading ``Y`` reads ``X`` with permutation ``p∘q``; the pair is
         cancelled when that is the identity, otherwise composed into one Transpose.
      2. Push-through: a consumer of ``Y`` that has a layout-independent form is rewritten to read
         ``X`` and its outputs get the Transpose instead. The kinds (option ``push_through``):
         ``unary`` (Relu, Sigmoid, Clip, Cast, ...); ``broadcast`` (Add, Mul, Sub, Div, Where, ...:
         every other operand is brought to ``X``'s layout: a Transpose with the same permutation is
         looked through, a constant is broadcast to full rank and permuted into a new constant, a
         variable of the same rank gets an inverse Transpose; a variable of lower rank is
         rejected); ``concat`` and ``split`` (axis permuted); ``slice`` (axes permuted); ``reduce``
         (ReduceMean/ReduceSum/.../ArgMax: axes permuted; without keepdims the Transpose after it
         keeps the surviving axes' order, and vanishes when that is the identity); ``pad`` (pads or
         axes permuted); ``softmax`` (axis permuted, opset >= 13); ``squeeze``/``unsqueeze`` (axes
         constant; the Transpose after it is re-derived over the new rank); ``reshape``
         (Reshape/Flatten, only when ``X``'s shape is known and the Transpose moves only size-1
         axes, so it does not reorder elements); ``normalization`` (BatchNormalization and LRN when
         ``p`` keeps the channel axis 1 in place, InstanceNormalization when it keeps axes 0 and 1);
         ``shape`` (rule 5). Conv, pooling, MatMul and every other op have a fixed layout and stop
         a Transpose.
      3. Constants: a Transpose of a constant becomes a new constant holding the permuted values.
      4. A Transpose with the identity permutation is removed.
      5. Shape: ``Shape(Y)[k] == Shape(X)[p[k]]``, so a Shape reads ``X`` when every use of the
         shape vector picks dims by constant index: readers (looked at through Cast and
         Identity) are Gather (axis 0) with constant indices or Slice (axis 0) with constant
         starts, ends and steps.
         Indices are mapped through ``p``; a Slice whose dims ``p`` reorders becomes a Gather of
         the mapped indices (``remapped_shape_reads``). A Slice of the batch dim, ``Shape(Y)[0:1]``
         as a dynamic-batch Flatten computes it, is left as it is when ``p`` keeps axis 0. A Shape
         with ``start``/``end`` needs the mapped dims to be a contiguous run. A shape vector that
         is read whole (Concat, Reshape, ConstantOfShape, ...) or is a graph output stays.
      6. Flatten into weights (option ``fold_matmul_weights``): when ``p`` keeps the batch axis
         (``p[0] == 0``) and reorders the others, ``Flatten(Y) @ W`` equals ``Flatten(X) @ W'``
         where ``W'`` is ``W`` with its rows permuted to ``X``'s flattening order. The flatten is
         ``Flatten`` with axis 1 (a negative Flatten axis is ``rank + axis``) or ``Reshape`` to ``[N, -1]`` / ``[N, C*H*W]``, ``N`` being
         ``0``, the static batch, or ``Shape(Y)[0]`` computed through Slice/Gather/Squeeze/
         Unsqueeze/Concat/Cast as tf2onnx emits it for a dynamic batch (the batch stays dynamic).
         Every reader of the flattened tensor must be a ``MatMul`` reading it as the left operand
         or a ``Gemm`` reading it as ``A`` (``transA=0``), with a constant 2-D weight of
         ``C*H*W`` rows (``Gemm transB=1``: columns); each weight becomes a new permuted constant
         (``folded_into_matmul_weights``). ``X``'s dims beyond the batch must be static, from the
         tensor shapes or, when they are missing, from ONNX shape inference run once per pass
         run. Otherwise the Transpose stays, with the reason (batch axis moved, Flatten axis or
         Reshape target not ``[N, -1]``, dims unknown, flattened tensor a graph output or read by
         another op, read on the wrong side, weight not constant or of the wrong shape).
         Backend note: TensorRT keeps convolution activations channels-last and reads an NHWC
         flatten straight into the GEMM, so for it the Transpose was free; on Keras VGG19 the
         NCHW flatten this rule leaves becomes one layout-copy layer of its own (see
         docs/benchmarks.md). The rule pays where a Transpose is a real copy (ONNX Runtime, other
         backends); ``fold-matmul-weights=false`` keeps the NHWC flatten.

    Cost model. A push is made when it does not increase the number of Transposes: the
    Transpose pushed goes away, the consumer's outputs get a Transpose each (or less, when looking
    a bounded distance further down shows it would meet its inverse or be absorbed), other operands
    with the same Transpose are absorbed, and each other variable operand gets a new inverse
    Transpose. A Transpose with several consumers is pushed into all of them only when that total
    does not grow; otherwise only into the consumers where that alone adds nothing (cancelling a
    pair, composing, absorbing operand Transposes), staying for the rest. A push that puts an
    inverse Transpose on another operand must remove at least one Transpose, and waits until the
    Transposes of the other branches have reached the consumer, so Transposes never circle around
    a node. Transposes are visited in topological order (upstream first) from a heap; each node is
    revisited when a Transpose reaches it. A kept Transpose was judged by looking ahead, so once
    the worklist is empty every Transpose kept before the last rewrite is visited again (a pair
    composed or a Transpose pushed further on can make its push pay), until a round rewrites
    nothing: the pass stops at its own fixed point. O(graph) per round; rounds are few.

    Requires: nothing (shapes, where known, enable the ``reshape`` rule and operand-rank checks;
    rule 6 infers the shapes it needs).
    Preserves: graph inputs and outputs (names, shapes, dtypes) and every output value; a
    Transpose writing a graph output keeps writing it. Only Transposes at graph inputs, at graph
    outputs, or next to fixed-layout ops stay, each with its reason. Options: ``push_through``
    (the kinds of rule 2), ``fold_constants`` (rule 3), ``fold_matmul_weights`` (rule 6).
    """

    name: ClassVar[str] = "transpose-cancellation"
    needs_ops: ClassVar[frozenset[str]] = frozenset({"Transpose"})

    push_through: tuple[str, ...] = tuple(PUSH_KINDS)
    fold_constants: bool = True
    fold_matmul_weights: bool = True

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        unknown = sorted(set(self.push_through) - set(PUSH_KINDS))
        if unknown:
            raise InputError(f"transpose-cancellation: unknown push-through kind(s) "
                             f"{', '.join(unknown)}; choose from {', '.join(PUSH_KINDS)}")
        result = PassResult()
        _Canceller(graph, self, result).run(ctx)
        return result


__all__ = ["BROADCAST_OPS", "LOOKAHEAD_DEPTH", "LOOKAHEAD_PLANS", "PUSH_KINDS", "REDUCE_OPS",
           "SHAPE_TRACE_DEPTH", "UNARY_OPS", "Perm", "TransposeCancellation", "compose", "inverse",
           "is_identity", "surviving_axes_perm", "unsqueezed_perm"]
