"""Analyses of a graph that passes share: tensor shapes from ONNX shape inference, the byte size of a
node's result, cached per graph by its fingerprint.

Shape inference exports the graph, so it costs more than most rewrites; several passes of one
pipeline ask for it, often of a graph no pass changed in between. :func:`cached` keeps one result
per analysis on the graph object, valid while :func:`~trtcompile.ir.graph.fingerprint` is the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from trtcompile.ir.graph import constant_value, fingerprint, is_onnx_op, producer, static_shape
from trtcompile.ir.io import export_model

T = TypeVar("T")

#: Initializers up to this many elements keep their values for shape inference (shape operands).
SHAPE_VALUE_LIMIT = 64

#: Attribute of a graph object holding its cached analyses: name -> (fingerprint, result).
_CACHE_ATTRIBUTE = "_trtcompile_analyses"

#: A tensor's dimensions as shape inference gives them: ints, symbols, or None where unknown.
Dims = list[int | str | None]


def cached(graph: gs.Graph, analysis: str, compute: Callable[[gs.Graph], T]) -> T:
    """``compute(graph)``, reused while the graph's fingerprint is the one it was computed for.

    The result is shared between callers: treat it as read-only. The cache lives on the graph
    object (a copy of the graph starts without one) and holds one result per ``analysis``.
    """
    key = fingerprint(graph)
    entries: dict[str, tuple[int, Any]] = graph.__dict__.setdefault(_CACHE_ATTRIBUTE, {})
    entry = entries.get(analysis)
    if entry is not None and entry[0] == key:
        return entry[1]
    value = compute(graph)
    entries[analysis] = (key, value)
    return value


def inferred_dims(graph: gs.Graph) -> dict[str, Dims]:
    """Dims ONNX shape inference gives the main graph's tensors (inputs, intermediates, outputs), by
    name: ints, symbols, or None where unknown. Raises ValueError with ONNX's message if it fails.

    Inference runs on a copy in which every initializer larger than :data:`SHAPE_VALUE_LIMIT`
    elements is a typed graph input: shapes need the weights' shapes, not their values (only small
    integer tensors such as Reshape targets feed shapes), and exporting ResNet50's 100 MB of weights
    made inference take 0.5 s instead of 20 ms. The graph itself is not changed. Inference runs
    once per graph fingerprint; each caller gets its own copy of the result.
    """
    outcome = cached(graph, "inferred_dims", _inferred_dims_or_error)
    if isinstance(outcome, str):
        raise ValueError(outcome)
    return {name: list(dims) for name, dims in outcome.items()}


def _inferred_dims_or_error(graph: gs.Graph) -> dict[str, Dims] | str:
    """:func:`inferred_dims`, with a failure as its message (so a failure is cached too)."""
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
        return f"shape inference failed: {exc}"
    dims: dict[str, Dims] = {}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        tensor_type = value.type.tensor_type
        if value.type.HasField("tensor_type") and tensor_type.HasField("shape"):
            dims[value.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                for d in tensor_type.shape.dim]
    return dims


def known_dims(shape: Any) -> tuple[int | str, ...] | None:
    """``shape`` as a tuple if every dimension is known: a non-negative int or a symbol (equal
    symbols are equal sizes); None otherwise."""
    if shape is None:
        return None
    dims: list[int | str] = []
    for dim in shape:
        if isinstance(dim, (int, np.integer)) and dim >= 0:
            dims.append(int(dim))
        elif isinstance(dim, str) and dim:
            dims.append(dim)
        else:
            return None
    return tuple(dims)


class ShapeFacts:
    """The shapes of one graph's tensors during one pass run: those the graph carries, completed on
    first need by ONNX shape inference (:func:`inferred_dims`).

    When inference fails, ``log`` (if given) receives one line ``"<who>: shape inference failed:
    ...; using known shapes"`` and only the shapes the graph carries are used.
    """

    def __init__(self, graph: gs.Graph, log: Callable[[str], None] | None = None, who: str = ""):
        self.graph = graph
        self._log = log
        self._who = who
        self._inferred: dict[str, Dims] | None = None
        self._known: dict[str, tuple[int | str, ...]] | None = None

    @property
    def inferred(self) -> dict[str, Dims]:
        """Dims shape inference gives the main graph's tensors, by name (empty if it failed)."""
        if self._inferred is None:
            try:
                self._inferred = inferred_dims(self.graph)
            except ValueError as exc:
                if self._log is not None:
                    self._log(f"{self._who}: {exc}; using known shapes")
                self._inferred = {}
        return self._inferred

    def shape(self, tensor: gs.Tensor) -> tuple[int | str | None, ...] | None:
        """The tensor's static shape, else the dims inference gives it (symbols or None where it
        knows no size), else None."""
        shape = static_shape(tensor)
        if shape is not None:
            return shape
        inferred = self.inferred.get(tensor.name)
        return tuple(inferred) if inferred is not None else None

    def known(self, tensor: gs.Tensor) -> tuple[int | str, ...] | None:
        """The tensor's dims if every one is known, as an int or a symbol (:func:`known_dims`),
        from the graph or from inference."""
        dims = known_dims(tensor.shape)
        if dims is not None:
            return dims
        if self._known is None:
            self._known = {name: dims for name, inferred in self.inferred.items()
                           if (dims := known_dims(inferred)) is not None}
        return self._known.get(tensor.name)


class GraphTooLarge(ValueError):
    """The graph exports to more than protobuf's 2 GiB: ONNX shape inference cannot read it."""


def infer_missing_shapes(graph: gs.Graph) -> bool:
    """Give the main graph's node outputs the shape ONNX shape inference (with data propagation)
    finds where theirs is missing or has a dim it does not know that inference does (a symbol an
    earlier inference wrote before folding made a Reshape's shape constant), and their element
    type where missing; True if some tensor got a shape or a dim.

    Raises :class:`GraphTooLarge` above protobuf's 2 GiB limit and ValueError (ONNX's message)
    when inference fails."""
    model = export_model(graph.copy())
    if model.ByteSize() > onnx.checker.MAXIMUM_PROTOBUF:
        raise GraphTooLarge("model above 2 GiB")
    for value in model.graph.value_info:  # a symbol stored for a dim blocks what inference finds now
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.Clear()
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
        raise ValueError(str(exc)) from None
    known = {}
    for value in inferred.graph.value_info:
        tensor_type = value.type.tensor_type
        if not tensor_type.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in tensor_type.shape.dim]
        known[value.name] = (onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
                             if tensor_type.elem_type else None, dims)
    found = False
    for node in graph.nodes:
        for tensor in node.outputs:
            if not isinstance(tensor, gs.Variable) or tensor.name not in known:
                continue
            dtype, dims = known[tensor.name]
            shape = tensor.shape
            if shape is None:
                tensor.shape = dims
            elif len(shape) == len(dims) and any(
                    not isinstance(old, int) and isinstance(new, int) for old, new in zip(shape, dims)):
                tensor.shape = [new if isinstance(new, int) and not isinstance(old, int) else old
                                for old, new in zip(shape, dims)]
            else:
                continue
            found = True
            if tensor.dtype is None and dtype is not None:
                tensor.dtype = dtype
    return found


def result_bytes(node: gs.Node, tensor: gs.Tensor) -> int | None:
    """Size in bytes of ``tensor`` (an output of ``node`` whose inputs are constants), if known
    statically: from the tensor's shape, else from the op's shape inference on the constant inputs."""
    shape, dtype = tensor.shape, tensor.dtype
    if shape is None or not _is_static(shape) or dtype is None:
        inputs = [t for t in node.inputs if not t.is_empty()]
        try:
            from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

            proto = OnnxExporter.export_node(node)
            schema = onnx.defs.get_schema(node.op, onnx.defs.onnx_opset_version(), node.domain or "")
            types = {t.name: onnx.helper.make_tensor_type_proto(
                onnx.helper.np_dtype_to_tensor_dtype(t.values.dtype), t.values.shape) for t in inputs}
            # Shape-like inputs (small) are passed as data so ops like Expand or ConstantOfShape
            # infer their output shape.
            data = {t.name: onnx.numpy_helper.from_array(t.values, t.name)
                    for t in inputs if t.values.size <= SHAPE_VALUE_LIMIT}
            outputs = onnx.shape_inference.infer_node_outputs(schema, proto, types, data)
        except Exception:  # noqa: BLE001 - "size unknown" is a fine answer for any failure
            return None
        type_proto = outputs.get(tensor.name)
        if type_proto is None or not type_proto.tensor_type.HasField("shape"):
            return None
        dims = [d.dim_value if d.HasField("dim_value") else None
                for d in type_proto.tensor_type.shape.dim]
        if not _is_static(dims):
            return None
        shape, dtype = dims, onnx.helper.tensor_dtype_to_np_dtype(type_proto.tensor_type.elem_type)
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def _is_static(shape) -> bool:
    return all(isinstance(d, (int, np.integer)) and d >= 0 for d in shape)


# Layout facts of Reshape and Transpose chains (attention rewrites read them) ------------------


def merged_dims(tensor: gs.Tensor, dims: dict) -> list | None:
    """The tensor's dims, each an int where the graph or shape inference (``dims``: name -> dims, as
    :func:`inferred_dims` gives them) knows it: an exporter's value info may name a dim that
    inference, after folding, knows."""
    own, inferred = tensor.shape, dims.get(tensor.name)
    if own is None or inferred is None:
        return own if own is not None else inferred
    if len(own) != len(inferred):
        return None
    return [a if isinstance(a, int) else b for a, b in zip(own, inferred)]


def reshaped(reshape: gs.Node, dims: list[int]) -> list[int] | None:
    """The dims ``reshape`` gives a tensor of ``dims``, when its shape is a constant."""
    shape = constant_value(reshape.inputs[1])
    if shape is None or shape.ndim != 1:
        return None
    target = [int(v) for v in shape]
    if not int(reshape.attrs.get("allowzero", 0)):
        target = [dims[i] if v == 0 and i < len(dims) else v for i, v in enumerate(target)]
    if target.count(-1) > 1 or any(v < -1 for v in target):
        return None
    if -1 in target:
        known = int(np.prod([v for v in target if v != -1]))
        total = int(np.prod(dims))
        if known <= 0 or total % known:
            return None
        target[target.index(-1)] = total // known
    return target if int(np.prod(target)) == int(np.prod(dims)) else None


def swap_last_axes(outer: gs.Node, dims: dict) -> list[gs.Node] | None:
    """``[Reshape, Transpose, Reshape]`` when ``outer`` ends ``Reshape(Transpose<perm=[0, 2, 1]>(
    Reshape(t, [B*H, S, D])), [B, H, D, S])`` for ``t`` of known dims ``[B, H, S, D]``: the swap of
    the last two axes, written as torch's exporter writes ``transpose(-2, -1)`` of a rank-4
    tensor; else None."""
    transpose = producer(outer.inputs[0])
    if transpose is None or transpose.op != "Transpose" or not is_onnx_op(transpose) or \
            tuple(int(p) for p in transpose.attrs.get("perm", ())) != (0, 2, 1):
        return None
    inner = producer(transpose.inputs[0])
    if inner is None or inner.op != "Reshape" or not is_onnx_op(inner):
        return None
    source = merged_dims(inner.inputs[0], dims)
    if source is None or len(source) != 4 or not all(isinstance(d, int) and d > 0 for d in source):
        return None
    b, h, s, d = source
    if reshaped(inner, source) != [b * h, s, d] or reshaped(outer, [b * h, d, s]) != [b, h, d, s]:
        return None
    return [inner, transpose, outer]
