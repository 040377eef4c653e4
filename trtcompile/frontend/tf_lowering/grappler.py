"""Stage 3 of the lowering: tf2onnx's grappler pass with large weights hidden.

Grappler copies the whole ``GraphDef`` many times (meta-graph export, serialization, one copy per
optimizer and iteration, deserialization): on VGG19 it peaked at 9.5 GB. Large weights that grappler
cannot fold anyway (kernels of MatMul/convolutions, :data:`HIDDEN_WEIGHT_BYTES` and up) are
therefore replaced by placeholders while grappler runs and put back afterwards; grappler still sees,
and folds, everything else exactly as in a plain tf2onnx conversion.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping

#: Constants of at least this many bytes that only feed MatMul/convolution weight inputs are hidden
#: from grappler (see the module docstring, stage 3).
HIDDEN_WEIGHT_BYTES = 16 * 1024 * 1024

#: Ops whose second input is a weight grappler never folds into anything when it is large.
WEIGHT_CONSUMERS = frozenset({
    "MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Conv2D", "Conv3D",
    "DepthwiseConv2dNative", "Conv2DBackpropInput", "Conv3DBackpropInputV2", "Einsum",
})


def _bypass_constant_identities(graph_def, keep: set[str]) -> None:
    """Make consumers of ``Identity(Const)`` read the constant directly (what grappler's dependency
    optimizer does anyway), so weights are seen with their real consumers."""
    constants = {node.name for node in graph_def.node if node.op == "Const"}
    # A SavedModel signature puts a chain of Identities between a weight and its reader (one per
    # function-call boundary, then ReadVariableOp's): follow each chain to its constant.
    source = {node.name: node.input[0].split(":")[0] for node in graph_def.node
              if node.op == "Identity" and len(node.input) == 1 and not node.input[0].startswith("^")
              and node.input[0].split(":")[-1] in ("0", node.input[0]) and node.name not in keep}
    alias = {}
    for name, target in source.items():
        for _ in range(len(source)):  # bounded: a malformed graph may hold an Identity cycle
            if target not in source:
                break
            target = source[target]
        if target in constants:
            alias[name] = target
    if not alias:
        return
    for node in graph_def.node:
        for index, name in enumerate(node.input):
            if name.startswith("^"):
                if name[1:] in alias:
                    node.input[index] = "^" + alias[name[1:]]
            elif name.split(":")[0] in alias and name.split(":")[-1] in ("0", name):
                node.input[index] = alias[name.split(":")[0]]
    kept = [node for node in graph_def.node if node.name not in alias]
    del graph_def.node[:]
    graph_def.node.extend(kept)


def _hide_large_weights(graph_def) -> dict[str, object]:
    """Swap large weight constants for placeholders; returns the hidden NodeDefs by name."""
    consumers: dict[str, list] = collections.defaultdict(list)
    for node in graph_def.node:
        for index, name in enumerate(node.input):
            if not name.startswith("^"):
                consumers[name.split(":")[0]].append((node.op, index))
    hidden = {}
    for position, node in enumerate(graph_def.node):
        if node.op != "Const" or len(node.attr["value"].tensor.tensor_content) < HIDDEN_WEIGHT_BYTES:
            continue
        uses = consumers.get(node.name, [])
        if not uses or not all(op in WEIGHT_CONSUMERS and index >= 1 for op, index in uses):
            continue
        from tensorflow.core.framework import node_def_pb2

        placeholder = node_def_pb2.NodeDef(name=node.name, op="Placeholder")
        placeholder.attr["dtype"].CopyFrom(node.attr["dtype"])
        placeholder.attr["shape"].shape.CopyFrom(node.attr["value"].tensor.tensor_shape)
        hidden[node.name] = node_def_pb2.NodeDef()
        hidden[node.name].CopyFrom(node)
        graph_def.node[position].CopyFrom(placeholder)
    return hidden


def _restore_hidden(graph_def, hidden: Mapping[str, object]) -> None:
    for position, node in enumerate(graph_def.node):
        if node.op == "Placeholder" and node.name in hidden:
            graph_def.node[position].CopyFrom(hidden[node.name])


def run_grappler(graph_def, input_names: list[str], output_names: list[str]):
    """Stage 3: tf2onnx's grappler pass with large weights hidden. Returns (graph_def, hidden count)."""
    import tensorflow as tf
    from tf2onnx import tf_loader

    _bypass_constant_identities(graph_def, {name.split(":")[0] for name in output_names})
    hidden = _hide_large_weights(graph_def)
    with tf.Graph().as_default():
        optimized = tf_loader.tf_optimize(input_names, output_names, graph_def)
    del graph_def
    _restore_hidden(optimized, hidden)
    return optimized, len(hidden)
