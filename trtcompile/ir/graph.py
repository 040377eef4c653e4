"""Helpers over :class:`onnx_graphsurgeon.Graph`, the IR every pass reads and rewrites.

The IR is onnx-graphsurgeon's: tensors (:class:`gs.Variable`, :class:`gs.Constant`) and nodes
(:class:`gs.Node`), with a tensor's ``inputs`` being its producer and ``outputs`` its consumers. This
module adds what passes need on top of it and what the reports count:

* layer counting: a *layer* is a top-level node; a call to a model-local function counts as one;
* scopes: the main graph and each If/Loop/Scan body are graphs of their own (:func:`scopes`);
* navigation: producers, consumers, constant values, fresh names;
* local functions: fused layers are single nodes calling functions in the ``trtcompile`` domain
  whose bodies are plain ONNX (see :func:`add_local_function`);
* a structural fingerprint the pass manager uses to decide whether a pass changed the graph
  (:mod:`~trtcompile.ir.summary`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence

import networkx as nx
import numpy as np
import onnx
import onnx_graphsurgeon as gs

from trtcompile.ir.summary import fingerprint

#: Domain of the model-local functions that fused layers call.
TRTCOMPILE_DOMAIN = "trtcompile"

#: IR version written into every saved model. onnx >= 1.23 writes 14 by default, which ONNX Runtime
#: 1.31 and TensorRT's parser reject; 10 supports local functions and opsets up to 21.
IR_VERSION = 10

#: Opset the passes emit when a graph has none (matches what tf2onnx writes by default).
DEFAULT_OPSET = 17

#: Name prefix of the TensorRT segment functions the ``partition`` pass outlines (domain
#: ``trtcompile``): ``TensorRTSegment_0``, ...
SEGMENT_PREFIX = "TensorRTSegment_"

#: Ops that compute nothing (constants, renames, shape metadata): they travel with a segment but
#: do not count towards its size, as TF-TRT does not count Const and Identity.
NON_COMPUTE_OPS = frozenset({"Constant", "Identity", "Shape", "Size"})

#: ONNX ops that hold graphs (bodies) in their attributes; any other standard op holds none.
CONTROL_FLOW_OPS = frozenset({"If", "Loop", "Scan", "SequenceMap"})


# --------------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------------


def is_onnx_domain(domain: str | None) -> bool:
    """True if ``domain`` names the default ONNX operator set (``""``, ``"ai.onnx"`` or unset)."""
    return (domain or "") in ("", "ai.onnx")


def is_onnx_op(node: gs.Node) -> bool:
    """True if ``node`` is a standard ONNX operator rather than a call to a local function."""
    return is_onnx_domain(node.domain)


def is_fused_layer(node: gs.Node) -> bool:
    """True if ``node`` calls a model-local function in the ``trtcompile`` domain (a fused layer)."""
    return (node.domain or "") == TRTCOMPILE_DOMAIN


def is_segment(node: gs.Node) -> bool:
    """True if ``node`` calls a TensorRT segment function (see :data:`SEGMENT_PREFIX`)."""
    return node.domain == TRTCOMPILE_DOMAIN and node.op.startswith(SEGMENT_PREFIX)


def compute_node_count(nodes: Iterable[gs.Node]) -> int:
    """How many of ``nodes`` compute something (everything but :data:`NON_COMPUTE_OPS`)."""
    return sum(1 for node in nodes if not (is_onnx_op(node) and node.op in NON_COMPUTE_OPS))


def layer_count(graph: gs.Graph) -> int:
    """Number of layers: top-level nodes, a local-function call counting as one."""
    return len(graph.nodes)


def op_key(node: gs.Node) -> str:
    """Histogram key of a node: its op type, prefixed by its domain when not the default one."""
    if is_onnx_op(node):
        return node.op
    return f"{node.domain}.{node.op}"


def op_histogram(graph: gs.Graph) -> dict[str, int]:
    """Op-type histogram of the top-level nodes, sorted by key."""
    return dict(sorted(Counter(op_key(n) for n in graph.nodes).items()))


def histogram_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Per-op change in count from ``before`` to ``after``, omitting ops that did not change."""
    delta = {}
    for key in sorted(set(before) | set(after)):
        change = after.get(key, 0) - before.get(key, 0)
        if change:
            delta[key] = change
    return delta


def iter_nodes(graph: gs.Graph) -> Iterator[gs.Node]:
    """All nodes of the graph, including those of subgraphs (If/Loop/Scan bodies) and functions."""
    stack: list[gs.Graph] = [graph, *graph.functions]
    while stack:
        current = stack.pop()
        for node in current.nodes:
            yield node
            # subgraphs()'s own test, inline: a call per node costs more than the rest of a walk
            if node.attrs and (node.op in CONTROL_FLOW_OPS or not is_onnx_op(node)):
                stack.extend(subgraphs(node))


def subgraphs(node: gs.Node) -> list[gs.Graph]:
    """The graphs held in the node's attributes (If branches, Loop/Scan bodies, graph lists).

    Only control-flow ops (:data:`CONTROL_FLOW_OPS`) and non-standard ops are inspected, so a walk
    over a 100k-node graph stays fast."""
    if not node.attrs or (node.op not in CONTROL_FLOW_OPS and is_onnx_op(node)):
        return []
    found: list[gs.Graph] = []
    for attr in node.attrs.values():
        if isinstance(attr, gs.Graph):
            found.append(attr)
        elif isinstance(attr, list):
            found.extend(a for a in attr if isinstance(a, gs.Graph))
    return found


def model_digest(model: onnx.ModelProto) -> str:
    """SHA-256 of a model's program: its graph (nodes, initializers, inputs, outputs) and its local
    functions, not its metadata. Equal across processes and across a save and load, so faces and
    runs can be compared (:func:`fingerprint` is the cheap in-process form)."""
    import hashlib

    digest = hashlib.sha256(model.graph.SerializeToString(deterministic=True))
    for function in model.functions:
        digest.update(function.SerializeToString(deterministic=True))
    return digest.hexdigest()


def scopes(graph: gs.Graph) -> Iterator[gs.Graph]:
    """The graph and its If/Loop/Scan bodies, recursively (not its functions): each a scope of its
    own, whose nodes a local rewrite may rewrite together. Bodies come after their graph."""
    stack = [graph]
    while stack:
        current = stack.pop()
        yield current
        for node in current.nodes:
            # subgraphs()'s own test, inline: a call per node costs more than the rest of a walk
            if node.attrs and (node.op in CONTROL_FLOW_OPS or not is_onnx_op(node)):
                stack.extend(subgraphs(node))


def scope_nodes(graph: gs.Graph) -> Iterator[gs.Node]:
    """The nodes of every scope of the graph (:func:`scopes`; not those of its functions)."""
    for scope in scopes(graph):
        yield from scope.nodes


def live_nodes(graph: gs.Graph) -> set[int]:
    """Ids of the nodes some graph output depends on, in every scope: a node is live when a graph
    output, a live node or a live node's If/Loop/Scan body reads one of its outputs (a body's
    outputs count as read by the node that holds it). An outer value a body reads is the same
    tensor object inside the body (onnx-graphsurgeon resolves it so), so its producer is reached
    through the live body nodes that read it; one only dead body nodes read is dead too."""
    live: set[int] = set()
    stack = [t.inputs[0] for t in graph.outputs if t.inputs]
    while stack:
        node = stack.pop()
        if id(node) in live:
            continue
        live.add(id(node))
        stack.extend(t.inputs[0] for t in node.inputs if t.inputs)
        for body in subgraphs(node):
            stack.extend(t.inputs[0] for t in body.outputs if t.inputs)
    return live


def dead_nodes(graph: gs.Graph) -> list[gs.Node]:
    """The nodes of every scope that no graph output depends on: what a pass must not leave."""
    live = live_nodes(graph)
    return [node for node in scope_nodes(graph) if id(node) not in live]


# --------------------------------------------------------------------------------------------
# Navigation
# --------------------------------------------------------------------------------------------


def producer(tensor: gs.Tensor) -> gs.Node | None:
    """The node that produces ``tensor``, or None for graph inputs and constants."""
    return tensor.inputs[0] if tensor.inputs else None


def consumers(tensor: gs.Tensor) -> list[gs.Node]:
    """The nodes that read ``tensor``."""
    return list(tensor.outputs)


def output_names(graph: gs.Graph) -> set[str]:
    """Names of the graph's outputs (build once per pass; tests against it are O(1))."""
    return {t.name for t in graph.outputs}


def has_single_use(tensor: gs.Tensor, graph_outputs: set[str]) -> bool:
    """True if exactly one node reads ``tensor`` and it is not a graph output.

    ``graph_outputs`` is :func:`output_names` of the graph. A tensor that is also a graph output
    must survive any rewrite under its own name, so it never counts as an internal intermediate.
    """
    return len(tensor.outputs) == 1 and tensor.name not in graph_outputs


def static_shape(tensor: gs.Tensor) -> tuple[int, ...] | None:
    """The tensor's shape if every dimension is a known non-negative integer, else None."""
    shape = tensor.shape
    if shape is None or not all(isinstance(d, int) or hasattr(d, "__index__") for d in shape):
        return None
    dims = tuple(int(d) for d in shape)
    return dims if all(d >= 0 for d in dims) else None


def constant_value(tensor: gs.Tensor) -> np.ndarray | None:
    """The value of ``tensor`` if it is known at compile time, else None.

    Covers initializers (:class:`gs.Constant`) and outputs of ``Constant`` nodes with a ``value``
    attribute.
    """
    if isinstance(tensor, gs.Constant):
        return tensor.values
    node = producer(tensor)
    if node is not None and node.op == "Constant" and "value" in node.attrs:
        value = node.attrs["value"]
        if isinstance(value, gs.Constant):
            return value.values
    return None


def constant_ints(tensor: gs.Tensor) -> list[int] | None:
    """The value of ``tensor`` flattened to Python ints (pads, axes, shapes, split sizes) if it is
    known at compile time (:func:`constant_value`), else None."""
    values = constant_value(tensor)
    return None if values is None else [int(v) for v in np.asarray(values).reshape(-1)]


def split_sizes(split: gs.Node, dim: int | None, opset: int) -> list[int] | None:
    """The sizes of a ``Split``'s outputs along its axis of ``dim`` elements, or None when they are
    not known at compile time or do not add up to ``dim`` (``dim`` None: unknown, which only
    explicit sizes overcome).

    The sizes are the ``split`` input (opset 13+) or attribute (before 13); without them the axis
    is split equally: into equal parts before opset 18 (the size must divide), from 18 into
    ``num_outputs`` parts of ``ceil(dim / n)`` with a smaller last one.
    """
    count = len(split.outputs)
    if len(split.inputs) > 1 and not split.inputs[1].is_empty():
        sizes = constant_ints(split.inputs[1])
    elif "split" in split.attrs:
        sizes = [int(v) for v in split.attrs["split"]]
    elif dim is None or count == 0:
        return None
    elif opset < 18 or "num_outputs" not in split.attrs:
        sizes = [dim // count] * count if dim % count == 0 else None
    else:
        chunk = -(-dim // count)
        sizes = [min(chunk, dim - k * chunk) for k in range(count)]
    if sizes is None or len(sizes) != count or min(sizes, default=0) < 0:
        return None  # (ONNX Runtime rejects a negative final piece)
    return sizes if dim is None or sum(sizes) == dim else None


def constant_shape(tensor: gs.Tensor) -> list[int] | None:
    """The shape of a constant's value, or the tensor's static shape (None when not fully known)."""
    values = constant_value(tensor)
    if values is not None:
        return list(values.shape)
    shape = static_shape(tensor)
    return None if shape is None else list(shape)


#: Attributes a ``Constant`` node may carry and still become an initializer, with the element type
#: ONNX gives each (``value`` carries its own; ``sparse_value`` stays a node).
_CONSTANT_ATTR_DTYPES: dict[str, type | None] = {
    "value": None, "value_float": np.float32, "value_floats": np.float32,
    "value_int": np.int64, "value_ints": np.int64, "value_string": np.str_,
    "value_strings": np.str_,
}


def is_lowerable_constant(node: gs.Node) -> bool:
    """True if the ``Constant`` node ``node`` can become an initializer (:func:`lower_constant`):
    its one attribute holds a dense value, not a sparse one nor a reference to a function
    attribute."""
    if len(node.attrs) != 1:
        return False
    key, value = next(iter(node.attrs.items()))
    return key in _CONSTANT_ATTR_DTYPES and not isinstance(value, gs.Node.AttributeRef)


def constant_attr_array(key: str, value) -> np.ndarray:
    """The tensor a ``Constant`` node's attribute ``key`` holds, in the element type ONNX defines
    for it: ``value_float(s)`` float32, ``value_int(s)`` int64, ``value_string(s)`` strings;
    ``value_float(s)`` and ``value_int(s)`` are scalars or 1-D."""
    if isinstance(value, gs.Constant):
        return value.values
    return np.array(value, dtype=_CONSTANT_ATTR_DTYPES[key])


def lower_constant(node: gs.Node) -> None:
    """Turn a ``Constant`` node's output into an initializer (the node is left without outputs).

    Done here, not left to onnx-graphsurgeon: its lowering is ``np.array(value)``, which makes
    ``value_float(s)`` float64, and a float64 initializer read by a float op is a model neither the
    checker nor ONNX Runtime accepts."""
    key, value = next(iter(node.attrs.items()))
    array = constant_attr_array(key, value)
    tensor = node.outputs[0]
    tensor.to_constant(array)
    tensor.inputs.clear()


def opset(graph: gs.Graph, domain: str = "") -> int:
    """The graph's opset for ``domain`` (the default domain unless given)."""
    if is_onnx_domain(domain):
        return graph.opset or DEFAULT_OPSET
    for entry in getattr(graph, "import_domains", None) or []:
        if entry.domain == domain:
            return entry.version
    return 1


def to_networkx(graph: gs.Graph) -> nx.DiGraph:
    """Dataflow graph of the top-level nodes: one networkx node per IR node index, edges producer to
    consumer. Each networkx node carries the IR node as attribute ``node``."""
    index = {id(node): i for i, node in enumerate(graph.nodes)}
    dag = nx.DiGraph()
    for i, node in enumerate(graph.nodes):
        dag.add_node(i, node=node)
    for i, node in enumerate(graph.nodes):
        for tensor in node.outputs:
            for consumer in tensor.outputs:
                j = index.get(id(consumer))
                if j is not None:
                    dag.add_edge(i, j)
    return dag


class NameScope:
    """Fresh, unique node and tensor names for a graph.

    Collects every name in use once, then hands out ``base``, ``base_1``, ``base_2``, ... skipping
    names that are taken. Build one per pass run: it is O(graph) to create and O(1) per name.
    """

    def __init__(self, graph: gs.Graph):
        self._taken: set[str] = set()
        for node in iter_nodes(graph):
            self._taken.add(node.name)
            self._taken.update(t.name for t in node.inputs)
            self._taken.update(t.name for t in node.outputs)
        self._taken.update(t.name for t in graph.inputs)
        self._taken.update(t.name for t in graph.outputs)
        self._taken.update((f.name for f in graph.functions))

    def fresh(self, base: str) -> str:
        """Return an unused name derived from ``base`` and mark it used."""
        base = base or "t"
        name, n = base, 0
        while name in self._taken:
            n += 1
            name = f"{base}_{n}"
        self._taken.add(name)
        return name


# --------------------------------------------------------------------------------------------
# Attributes
# --------------------------------------------------------------------------------------------


def text_attr(node: gs.Node, key: str, default: str) -> str:
    """A string attribute of ``node`` as ``str`` (ONNX stores them as bytes), or ``default``."""
    value = node.attrs.get(key, default)
    return value.decode() if isinstance(value, bytes) else str(value)


def same_pads(auto_pad: str, kernel: Sequence[int], strides: Sequence[int],
              dilations: Sequence[int], spatial: Sequence[int | None]) -> list[int] | None:
    """Explicit pads (begins then ends) of a ``SAME_UPPER``/``SAME_LOWER`` window, as ONNX places them.

    ``spatial`` holds the input's spatial sizes; a size may be None where the stride is 1 (the
    total padding is then independent of it). Returns None when a needed size is unknown.
    """
    begin, end = [], []
    for axis, (k, stride, dilation) in enumerate(zip(kernel, strides, dilations)):
        effective = (k - 1) * dilation + 1
        if stride == 1:
            total = effective - 1
        else:
            size = spatial[axis]
            if not isinstance(size, (int, np.integer)) or size < 0:
                return None
            total = max((-(-size // stride) - 1) * stride + effective - size, 0)
        small, large = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else large)
        end.append(large if auto_pad == "SAME_UPPER" else small)
    return begin + end


# --------------------------------------------------------------------------------------------
# Local functions
# --------------------------------------------------------------------------------------------


def find_function(graph: gs.Graph, name: str, domain: str = TRTCOMPILE_DOMAIN) -> gs.Function | None:
    """The model-local function ``domain.name``, or None."""
    for function in graph.functions:
        if function.name == name and (function.domain or "") == domain:
            return function
    return None


def function_of(graph: gs.Graph, node: gs.Node) -> gs.Function | None:
    """The local function that ``node`` calls, or None if it is a plain ONNX op."""
    if is_onnx_op(node):
        return None
    return find_function(graph, node.op, node.domain)


def function_key(function: gs.Function) -> tuple[str, str]:
    """The ``(domain, name)`` pair that identifies a local function (and the nodes that call it)."""
    return function.domain or "", function.name


def call_key(node: gs.Node) -> tuple[str, str]:
    """The :func:`function_key` of the function ``node`` would call: ``(domain, op)``."""
    return node.domain or "", node.op


def functions_by_key(graph: gs.Graph) -> dict[tuple[str, str], gs.Function]:
    """The graph's local functions keyed by :func:`function_key` (look calls up with
    :func:`call_key`). Build it once per pass run: lookups are then O(1)."""
    return {function_key(function): function for function in graph.functions}


def outer_reads(node: gs.Node) -> list[gs.Tensor]:
    """The tensors the subgraphs of ``node`` (If/Loop/Scan bodies, nested ones included) read
    from outside themselves, constants excepted, in order of first read. For the graph holding
    ``node`` they are read by ``node``: their producers are used, whatever else reads them."""
    reads: dict[int, gs.Tensor] = {}
    for subgraph in subgraphs(node):
        defined = {t.name for t in subgraph.inputs}
        inner_nodes = list(scope_nodes(subgraph))
        for inner in inner_nodes:
            defined.update(t.name for t in inner.outputs)
        for inner in inner_nodes:
            for tensor in inner.inputs:
                if (tensor.name and not isinstance(tensor, gs.Constant)
                        and tensor.name not in defined):
                    reads.setdefault(id(tensor), tensor)
    return list(reads.values())


def outer_scope_reads(node: gs.Node) -> set[str]:
    """Names of the tensors the subgraphs of ``node`` read from outside (:func:`outer_reads`)."""
    return {tensor.name for tensor in outer_reads(node)}


def toposort(graph: gs.Graph) -> gs.Graph:
    """Sort the nodes of ``graph`` (and of its subgraphs and functions) topologically, and its
    local functions so that each comes after the functions it calls.

    onnx-graphsurgeon's own function ordering (``toposort(mode="full")``) recurses without end
    once the graph holds both a node with subgraphs (If, Loop, Scan) and a local function: the
    helper that collects a function's callees walks the *outer graph's* subgraphs at every level
    instead of the function's. Node order is left to onnx-graphsurgeon (``mode="nodes"``); the
    functions are ordered here on their call graph (networkx), ties kept in their current order.
    """
    graph.toposort(mode="nodes")
    keys = [function_key(function) for function in graph.functions]
    if len(keys) > 1:
        index = {key: i for i, key in enumerate(keys)}
        calls = nx.DiGraph()
        calls.add_nodes_from(range(len(keys)))
        for i, function in enumerate(graph.functions):
            for node in scope_nodes(function):
                callee = index.get(call_key(node))
                if callee is not None and callee != i:
                    calls.add_edge(callee, i)
        try:
            order = list(nx.lexicographical_topological_sort(calls))
        except nx.NetworkXUnfeasible:  # recursive calls: ONNX forbids them, keep the order
            order = list(range(len(keys)))
        graph.functions = [graph.functions[i] for i in order]
    return graph


def function_body_key(function: gs.Function) -> tuple:
    """A hashable form of what ``function`` computes: its nodes (domain, op, attributes, which
    parameter, earlier result or constant each reads), its arity and results; names do not enter
    it, so two functions with equal keys compute the same thing."""
    index: dict[int, int] = {id(t): i for i, t in enumerate(function.inputs)}

    def value_key(value) -> object:
        if isinstance(value, gs.Constant):
            array = np.asarray(value.values)
            return ("tensor", array.dtype.str, array.shape, array.tobytes())
        if isinstance(value, np.ndarray):
            return ("array", value.dtype.str, value.shape, value.tobytes())
        if isinstance(value, gs.Graph):
            return ("graph", fingerprint(value))
        if isinstance(value, (list, tuple)):
            return tuple(value_key(v) for v in value)
        if isinstance(value, gs.Node.AttributeRef):
            return ("ref", value.name)
        return value

    def tensor_key(tensor: gs.Tensor) -> object:
        if tensor.is_empty():
            return None
        if isinstance(tensor, gs.Constant):
            return value_key(tensor)
        return index.get(id(tensor), ("outer", tensor.name))

    nodes = []
    for node in function.nodes:
        inputs = tuple(tensor_key(t) for t in node.inputs)
        for tensor in node.outputs:
            index[id(tensor)] = len(index)
        nodes.append((node.domain or "", node.op, inputs, len(node.outputs),
                      tuple((k, value_key(v)) for k, v in sorted(node.attrs.items()))))
    return (len(function.inputs), tuple(nodes), tuple(tensor_key(t) for t in function.outputs))


def add_local_function(graph: gs.Graph, function: gs.Function) -> gs.Function:
    """Add ``function`` to the graph, or return the graph's function that computes the same.
    Function names are specialization keys: two functions with the same name must have the same
    body. A function of the same domain and name whose body differs (the model's own, say) is not
    reused: ``function`` then takes the first free name ``<name>_1``, ``<name>_2``, ... (or the
    one whose body matches). Returns the function the graph now holds for ``function``.
    """
    domain = function.domain or ""
    base, suffix = function.name, 0
    key = None
    while (existing := find_function(graph, function.name, domain)) is not None:
        key = function_body_key(function) if key is None else key
        if function_body_key(existing) == key:
            return existing
        suffix += 1
        function.name = f"{base}_{suffix}"
    if function.opset is None:
        function.opset = opset(graph)
    graph.functions.append(function)
    return function


def call(function: gs.Function, name: str, inputs: Iterable[gs.Tensor],
         outputs: Iterable[gs.Tensor]) -> gs.Node:
    """A node that calls ``function`` (the caller inserts it into ``graph.nodes``)."""
    return gs.Node(op=function.name, domain=function.domain, name=name, inputs=list(inputs),
                   outputs=list(outputs))


def replace_uses(old: gs.Tensor, new: gs.Tensor) -> None:
    """Make every consumer of ``old`` read ``new`` instead."""
    for consumer in list(old.outputs):
        for i, tensor in enumerate(consumer.inputs):
            if tensor is old:
                consumer.inputs[i] = new
