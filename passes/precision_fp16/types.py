"""Element types for precision-fp16: ONNX shape inference over the graph and function bodies,
and which slots of an op's schema may be float16 (or bfloat16)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import onnx
import onnx_graphsurgeon as gs

from trtcompile import ir


def infer_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor of the model's main graph that shape inference can type."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # inference is best effort: untyped tensors keep their layers in float32
        inferred = model
    types: dict[str, int] = {}
    graph = inferred.graph
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
            types[value.name] = value.type.tensor_type.elem_type
    for init in graph.initializer:
        types[init.name] = init.data_type
    return types


def infer_function_types(graph: gs.Graph, proto: onnx.FunctionProto,
                          input_types: Sequence[int]) -> dict[str, int]:
    """Element types inside a function's body when called with ``input_types``."""
    inputs = [onnx.helper.make_tensor_value_info(name, elem, None)
              for name, elem in zip(proto.input, input_types)]
    outputs = [onnx.helper.make_empty_tensor_value_info(name) for name in proto.output]
    body = onnx.helper.make_graph(list(proto.node), proto.name, inputs, outputs)
    opsets = list(proto.opset_import) or [onnx.helper.make_opsetid("", ir.opset(graph))]
    model = onnx.helper.make_model(body, opset_imports=opsets)
    model.ir_version = ir.IR_VERSION
    types = infer_types(model)
    types.update({name: elem for name, elem in zip(proto.input, input_types)})
    return types


@lru_cache(maxsize=None)
def schema_slots(op: str, opset: int, type_str: str = "tensor(float16)"
                 ) -> tuple[tuple[bool, ...], tuple[bool, ...], bool, bool] | None:
    """Whether each input/output slot of ``op`` at ``opset`` may be of ``type_str`` (float16 or
    bfloat16; last slot repeats if variadic)."""
    try:
        schema = onnx.defs.get_schema(op, opset, "")
    except onnx.defs.SchemaError:
        return None
    allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}

    def slot(param) -> bool:
        return type_str in allowed.get(param.type_str, {param.type_str})

    variadic = onnx.defs.OpSchema.FormalParameterOption.Variadic
    return (tuple(slot(p) for p in schema.inputs), tuple(slot(p) for p in schema.outputs),
            bool(schema.inputs) and schema.inputs[-1].option == variadic,
            bool(schema.outputs) and schema.outputs[-1].option == variadic)


def slot_allows(slots: tuple[bool, ...], variadic: bool, index: int) -> bool:
    if index < len(slots):
        return slots[index]
    return variadic and bool(slots) and slots[-1]
