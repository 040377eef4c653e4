"""Helpers over :class:`onnx_graphsurgeon.Graph`, the IR every pass reads and rewrites.

The IR is onnx-graphsurgeon's: tensors (:class:`gs.Variable`, :class:`gs.Constant`) and nodes
(:class:`gs.Node`), with a tensor's ``inputs`` being its producer and ``outputs`` its consumers. This
module adds what passes need on top of it and what the reports count:

* layer counting: a *layer* is a top-level node; a call to a model-local function counts as one;
* local functions: fused layers are single nodes calling functions in the ``trtcompile`` domain
  whose bodies are plain ONNX (see :func:`add_local_function`);
* loading and saving with the IR version ONNX Runtime and TensorRT accept;
* a structural fingerprint the pass manager uses to decide whether a pass changed the graph.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import networkx as nx
import numpy as np
import onnx
import onnx_graphsurgeon as gs

#: Domain of the model-local functions that fused layers call.
TRTCOMPILE_DOMAIN = "trtcompile"

#: IR version written into every saved model. onnx >= 1.23 writes 14 by default, which ONNX Runtime
#: 1.31 and TensorRT's parser reject; 10 supports local functions and opsets up to 21.
IR_VERSION = 10

#: Opset the passes emit when a graph has none (matches what tf2onnx writes by default).
DEFAULT_OPSET = 17


# --------------------------------------------------------------------------------------------
# Loading and saving
# --------------------------------------------------------------------------------------------


def import_model(model: onnx.ModelProto) -> gs.Graph:
    """Import an ONNX model into the IR (local functions included).

    Unnamed nodes get names (``<op>_<n>``): reports, rejection reasons and TensorRT's layer metadata
    all refer to nodes by name.
    """
    graph = gs.import_onnx(model)
    name_nodes(graph)
    return graph


def name_nodes(graph: gs.Graph) -> None:
    """Give every unnamed node of the graph (and of its subgraphs and functions) a unique name."""
    unnamed = [node for node in iter_nodes(graph) if not node.name]
    if not unnamed:
        return
    scope = NameScope(graph)
    for node in unnamed:
        node.name = scope.fresh(f"{node.op}_0")


def export_model(graph: gs.Graph, *, ir_version: int = IR_VERSION) -> onnx.ModelProto:
    """Export the IR to an ONNX model whose IR version ONNX Runtime and TensorRT accept.

    Local functions that no node calls any more are dropped, so a pass that fused and then
    un-fused a layer leaves no orphan definition behind.
    """
    called = {call_key(node) for node in iter_nodes(graph)}
    graph.functions = [f for f in graph.functions if function_key(f) in called]
    model = gs.export_onnx(graph, do_type_check=False)
    model.ir_version = min(model.ir_version, ir_version) if model.ir_version else ir_version
    inputs = {value.name for value in model.graph.input}
    if model.ir_version < 4 and any(t.name not in inputs for t in model.graph.initializer):
        # IR 3 requires every initializer to be a graph input; a folded weight is not one, and
        # shape inference and checkers then reject the model (silently, in non-strict inference).
        model.ir_version = 4
    if not any(o.domain == TRTCOMPILE_DOMAIN for o in model.opset_import) and graph.functions:
        model.opset_import.append(onnx.helper.make_opsetid(TRTCOMPILE_DOMAIN, 1))
    return model


def load(path: str | os.PathLike) -> gs.Graph:
    """Load an ONNX file (with external data resolved against its folder) into the IR; a file
    that is missing or not an ONNX model raises InputError naming it."""
    from trtcompile.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"model not found: {path}")
    try:
        model = onnx.load(os.fspath(path))
    except Exception as exc:  # noqa: BLE001 - protobuf's and onnx's errors share no base class
        raise InputError(f"{path} is not an ONNX model ({type(exc).__name__}: "
                         f"{str(exc).strip()[:200]})") from None
    try:
        return import_model(model)
    except Exception as exc:  # noqa: BLE001 - onnx-graphsurgeon's import errors vary
        raise InputError(f"{path}: onnx-graphsurgeon cannot import it ({type(exc).__name__}: "
                         f"{str(exc).strip()[:200]})") from None


def save(model: onnx.ModelProto | gs.Graph, path: str | os.PathLike) -> Path:
    """Write a model atomically: to a temporary file in the same folder, then rename.

    Models above protobuf's 2 GiB limit are written with their weights in one external-data file
    next to the model.
    """
    if isinstance(model, gs.Graph):
        model = export_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if model.ByteSize() > onnx.checker.MAXIMUM_PROTOBUF:
            data_name = f"{path.name}.data"
            onnx.save_model(
                model, tmp_name, save_as_external_data=True, all_tensors_to_one_file=True,
                location=data_name,
            )
        else:
            with open(tmp_name, "wb") as f:
                f.write(model.SerializeToString())
        _publish(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(tmp_name: str, path: Path) -> None:
    """Give a finished temporary file the usual permissions and move it into place."""
    os.chmod(tmp_name, 0o666 & ~_umask())
    os.replace(tmp_name, path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        _publish(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return path


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive advisory lock (``fcntl.flock``) on the file ``path`` (created if absent)
    for the duration of the ``with`` block; other processes taking the same lock wait.

    Guards cache entries several processes may fill at once (the Keras example export, INT8
    calibration caches): the first one in computes and publishes the entry, the others find it
    complete when they get the lock. The lock file stays (deleting it would let two processes
    lock two different files of the same name). The lock is released when the process dies.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


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
            if node.attrs:
                stack.extend(subgraphs(node))


def subgraphs(node: gs.Node) -> list[gs.Graph]:
    """The graphs held in the node's attributes (If branches, Loop/Scan bodies, graph lists)."""
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


def fingerprint(graph: gs.Graph) -> int:
    """A digest of the graph's structure: nodes, their ops, attributes and edges, and constants.

    Two graphs with equal fingerprints are taken to be the same program. It is meant for comparing
    states of one graph within one process (the pass manager's "changed" flag), not for storage:
    constants are identified by name, shape, dtype and the identity of their value array, so a pass
    that changes weights must create new constants (or new arrays) rather than write into existing
    ones in place.
    """

    cache: dict[int, tuple] = {}

    def tensor_key(tensor: gs.Tensor) -> tuple:
        key = cache.get(id(tensor))
        if key is None:
            if isinstance(tensor, gs.Constant):
                # Reading a lazily loaded initializer replaces its value object; load it now so
                # its identity is the same before and after a pass that merely reads weights.
                key = (tensor.name, id(tensor.values))
            else:
                shape = tuple(tensor.shape) if tensor.shape is not None else None
                key = (tensor.name, shape, tensor.dtype)
            cache[id(tensor)] = key
        return key

    def attr_key(value) -> object:
        if isinstance(value, gs.Graph):
            return visit(value)
        if isinstance(value, gs.Constant):
            return tensor_key(value)
        if isinstance(value, np.ndarray):
            return (value.dtype.str, value.shape, value.tobytes()[:256])
        if isinstance(value, list):
            return tuple(attr_key(v) for v in value)
        try:
            hash(value)
            return value
        except TypeError:
            return repr(value)

    def visit(g: gs.Graph) -> int:
        keys = [tuple(tensor_key(t) for t in g.inputs), tuple(tensor_key(t) for t in g.outputs)]
        for node in g.nodes:
            keys.append((
                node.name, node.domain, node.op,
                tuple(tensor_key(t) for t in node.inputs),
                tuple(tensor_key(t) for t in node.outputs),
                tuple((k, attr_key(v)) for k, v in sorted(node.attrs.items())) if node.attrs else (),
            ))
        return hash(tuple(keys))

    # Building many small tuples triggers cyclic-GC passes that cost more than the walk itself.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        parts = [visit(graph)]
        for function in sorted(graph.functions, key=function_key):
            parts.append((function.domain, function.name, visit(function)))
        return hash(tuple(parts))
    finally:
        if gc_was_enabled:
            gc.enable()


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


def outer_scope_reads(node: gs.Node) -> set[str]:
    """Names of the tensors the subgraphs of ``node`` (If/Loop/Scan bodies, nested ones
    included) read from outside themselves, constants excepted."""
    reads: set[str] = set()
    for subgraph in subgraphs(node):
        defined = {t.name for t in subgraph.inputs}
        for inner in iter_nodes(subgraph):
            defined.update(t.name for t in inner.outputs)
        for inner in iter_nodes(subgraph):
            reads.update(t.name for t in inner.inputs
                         if t.name and not isinstance(t, gs.Constant) and t.name not in defined)
    return reads


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
            for node in iter_nodes(function):
                callee = index.get(call_key(node))
                if callee is not None and callee != i:
                    calls.add_edge(callee, i)
        try:
            order = list(nx.lexicographical_topological_sort(calls))
        except nx.NetworkXUnfeasible:  # recursive calls: ONNX forbids them, keep the order
            order = list(range(len(keys)))
        graph.functions = [graph.functions[i] for i in order]
    return graph


def add_local_function(graph: gs.Graph, function: gs.Function) -> gs.Function:
    """Add ``function`` to the graph unless one with the same domain and name exists.

    Function names are specialization keys: two functions with the same name must have the same
    body. Returns the function the graph now holds under that name.
    """
    existing = find_function(graph, function.name, function.domain or "")
    if existing is not None:
        return existing
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


#: Initializers up to this many elements keep their values for shape inference (shape operands).
SHAPE_VALUE_LIMIT = 64


def inferred_dims(graph: gs.Graph) -> dict[str, list[int | str | None]]:
    """Dims ONNX shape inference gives the main graph's tensors (inputs, intermediates, outputs), by
    name: ints, symbols, or None where unknown. Raises ValueError with ONNX's message if it fails.

    Inference runs on a copy in which every initializer larger than :data:`SHAPE_VALUE_LIMIT`
    elements is a typed graph input: shapes need the weights' shapes, not their values (only small
    integer tensors such as Reshape targets feed shapes), and exporting ResNet50's 100 MB of weights
    made inference take 0.5 s instead of 20 ms. The graph itself is not changed.
    """
    standin_graph = graph.copy()
    standins: dict[int, gs.Variable] = {}
    for node in standin_graph.nodes:
        for index, tensor in enumerate(node.inputs):
            if not isinstance(tensor, gs.Constant) or math.prod(tensor.shape) <= SHAPE_VALUE_LIMIT:
                continue
            if id(tensor) not in standins:
                standins[id(tensor)] = gs.Variable(tensor.name, tensor.dtype, list(tensor.shape))
                standin_graph.inputs.append(standins[id(tensor)])
            node.inputs[index] = standins[id(tensor)]
    try:
        inferred = onnx.shape_inference.infer_shapes(export_model(standin_graph), strict_mode=False)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, ValueError) as exc:
        raise ValueError(f"shape inference failed: {exc}") from None
    dims: dict[str, list[int | str | None]] = {}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        tensor_type = value.type.tensor_type
        if value.type.HasField("tensor_type") and tensor_type.HasField("shape"):
            dims[value.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                for d in tensor_type.shape.dim]
    return dims


# --------------------------------------------------------------------------------------------
# Provenance: which nodes of the input model each node of the rewritten graph stands for
# --------------------------------------------------------------------------------------------


class Structure:
    """The top level of a graph by name, frozen at one moment: each node's op (``call_key``),
    input and output tensor names, each tensor's producer and consumers. What
    :func:`trace_provenance` compares; a pass may rewrite the graph freely after it is taken."""

    def __init__(self, graph: gs.Graph):
        #: node name -> (call key, input names, output names), in graph order.
        self.nodes: dict[str, tuple[tuple[str, str], tuple[str, ...], tuple[str, ...]]] = {}
        self.producer: dict[str, str] = {}
        self.consumers: dict[str, list[str]] = {}
        tensors = {t.name for t in [*graph.inputs, *graph.outputs] if t.name}
        nodes, producer, consumers = self.nodes, self.producer, self.consumers
        for node in graph.nodes:
            name = node.name
            inputs = tuple([t.name for t in node.inputs])
            outputs = tuple([t.name for t in node.outputs])
            nodes[name] = ((node.domain or "", node.op), inputs, outputs)
            for tensor in inputs:
                consumers.setdefault(tensor, []).append(name)
            for tensor in outputs:
                producer[tensor] = name
            tensors.update(inputs)
            tensors.update(outputs)
        tensors.discard("")  # an omitted optional input
        self.tensors: set[str] = tensors


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

    surviving = before.tensors & after.tensors
    order: dict[str, int] | None = None
    result: dict[str, tuple[str, ...]] = {}
    for name, (key, _, outputs) in after_nodes.items():
        old = before_nodes.get(name)
        if old is not None and old[0] == key and old[2] == outputs:  # rule 1
            if name in provenance:
                result[name] = provenance[name]
            continue
        # Rule 2: the surviving tensors this node's rewrite produces.
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
