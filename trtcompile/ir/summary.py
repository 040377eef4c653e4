"""Structural fingerprints of graphs, and the summary the pass manager takes after every pass.

The pass manager decides whether a pass changed the graph by comparing fingerprints, never by
asking the pass; analyses (shapes, MACs) are cached by fingerprint. A fingerprint is therefore
taken after every pass run, and on a 100k-node graph it is a large part of a pipeline's time:
:func:`summarize` takes it in the same walk as the layer count and the op histogram the records
need, and the walk builds no reference cycles, so the garbage it leaves is freed at once instead
of waiting for Python's cyclic collector.

This module imports nothing of :mod:`trtcompile.ir.graph` (which imports it).
"""

from __future__ import annotations

import gc
import zlib
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs


@dataclass(frozen=True)
class GraphSummary:
    """What the pass manager records of a graph at one moment: its :func:`fingerprint`, its layer
    count (top-level nodes), its op histogram (:func:`~trtcompile.ir.graph.op_histogram`) and
    the ops of every scope (the histogram's keys and those of the If/Loop/Scan bodies and local
    functions: what :attr:`Pass.needs_ops <trtcompile.pm.base.Pass.needs_ops>` is checked
    against). Treat ``histogram`` as read-only: summaries are shared between records."""

    fingerprint: int
    layers: int
    histogram: dict[str, int] = field(hash=False)
    ops: frozenset[str] = field(hash=False)


def fingerprint(graph: gs.Graph) -> int:
    """A digest of the graph's structure: nodes, their ops, attributes and edges, and constants.

    Two graphs with equal fingerprints are taken to be the same program. It is meant for comparing
    states of one graph within one process (the pass manager's "changed" flag, analyses cached by
    graph), not for storage. A constant enters by name, the identity of its value array, and the
    array's dtype, shape and a checksum of its bytes: a pass that replaces an array changes the
    fingerprint, and so does one that writes into an existing array in place. Reading the weights
    costs about 0.03 s per 100 MB of them (crc32 at memory speed), once per pass run.
    """
    return summarize(graph).fingerprint


def summarize(graph: gs.Graph) -> GraphSummary:
    """The graph's :func:`fingerprint`, layer count and op histogram, from one walk."""
    # The walk builds a tuple per node and tensor: with the cyclic collector on, allocating that
    # many objects triggers collections that cost more than the walk itself.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        walk = _Walk()
        histogram: dict[str, int] = {}
        parts: list[object] = [walk.graph_key(graph, histogram)]
        for function in sorted(graph.functions, key=lambda f: (f.domain or "", f.name)):
            parts.append((function.domain, function.name, walk.graph_key(function, walk.nested)))
        return GraphSummary(hash(tuple(parts)), len(graph.nodes), dict(sorted(histogram.items())),
                            frozenset(histogram).union(walk.nested))
    finally:
        if gc_was_enabled:
            gc.enable()


def array_key(values: np.ndarray) -> tuple:
    """A key of an array's content: dtype, shape and a checksum of its bytes (the values
    themselves for arrays of Python objects, such as strings)."""
    dtype = values.dtype
    if dtype.hasobject:
        return (dtype, values.shape, repr(values.tolist()))
    try:
        # crc32 reads the buffer in place, without a copy, at about memory speed: weights are
        # read after every pass, and a cryptographic digest would take three times as long.
        checksum = zlib.crc32(values)
    except (BufferError, ValueError):  # not C-contiguous
        checksum = zlib.crc32(np.ascontiguousarray(values))
    return (dtype, values.shape, checksum)


_PLAIN = (int, float, str, bytes)
_VARIABLE, _NDARRAY = gs.Variable, np.ndarray


class _Walk:
    """One fingerprint walk: keys of the constants met so far, by identity (a variable's key is
    cheaper to build again than to look up), and the op histogram of the nested scopes.

    A class rather than nested functions: mutually recursive closures form a reference cycle, which
    would keep every key of the walk alive until the cyclic collector runs."""

    __slots__ = ("nested", "tensor_keys")

    def __init__(self) -> None:
        self.tensor_keys: dict[int, int] = {}
        #: The op histogram of the nested scopes (subgraph bodies and functions) met so far.
        self.nested: dict[str, int] = {}

    def new_tensor_key(self, tensor: gs.Tensor) -> int:
        """The key of a tensor not met before in this walk (and remember it): the hash of its
        name, type and content. A hash rather than the tuple: a node's key holds the keys of its
        tensors, and a tuple does not keep its hash, so every node reading the tensor would hash
        its parts again."""
        if isinstance(tensor, gs.Constant):
            # Reading a lazily loaded initializer replaces its value object; it is read here, so
            # its identity is the same before and after a pass that merely reads weights.
            values = tensor.values
            if type(values) is _NDARRAY and not values.dtype.hasobject:
                try:  # array_key's common case, inline: a walk meets a constant per layer
                    key = (tensor.name, id(values), values.dtype, values.shape, zlib.crc32(values))
                except (BufferError, ValueError):
                    key = (tensor.name, id(values), array_key(values))
            else:
                key = (tensor.name, id(values), array_key(np.asarray(values)))
        else:  # a variable (graph_key keys plain Variables itself, without remembering them)
            shape = tensor.shape
            key = (tensor.name, tuple(shape) if shape is not None else None, tensor.dtype)
        self.tensor_keys[id(tensor)] = key = hash(key)
        return key

    def attr_key(self, value: object) -> object:
        """A hashable key of an attribute's value (graphs by their own key, arrays by content)."""
        if isinstance(value, _PLAIN):
            return value
        if isinstance(value, list):
            return tuple([v if isinstance(v, _PLAIN) else self.attr_key(v) for v in value])
        if isinstance(value, gs.Graph):
            return self.graph_key(value, self.nested)
        if isinstance(value, gs.Constant):
            return self.tensor_keys.get(id(value)) or self.new_tensor_key(value)
        if isinstance(value, np.ndarray):
            return array_key(value)
        try:
            hash(value)
            return value
        except TypeError:
            return repr(value)

    def graph_key(self, graph: gs.Graph, histogram: dict[str, int]) -> int:
        """Hash of one graph (or function body); counts its nodes' ops into ``histogram``."""
        known, new_key, attr_key = self.tensor_keys.get, self.new_tensor_key, self.attr_key

        def key(tensor: gs.Tensor) -> int:
            # A variable's key is hashed again at each use rather than looked up: a dict of every
            # tensor by identity is the walk's largest structure, and on a 100k-node graph looking
            # into it misses the CPU's caches more often than rebuilding the key does. Constants
            # (a checksum of their bytes) are remembered.
            if type(tensor) is _VARIABLE:
                shape = tensor.shape
                return hash((tensor.name, tuple(shape) if shape is not None else None,
                             tensor.dtype))
            return known(id(tensor)) or new_key(tensor)

        # Each node's key is hashed as soon as it is built, while its parts are still in the CPU's
        # caches, and freed at once: hashing one tuple of all keys at the end reads every key
        # again, from memory, and costs a fifth of the walk on a 100k-node graph.
        parts: list[int] = [hash(tuple([key(t) for t in graph.inputs])),
                            hash(tuple([key(t) for t in graph.outputs]))]
        append = parts.append
        # The common shapes of node (one output, one or two inputs, at most one attribute) are
        # keyed without a comprehension each: a walk meets 100k nodes.
        for node in graph.nodes:
            domain, op, attrs, inputs, outputs = (node.domain, node.op, node.attrs, node.inputs,
                                                  node.outputs)
            if len(outputs) == 1:
                output = outputs[0]
                if type(output) is _VARIABLE:  # key()'s first case, inline
                    shape = output.shape
                    output_keys: tuple = (hash((output.name,
                                                tuple(shape) if shape is not None else None,
                                                output.dtype)),)
                else:
                    output_keys = (key(output),)
            else:
                output_keys = tuple([key(t) for t in outputs])
            count = len(inputs)
            if count == 1:
                input_keys: tuple = (key(inputs[0]),)
            elif count == 2:
                first, second = inputs
                input_keys = (key(first), key(second))
            else:
                input_keys = tuple([key(t) for t in inputs])
            if not attrs:
                attr_keys: tuple = ()
            elif len(attrs) == 1:
                ((name, value),) = attrs.items()
                attr_keys = ((name, value if type(value) is int else attr_key(value)),)
            else:
                attr_keys = tuple([(k, attr_key(attrs[k])) for k in sorted(attrs)])
            append(hash((node.name, domain, op, input_keys, output_keys, attr_keys)))
            op_key = op if not domain or domain == "ai.onnx" else f"{domain}.{op}"
            histogram[op_key] = histogram.get(op_key, 0) + 1
        return hash(tuple(parts))
