"""Per-node precision constraints (trtexec's ``--layerPrecisions`` and ``--layerOutputTypes``),
written into the graph the parser reads as Cast nodes.

Networks here are strongly typed (TensorRT-RTX's always are), and a strongly typed network obeys
the types its graph gives rather than per-layer precision settings; so a constraint becomes casts
around the node, which every TensorRT obeys:

* ``NODE:fp16`` (precision): the node's floating-point inputs are cast to fp16, so it computes in
  fp16; its floating-point outputs are cast back to their own type for its readers;
* ``NODE:fp16`` (output type): the node computes as before and its output is stored in fp16 (a cast
  to fp16, then back to the output's own type for its readers); ``+`` gives one type per output.

Patterns are ONNX node names, read left to right with one ``*`` wildcard allowed, the last match
winning (trtexec's rules). A pattern no node matches is refused, naming the pattern.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import onnx
from onnx import helper

from trtcompile.backend.options import LAYER_PRECISIONS, constraint_for
from trtcompile.errors import InputError

_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


def _onnx_type(precision: str) -> int:
    return getattr(onnx.TensorProto, LAYER_PRECISIONS[precision])


def _check_patterns(flag: str, nodes: Sequence[str], patterns: Sequence[str]) -> None:
    for pattern in patterns:
        if constraint_for_any(pattern, nodes):
            continue
        shown = ", ".join(nodes[:8]) + (", ..." if len(nodes) > 8 else "")
        raise InputError(f"{flag} {pattern}: no node of the model is named so (nodes: {shown})")


def _element_types(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor name -> ONNX element type, from the model and ONNX shape inference."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - inference is best effort; the model's own types remain
        inferred = model
    types = {value.name: value.type.tensor_type.elem_type
             for graph in (model.graph, inferred.graph)
             for value in [*graph.value_info, *graph.input, *graph.output]
             if value.type.HasField("tensor_type")}
    types.update({tensor.name: tensor.data_type for tensor in model.graph.initializer})
    return {name: elem_type for name, elem_type in types.items() if elem_type}


def constraint_for_any(pattern: str, nodes: Sequence[str]) -> bool:
    """Whether ``pattern`` matches any of ``nodes``."""
    return any(constraint_for(node, [(pattern, True)]) for node in nodes)


def apply_constraints(model: onnx.ModelProto, layer_precisions=(), layer_output_types=()
                      ) -> tuple[onnx.ModelProto, dict[str, dict[str, Any]]]:
    """A copy of ``model`` with the constraints written as casts, and what was applied per node
    (``{node: {"precision": "fp16", "casts": 3}}``). The model itself is not changed."""
    if not layer_precisions and not layer_output_types:
        return model, {}
    names = [node.name for node in model.graph.node]
    _check_patterns("--layerPrecisions", names, [p for p, _ in layer_precisions])
    _check_patterns("--layerOutputTypes", names, [p for p, _ in layer_output_types])
    constrained = onnx.ModelProto()
    constrained.CopyFrom(model)
    types = _element_types(model)

    def elem_type(name: str) -> int:
        return types.get(name, 0)

    nodes: list[onnx.NodeProto] = []
    applied: dict[str, dict[str, Any]] = {}
    for node in constrained.graph.node:
        precision = constraint_for(node.name, layer_precisions)
        output_types = constraint_for(node.name, layer_output_types)
        before: list[onnx.NodeProto] = []
        after: list[onnx.NodeProto] = []
        record: dict[str, Any] = {}
        if precision is not None:
            target = _onnx_type(precision)
            record["precision"] = precision
            for index, name in enumerate(node.input):
                if name and elem_type(name) in _FLOAT_TYPES and elem_type(name) != target:
                    cast_name = f"{name}__{precision}_for_{node.name}"
                    before.append(helper.make_node("Cast", [name], [cast_name], to=target,
                                                   name=f"{node.name}/cast_input{index}"))
                    node.input[index] = cast_name
            if before:  # the node now computes in `precision`: its outputs come out so
                for index, name in enumerate(node.output):
                    if name and elem_type(name) in _FLOAT_TYPES and elem_type(name) != target:
                        computed = f"{name}__{precision}"
                        after.append(helper.make_node("Cast", [computed], [name],
                                                      to=elem_type(name),
                                                      name=f"{node.name}/cast_output{index}"))
                        node.output[index] = computed
        if output_types is not None:
            record["output_types"] = list(output_types)
            for index, name in enumerate(node.output):
                if index >= len(output_types) or not name:
                    continue
                produced = next((c for c in after if c.input[0] == name), None)
                own = elem_type(name)
                target = _onnx_type(output_types[index])
                if own not in _FLOAT_TYPES or own == target:
                    continue
                stored = f"{name}__stored_{output_types[index]}"
                if produced is not None:  # already cast back: store in `target` before that
                    after.remove(produced)
                else:
                    node.output[index] = f"{name}__computed"
                source = node.output[index]
                after += [helper.make_node("Cast", [source], [stored], to=target,
                                           name=f"{node.name}/store_output{index}"),
                          helper.make_node("Cast", [stored], [name], to=own,
                                           name=f"{node.name}/load_output{index}")]
        record["casts"] = len(before) + len(after)
        if precision is not None or output_types is not None:
            applied[node.name] = record
        nodes += [*before, node, *after]
    del constrained.graph.node[:]
    constrained.graph.node.extend(nodes)
    return constrained, applied


__all__ = ["apply_constraints"]
