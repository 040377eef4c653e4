"""bfloat16 as ONNX Runtime's CPU provider can run it: float32 arithmetic, bfloat16 storage.

ONNX Runtime 1.32's CPU provider has bfloat16 kernels for data movement (``Reshape``,
``Transpose``, ``Concat``, ``Flatten``), ``Cast`` and ``LayerNormalization`` only: ``Conv``,
``MatMul``, ``Gemm``, ``Add``, ``Relu``, ``Softmax``, the reductions and the pools fail at session
creation ("Could not find an implementation for Conv(22)"), and its Python binding can neither
feed nor return a bfloat16 array. A GPU engine computes a bfloat16 layer with float32 accumulation
and stores its result in bfloat16; :func:`emulate_bfloat16` gives ONNX Runtime the same numbers:
every layer computes in float32 on bfloat16 values, and every tensor the model stores in bfloat16
is rounded to bfloat16 where it is written (``Cast`` to bfloat16 and back to float32, which ONNX
Runtime runs and, with its graph optimizer off as parity runs it, keeps). Parity of a bfloat16
model on the CPU is thereby a check of bfloat16 storage, not of the kernels' own rounding inside
a layer (which a GPU does in float32 too).
"""

from __future__ import annotations

import onnx
import onnx.inliner

BFLOAT16 = onnx.TensorProto.BFLOAT16
FLOAT = onnx.TensorProto.FLOAT

#: Attributes that set an output type (``Cast``'s ``to``, ``EyeLike``'s ``dtype``, ...).
_TYPE_ATTRIBUTES = ("to", "dtype")


def computes_in_bfloat16(model: onnx.ModelProto) -> bool:
    """True if any tensor of ``model`` (top level or a local function) is stored in bfloat16."""
    graph = model.graph
    if any(init.data_type == BFLOAT16 for init in graph.initializer):
        return True
    if any(value.type.tensor_type.elem_type == BFLOAT16
           for value in [*graph.input, *graph.output, *graph.value_info]):
        return True
    return any(_writes_bfloat16(node) for body in [graph, *model.functions] for node in body.node)


def _writes_bfloat16(node: onnx.NodeProto) -> bool:
    for attribute in node.attribute:
        if attribute.name in _TYPE_ATTRIBUTES and attribute.i == BFLOAT16:
            return True
        if attribute.name == "value" and attribute.t.data_type == BFLOAT16:
            return True
    return False


def emulate_bfloat16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float32 model computing what ``model`` computes in bfloat16 (see the module docstring).

    Local functions are inlined first (a bfloat16 specialization's body is rounded like the top
    level). bfloat16 graph inputs and outputs become float32 (fed and read as float32, the inputs
    rounded to bfloat16 on entry). bfloat16 initializers and ``Constant`` values become float32
    (exactly). Nodes holding subgraphs (``If``, ``Loop``, ``Scan``) are run as written.
    """
    model = onnx.inliner.inline_local_functions(model) if model.functions else _copy(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # best effort: the types written in the model remain
        inferred = model
    graph = model.graph
    bfloat16 = {value.name for value in [*inferred.graph.input, *inferred.graph.output,
                                         *inferred.graph.value_info]
                if value.type.tensor_type.elem_type == BFLOAT16}
    taken = {name for node in graph.node for name in [*node.input, *node.output, node.name]}
    taken |= {value.name for value in [*graph.input, *graph.initializer]}

    def fresh(base: str) -> str:
        name, index = base, 0
        while name in taken:
            index += 1
            name = f"{base}_{index}"
        taken.add(name)
        return name

    def rounding(source: str, target: str) -> list[onnx.NodeProto]:
        stored = fresh(f"{target}_bf16")
        return [onnx.helper.make_node("Cast", [source], [stored], fresh(f"{target}_round"),
                                      to=BFLOAT16),
                onnx.helper.make_node("Cast", [stored], [target], fresh(f"{target}_widen"),
                                      to=FLOAT)]

    for index, init in enumerate(graph.initializer):
        if init.data_type == BFLOAT16:
            values = onnx.numpy_helper.to_array(init).astype("float32")
            graph.initializer[index].CopyFrom(onnx.numpy_helper.from_array(values, init.name))
    nodes: list[onnx.NodeProto] = []
    renamed: dict[str, str] = {}
    initializers = {init.name for init in graph.initializer}
    for value in graph.input:
        if value.type.tensor_type.elem_type == BFLOAT16 and value.name not in initializers:
            value.type.tensor_type.elem_type = FLOAT
            renamed[value.name] = fresh(f"{value.name}_rounded")
            nodes.extend(rounding(value.name, renamed[value.name]))
    for node in graph.node:
        for position, name in enumerate(node.input):
            if name in renamed:
                node.input[position] = renamed[name]
        for attribute in node.attribute:
            if attribute.name in _TYPE_ATTRIBUTES and attribute.i == BFLOAT16:
                attribute.i = FLOAT
            elif attribute.name == "value" and attribute.t.data_type == BFLOAT16:
                values = onnx.numpy_helper.to_array(attribute.t).astype("float32")
                attribute.t.CopyFrom(onnx.numpy_helper.from_array(values, attribute.t.name))
        nodes.append(node)
        for position, name in enumerate(node.output):
            if name in bfloat16:
                raw = fresh(f"{name}_raw")
                node.output[position] = raw
                nodes.extend(rounding(raw, name))
    del graph.node[:]
    graph.node.extend(nodes)
    for value in [*graph.output, *graph.value_info, *graph.input]:
        if value.type.tensor_type.elem_type == BFLOAT16:
            value.type.tensor_type.elem_type = FLOAT
    return model


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copied = onnx.ModelProto()
    copied.CopyFrom(model)
    return copied


__all__ = ["computes_in_bfloat16", "emulate_bfloat16"]
