"""Local rewrites: a pattern, a check that gives its reason, a rewrite; and the one driver that
applies them to a graph scope.

A *local rewrite* replaces a few nodes around an *anchor* node with others (a Conv and its
epilogue with one fused layer, a global mean with a pooling window). It is written as a
:class:`RewriteRule`, the shape of onnxscript's rewrite rules and of MLIR's rewrite patterns:

* the **pattern**: the anchor's op types (:attr:`RewriteRule.anchor_ops`) and :meth:`RewriteRule.match`,
  which recognizes the structure around an anchor and returns a :class:`Match` (the nodes it
  involves and what the rewrite needs), a :class:`Reject` for a candidate that does not take the
  form (with the reason), or None when the anchor starts nothing;
* the **check** (:meth:`RewriteRule.check`): None, or the reason the candidate stays. The reason is
  what ``--why-not`` shows;
* the **rewrite** (:meth:`RewriteRule.rewrite`): builds the replacement and returns the nodes that
  take the anchor's place in the node list (matched nodes that survive are listed among them).

:func:`apply_rule` drives a rule over one scope (a pass's ``run`` is
``return apply_rule(self, graph, ctx, PassResult(), who=self.name)``). For each candidate, in node order, it records the
rejection or asks ``ctx.may_rewrite(rule, nodes, result)`` (a granted rewrite is numbered; a refused
one is a rejection), then rewrites. Afterwards it rebuilds the node list once: the replacement
where its anchor was, without the matched nodes that nothing reads any more and without the
``Constant`` nodes that only those nodes read. A scope is one graph: the main graph, or one
If/Loop/Scan body (:func:`~trtcompile.ir.graph.scopes`); a candidate whose nodes reach into
another scope (a body's node reading an outer tensor is one of that tensor's consumers) is
rejected, since neither node list could hold its replacement.

The context is duck-typed: anything with ``may_rewrite(rule, nodes, result) -> bool`` and a
``log(message)`` callable (the pass manager's ``PassContext``). The result needs ``count(key, n)``
and ``reject(nodes, reason)`` (its ``PassResult``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, ClassVar, Protocol, TypeVar

import onnx_graphsurgeon as gs

from trtcompile.ir.analysis import ShapeFacts
from trtcompile.ir.graph import (
    NameScope,
    is_onnx_op,
    output_names,
    producer,
    replace_uses,
    scope_nodes,
    scopes,
)

T = TypeVar("T")
R = TypeVar("R", bound="Result")

#: The rejection reason of a candidate whose nodes lie in more than one scope.
SCOPE_REASON = "the candidate reaches into an If/Loop/Scan body, a graph scope of its own"


class Result(Protocol):
    """What the driver records into (a pass's ``PassResult``)."""

    def count(self, key: str, n: int = 1) -> None: ...

    def reject(self, nodes: Any, reason: str) -> None: ...


@dataclass
class Match:
    """A candidate of a rewrite: the nodes it involves and where the replacement goes.

    ``nodes`` are named in ``ctx.may_rewrite`` and in a rejection, anchor first by convention;
    ``anchor`` is the node whose place in the node list the replacement takes (the first of
    ``nodes`` unless given); ``rule`` names the rewrite in ``ctx.may_rewrite`` when the rule
    applies several (default: the rule's own). Rules subclass it to carry what their rewrite needs.
    """

    nodes: list[gs.Node]
    anchor: gs.Node | None = None
    rule: str = ""

    def __post_init__(self) -> None:
        if self.anchor is None:
            self.anchor = self.nodes[0]


@dataclass(frozen=True)
class Reject:
    """A candidate the pattern found but that does not take its form: the nodes and the reason."""

    nodes: Sequence[gs.Node]
    reason: str


class Scope:
    """One graph scope under rewrite: the graph, its outputs, the pass's context and result, and
    what rules ask of the graph, each computed once, on first need (fresh names, node positions,
    tensor shapes)."""

    def __init__(self, graph: gs.Graph, ctx: Any, result: Result, who: str = "",
                 root: gs.Graph | None = None):
        """``root`` is the model's main graph when ``graph`` is one of its bodies: fresh names are
        unique across the model, not only the body."""
        self.graph = graph
        self._root = root if root is not None else graph
        self.ctx = ctx
        self.result = result
        #: Names of the scope's outputs: a tensor among them keeps its name through any rewrite.
        self.outputs: set[str] = output_names(graph)
        self._who = who
        self._members: set[int] | None = None
        self._positions: dict[int, int] | None = None
        self._names: NameScope | None = None
        self._shapes: ShapeFacts | None = None
        self._computed: dict[str, Any] = {}

    @property
    def names(self) -> NameScope:
        """Fresh node and tensor names (collected on first use: O(model) once)."""
        if self._names is None:
            self._names = NameScope(self._root)
        return self._names

    @property
    def shapes(self) -> ShapeFacts:
        """Tensor shapes, from the graph or ONNX shape inference (a failure is logged once; a
        body, which reads outer tensors, has only the shapes it carries)."""
        if self._shapes is None:
            self._shapes = ShapeFacts(self.graph, getattr(self.ctx, "log", None), self._who)
        return self._shapes

    def once(self, key: str, compute: Callable[[], T]) -> T:
        """``compute()``, called on the first request for ``key`` in this run (what a rule needs of
        the whole graph: a cost analysis, a budget)."""
        if key not in self._computed:
            self._computed[key] = compute()
        return self._computed[key]

    def contains(self, node: gs.Node) -> bool:
        """True if ``node`` is one of this scope's nodes (as the rewrite started)."""
        if self._members is None:
            self._members = {id(n) for n in self.graph.nodes}
        return id(node) in self._members

    def position(self, node: gs.Node) -> int:
        """Index of ``node`` in the scope's node list as the rewrite started."""
        if self._positions is None:
            self._positions = {id(n): i for i, n in enumerate(self.graph.nodes)}
        return self._positions[id(node)]

    def is_read(self, tensor: gs.Tensor) -> bool:
        """True if some node reads ``tensor`` or it is a scope output."""
        return bool(tensor.outputs) or tensor.name in self.outputs

    def count(self, key: str, n: int = 1) -> None:
        """Add ``n`` to the pass's count ``key``."""
        self.result.count(key, n)


class RewriteRule:
    """A local rewrite: pattern (anchor ops and :meth:`match`), :meth:`check`, :meth:`rewrite`.

    A pass applies itself as a rule (``apply_rule(self, graph, ctx, result)``) or holds several.
    """

    #: Op types (default ONNX domain) of the nodes offered to :meth:`match`; empty: every node.
    anchor_ops: ClassVar[frozenset[str]] = frozenset()
    #: The rewrite's name in ``ctx.may_rewrite`` (a :class:`Match` may name its own).
    rule: ClassVar[str] = ""
    #: Match every anchor of the scope before rewriting any: for patterns that look at other
    #: candidates of the untouched graph, and for rules that :meth:`order` their candidates.
    match_all_first: ClassVar[bool] = False

    def match(self, node: gs.Node, scope: Scope) -> Match | Reject | Iterable[Match | Reject] | None:
        """The candidates starting at the anchor ``node`` (None: it starts nothing)."""
        raise NotImplementedError

    def check(self, match: Match, scope: Scope) -> str | Reject | None:
        """None if the candidate may be rewritten, else the reason it stays (recorded against the
        match's nodes; a :class:`Reject` names other nodes). Asked right before the rewrite."""
        return None

    def order(self, matches: list[Match], scope: Scope) -> list[Match]:
        """The order in which matched candidates are checked and rewritten (with
        :attr:`match_all_first`; default: node order)."""
        return matches

    def rewrite(self, match: Match, scope: Scope) -> Sequence[gs.Node]:
        """Rewrite the candidate; return the nodes that take the anchor's place."""
        raise NotImplementedError


@dataclass
class _Edits:
    """The node-list changes of one driver run, applied at its end."""

    placed: dict[int, list[gs.Node]] = field(default_factory=dict)
    removed: set[int] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.placed or self.removed)


def apply_rule(rule: RewriteRule, graph: gs.Graph, ctx: Any, result: R, *, who: str = "",
               bodies: bool = False) -> R:
    """Apply ``rule`` to the main scope of ``graph`` (with ``bodies``, to every If/Loop/Scan body
    too, each as a scope of its own), recording into ``result``; return ``result``.

    ``who`` names the pass in log lines (a failed shape inference).
    """
    for graph_scope in (list(scopes(graph)) if bodies else [graph]):
        _apply(rule, Scope(graph_scope, ctx, result, who, root=graph))
    return result


def _apply(rule: RewriteRule, scope: Scope) -> None:
    anchors = [node for node in scope.graph.nodes
               if not rule.anchor_ops or (node.op in rule.anchor_ops and is_onnx_op(node))]
    edits = _Edits()
    pending: list[Match] = []
    for node in anchors:
        if id(node) in edits.removed:
            continue  # an earlier rewrite took it
        for found in _candidates(rule.match(node, scope)):
            if isinstance(found, Reject):
                scope.result.reject(list(found.nodes), found.reason)
            elif rule.match_all_first:
                pending.append(found)
            else:
                _attempt(rule, found, scope, edits)
    for match in rule.order(pending, scope) if pending else ():
        _attempt(rule, match, scope, edits)
    if edits:
        rebuild_nodes(scope.graph, edits.placed, edits.removed)


def _candidates(found) -> list:
    if found is None:
        return []
    if isinstance(found, (Match, Reject)):
        return [found]
    return list(found)


def _attempt(rule: RewriteRule, match: Match, scope: Scope, edits: _Edits) -> None:
    """Check, ask and rewrite one candidate; record what happened."""
    if any(id(node) in edits.removed for node in match.nodes):
        return  # an earlier rewrite took one of its nodes: the candidate is gone
    if not all(scope.contains(node) for node in match.nodes):
        scope.result.reject(match.nodes, SCOPE_REASON)
        return
    reason = rule.check(match, scope)
    if reason is not None:
        if isinstance(reason, Reject):
            scope.result.reject(list(reason.nodes), reason.reason)
        else:
            scope.result.reject(match.nodes, reason)
        return
    if not scope.ctx.may_rewrite(match.rule or rule.rule, match.nodes, scope.result):
        return
    read = [tensor for node in match.nodes for tensor in node.inputs]
    replacement = list(rule.rewrite(match, scope))
    if id(match.anchor) in edits.placed:
        raise ValueError(f"{type(rule).__name__}: node '{match.anchor.name}' anchors two rewrites")
    edits.placed[id(match.anchor)] = replacement
    kept = {id(node) for node in replacement}
    for node in match.nodes:
        if id(node) not in kept and not any(scope.is_read(t) for t in node.outputs):
            remove_node(node, edits.removed)
    drop_unread_constants(read, scope.outputs, edits.removed)


# --------------------------------------------------------------------------------------------
# Rewrite helpers (also for passes that edit the graph directly)
# --------------------------------------------------------------------------------------------


def remove_node(node: gs.Node, removed: set[int]) -> None:
    """Detach ``node`` from its tensors and add it to ``removed`` (ids of nodes to leave out)."""
    node.inputs.clear()
    node.outputs.clear()
    removed.add(id(node))


def detach_dropped(graph: gs.Graph, before: Iterable[gs.Node]) -> int:
    """Detach each node of ``before`` that is no longer in a scope of ``graph`` from the tensors it
    reads and writes; return how many were.

    onnx-graphsurgeon leaves the nodes of a removed If/Loop/Scan's bodies (and of the branch a
    flattened If did not take) connected: each stays a reader of the outer values it read, so a
    value's consumers would count a node that no longer runs (a conv "read twice" does not fuse).
    ``before`` is :func:`scope_nodes` taken before the edit."""
    kept = {id(node) for node in scope_nodes(graph)}
    detached = 0
    for node in before:
        if id(node) not in kept and (node.inputs or node.outputs):
            node.inputs.clear()
            node.outputs.clear()
            detached += 1
    return detached


_ATTRS = attrgetter("attrs")


def cleanup(graph: gs.Graph) -> None:
    """What onnx-graphsurgeon's cleanup does with ``remove_unused_node_outputs=False``,
    ``recurse_subgraphs=True`` and ``remove_unused_graph_inputs=False``: remove the nodes no graph
    output depends on, from the graph and its local functions (and their If/Loop/Scan bodies),
    detaching them from their tensors; graph inputs lose any producer.

    onnx-graphsurgeon's cleanup follows tensors by name and takes about a second on a 100k-node
    graph. When no node of the graph holds a body and the tensors reached from the outputs have
    distinct names (the usual case), following them by identity reaches the same nodes: the graph
    is cleaned here in a fraction of that time, else by onnx-graphsurgeon."""
    for tensor in graph.inputs:
        tensor.inputs.clear()
    used = _used_nodes(graph)
    if used is None:
        graph.cleanup(remove_unused_node_outputs=False, recurse_subgraphs=True,
                      remove_unused_graph_inputs=False)
        return
    for function in graph.functions:
        function.cleanup(remove_unused_node_outputs=False, recurse_subgraphs=True,
                         remove_unused_graph_inputs=False, recurse_functions=False)
    kept: list[gs.Node] = []
    for node in graph.nodes:
        if id(node) in used:
            kept.append(node)
        else:
            node.inputs.clear()
            node.outputs.clear()
    graph.inputs = list(graph.inputs)
    graph.nodes = kept


def _used_nodes(graph: gs.Graph) -> set[int] | None:
    """Ids of the nodes of ``graph`` some graph output depends on, followed by identity; None when
    that could differ from onnx-graphsurgeon following names: a node holds a body, two tensors
    reached share a name, or a tensor reached is produced by a node outside the graph."""
    nodes = graph.nodes
    graph_type = gs.Graph
    for attrs in map(_ATTRS, nodes):
        if attrs:
            for value in attrs.values():
                if isinstance(value, graph_type):
                    return None
    in_graph = set(map(id, nodes))
    used: set[int] = set()
    reached: dict[str, int] = {}  # name -> id of the tensor of that name reached
    stack = list(graph.outputs)
    while stack:
        tensor = stack.pop()
        name = tensor.name
        if name:  # onnx-graphsurgeon follows every empty (omitted) tensor, named ""
            first = reached.get(name)
            if first is not None:
                if first != id(tensor):
                    return None
                continue
            reached[name] = id(tensor)
        for node in tensor.inputs:
            if id(node) not in used:
                if id(node) not in in_graph:
                    return None
                used.add(id(node))
                stack.extend(node.inputs)
    return used


def drop_unread_constants(tensors: Iterable[gs.Tensor], outputs: set[str],
                          removed: set[int]) -> list[gs.Node]:
    """The ``Constant`` nodes producing ``tensors`` that nothing reads any more (none of their
    outputs has a reader or is among ``outputs``, the graph's output names), detached and added
    to ``removed``; in the order of ``tensors``."""
    dropped: list[gs.Node] = []
    for tensor in tensors:
        source = producer(tensor)
        if (source is not None and source.op == "Constant" and id(source) not in removed
                and not any(t.outputs or t.name in outputs for t in source.outputs)):
            source.outputs.clear()
            removed.add(id(source))
            dropped.append(source)
    return dropped


def rebuild_nodes(graph: gs.Graph, placed: dict[int, list[gs.Node]], removed: set[int]) -> None:
    """Rebuild ``graph.nodes`` in one pass: each node whose id is a key of ``placed`` is replaced by
    that list (which may hold the node itself), the nodes in ``removed`` are left out."""
    nodes: list[gs.Node] = []
    for node in graph.nodes:
        replacement = placed.get(id(node))
        if replacement is not None:
            nodes.extend(replacement)
        elif id(node) not in removed:
            nodes.append(node)
    graph.nodes = nodes


def can_bypass(node: gs.Node, outputs: set[str]) -> bool:
    """True if ``node``'s first output may be replaced by its first input (:func:`bypass`): always,
    unless the output is a graph output (``outputs``) and the input cannot take its name (a graph
    input, a constant, or another graph output)."""
    source, target = node.inputs[0], node.outputs[0]
    if target.name not in outputs:
        return True
    return producer(source) is not None and source.name not in outputs


def bypass(node: gs.Node, outputs: set[str]) -> None:
    """Remove a node that passes its first input through to its first output (Identity, Dropout in
    inference, a one-input Concat): the readers of the output read the input. When the output is a
    graph output, the input's producer writes it under that name instead (:func:`can_bypass` must
    hold). The node is left detached; the caller drops it from the node list."""
    source, target = node.inputs[0], node.outputs[0]
    if target.name in outputs:
        source_producer = producer(source)
        replace_uses(source, target)
        source_producer.outputs[source_producer.outputs.index(source)] = target
    else:
        replace_uses(target, source)
    node.inputs.clear()
    node.outputs.clear()
