"""Which nodes of a model TensorRT's ONNX parser supports, asked of the parser itself.

There is no op list here: :func:`query_support` hands the model to the parser's subgraph-support
query (``OnnxParser.supports_model_v2``, then ``num_subgraphs`` / ``is_subgraph_supported`` /
``get_subgraph_nodes``) and reads its errors. One query does not classify every node:

* an initializer the parser cannot import (a ``uint32`` tensor) fails the whole query before any
  node is looked at, and a graph input of such a type does the same;
* a subgraph reported unsupported may hold supported nodes, rejected only with their neighbours.

So the query is *iterated*: every node an error names (directly, or as a reader of the rejected
initializer or input) is classified unsupported with that error's text, the model is cut down to
the nodes still undecided (the tensors crossing the cut become inputs and outputs of the probe,
typed by ONNX shape inference) and asked again, until the parser accepts every remaining node.
A node the parser leaves out of every subgraph without naming it, or a round that names no node,
is probed alone to get its own error. Each round removes at least one node, so the loop ends.

Reasons are the parser's error descriptions made readable
(:func:`~trtcompile.backend.parser_errors.clean_parser_description`); where the parser says no more
than ``false`` (its op checkers for Unique and BitShift do), the reason names the op and the
parser's checker instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from trtcompile.backend.build import uses_external_data
from trtcompile.backend.build_config import network_flags
from trtcompile.backend.loader import load_tensorrt
from trtcompile.backend.log import capture_log, log_router
from trtcompile.backend.parser_errors import (
    UNHELPFUL_DESCRIPTIONS,
    clean_parser_description,
    rejection_reason,
)

_INITIALIZER_ERROR = re.compile(r"Failed to import initializer: (\S+)$")


@dataclass(frozen=True)
class SupportReport:
    """The parser's verdict on every top-level node of a model.

    ``unsupported`` maps node name -> reason in words; every other node of ``nodes`` is supported.
    """

    nodes: tuple[str, ...]
    unsupported: Mapping[str, str] = field(default_factory=dict)
    #: Parser queries it took to classify every node.
    queries: int = 0
    backend: str = ""
    version: str = ""

    @property
    def all_supported(self) -> bool:
        return not self.unsupported

    def is_supported(self, node: str) -> bool:
        return node not in self.unsupported

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "version": self.version, "queries": self.queries,
                "nodes": len(self.nodes), "unsupported": dict(self.unsupported)}


@dataclass
class _Answer:
    """One parser query: overall verdict, subgraphs (supported, node indices), errors."""

    supported: bool
    subgraphs: list[tuple[bool, list[int]]]
    errors: list[dict[str, Any]]


def query_support(model: onnx.ModelProto, *, model_dir: Path | None = None,
                  plugin_libraries: Sequence[str] = (), plugin_modules: Sequence[str] = ()
                  ) -> SupportReport:
    """Classify every top-level node of ``model`` as supported by TensorRT's ONNX parser or not
    (with the reason), with the plugins of ``plugin_libraries``/``plugin_modules`` loaded: a node a
    plugin implements is supported. Nodes must be named (``ir.import_model`` names them)."""
    from trtcompile.backend.plugins import check_parse_survives, load_plugins

    trt = load_tensorrt()
    loaded = load_plugins(trt, plugin_libraries, plugin_modules)
    check_parse_survives(trt, model, loaded, plugin_libraries, plugin_modules)
    graph = model.graph
    names = [node.name for node in graph.node]
    if len(set(names)) != len(names) or not all(names):
        raise ValueError("query_support needs uniquely named nodes")
    typed = value_types(model)
    _add_observed_ranks(model, typed)
    readers = _readers(graph.node)
    undecided = list(range(len(graph.node)))
    unsupported: dict[int, str] = {}
    queries = 0
    while undecided:
        probe = _probe_model(model, undecided, typed)
        answer = _ask(trt, probe, model_dir)
        queries += 1
        if answer.supported:
            break
        found = _attribute(answer.errors, undecided, readers, graph.node, typed)
        listed = {undecided[i] for _, indices in answer.subgraphs for i in indices
                  if 0 <= i < len(undecided)}
        unlisted = [n for n in undecided if n not in listed and n not in found]
        suspects = unlisted
        if not found and not unlisted:  # unsupported subgraphs, no node named: probe them singly
            suspects = [undecided[i] for ok, indices in answer.subgraphs if not ok
                        for i in indices if 0 <= i < len(undecided)]
        for index in suspects:
            alone = _ask(trt, _probe_model(model, [index], typed), model_dir)
            queries += 1
            if alone.supported:
                if index in unlisted:
                    found[index] = ("TensorRT's ONNX parser left it out of every subgraph it "
                                    "supports without naming a reason")
                continue
            reasons = _attribute(alone.errors, [index], readers, graph.node, typed)
            found[index] = reasons.get(index) or _fallback_reason(alone.errors, graph.node[index])
        if not found:  # nothing attributable even node by node: the rejected subgraphs fall back
            for index in suspects:
                found[index] = ("in a subgraph TensorRT's ONNX parser rejects without naming a "
                                "node: " + _error_text(answer.errors))
        unsupported.update(found)
        undecided = [n for n in undecided if n not in found]
    return SupportReport(
        nodes=tuple(names),
        unsupported={names[i]: unsupported[i] for i in sorted(unsupported)},
        queries=queries, backend=trt.__name__, version=str(getattr(trt, "__version__", "")))


@contextlib.contextmanager
def _native_output_silenced() -> Iterator[None]:
    """The parser prints some rejections (``Unsupported ONNX data type``) straight to the process's
    stdout/stderr, past its logger; they are reported as reasons instead, so hide them while
    querying (Python's own streams and the logger are unaffected)."""
    saved: list[tuple[int, int]] = []
    try:
        for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
            try:
                stream.flush()
                saved.append((fd, os.dup(fd)))
            except (OSError, ValueError, AttributeError):  # no real descriptor: nothing to hide
                continue
        with open(os.devnull, "wb") as devnull:
            for fd, _ in saved:
                os.dup2(devnull.fileno(), fd)
            try:
                yield
            finally:
                _flush_c_stdout()
                for fd, copy in saved:
                    os.dup2(copy, fd)
    finally:
        for _, copy in saved:
            os.close(copy)


def _flush_c_stdout() -> None:
    """Flush the C library's stdout buffer (what native code printed) into the current fd 1."""
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass


def _ask(trt: Any, model: onnx.ModelProto, model_dir: Path | None) -> _Answer:
    router = log_router(trt)
    with capture_log(trt), _native_output_silenced():
        builder = trt.Builder(router)
        network = builder.create_network(network_flags(trt))
        parser = trt.OnnxParser(network, router)
        data = model.SerializeToString()
        if uses_external_data(model) and model_dir is not None:
            supported = parser.supports_model_v2(data, os.fspath(Path(model_dir) / "model.onnx"))
        else:
            supported = parser.supports_model_v2(data)
        subgraphs = [(bool(parser.is_subgraph_supported(i)), list(parser.get_subgraph_nodes(i)))
                     for i in range(parser.num_subgraphs)]
        errors = []
        for i in range(parser.num_errors):
            error = parser.get_error(i)
            errors.append({"node": int(error.node()), "name": error.node_name(),
                           "op": error.node_operator(), "func": error.func(),
                           "file": error.file(), "code": str(error.code()).split(".")[-1],
                           "desc": error.desc()})
        del parser, network, builder
    return _Answer(bool(supported), subgraphs, errors)


def _attribute(errors: Sequence[dict[str, Any]], probe_nodes: Sequence[int],
               readers: Mapping[str, list[int]], nodes: Sequence[onnx.NodeProto],
               types: Mapping[str, onnx.TypeProto]) -> dict[int, str]:
    """Node index (in the full model) -> reason, for every node the errors name."""
    members = set(probe_nodes)
    found: dict[int, str] = {}
    for error in errors:  # the parser's verdict on a node itself comes first
        if 0 <= error["node"] < len(probe_nodes):
            index = probe_nodes[error["node"]]
            description = clean_parser_description(error["desc"])
            found.setdefault(index, _node_reason(error, description, nodes[index]))
    for error in errors:
        if 0 <= error["node"] < len(probe_nodes):
            continue
        description = clean_parser_description(error["desc"])
        initializer = _INITIALIZER_ERROR.search(error["desc"].strip())
        tensor = initializer.group(1) if initializer else (
            error["file"] if error["func"] == "importInput" else None)
        if not tensor:
            continue
        what = "initializer" if initializer else "tensor"
        dtype = types.get(tensor)
        of_type = (f" of type {onnx.helper.tensor_dtype_to_string(dtype.tensor_type.elem_type)[12:].lower()}"
                   if dtype is not None else "")
        for index in readers.get(tensor, []):
            if index in members:
                found.setdefault(index, f"reads {what} '{tensor}'{of_type}, which TensorRT's "
                                        f"parser cannot import" + (
                                            "" if initializer else f": {_type_words(description)}"))
    return found


def _node_reason(error: Mapping[str, Any], description: str, node: onnx.NodeProto) -> str:
    return rejection_reason(description, error.get("func") or "", node.op_type)


def _type_words(description: str) -> str:
    if "data type" in description.lower() or "date type" in description.lower():
        return "its data type has no TensorRT equivalent"
    return description


def _fallback_reason(errors: Sequence[dict[str, Any]], node: onnx.NodeProto) -> str:
    text = _error_text(errors)
    return f"TensorRT's ONNX parser rejects this {node.op_type} node: {text}"


def _error_text(errors: Sequence[dict[str, Any]]) -> str:
    texts = [clean_parser_description(e["desc"]) for e in errors]
    texts = [t for t in dict.fromkeys(texts) if t.lower() not in UNHELPFUL_DESCRIPTIONS]
    return "; ".join(texts[:2]) or "no reason given"


# --------------------------------------------------------------------------------------------
# Probe models: a subset of the nodes, cut tensors as typed inputs and outputs
# --------------------------------------------------------------------------------------------


def _node_reads(node: onnx.NodeProto) -> list[str]:
    """Tensors a node reads: its inputs and the outer-scope names its subgraphs use."""
    reads = [name for name in node.input if name]
    for attribute in node.attribute:
        for subgraph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
            defined = {i.name for i in subgraph.input} | {i.name for i in subgraph.initializer}
            for inner in subgraph.node:
                reads += [name for name in _node_reads(inner) if name not in defined]
                defined.update(inner.output)
    return list(dict.fromkeys(reads))


def _readers(nodes: Iterable[onnx.NodeProto]) -> dict[str, list[int]]:
    readers: dict[str, list[int]] = {}
    for index, node in enumerate(nodes):
        for name in _node_reads(node):
            readers.setdefault(name, []).append(index)
    return readers


def value_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """Tensor name -> type (with shape where known), from the model and ONNX shape inference."""
    stripped = onnx.ModelProto()
    stripped.CopyFrom(model)
    # Shapes need the weights' shapes only: drop their bytes to keep inference fast on big models.
    for tensor in stripped.graph.initializer:
        if tensor.ByteSize() > 4096:
            dims, dtype, name = list(tensor.dims), tensor.data_type, tensor.name
            tensor.Clear()
            tensor.name, tensor.data_type = name, dtype
            tensor.dims.extend(dims)
            stripped.graph.input.append(onnx.helper.make_tensor_value_info(name, dtype, dims))
    try:
        inferred = onnx.shape_inference.infer_shapes(stripped, strict_mode=False)
    except Exception:  # noqa: BLE001 - inference is best effort; the model's own types remain
        inferred = model
    types: dict[str, onnx.TypeProto] = {}
    for value in [*model.graph.value_info, *model.graph.output, *inferred.graph.value_info,
                  *inferred.graph.output, *model.graph.input]:
        tensor_type = value.type.tensor_type
        if not value.type.HasField("tensor_type") or not tensor_type.elem_type:
            continue
        known = types.get(value.name)
        if known is None or tensor_type.HasField("shape") or value in model.graph.input:
            types[value.name] = value.type
    for tensor in model.graph.initializer:
        types[tensor.name] = onnx.helper.make_tensor_type_proto(tensor.data_type, list(tensor.dims))
    return types


def _add_observed_ranks(model: onnx.ModelProto, types: dict[str, onnx.TypeProto]) -> None:
    """Give tensors whose rank ONNX shape inference could not find (after data-dependent ops) the
    rank they have when the model runs on ONNX Runtime, with unnamed-symbol dimensions: a probe
    input without a rank would make the parser reject its readers for the wrong reason."""
    initializers = {tensor.name for tensor in model.graph.initializer}
    unranked = [name for node in model.graph.node for name in node.output
                if name and name not in initializers and (
                    name not in types or not types[name].tensor_type.HasField("shape"))]
    if not unranked:
        return
    try:
        import onnxruntime as ort

        from trtcompile import verify

        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        existing = {value.name for value in probe.graph.output}
        for name in unranked:
            if name not in existing:
                value = probe.graph.output.add()
                value.name = name
                if name in types:
                    value.type.tensor_type.elem_type = types[name].tensor_type.elem_type
        session = ort.InferenceSession(probe.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        results = session.run(unranked, verify.feed_data(model))
    except Exception:  # noqa: BLE001 - best effort: the model's own types remain
        return
    for name, result in zip(unranked, results):
        array = np.asarray(result)
        elem_type = onnx.helper.np_dtype_to_tensor_dtype(array.dtype)
        types[name] = onnx.helper.make_tensor_type_proto(
            elem_type, [f"{name}_dim{axis}" for axis in range(array.ndim)])


def _probe_model(model: onnx.ModelProto, keep: Sequence[int],
                 types: Mapping[str, onnx.TypeProto]) -> onnx.ModelProto:
    """The model restricted to nodes ``keep`` (indices, in order): tensors they read and nobody
    kept produces become inputs; tensors they produce that anything else reads become outputs."""
    graph = model.graph
    kept = [graph.node[i] for i in keep]
    produced = {name for node in kept for name in node.output if name}
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    used_initializers: dict[str, onnx.TensorProto] = {}
    inputs: dict[str, None] = {}
    for node in kept:
        for name in _node_reads(node):
            if name in produced:
                continue
            if name in initializers:
                used_initializers[name] = initializers[name]
            else:
                inputs[name] = None
    keep_set = set(keep)
    read_elsewhere = {name for i, node in enumerate(graph.node) if i not in keep_set
                      for name in _node_reads(node)}
    graph_outputs = {value.name for value in graph.output}
    outputs = [name for node in kept for name in node.output
               if name and (name in graph_outputs or name in read_elsewhere)]
    if not outputs:  # a probe must have an output: keep the last node's
        outputs = [name for name in kept[-1].output if name][:1]

    def value_info(name: str) -> onnx.ValueInfoProto:
        value = onnx.ValueInfoProto(name=name)
        if name in types:
            value.type.CopyFrom(types[name])
        return value

    probe_graph = onnx.helper.make_graph(
        kept, f"{graph.name}_probe", [value_info(n) for n in inputs],
        [value_info(n) for n in dict.fromkeys(outputs)], list(used_initializers.values()))
    probe = onnx.helper.make_model(probe_graph, opset_imports=list(model.opset_import))
    probe.ir_version = model.ir_version
    probe.functions.extend(model.functions)
    return probe


__all__ = ["SupportReport", "query_support", "value_types"]
