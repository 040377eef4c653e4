"""transpose-cancellation's run over one graph: the worklist of Transposes, the cost model that
decides each push, rules 1 (pairs), 3 (constants) and 4 (identities), and the graph edits.

The rule families that plan how a consumer reads the untransposed tensor live beside it:
:mod:`.push_through` (rule 2), :mod:`.shape_reads` (rule 5) and :mod:`.weight_fold` (rule 6).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from passes.transpose_cancellation.permutations import (
    _KIND_OF_OP,
    _RANK_PRESERVING,
    BROADCAST_OPS,
    LOOKAHEAD_DEPTH,
    LOOKAHEAD_PLANS,
    PUSH_KINDS,
    UNARY_OPS,
    Perm,
    _inserts,
    _optional_input,
    _pays_alone,
    _permuted_shape,
    _Plan,
    _Rejected,
    _unique,
    compose,
    inverse,
    is_identity,
)
from passes.transpose_cancellation.push_through import PushThrough
from passes.transpose_cancellation.shape_reads import ShapeReads
from passes.transpose_cancellation.weight_fold import WeightFold
from trtcompile import ir
from trtcompile.pm import PassContext, PassResult


class _Canceller(PushThrough, ShapeReads, WeightFold):
    """One run of the pass over one graph."""

    def __init__(self, graph: gs.Graph, options: Any, result: PassResult):
        """``options`` is the :class:`TransposeCancellation` pass being run."""
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
        # Rewrites so far, and their number when each Transpose was last visited (see run).
        self.rewrites = 0
        self.visited_at: dict[int, int] = {}
        self.transposes: dict[int, gs.Node] = {}  # every Transpose ever queued, by id()
        self.permuted: dict[tuple[int, Perm], tuple[gs.Tensor, gs.Constant]] = {}
        self.pinned: set[int] = set()  # Transposes added on operands (see visit)
        self.row_permuted: dict[tuple, tuple[gs.Tensor, gs.Constant]] = {}
        # Shapes ONNX shape inference gives tensors that have none, by name (rule 6). A pass
        # never changes a named tensor's values, so a name keeps its shape through the run.
        self.inferred: dict[str, list] = {}

    def run(self, ctx: PassContext) -> None:
        self.ctx = ctx  # every rewrite asks it first (ctx.may_rewrite)
        if self.fold_matmul_weights and self.needs_shape_inference():
            self.inferred = ir.ShapeFacts(self.graph, ctx.log, "transpose-cancellation").inferred
        for node in self.graph.nodes:
            self.enqueue(node)
        # Every step removes a Transpose or moves one closer to the outputs; the bound only guards
        # against a bug turning into a hang.
        budget = 16 * (len(self.graph.nodes) + 16)
        while budget > 0:
            while self.worklist and budget > 0:
                key, _, transpose = heapq.heappop(self.worklist)
                if self.queued.get(id(transpose)) != key:
                    continue  # re-queued under another key since
                budget -= 1
                del self.queued[id(transpose)]
                if id(transpose) not in self.removed:
                    self.visit(transpose)
                    self.visited_at[id(transpose)] = self.rewrites
            # A kept Transpose was judged by looking ahead through the ops after it; a rewrite
            # there since (a pair composed or cancelled, a Transpose pushed or removed) can make
            # its push pay. Visit every such Transpose again until a round rewrites nothing, so
            # the pass stops at its own fixed point rather than leaving that to its next run.
            stale = [node for node in self.transposes.values()
                     if id(node) not in self.removed
                     and self.visited_at.get(id(node), -1) < self.rewrites]
            if not stale:
                break
            for node in stale:
                self.enqueue(node)
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
        self.transposes[id(node)] = node
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
        self.rewrites += 1
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

    # Rule 2: push-through (the plans: push_through, shape_reads, weight_fold) -------------------

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

    # Applying a push ---------------------------------------------------------------------------

    def apply_push(self, consumer: gs.Node, output: gs.Tensor, source: gs.Tensor, perm: Perm,
                   plan: _Plan) -> None:
        self.rewrites += 1
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
        self.rewrites += 1
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
        values = ir.constant_ints(tensor)
        if values is None:
            raise _Rejected(f"{what} are not constant")
        return values

    def static_length(self, tensor: gs.Tensor | None) -> int | None:
        if tensor is None:
            return None
        values = ir.constant_value(tensor)
        if values is not None:
            return int(np.asarray(values).size)
        shape = ir.constant_shape(tensor)
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
