"""Permutation algebra and the vocabulary of transpose-cancellation's rules.

A Transpose with permutation ``p`` has ``out.shape[i] == in.shape[p[i]]``: output axis ``i`` is
input axis ``p[i]``. This module holds the algebra of such permutations, the op kinds the pass
pushes Transposes through, what a push plans (:class:`_Plan`) and the axis helpers every rule
family uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import onnx_graphsurgeon as gs

from trtcompile import ir

Perm = tuple[int, ...]


#: Elementwise ops of one tensor input (later inputs, e.g. Clip's bounds, are scalars or types).
UNARY_OPS = frozenset({
    "Abs", "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "BitwiseNot", "Cast", "CastLike",
    "Ceil", "Celu", "Clip", "Cos", "Cosh", "Elu", "Erf", "Exp", "Floor", "Gelu", "HardSigmoid",
    "HardSwish", "Identity", "IsInf", "IsNaN", "LeakyRelu", "Log", "Mish", "Neg", "Not",
    "Reciprocal", "Relu", "Round", "Selu", "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Softplus",
    "Softsign", "Sqrt", "Tan", "Tanh", "ThresholdedRelu",
})


#: Elementwise ops whose inputs broadcast against each other (numpy rules; PRelu one-way).
BROADCAST_OPS = frozenset({
    "Add", "And", "BitShift", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "Div", "Equal", "Greater",
    "GreaterOrEqual", "Less", "LessOrEqual", "Max", "Mean", "Min", "Mod", "Mul", "Or", "Pow",
    "PRelu", "Sub", "Sum", "Where", "Xor",
})


REDUCE_OPS = frozenset({
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
    "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare",
})


#: Op kinds the ``push_through`` option names, and the ops of each.
PUSH_KINDS: dict[str, frozenset[str]] = {
    "unary": UNARY_OPS,
    "broadcast": BROADCAST_OPS,
    "concat": frozenset({"Concat"}),
    "split": frozenset({"Split"}),
    "slice": frozenset({"Slice"}),
    "reduce": REDUCE_OPS | {"ArgMax", "ArgMin"},
    "pad": frozenset({"Pad"}),
    "softmax": frozenset({"Softmax", "LogSoftmax", "Hardmax"}),
    "squeeze": frozenset({"Squeeze"}),
    "unsqueeze": frozenset({"Unsqueeze"}),
    "reshape": frozenset({"Reshape", "Flatten"}),
    "normalization": frozenset({"BatchNormalization", "InstanceNormalization", "LRN"}),
    "shape": frozenset({"Shape"}),
}


_KIND_OF_OP = {op: kind for kind, ops in PUSH_KINDS.items() for op in ops}


#: How far (ops) and how widely (consumer plans) the cost of a Transpose left after a pushed-through
#: op is estimated by looking further down; bounded so each visit stays O(1).
LOOKAHEAD_DEPTH = 8


LOOKAHEAD_PLANS = 64


#: How many ops deep a Reshape target or a Shape's readers are followed (shape arithmetic is short).
SHAPE_TRACE_DEPTH = 16


#: Ops whose first output has the rank of their first input (beyond the elementwise ones).
_RANK_PRESERVING = frozenset({
    "AveragePool", "BatchNormalization", "Concat", "Conv", "ConvTranspose", "Dropout",
    "GlobalAveragePool", "GlobalMaxPool", "InstanceNormalization", "LRN", "LayerNormalization",
    "LogSoftmax", "LpNormalization", "MaxPool", "Pad", "Resize", "Slice", "Softmax", "Split",
    "Tile",
})


def is_identity(perm: Sequence[int]) -> bool:
    """True if ``perm`` leaves every axis in place."""
    return tuple(perm) == tuple(range(len(perm)))


def inverse(perm: Sequence[int]) -> Perm:
    """The permutation that undoes ``perm``."""
    undo = [0] * len(perm)
    for i, axis in enumerate(perm):
        undo[axis] = i
    return tuple(undo)


def compose(first: Sequence[int], second: Sequence[int]) -> Perm:
    """Permutation of ``Transpose(second)(Transpose(first)(x))`` as one Transpose of ``x``."""
    return tuple(first[axis] for axis in second)


def surviving_axes_perm(perm: Sequence[int], removed: set[int]) -> Perm:
    """Permutation left over when the axes ``removed`` (of the transposed tensor) are dropped.

    Dropping axes ``removed`` of ``Transpose(perm)(x)`` equals dropping axes ``perm[removed]`` of
    ``x`` and then transposing the surviving axes with the returned permutation.
    """
    kept_input_axes = [perm[i] for i in range(len(perm)) if i not in removed]
    order = {axis: position for position, axis in enumerate(sorted(kept_input_axes))}
    return tuple(order[axis] for axis in kept_input_axes)


def unsqueezed_perm(perm: Sequence[int], inserted: set[int]) -> Perm:
    """Permutation after inserting size-1 axes at output positions ``inserted`` on both sides.

    ``Unsqueeze(inserted)(Transpose(perm)(x))`` equals
    ``Transpose(result)(Unsqueeze(inserted)(x))``: new axes stay where they are.
    """
    rank = len(perm) + len(inserted)
    positions = [j for j in range(rank) if j not in inserted]
    result = list(range(rank))
    for i, j in enumerate(positions):
        result[j] = positions[perm[i]]
    return tuple(result)


# --------------------------------------------------------------------------------------------
# Plans: how a consumer is rewritten when a Transpose is pushed into it
# --------------------------------------------------------------------------------------------


@dataclass
class _Operand:
    """How one layout-carrying input of a consumer is brought into the untransposed layout."""

    index: int
    action: str  # "source" | "keep" | "constant" | "insert"
    #: The replacement ("source"), or the tensor to transpose ("insert", "constant").
    tensor: gs.Tensor | None = None
    through: gs.Node | None = None  # a same-permutation Transpose looked through ("source")
    absorbed: bool = False  # ... which this rewrite leaves without readers


@dataclass
class _Plan:
    """A consumer's rewrite for one transposed input: operands, side changes, output layouts."""

    kind: str
    operands: list[_Operand] = field(default_factory=list)
    #: Per output: the permutation of the Transpose that restores it (None: nothing to restore).
    output_perms: list[Perm | None] = field(default_factory=list)
    #: Attribute and auxiliary-input changes, applied with the plan.
    update: Callable[[], None] | None = None
    #: Change in the number of Transposes if applied, not counting the Transpose being pushed.
    delta: int = 0
    #: The count recorded when the plan is applied (None: ``pushed_through_<kind>``; "": none).
    counted: str | None = None


class _Rejected(Exception):
    """A consumer the Transpose cannot be pushed into, and why."""


def _inserts(plan: _Plan) -> bool:
    """True if the plan puts a new Transpose on another operand of the consumer."""
    return any(operand.action == "insert" for operand in plan.operands)


def _pays_alone(plan: _Plan) -> bool:
    """True if pushing into this one consumer, with the Transpose staying, adds no Transpose.

    A push that puts an inverse Transpose on another operand must remove one strictly: moving a
    Transpose onto a sibling operand at no gain could move it back again, forever.
    """
    return plan.delta < 0 or (plan.delta == 0 and not _inserts(plan))


def _unique(nodes: Sequence[gs.Node]) -> list[gs.Node]:
    seen: dict[int, gs.Node] = {}
    for node in nodes:
        seen.setdefault(id(node), node)
    return list(seen.values())


def _axis(axis: int, rank: int) -> int:
    axis = int(axis)
    if not -rank <= axis < rank:
        raise _Rejected(f"axis {axis} is out of range for rank {rank}")
    return axis % rank


def _flatten_axis(axis: int, rank: int) -> int:
    """Flatten's ``axis`` made non-negative: its range is ``[-rank, rank]`` and a negative axis
    counts from the rank (``rank + axis``), unlike the other ops' ``[-rank, rank)``."""
    axis = int(axis)
    if not -rank <= axis <= rank:
        raise _Rejected(f"Flatten axis {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def _optional_input(node: gs.Node, index: int) -> gs.Tensor | None:
    if len(node.inputs) > index and node.inputs[index].name:
        return node.inputs[index]
    return None


def _permute_pads(pads: list[int], perm: Perm) -> list[int]:
    """Pads of ``Transpose(perm)(x)`` rewritten as pads of ``x``."""
    rank = len(perm)
    new = [0] * (2 * rank)
    for i, axis in enumerate(perm):
        new[axis] = int(pads[i])
        new[rank + axis] = int(pads[rank + i])
    return new


#: A shape-vector item that is the batch dim (dim 0) of the transposed tensor (rule 6).
_BATCH = "N"


def _clamp(index: int, rank: int) -> int:
    """``Shape``'s start/end: negative counts from the end, then clamped to ``[0, rank]``."""
    index = int(index)
    return min(max(index + rank if index < 0 else index, 0), rank)


def _slice_indices(node: gs.Node, length: int) -> list[int] | None:
    """The positions a Slice (opset >= 10) picks from a 1-D tensor of ``length``; None unless
    starts, ends, axes and steps are constant, one each, on axis 0, with a non-zero step."""
    if "starts" in node.attrs:
        return None
    bounds = []
    for index in (1, 2, 3, 4):
        tensor = _optional_input(node, index)
        if tensor is None:
            bounds.append(None)
            continue
        values = ir.constant_value(tensor)
        if values is None or values.dtype.kind not in "iu" or values.size != 1:
            return None
        bounds.append(int(values.reshape(-1)[0]))
    start, end, axis, step = bounds
    if start is None or end is None or (axis is not None and axis not in (0, -1)) or step == 0:
        return None
    # ONNX clamps out-of-range bounds the way Python slicing does.
    return list(range(length))[slice(start, end, 1 if step is None else step)]


def _permuted_shape(shape, perm: Perm):
    """Shape of ``Transpose(perm)`` applied to a tensor of ``shape`` (None when unknown)."""
    if shape is None or len(shape) != len(perm):
        return None
    return [shape[axis] for axis in perm]
