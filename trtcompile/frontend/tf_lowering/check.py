"""The lowered model is checked before any pass sees it.

tf2onnx leaves constructs the ONNX checker rejects, some for its own ONNX optimizers to remove
(the ``faithful`` lowering runs none of them). Those known are cleaned here
(:func:`clean_lowered`):

1. ``Identity`` nodes with more than one input. The handler of ``TensorListFromTensor`` (the
   input of every Keras RNN's ``while`` loop: GRU, LSTM, SimpleRNN) and the wiring of ``while``
   bodies retype nodes to ``Identity`` and keep their other inputs (the list's element shape);
   tf2onnx's identity optimizer then reads only the first input. The cleanup does the same: it
   keeps the first input, then drops the initializers nobody reads any more.
2. Graph outputs without a shape (not even a rank): tf2onnx gives none to the output of a table
   lookup (``CategoryMapper``), and the checker requires one on every graph output. They get
   the shape ONNX shape inference finds for them.

Then the model must pass the ONNX checker with its full check (shape inference included):
:func:`checker_problem` returns the checker's words, or None. A faithful lowering that still fails
falls back to tf2onnx's optimizers (``tf2onnx-optimized``) and says so; a lowering that fails
either way is reported as a lowering failure naming the TensorFlow op (:func:`lowering_error`).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping

import onnx

#: Checker messages name the failing node in one of these forms.
_NODE_NAME_PATTERNS = (re.compile(r"Name: (\S+) OpType"), re.compile(r"Node\(([^)]+)\)"))
#: Suffixes tf2onnx appends to the TensorFlow node name of nodes it adds (``__71``, ``_Unsqueeze__3``).
_TF2ONNX_SUFFIX = re.compile(r"(_[A-Za-z]+)?__\d+$")


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every subgraph (Loop, If, Scan bodies) in it."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for body in attr.graphs:
                    yield from _graphs(body)


def clean_lowered(model: onnx.ModelProto) -> Counter:
    """Clean, in place, what tf2onnx leaves that the checker rejects (see the module docstring);
    returns counts by rule (``identity_extra_inputs``, ``unused_initializers``,
    ``output_shapes``)."""
    counts: Counter = Counter()
    for graph in _graphs(model.graph):
        for node in graph.node:
            if node.op_type == "Identity" and node.domain in ("", "ai.onnx") and len(node.input) > 1:
                del node.input[1:]
                counts["identity_extra_inputs"] += 1
    if counts["identity_extra_inputs"]:
        read = {name for graph in _graphs(model.graph) for node in graph.node for name in node.input}
        read |= {value.name for value in model.graph.output}
        for graph in _graphs(model.graph):
            kept = [tensor for tensor in graph.initializer if tensor.name in read]
            counts["unused_initializers"] += len(graph.initializer) - len(kept)
            if len(kept) != len(graph.initializer):
                dropped = {t.name for t in graph.initializer} - {t.name for t in kept}
                del graph.initializer[:]
                graph.initializer.extend(kept)
                # An initializer listed as a graph input (IR < 4) goes with it.
                listed = [value for value in graph.input if value.name not in dropped]
                del graph.input[:]
                graph.input.extend(listed)
    # After rule 1: shape inference stops at a two-input Identity.
    unshaped = [value for value in model.graph.output
                if value.type.HasField("tensor_type") and not value.type.tensor_type.HasField("shape")]
    if unshaped:
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except (onnx.shape_inference.InferenceError, RuntimeError):
            inferred = None
        if inferred is not None:
            found = {value.name: value for value in inferred.graph.output}
            for value in unshaped:
                typed = found.get(value.name)
                if typed is not None and typed.type.tensor_type.HasField("shape"):
                    value.type.tensor_type.shape.CopyFrom(typed.type.tensor_type.shape)
                    counts["output_shapes"] += 1
    return +counts


def checker_problem(model: onnx.ModelProto) -> str | None:
    """The ONNX checker's full check of ``model`` (shape inference included): its first line,
    or None when the model passes. Models over protobuf's 2 GB are checked from a file."""
    try:
        if model.ByteSize() < onnx.checker.MAXIMUM_PROTOBUF:
            onnx.checker.check_model(model, full_check=True)
        else:
            with tempfile.TemporaryDirectory(prefix="trtcompile-check-") as folder:
                path = os.path.join(folder, "model.onnx")
                onnx.save_model(model, path, save_as_external_data=True,
                                all_tensors_to_one_file=True, location="model.onnx.data")
                onnx.checker.check_model(path, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        text = " ".join(str(error).split())
        return text[:400]
    return None


def failing_node(problem: str) -> str | None:
    """The node a checker message names, if it names one."""
    for pattern in _NODE_NAME_PATTERNS:
        match = pattern.search(problem)
        if match:
            return match.group(1)
    return None


def tensorflow_op(node_name: str | None, tf_ops: Mapping[str, str]) -> tuple[str, str] | None:
    """``(op, TensorFlow node)`` a lowered node comes from: its own name, or its name without the
    suffix tf2onnx adds to nodes it creates, or the closest enclosing scope that is a node."""
    if not node_name:
        return None
    candidates = [node_name, _TF2ONNX_SUFFIX.sub("", node_name)]
    parts = node_name.split("/")
    candidates += ["/".join(parts[:k]) for k in range(len(parts) - 1, 0, -1)]
    for name in candidates:
        if name in tf_ops:
            return tf_ops[name], name
    return None


def lowering_error(problem: str, tf_ops: Mapping[str, str], mode: str) -> str:
    """One line for a lowered model that fails the checker: which TensorFlow op, and what."""
    node = failing_node(problem)
    origin = tensorflow_op(node, tf_ops)
    if origin is not None:
        what = f"TensorFlow op {origin[0]} (node '{origin[1]}')"
    elif node is not None:
        what = f"node '{node}'"
    else:
        what = "the model"
    return (f"tf2onnx lowered {what} to ONNX the checker rejects ({mode} lowering): {problem}; "
            "replace the op in the model or export without it")


__all__ = ["checker_problem", "clean_lowered", "failing_node", "lowering_error", "tensorflow_op"]
