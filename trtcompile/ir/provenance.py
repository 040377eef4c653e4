"""Provenance: which nodes of the input model each node of the rewritten graph stands for.

The pass manager takes a :class:`Structure` of the graph before and after every pass and composes
:func:`trace_provenance` over the pipeline; passes need not say what they replaced.
"""

from __future__ import annotations

import functools
from operator import attrgetter

import onnx_graphsurgeon as gs


class Structure:
    """The top level of a graph by name, frozen at one moment: each node's op (``call_key``),
    input and output tensor names, each tensor's producer and consumers. What
    :func:`trace_provenance` compares; a pass may rewrite the graph freely after it is taken.

    Producers, consumers and the tensor set are derived from the nodes on first use: a rewrite
    that keeps every node it does not remove (rule 1 of :func:`trace_provenance`) needs none of
    them, and on a 100k-node graph they cost more than the nodes themselves."""

    def __init__(self, graph: gs.Graph):
        #: node name -> (call key, input names, output names), in graph order.
        self.nodes: dict[str, tuple[tuple[str, str], tuple[str, ...], tuple[str, ...]]] = {}
        nodes, name_of = self.nodes, attrgetter("name")
        # Every node (names may repeat: unnamed nodes are all ""), for the derived maps.
        self._edges: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = []
        edges = self._edges.append
        for node in graph.nodes:
            name = node.name
            inputs = tuple(map(name_of, node.inputs))
            outputs = tuple(map(name_of, node.outputs))
            nodes[name] = ((node.domain or "", node.op), inputs, outputs)
            edges((name, inputs, outputs))
        self._io = [t.name for t in [*graph.inputs, *graph.outputs]]
        self._producer: dict[str, str] | None = None
        self._consumers: dict[str, list[str]] | None = None

    def _derive(self) -> None:
        producer: dict[str, str] = {}
        consumers: dict[str, list[str]] = {}
        for name, inputs, outputs in self._edges:
            for tensor in inputs:
                consumers.setdefault(tensor, []).append(name)
            for tensor in outputs:
                producer[tensor] = name
        self._producer, self._consumers = producer, consumers

    @property
    def producer(self) -> dict[str, str]:
        """Tensor name -> the name of the node that writes it (the last, if several do)."""
        if self._producer is None:
            self._derive()
        return self._producer

    @property
    def consumers(self) -> dict[str, list[str]]:
        """Tensor name -> the names of the nodes that read it, in graph order."""
        if self._consumers is None:
            self._derive()
        return self._consumers

    @functools.cached_property
    def tensors(self) -> set[str]:
        """Names of the graph's inputs and outputs and of every tensor a node reads or writes."""
        tensors = set(self._io)
        tensors.update(self.consumers)
        tensors.update(self.producer)
        tensors.discard("")  # an omitted optional input
        return tensors


def trace_provenance(before: Structure, after: Structure,
                     provenance: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """The provenance of the nodes of ``after``: the names of the input model's nodes each stands
    for, given ``provenance`` of the nodes of ``before`` (a name missing from it stands for
    itself).

    Works for any rewrite, without the pass's help, from the tensors both graphs share (the
    *surviving* tensors: a rewrite keeps the names of the tensors at its boundary, so the rest of
    the graph still reads them):

    1. A node of ``after`` with the name, op and outputs of a node of ``before`` is that node.
    2. Any other node (new, or a name given a new op or new outputs) stands for the nodes of
       ``before`` its rewrite replaced: from the surviving tensors it produces, directly or
       through other new nodes (a merged convolution's Split), walk back through ``before``'s
       replaced nodes (those rule 1 does not keep) until reaching surviving tensors again; plus
       the replaced node of its own name. Conv -> BatchNormalization -> Relu fused into one call
       named after the Conv thus stands for all three; the Split restoring three merged branches'
       outputs and the merged convolution both stand for the three convolutions.
    3. A node added in a place no rewrite removed anything from (a Cast before an unchanged
       layer) stands for no input node.

    Composed over a pipeline, pass by pass, a node that is rewritten again keeps the chain: its
    provenance is the union of what the nodes it replaced stood for. Like ``provenance``, the
    result leaves out the nodes that stand for themselves alone.
    """
    before_nodes, after_nodes = before.nodes, after.nodes

    def kept(name: str) -> bool:
        old, new = before_nodes.get(name), after_nodes.get(name)
        return old is not None and new is not None and old[0] == new[0] and old[2] == new[2]

    surviving: set[str] | None = None  # the tensors both share (rule 2 only)
    order: dict[str, int] | None = None
    result: dict[str, tuple[str, ...]] = {}
    for name, (key, _, outputs) in after_nodes.items():
        old = before_nodes.get(name)
        if old is not None and old[0] == key and old[2] == outputs:  # rule 1
            if name in provenance:
                result[name] = provenance[name]
            continue
        # Rule 2: the surviving tensors this node's rewrite produces.
        if surviving is None:
            surviving = before.tensors & after.tensors
        boundary: set[str] = set()
        pending, seen = list(outputs), set()
        while pending:
            tensor = pending.pop()
            if not tensor or tensor in seen:
                continue
            seen.add(tensor)
            if tensor in surviving:
                boundary.add(tensor)
                continue
            for consumer in after.consumers.get(tensor, ()):
                if consumer not in before.nodes:  # through new nodes only
                    pending.extend(after.nodes[consumer][2])
        replaced: set[str] = {name} if name in before.nodes else set()
        visited: set[str] = set()
        stack = [before.producer[t] for t in boundary if t in before.producer]
        while stack:
            old = stack.pop()
            if old in visited or kept(old):
                continue
            visited.add(old)
            replaced.add(old)
            for tensor in before.nodes[old][1]:
                if tensor and tensor not in surviving and tensor in before.producer:
                    stack.append(before.producer[tensor])
        if order is None:
            order = {node: i for i, node in enumerate(before_nodes)}
        origins: dict[str, None] = {}
        for old in sorted(replaced, key=order.__getitem__):
            origins.update(dict.fromkeys(provenance.get(old, (old,))))
        if tuple(origins) != (name,):
            result[name] = tuple(origins)
    return result
