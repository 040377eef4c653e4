"""transpose-cancellation: remove the NHWC/NCHW Transpose pairs that layout lowering introduces."""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from trtcompile import ir
from trtcompile.pass_manager import Pass, PassContext, PassResult

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
    revisited only when a Transpose reaches it: O(graph) overall.

    Requires: nothing (shapes, where known, enable the ``reshape`` rule and operand-rank checks;
    rule 6 infers the shapes it needs).
    Preserves: graph inputs and outputs (names, shapes, dtypes) and every output value; a
    Transpose writing a graph output keeps writing it. Only Transposes at graph inputs, at graph
    outputs, or next to fixed-layout ops stay, each with its reason. Options: ``push_through``
    (the kinds of rule 2), ``fold_constants`` (rule 3), ``fold_matmul_weights`` (rule 6).
    """

    name: ClassVar[str] = "transpose-cancellation"

    push_through: tuple[str, ...] = tuple(PUSH_KINDS)
    fold_constants: bool = True
    fold_matmul_weights: bool = True

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        unknown = sorted(set(self.push_through) - set(PUSH_KINDS))
        if unknown:
            from trtcompile.errors import InputError

            raise InputError(f"transpose-cancellation: unknown push-through kind(s) "
                             f"{', '.join(unknown)}; choose from {', '.join(PUSH_KINDS)}")
        result = PassResult()
        _Canceller(graph, self, result).run(ctx)
        return result


# --------------------------------------------------------------------------------------------
# Permutation algebra. A Transpose with permutation p has out.shape[i] == in.shape[p[i]]: output
# axis i is input axis p[i].
# --------------------------------------------------------------------------------------------


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
# The rewrite
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


class _Canceller:
    """One run of the pass over one graph."""

    def __init__(self, graph: gs.Graph, options: TransposeCancellation, result: PassResult):
        self.graph = graph
        self.result = result
        self.fold_constants = options.fold_constants
        self.fold_matmul_weights = options.fold_matmul_weights
        self.enabled_ops = frozenset().union(*(PUSH_KINDS[k] for k in options.push_through))
        self.opset = ir.opset(graph)
        self.graph_outputs = ir.output_names(graph)
        self.graph_inputs = {t.name for t in graph.inputs}
        self.names = ir.NameScope(graph)
        # The worklist is a heap keyed by position in the (topologically sorted) node list, so
        # Transposes are visited upstream first: a Transpose reaching a Concat or Add finds the
        # Transposes of the other branches already there. ``position`` keys every node: an
        # original node by its index, a new Transpose by the op it was placed next to.
        self.worklist: list[tuple[tuple[int, int, int], int, gs.Node]] = []
        self.queued: dict[int, tuple[int, int, int]] = {}
        self.position: dict[int, tuple[int, int, int]] = {
            id(node): (index, 0, 0) for index, node in enumerate(graph.nodes)}
        self.tiebreak = itertools.count(1)
        self.removed: set[int] = set()
        self.reasons: dict[int, tuple[tuple[gs.Node, ...], str]] = {}
        # New nodes, placed next to an existing node so the order stays topological without a
        # sort: output Transposes right after the op they follow, operand Transposes right before
        # the op that reads them, Identities where the node they replace was.
        self.placed_before: dict[int, list[gs.Node]] = {}
        self.placed_after: dict[int, list[gs.Node]] = {}
        # Keyed by id() and holding the tensor, so an id is never reused while its entry lives.
        self.rank_memo: dict[int, tuple[gs.Tensor, int | None]] = {}
        self.perms: dict[int, Perm] = {}
        self.lookahead_budget = LOOKAHEAD_PLANS
        self.waited: set[int] = set()
        self.permuted: dict[tuple[int, Perm], tuple[gs.Tensor, gs.Constant]] = {}
        self.pinned: set[int] = set()  # Transposes added on operands (see visit)
        self.row_permuted: dict[tuple, tuple[gs.Tensor, gs.Constant]] = {}
        # Shapes ONNX shape inference gives tensors that have none, by name (rule 6). A pass
        # never changes a named tensor's values, so a name keeps its shape through the run.
        self.inferred: dict[str, list] = {}

    # Driver ------------------------------------------------------------------------------------

    def run(self, ctx: PassContext) -> None:
        self.ctx = ctx  # every rewrite asks it first (ctx.may_rewrite)
        if self.fold_matmul_weights and self.needs_shape_inference():
            self.inferred = _inferred_dims(self.graph, ctx)
        for node in self.graph.nodes:
            if node.op == "Transpose" and not node.domain:
                self.enqueue(node)
        # Every step removes a Transpose or moves one closer to the outputs; the bound only guards
        # against a bug turning into a hang.
        budget = 16 * (len(self.graph.nodes) + 16)
        while self.worklist and budget > 0:
            key, _, transpose = heapq.heappop(self.worklist)
            if self.queued.get(id(transpose)) != key:
                continue  # re-queued under another key since
            budget -= 1
            del self.queued[id(transpose)]
            if id(transpose) not in self.removed:
                self.visit(transpose)
        if self.worklist and budget <= 0:
            ctx.log("warning: transpose-cancellation stopped early (visit budget exhausted); the "
                    "graph is correct but may keep Transposes it could remove")
            self.result.count("stopped_early")
        self.finish()

    def finish(self) -> None:
        if self.removed or self.placed_before or self.placed_after:
            ordered: list[gs.Node] = []
            for node in self.graph.nodes:
                self._emit(node, ordered)
            self.graph.nodes = ordered
        for node in self.graph.nodes:
            entry = self.reasons.get(id(node))
            if node.op == "Transpose" and entry is not None:
                self.result.reject(entry[0], entry[1])

    def enqueue(self, node: gs.Node | None, key: tuple[int, int, int] | None = None) -> None:
        """Queue a Transpose for a visit, at its own position unless ``key`` is given."""
        if node is None or node.op != "Transpose" or node.domain or id(node) in self.removed:
            return
        if key is None:
            key = self.position[id(node)]
        if id(node) in self.queued and self.queued[id(node)] <= key:
            return
        self.queued[id(node)] = key
        heapq.heappush(self.worklist, (key, next(self.tiebreak), node))

    def enqueue_producer(self, tensor: gs.Tensor) -> None:
        self.enqueue(ir.producer(tensor))

    # One Transpose -----------------------------------------------------------------------------

    def visit(self, transpose: gs.Node) -> None:
        self.reasons.pop(id(transpose), None)
        source, output = transpose.inputs[0], transpose.outputs[0]
        perm = self.perm_of(transpose)
        if perm is None:
            self.reasons[id(transpose)] = ((transpose,), "transpose has no perm and its input rank "
                                                         "is unknown")
            return
        if is_identity(perm):
            if self.ctx.may_rewrite("remove-identity-transpose", transpose, self.result):
                self.bypass(transpose, output, source)
                self.result.count("removed_identity")
            return
        if self.fold_constants and ir.constant_value(source) is not None:
            self.fold_constant(transpose, perm)
            return
        consumers = _unique(output.outputs)
        output_is_graph_output = output.name in self.graph_outputs
        if not consumers and not output_is_graph_output:
            if self.ctx.may_rewrite("remove-unread-transpose", transpose, self.result):
                self.remove(transpose)
            return

        plans: list[tuple[gs.Node, _Plan | None, str]] = []
        for consumer in consumers:
            try:
                plans.append((consumer, self.plan(consumer, output, source, perm), ""))
            except _Rejected as rejection:
                plans.append((consumer, None, str(rejection)))
        if id(transpose) in self.pinned:
            # An inverse put on an operand exists to meet a Transpose arriving from upstream;
            # pushing it on through the op it was made for would undo the push that made it.
            plans = [(consumer, plan, reason) if plan is None or plan.kind == "transpose" else
                     (consumer, None, "transpose added on an operand of this op waits for its "
                                      "inverse from upstream") for consumer, plan, reason in plans]

        if self.should_wait(transpose, plans):
            return
        if not output_is_graph_output and all(plan is not None for _, plan, _ in plans):
            added = sum(plan.delta for _, plan, _ in plans) - 1
            inserts = any(_inserts(plan) for _, plan, _ in plans)
            if added < 0 or (added == 0 and not inserts):
                for consumer, _, _ in plans:
                    self.push_into(transpose, consumer, strict=False)
                if not output.outputs:
                    self.remove(transpose)
                    return
                # A re-plan failed after an earlier push changed the neighbourhood: keep it.
                reason_nodes, reason = (transpose,), ("a consumer could not be rewritten after "
                                                      "the push into another one")
            elif added == 0:
                reason_nodes, reason = (transpose,), ("pushing would only move the transpose onto "
                                                      "another operand")
            else:
                reason_nodes, reason = (transpose,), f"pushing would add {added} transpose" + (
                    "s" if added > 1 else "")
        elif output_is_graph_output:
            reason_nodes, reason = (transpose,), "transpose output is a graph output"
        else:
            consumer, _, reason = next(item for item in plans if item[1] is None)
            reason_nodes = (transpose, consumer)

        # Push into the consumers where that alone does not add a Transpose; keep the rest.
        for consumer, plan, _ in plans:
            if plan is not None and _pays_alone(plan):
                self.push_into(transpose, consumer, strict=True)
        if not output.outputs and not output_is_graph_output:
            self.remove(transpose)
        else:
            self.reasons[id(transpose)] = (reason_nodes, reason)

    def should_wait(self, transpose: gs.Node,
                    plans: list[tuple[gs.Node, _Plan | None, str]]) -> bool:
        """Re-queue the Transpose once if a push would add a Transpose on another operand.

        That operand's own Transpose may still be on its way (through the other branch into a
        Concat or Add); the Transpose comes back just before that consumer's position, when
        everything upstream of it has been visited, and is then absorbed instead of being met by a
        new inverse.
        """
        if id(transpose) in self.waited:
            return False
        waiting_at = [self.position[id(consumer)][0] for consumer, plan, _ in plans
                      if plan is not None and id(consumer) in self.position and _inserts(plan)]
        if not waiting_at:
            return False
        key = (max(waiting_at), -2, 0)
        if key <= self.position[id(transpose)]:
            return False
        self.waited.add(id(transpose))
        self.enqueue(transpose, key)
        return True

    def push_into(self, transpose: gs.Node, consumer: gs.Node, strict: bool) -> None:
        """Re-plan (earlier pushes may have changed the neighbourhood) and apply one consumer.

        With ``strict``, only if the rewrite alone does not add a Transpose.
        """
        # Re-read the Transpose: an earlier cancellation may have renamed its input to a graph
        # output it now writes.
        source, output = transpose.inputs[0], transpose.outputs[0]
        perm = self.perm_of(transpose)
        if id(consumer) in self.removed or not any(reader is consumer for reader in output.outputs):
            return
        try:
            plan = self.plan(consumer, output, source, perm)
        except _Rejected:
            return
        if strict and not _pays_alone(plan):
            return
        rule = "transpose-pair" if plan.kind == "transpose" else f"push-through-{plan.kind}"
        if not self.ctx.may_rewrite(rule, [transpose, consumer], self.result):
            return
        if plan.kind == "transpose":
            self.apply_pair(consumer, source, perm)
        else:
            self.apply_push(consumer, output, source, perm, plan)

    # Rule 1: pairs -----------------------------------------------------------------------------

    def apply_pair(self, consumer: gs.Node, source: gs.Tensor, perm: Perm) -> None:
        combined = compose(perm, self.perm_of(consumer))
        if is_identity(combined):
            self.bypass(consumer, consumer.outputs[0], source)
            self.result.count("cancelled_pairs")
        else:
            consumer.inputs[0] = source
            consumer.attrs["perm"] = list(combined)
            self.perms[id(consumer)] = combined
            self.result.count("composed_pairs")
            self.enqueue(consumer)
            self.enqueue_producer(source)

    # Rule 3: constants -------------------------------------------------------------------------

    def fold_constant(self, transpose: gs.Node, perm: Perm) -> None:
        output = transpose.outputs[0]
        if output.name in self.graph_outputs:
            self.reasons[id(transpose)] = ((transpose,), "transpose of a constant writes a graph "
                                                         "output")
            return
        if not self.ctx.may_rewrite("fold-transpose-into-constant", transpose, self.result):
            return
        values = np.transpose(ir.constant_value(transpose.inputs[0]), perm)
        folded = gs.Constant(self.names.fresh(output.name), np.ascontiguousarray(values))
        ir.replace_uses(output, folded)
        self.remove(transpose)
        self.result.count("folded_into_constant")

    # Rule 2: push-through ----------------------------------------------------------------------

    def plan(self, consumer: gs.Node, output: gs.Tensor, source: gs.Tensor | None, perm: Perm,
             depth: int = 0) -> _Plan:
        """How ``consumer`` would read ``source`` instead of ``output`` (``Transpose(perm)(source)``).

        ``source`` is None when looking ahead at a Transpose that does not exist yet. Raises
        _Rejected with the reason when it cannot.
        """
        if depth == 0:
            self.lookahead_budget = LOOKAHEAD_PLANS
        op = consumer.op
        if id(consumer) not in self.position:
            # Subgraph bodies read outer tensors directly; new nodes could not be placed there.
            raise _Rejected(f"transpose feeds {op} inside a subgraph")
        if not ir.is_onnx_op(consumer):
            raise _Rejected(f"transpose feeds {consumer.domain}.{op}: no push-through rule")
        if op == "Transpose":
            second = self.perm_of(consumer)
            if second is None or len(second) != len(perm):
                raise _Rejected("transpose feeds a Transpose of unknown or different rank")
            return _Plan(kind="transpose", delta=-1 if is_identity(compose(perm, second)) else 0)
        kind = _KIND_OF_OP.get(op)
        if kind is None:
            raise _Rejected(f"transpose feeds {op}: {op} has a fixed layout")
        if op not in self.enabled_ops:
            raise _Rejected(f"transpose feeds {op}: pushing through {kind} ops is disabled")
        rank = len(perm)
        plan = _Plan(kind=kind)
        builder = getattr(self, f"_plan_{kind}")
        builder(consumer, output, source, perm, rank, plan)
        self._cost(consumer, plan, depth)
        return plan

    def _cost(self, consumer: gs.Node, plan: _Plan, depth: int) -> None:
        added = sum(1 for operand in plan.operands if operand.action == "insert")
        absorbed = {id(o.through) for o in plan.operands if o.absorbed}
        restored = 0
        for tensor, out_perm in zip(consumer.outputs, plan.output_perms):
            if out_perm is not None and not is_identity(out_perm) and self.is_read(tensor):
                restored += self.restore_cost(tensor, out_perm, depth + 1)
        plan.delta = added + restored - len(absorbed)

    def restore_cost(self, tensor: gs.Tensor, perm: Perm, depth: int) -> int:
        """Net Transposes a new ``Transpose(perm)`` writing ``tensor`` ends up costing.

        1 if it has to stay; less if pushing it on into every reader of ``tensor`` would pay off
        (its inverse waits there, or the push lets other Transposes go), looking ahead a bounded
        number of ops. This is what lets a Transpose through a Split, or through one input of a
        Concat whose other inputs are not transposed yet, toward inverses further on.
        """
        if tensor.name in self.graph_outputs or depth > LOOKAHEAD_DEPTH:
            return 1
        total = 0
        for reader in _unique(tensor.outputs):
            if self.lookahead_budget <= 0:
                return 1
            self.lookahead_budget -= 1
            try:
                total += self.plan(reader, tensor, None, perm, depth).delta
            except _Rejected:
                return 1
        return min(1, total)

    def is_read(self, tensor: gs.Tensor) -> bool:
        return bool(tensor.outputs) or tensor.name in self.graph_outputs

    def _layout_operand(self, consumer: gs.Node, index: int, output: gs.Tensor,
                        source: gs.Tensor, perm: Perm) -> _Operand:
        """Bring input ``index`` of ``consumer`` into the untransposed layout."""
        tensor = consumer.inputs[index]
        if tensor is output:
            return _Operand(index, "source", tensor=source)
        rank = len(perm)
        producer = ir.producer(tensor)
        if (producer is not None and producer.op == "Transpose" and not producer.domain
                and id(producer) not in self.removed and self.perm_of(producer) == perm):
            absorbed = tensor.name not in self.graph_outputs and all(
                reader is consumer for reader in tensor.outputs)
            return _Operand(index, "source", tensor=producer.inputs[0], through=producer,
                            absorbed=absorbed)
        values = ir.constant_value(tensor)
        if values is not None:
            if values.ndim > rank:
                raise _Rejected(f"{consumer.op} operand '{tensor.name}' has higher rank than the "
                                "transposed tensor")
            if values.size == 1:
                return _Operand(index, "keep")
            return _Operand(index, "constant", tensor=tensor)
        operand_rank = self.rank(tensor)
        if operand_rank is None:
            raise _Rejected(f"{consumer.op} operand '{tensor.name}' has unknown rank")
        if operand_rank < rank:
            raise _Rejected("non-constant broadcast operand of different rank")
        if operand_rank > rank:
            raise _Rejected(f"{consumer.op} operand '{tensor.name}' has higher rank than the "
                            "transposed tensor")
        return _Operand(index, "insert", tensor=tensor)

    def _plan_unary(self, consumer, output, source, perm, rank, plan: _Plan) -> None:
        if consumer.inputs[0] is not output:
            raise _Rejected(f"transpose feeds a side input of {consumer.op}")
        plan.operands.append(_Operand(0, "source", tensor=source))
        plan.output_perms = [perm] * len(consumer.outputs)

    def _plan_broadcast(self, consumer, output, source, perm, rank, plan: _Plan) -> None:
        for index, tensor in enumerate(consumer.inputs):
            if tensor.name == "":
                continue
            plan.operands.append(self._layout_operand(consumer, index, output, source, perm))
        plan.output_perms = [perm] * len(consumer.outputs)

    def _plan_concat(self, consumer, output, source, perm, rank, plan: _Plan) -> None:
        for index in range(len(consumer.inputs)):
            plan.operands.append(self._layout_operand(consumer, index, output, source, perm))
        axis = perm[_axis(consumer.attrs.get("axis", 0), rank)]
        plan.update = lambda: consumer.attrs.__setitem__("axis", axis)
        plan.output_perms = [perm]

    def _first_input_only(self, consumer: gs.Node, output: gs.Tensor, source: gs.Tensor,
                          plan: _Plan) -> None:
        if consumer.inputs[0] is not output or any(t is output for t in consumer.inputs[1:]):
            raise _Rejected(f"transpose feeds a side input of {consumer.op}")
        plan.operands.append(_Operand(0, "source", tensor=source))

    def _plan_split(self, consumer, output, source, perm, rank, plan: _Plan) -> None:
        self._first_input_only(consumer, output, source, plan)
        axis = perm[_axis(consumer.attrs.get("axis", 0), rank)]
        plan.update = lambda: consumer.attrs.__setitem__("axis", axis)
        plan.output_perms = [perm] * len(consumer.outputs)

    def _plan_softmax(self, consumer, output, source, perm, rank, plan: _Plan) -> None:
        if self.opset < 13:
            raise _Rejected(f"{consumer.op} before opset 13 flattens its input: the axis cannot be "
                            "permuted")
        self._first_input_only(consumer, output, source, plan)
        axis = perm[_axis(consumer.attrs.get("axis", -1), rank)]
        plan.update = lambda: consumer.attrs.__setitem__("axis", axis)
        plan.output_perms = [perm]

    def _plan_normalization(self, consumer, output, source, perm, rank, plan: _Plan) -> None:
        self._first_input_only(consumer, output, source, plan)
        if rank < 2 or perm[1] != 1:
            raise _Rejected(f"transpose moves the channel axis of {consumer.op}")
        if consumer.op == "InstanceNormalization" and perm[0] != 0:
            raise _Rejected("transpose moves the batch axis of InstanceNormalization")
        if sum(1 for t in consumer.outputs[1:] if self.is_read(t)):
            raise _Rejected(f"{consumer.op} in training mode (statistics outputs are read)")
        plan.output_perms = [perm] + [None] * (len(consumer.outputs) - 1)

    def _plan_pad(self, consumer, output, source, perm, rank, plan: _Plan) -> None:
        self._first_input_only(consumer, output, source, plan)
        axes_input = _optional_input(consumer, 3)
        if axes_input is not None:
            axes = self.constant_ints(consumer, axes_input, "Pad axes")
            new_axes = [perm[_axis(a, rank)] for a in axes]
            plan.update = self._set_input(consumer, 3, new_axes, "axes")
        elif "pads" in consumer.attrs:  # opset < 11
            new_pads = _permute_pads(list(consumer.attrs["pads"]), perm)
            plan.update = lambda: consumer.attrs.__setitem__("pads", new_pads)
        else:
            pads_input = _optional_input(consumer, 1)
            if pads_input is None:
                raise _Rejected("Pad has no pads")
            pads = self.constant_ints(consumer, pads_input, "Pad pads")
            if len(pads) != 2 * rank:
                raise _Rejected("Pad pads do not match the tensor rank")
            plan.update = self._set_input(consumer, 1, _permute_pads(pads, perm), "pads")
        plan.output_perms = [perm]

    def _plan_slice(self, consumer, output, source, perm, rank, plan: _Plan) -> None:
        self._first_input_only(consumer, output, source, plan)
        if "starts" in consumer.attrs:  # opset < 10: attributes
            count = len(consumer.attrs["starts"])
            axes = list(consumer.attrs.get("axes", range(count)))
            new_axes = [perm[_axis(a, rank)] for a in axes]
            plan.update = lambda: consumer.attrs.__setitem__("axes", new_axes)
        else:
            axes_input = _optional_input(consumer, 3)
            if axes_input is not None:
                axes = self.constant_ints(consumer, axes_input, "Slice axes")
            else:
                starts = _optional_input(consumer, 1)
                count = self.static_length(starts)
                if count is None:
                    raise _Rejected("Slice has implicit axes and starts of unknown length")
                axes = list(range(count))
            new_axes = [perm[_axis(a, rank)] for a in axes]
            plan.update = self._set_input(consumer, 3, new_axes, "axes")
        plan.output_perms = [perm]

    def _plan_reduce(self, consumer, output, source, perm, rank, plan: _Plan) -> None:
        self._first_input_only(consumer, output, source, plan)
        keepdims = bool(consumer.attrs.get("keepdims", 1))
        if consumer.op in ("ArgMax", "ArgMin"):
            axes = [_axis(consumer.attrs.get("axis", 0), rank)]
            new_axis = perm[axes[0]]
            plan.update = lambda: consumer.attrs.__setitem__("axis", new_axis)
        else:
            axes_input = _optional_input(consumer, 1)
            if "axes" in consumer.attrs:
                axes = [_axis(a, rank) for a in consumer.attrs["axes"]]
                new_axes = sorted(perm[a] for a in axes)
                plan.update = lambda: consumer.attrs.__setitem__("axes", new_axes)
            elif axes_input is not None:
                axes = [_axis(a, rank) for a in self.constant_ints(consumer, axes_input,
                                                                     f"{consumer.op} axes")]
                plan.update = self._set_input(consumer, 1, sorted(perm[a] for a in axes), "axes")
            else:
                axes = [] if consumer.attrs.get("noop_with_empty_axes", 0) else list(range(rank))
        if keepdims or not axes:
            # Reducing every axis with keepdims leaves only size-1 axes: no Transpose needed.
            all_reduced = len(set(axes)) == rank
            plan.output_perms = [None if all_reduced else perm]
        else:
            plan.output_perms = [surviving_axes_perm(perm, set(axes))]

    def _plan_squeeze(self, consumer, output, source, perm, rank, plan: _Plan) -> None:
        self._first_input_only(consumer, output, source, plan)
        axes = self.axes_of(consumer, "Squeeze")
        if axes is None:
            raise _Rejected("Squeeze without axes removes whichever axes have size 1: the "
                            "layout change is not provably equivalent")
        axes = [_axis(a, rank) for a in axes]
        new_axes = sorted(perm[a] for a in axes)
        plan.update = self._set_axes(consumer, new_axes)
        plan.output_perms = [surviving_axes_perm(perm, set(axes))]

    def _plan_unsqueeze(self, consumer, output, source, perm, rank, plan: _Plan) -> None:
        self._first_input_only(consumer, output, source, plan)
        axes = self.axes_of(consumer, "Unsqueeze")
        if axes is None:
            raise _Rejected("Unsqueeze axes are unknown")
        out_rank = rank + len(axes)
        plan.output_perms = [unsqueezed_perm(perm, {_axis(a, out_rank) for a in axes})]

    def _plan_reshape(self, consumer, output, source, perm, rank, plan: _Plan) -> None:
        self._first_input_only(consumer, output, source, plan)
        plan.output_perms = [None]
        if self._keeps_element_order(consumer, source, perm, rank):
            return
        why = f"transpose feeds {consumer.op}: layout change not provably equivalent"
        if not self.fold_matmul_weights:
            raise _Rejected(why)
        try:
            plan.update = self._plan_weight_fold(consumer, output, source, perm, rank)
        except _Rejected as rejection:
            raise _Rejected(f"{why} ({rejection})") from None
        plan.counted = ""  # the update counts each weight it permutes

    def _keeps_element_order(self, consumer, source, perm, rank) -> bool:
        """True if the Transpose moves only size-1 axes, so the Reshape/Flatten may read ``X``."""
        shape = None if source is None else _static_shape(source)
        if shape is None or len(shape) != rank:
            return False
        moved = [perm[i] for i in range(rank) if shape[perm[i]] != 1]
        if moved != sorted(moved):  # the Transpose reorders elements in memory
            return False
        if consumer.op == "Reshape":
            target = ir.constant_value(consumer.inputs[1])
            return target is not None and (0 not in target.tolist()
                                           or bool(consumer.attrs.get("allowzero", 0)))
        axis = _flatten_axis(consumer.attrs.get("axis", 1), rank)
        transposed = [shape[p] for p in perm]
        return int(np.prod(shape[:axis])) == int(np.prod(transposed[:axis]))

    # Rule 6: a flatten into MatMul/Gemm weights -------------------------------------------------

    def _plan_weight_fold(self, consumer: gs.Node, output: gs.Tensor, source: gs.Tensor | None,
                          perm: Perm, rank: int) -> Callable[[], None]:
        """Check that ``consumer`` flattens ``Y`` to ``[N, C*H*W]`` for constant MatMul/Gemm
        weights only; return the update permuting those weights. Raises _Rejected (the detail)."""
        if perm[0] != 0:
            raise _Rejected("the transpose moves the batch axis")
        target = None
        if consumer.op == "Flatten":
            if _flatten_axis(consumer.attrs.get("axis", 1), rank) != 1:
                raise _Rejected("Flatten axis is not 1")
        else:
            target = self.shape_vector(consumer.inputs[1], {id(output), id(source)})
            if target is None or target[1] or len(target[0]) != 2:
                raise _Rejected("Reshape target is not [N, -1]")
            target = target[0]
        flattened = consumer.outputs[0]
        if flattened.name in self.graph_outputs:
            raise _Rejected("the flattened tensor is a graph output")
        readers = _unique(flattened.outputs)
        if not readers:
            raise _Rejected("the flattened tensor is not read")
        weights = [self._matmul_weight(reader, flattened) for reader in readers]

        dims = self.dims(source) if source is not None else None
        if dims is None or len(dims) != rank or not all(isinstance(d, int) for d in dims[1:]):
            transposed = self.dims(output)
            if transposed is not None and len(transposed) == rank:
                dims = _permuted_shape(transposed, inverse(perm))
        if dims is None or not all(isinstance(d, int) and d >= 0 for d in dims[1:]):
            raise _Rejected("dims of the transposed tensor beyond the batch are unknown")
        features = math.prod(dims[1:])
        if target is not None and not self._is_batch_flatten(target, dims[0], features,
                                                             consumer.attrs.get("allowzero", 0)):
            raise _Rejected("Reshape target is not [N, -1]")
        for reader, (index, values, rows_axis) in zip(readers, weights):
            if values.shape[rows_axis] != features:
                raise _Rejected(f"{reader.op} weight '{reader.inputs[index].name}' has "
                                f"{values.shape[rows_axis]} rows, not the {features} features")

        transposed_dims = [dims[a] for a in perm]

        def update() -> None:
            # Feature j of Flatten(X) is feature order[j] of Flatten(Y).
            order = np.transpose(np.arange(features).reshape([1, *transposed_dims[1:]]),
                                 inverse(perm)).reshape(-1)
            for reader, (index, _, rows_axis) in zip(readers, weights):
                old = reader.inputs[index]
                reader.inputs[index] = self.row_permuted_constant(old, order, rows_axis)
                self.drop_unread_constant(old)
                self.result.count("folded_into_matmul_weights")
        return update

    @staticmethod
    def _is_batch_flatten(target: list, batch, features: int, allowzero) -> bool:
        """True if the Reshape ``target`` (ints, ``_BATCH`` or None) is ``[N, features]``."""
        first, second = target
        if second == -1:
            return first is _BATCH or (first == 0 and not allowzero) or (
                isinstance(batch, int) and first == batch)
        # With the feature count given, the element count fixes the first dim to N.
        return second == features and (first is _BATCH or first == -1 or (
            first == 0 and not allowzero) or (isinstance(batch, int) and first == batch))

    def _matmul_weight(self, reader: gs.Node, flattened: gs.Tensor) -> tuple[int, np.ndarray, int]:
        """(input index, values, axis of the feature rows) of the constant weight ``reader``
        multiplies the flattened tensor with. Raises _Rejected."""
        op = reader.op
        if not ir.is_onnx_op(reader) or op not in ("MatMul", "Gemm"):
            raise _Rejected(f"the flattened tensor is also read by {op}")
        if reader.inputs[0] is not flattened or any(t is flattened for t in reader.inputs[1:]):
            raise _Rejected(f"{op} reads the flattened tensor as its right operand")
        if op == "Gemm" and reader.attrs.get("transA", 0):
            raise _Rejected("Gemm reads the flattened tensor transposed (transA=1)")
        weight = reader.inputs[1]
        values = ir.constant_value(weight)
        if values is None:
            raise _Rejected(f"{op} weight '{weight.name}' is not constant")
        if values.ndim != 2:
            raise _Rejected(f"{op} weight '{weight.name}' is not 2-D")
        rows_axis = 1 if op == "Gemm" and reader.attrs.get("transB", 0) else 0
        return 1, values, rows_axis

    def row_permuted_constant(self, weight: gs.Tensor, order: np.ndarray,
                              rows_axis: int) -> gs.Constant:
        """A new constant: ``weight`` with its feature rows (or columns) taken in ``order``.

        One per (weight, order), so a weight shared by several readers is permuted once.
        """
        key = (id(weight), order.tobytes(), rows_axis)
        if key not in self.row_permuted:
            values = np.take(ir.constant_value(weight), order, axis=rows_axis)
            permuted = gs.Constant(self.names.fresh(f"{weight.name}_permuted"),
                                   np.ascontiguousarray(values))
            self.row_permuted[key] = (weight, permuted)  # holds the key's tensor alive
        return self.row_permuted[key][1]

    def shape_vector(self, tensor: gs.Tensor, batch_of: set[int],
                     depth: int = 0) -> tuple[list, bool] | None:
        """The value of an integer shape computation, as far as the pass needs to know it.

        Returns (items, is_scalar): each item is an int, ``_BATCH`` (dim 0 of a tensor whose id
        is in ``batch_of``) or None (unknown); None if the computation is not understood.
        """
        values = ir.constant_value(tensor)
        if values is not None:
            if values.dtype.kind not in "iu" or values.ndim > 1:
                return None
            return [int(v) for v in values.reshape(-1)], values.ndim == 0
        producer = ir.producer(tensor)
        if producer is None or depth > SHAPE_TRACE_DEPTH or not ir.is_onnx_op(producer):
            return None
        op, inputs = producer.op, producer.inputs
        if op == "Shape":
            dims = self.dims(inputs[0])
            if dims is None:
                rank = self.rank(inputs[0])
                if rank is None:
                    return None
                dims = [None] * rank
            items = [d if isinstance(d, int) and d >= 0 else None for d in dims]
            if id(inputs[0]) in batch_of and items:
                items[0] = _BATCH
            rank = len(items)
            start = _clamp(producer.attrs.get("start", 0), rank)
            end = _clamp(producer.attrs.get("end", rank), rank)
            return items[start:end], False
        if op in ("Cast", "Identity"):
            return self.shape_vector(inputs[0], batch_of, depth + 1)
        if op == "Concat":
            parts = [self.shape_vector(t, batch_of, depth + 1) for t in inputs]
            if any(part is None or part[1] for part in parts):
                return None
            return [item for part in parts for item in part[0]], False
        vector = self.shape_vector(inputs[0], batch_of, depth + 1) if inputs else None
        if vector is None:
            return None
        items, scalar = vector
        if op == "Squeeze":
            return (items, True) if not scalar and len(items) == 1 else None
        if op == "Unsqueeze":
            return (items, False) if scalar else None
        if scalar:
            return None
        try:
            if op == "Gather" and _axis(producer.attrs.get("axis", 0), 1) == 0:
                indices = ir.constant_value(inputs[1])
                if indices is None or indices.ndim > 1:
                    return None
                picked = [items[_axis(i, len(items))] for i in indices.reshape(-1)]
                return picked, indices.ndim == 0
            if op == "Slice":
                picked = _slice_indices(producer, len(items))
                return None if picked is None else ([items[i] for i in picked], False)
        except _Rejected:
            return None
        return None

    def dims(self, tensor: gs.Tensor | None) -> list | None:
        """The tensor's dims (ints where known), from its shape or from shape inference."""
        if tensor is None:
            return None
        values = ir.constant_value(tensor)
        if values is not None:
            return list(values.shape)
        if tensor.shape is not None:
            return [int(d) if hasattr(d, "__index__") else d for d in tensor.shape]
        return self.inferred.get(tensor.name)

    def needs_shape_inference(self) -> bool:
        """True if rule 6 may need ONNX shape inference: some Transpose keeps the batch axis and
        some flatten to 2-D, read by a MatMul/Gemm with a constant 2-D weight, reads a tensor
        whose dims beyond the batch are not all known. (Narrow on purpose: Reshape -> MatMul with
        dynamic dims is everywhere in transformers, and inference costs a graph export.)"""
        if not any(node.op == "Transpose" and list(node.attrs.get("perm", [1]))[:1] == [0]
                   for node in self.graph.nodes):
            return False
        for node in self.graph.nodes:
            if node.op not in ("Reshape", "Flatten") or len(node.outputs) != 1:
                continue
            if node.op == "Reshape":
                target = self.shape_vector(node.inputs[1], set())
                if target is None or target[1] or len(target[0]) != 2:
                    continue
            if not any(reader.op in ("MatMul", "Gemm") and len(reader.inputs) > 1
                       and getattr(ir.constant_value(reader.inputs[1]), "ndim", 0) == 2
                       for reader in node.outputs[0].outputs):
                continue
            shape = node.inputs[0].shape
            if shape is None or not all(hasattr(d, "__index__") for d in shape[1:]):
                return True
        return False

    # Rule 5: Shape -----------------------------------------------------------------------------

    def _plan_shape(self, consumer, output, source, perm, rank, plan: _Plan) -> None:
        self._first_input_only(consumer, output, source, plan)
        plan.output_perms = [None]
        if "start" in consumer.attrs or "end" in consumer.attrs:
            start = _clamp(consumer.attrs.get("start", 0), rank)
            end = _clamp(consumer.attrs.get("end", rank), rank)
            read = [perm[k] for k in range(start, end)]
            if read == list(range(start, end)):
                return
            if read != list(range(read[0], read[0] + len(read))):
                raise _Rejected("transpose feeds Shape: its start/end dims are reordered by the "
                                "transpose")
            new_start, new_end = read[0], read[0] + len(read)
            plan.update = lambda: consumer.attrs.update(start=new_start, end=new_end)
            return
        rewrites: list[Callable[[], None]] = []
        self._shape_reads(consumer.outputs[0], perm, rewrites, 0)
        if rewrites:
            plan.update = lambda: [rewrite() for rewrite in rewrites]

    def _shape_reads(self, tensor: gs.Tensor, perm: Perm, rewrites: list, depth: int) -> None:
        """Collect the rewrites mapping every read of the shape vector ``tensor`` through
        ``perm``; raise _Rejected if some read does not pick dims by constant index."""
        if tensor.name in self.graph_outputs:
            raise _Rejected("transpose feeds Shape: the shape vector is a graph output")
        rank = len(perm)
        for reader in _unique(tensor.outputs):
            op = reader.op
            side_input = any(t is tensor for t in reader.inputs[1:])
            if (id(reader) not in self.position or not ir.is_onnx_op(reader) or side_input
                    or op not in ("Cast", "Identity", "Gather", "Slice")):
                raise _Rejected(f"transpose feeds Shape: the shape vector is read whole by {op}")
            if op in ("Cast", "Identity"):
                if depth >= SHAPE_TRACE_DEPTH:
                    raise _Rejected("transpose feeds Shape: the shape vector is read too far away")
                self._shape_reads(reader.outputs[0], perm, rewrites, depth + 1)
            elif op == "Gather":
                if _axis(reader.attrs.get("axis", 0), 1) != 0:
                    raise _Rejected("transpose feeds Shape: Gather axis is not 0")
                indices = ir.constant_value(reader.inputs[1])
                if indices is None or indices.dtype.kind not in "iu":
                    raise _Rejected("transpose feeds Shape: Gather indices are not constant")
                picked = np.asarray([_axis(i, rank) for i in indices.reshape(-1)], np.int64)
                mapped = np.asarray([perm[i] for i in picked], np.int64)
                if not np.array_equal(mapped, picked):
                    rewrites.append(self._gather_rewrite(reader, mapped.reshape(indices.shape)))
            else:
                picked = _slice_indices(reader, rank)
                if picked is None:
                    raise _Rejected("transpose feeds Shape: Slice of the shape vector has "
                                    "non-constant or non-zero-axis bounds")
                mapped = [perm[i] for i in picked]
                if mapped != picked:
                    rewrites.append(self._gather_rewrite(reader, np.asarray(mapped, np.int64)))

    def _gather_rewrite(self, reader: gs.Node, indices: np.ndarray) -> Callable[[], None]:
        """An update making ``reader`` (a Gather or Slice of a shape vector) a Gather of
        ``indices`` on axis 0."""
        def rewrite() -> None:
            constant = gs.Constant(self.names.fresh(f"{reader.name}_indices"), indices)
            data, old = reader.inputs[0], list(reader.inputs[1:])
            reader.op, reader.attrs = "Gather", {"axis": 0}
            reader.inputs.clear()
            reader.inputs.extend([data, constant])
            for tensor in old:
                self.drop_unread_constant(tensor)
            self.result.count("remapped_shape_reads")
        return rewrite

    # Applying a push ---------------------------------------------------------------------------

    def apply_push(self, consumer: gs.Node, output: gs.Tensor, source: gs.Tensor, perm: Perm,
                   plan: _Plan) -> None:
        inserted: dict[int, gs.Tensor] = {}
        touched: list[gs.Node] = []
        for operand in plan.operands:
            old = consumer.inputs[operand.index]
            if operand.action == "source":
                if operand.through is not None:
                    touched.append(operand.through)
                consumer.inputs[operand.index] = operand.tensor
            elif operand.action == "constant":
                consumer.inputs[operand.index] = self.permuted_constant(old, perm)
                self.drop_unread_constant(old)
                self.result.count("permuted_constants")
            elif operand.action == "insert":
                if id(old) not in inserted:
                    inserted[id(old)] = self.add_transpose(old, inverse(perm), consumer)
                    self.result.count("inserted_operand_transposes")
                consumer.inputs[operand.index] = inserted[id(old)]
        self.enqueue_producer(source)
        for other in _unique(touched):
            if id(other) in self.removed:
                continue
            if not self.is_read(other.outputs[0]):
                self.remove(other)
                self.result.count("absorbed_operand_transposes")
            else:
                self.enqueue(other)  # fewer readers: it may be pushable now
        if plan.update is not None:
            plan.update()
        for index, out_perm in enumerate(plan.output_perms):
            tensor = consumer.outputs[index]
            if out_perm is None or is_identity(out_perm):
                continue
            if not self.is_read(tensor):
                tensor.shape = _permuted_shape(tensor.shape, inverse(out_perm))
                continue
            inner = gs.Variable(self.names.fresh(f"{tensor.name}_untransposed"), dtype=tensor.dtype,
                                shape=_permuted_shape(tensor.shape, inverse(out_perm)))
            consumer.outputs[index] = inner
            restore = gs.Node("Transpose", name=self.names.fresh(f"{consumer.name}_transpose"),
                              attrs={"perm": list(out_perm)}, inputs=[inner], outputs=[tensor])
            self.place(restore, after=consumer)
            self.enqueue(restore)
        if plan.counted is None:
            self.result.count(f"pushed_through_{plan.kind}")
        elif plan.counted:
            self.result.count(plan.counted)

    def permuted_constant(self, constant: gs.Tensor, perm: Perm) -> gs.Constant:
        """A new constant: ``constant`` broadcast to full rank, in the untransposed layout.

        One per (constant, permutation), so a constant shared by many ops is copied once.
        """
        key = (id(constant), perm)
        if key not in self.permuted:
            values = ir.constant_value(constant)
            full = values.reshape((1,) * (len(perm) - values.ndim) + values.shape)
            permuted = gs.Constant(self.names.fresh(f"{constant.name}_permuted"),
                                   np.ascontiguousarray(np.transpose(full, inverse(perm))))
            self.permuted[key] = (constant, permuted)  # holds the key's tensor alive
        return self.permuted[key][1]

    def add_transpose(self, tensor: gs.Tensor, perm: Perm, reader: gs.Node) -> gs.Tensor:
        """A new Transpose of ``tensor`` placed before ``reader``; returns its output."""
        out = gs.Variable(self.names.fresh(f"{tensor.name}_transposed"), dtype=tensor.dtype,
                          shape=_permuted_shape(tensor.shape, perm))
        node = gs.Node("Transpose", name=self.names.fresh(f"{tensor.name}_transpose"),
                       attrs={"perm": list(perm)}, inputs=[tensor], outputs=[out])
        self.place(node, before=reader)
        self.pinned.add(id(node))
        self.enqueue(node)
        self.enqueue_producer(tensor)  # its readers changed: it may compose with the new one
        return out

    # Graph edits -------------------------------------------------------------------------------

    def place(self, node: gs.Node, *, before: gs.Node | None = None,
              after: gs.Node | None = None) -> None:
        """Record where the new ``node`` goes in the node list (see ``placed_before``)."""
        anchor = before if before is not None else after
        side = -1 if before is not None else 1
        placed = self.placed_before if before is not None else self.placed_after
        placed.setdefault(id(anchor), []).append(node)
        self.position[id(node)] = (self.position.get(id(anchor), (0, 0, 0))[0], side,
                                   next(self.tiebreak))

    def _emit(self, node: gs.Node, ordered: list[gs.Node]) -> None:
        for earlier in self.placed_before.get(id(node), ()):
            self._emit(earlier, ordered)
        if id(node) not in self.removed:
            ordered.append(node)
        for later in self.placed_after.get(id(node), ()):
            self._emit(later, ordered)

    def remove(self, node: gs.Node) -> None:
        inputs = list(node.inputs)
        node.inputs.clear()
        node.outputs.clear()
        self.removed.add(id(node))
        for tensor in inputs:
            self.enqueue_producer(tensor)
            self.drop_unread_constant(tensor)

    def drop_unread_constant(self, tensor: gs.Tensor) -> None:
        """Remove the Constant node producing ``tensor`` once nothing reads it."""
        producer = ir.producer(tensor)
        if (producer is not None and producer.op == "Constant" and not self.is_read(tensor)
                and id(producer) not in self.removed):
            self.remove(producer)

    def bypass(self, node: gs.Node, output: gs.Tensor, replacement: gs.Tensor) -> None:
        """Remove ``node`` (whose ``output`` equals ``replacement``), rewiring its readers.

        A graph output keeps its name: the replacement's producer writes it directly, or, when the
        replacement cannot be renamed (a graph input or output, a constant), an Identity does.
        """
        if output.name not in self.graph_outputs:
            ir.replace_uses(output, replacement)
            self.remove(node)
            self.enqueue_producer(replacement)
            return
        producer = ir.producer(replacement)
        self.remove(node)
        if (producer is None or replacement.name in self.graph_inputs
                or replacement.name in self.graph_outputs or isinstance(replacement, gs.Constant)):
            identity = gs.Node("Identity", name=self.names.fresh(f"{output.name}_identity"),
                               inputs=[replacement], outputs=[output])
            self.place(identity, after=node)
            return
        ir.replace_uses(replacement, output)
        producer.outputs[producer.outputs.index(replacement)] = output
        self.enqueue(producer)

    def _set_input(self, consumer: gs.Node, index: int, values: Sequence[int], what: str):
        """An update writing ``values`` as a new int64 constant into input ``index``."""
        def update() -> None:
            constant = gs.Constant(self.names.fresh(f"{consumer.name}_{what}"),
                                   np.asarray(list(values), dtype=np.int64))
            while len(consumer.inputs) <= index:
                consumer.inputs.append(gs.Variable.empty())
            consumer.inputs[index] = constant
        return update

    def _set_axes(self, consumer: gs.Node, new_axes: list[int]):
        if "axes" in consumer.attrs:
            return lambda: consumer.attrs.__setitem__("axes", new_axes)
        return self._set_input(consumer, 1, new_axes, "axes")

    # Reading the graph -------------------------------------------------------------------------

    def perm_of(self, transpose: gs.Node) -> Perm | None:
        """The permutation of a Transpose (its ``perm``, or the reversal of its input's axes)."""
        cached = self.perms.get(id(transpose))
        if cached is not None:
            return cached
        perm = transpose.attrs.get("perm")
        if perm is not None:
            perm = tuple(int(a) for a in perm)
        else:
            rank = self.rank(transpose.inputs[0])
            perm = None if rank is None else tuple(reversed(range(rank)))
        if perm is not None:
            self.perms[id(transpose)] = perm
        return perm

    def axes_of(self, node: gs.Node, what: str) -> list[int] | None:
        if "axes" in node.attrs:
            return [int(a) for a in node.attrs["axes"]]
        axes_input = _optional_input(node, 1)
        if axes_input is None:
            return None
        return self.constant_ints(node, axes_input, f"{what} axes")

    @staticmethod
    def constant_ints(node: gs.Node, tensor: gs.Tensor, what: str) -> list[int]:
        values = ir.constant_value(tensor)
        if values is None:
            raise _Rejected(f"{what} are not constant")
        return [int(v) for v in np.asarray(values).reshape(-1)]

    def static_length(self, tensor: gs.Tensor | None) -> int | None:
        if tensor is None:
            return None
        values = ir.constant_value(tensor)
        if values is not None:
            return int(np.asarray(values).size)
        shape = _static_shape(tensor)
        return shape[0] if shape and len(shape) == 1 else None

    def rank(self, tensor: gs.Tensor, depth: int = 0) -> int | None:
        """Rank of ``tensor`` from its shape, or derived through rank-preserving producers."""
        if tensor.shape is not None:
            return len(tensor.shape)
        key = id(tensor)
        if key in self.rank_memo:
            return self.rank_memo[key][1]
        rank = None
        producer = ir.producer(tensor)
        if producer is not None and depth < 64:
            op = producer.op
            if op == "Transpose" and producer.attrs.get("perm") is not None:
                rank = len(producer.attrs["perm"])
            elif op == "Transpose":
                rank = self.rank(producer.inputs[0], depth + 1)
            elif op in BROADCAST_OPS:
                ranks = [self.rank(t, depth + 1) for t in producer.inputs if t.name]
                rank = None if None in ranks else max(ranks, default=None)
            elif producer.inputs and (op in UNARY_OPS or op in _RANK_PRESERVING):
                rank = self.rank(producer.inputs[0], depth + 1)
        self.rank_memo[key] = (tensor, rank)
        return rank


#: Ops whose first output has the rank of their first input (beyond the elementwise ones).
_RANK_PRESERVING = frozenset({
    "AveragePool", "BatchNormalization", "Concat", "Conv", "ConvTranspose", "Dropout",
    "GlobalAveragePool", "GlobalMaxPool", "InstanceNormalization", "LRN", "LayerNormalization",
    "LogSoftmax", "LpNormalization", "MaxPool", "Pad", "Resize", "Slice", "Softmax", "Split",
    "Tile",
})


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


def _inferred_dims(graph: gs.Graph, ctx: PassContext) -> dict[str, list]:
    """Dims ONNX shape inference gives the graph's tensors, by name; empty (and logged) when it
    fails, so the pass goes on with the shapes the graph carries."""
    try:
        return ir.inferred_dims(graph)
    except ValueError as exc:
        ctx.log(f"transpose-cancellation: {exc}; using known shapes")
        return {}


def _permuted_shape(shape, perm: Perm):
    """Shape of ``Transpose(perm)`` applied to a tensor of ``shape`` (None when unknown)."""
    if shape is None or len(shape) != len(perm):
        return None
    return [shape[axis] for axis in perm]


def _static_shape(tensor: gs.Tensor) -> list[int] | None:
    """The shape of a constant's value, or the tensor's static shape (None when not fully known)."""
    values = ir.constant_value(tensor)
    if values is not None:
        return list(values.shape)
    shape = ir.static_shape(tensor)
    return None if shape is None else list(shape)
