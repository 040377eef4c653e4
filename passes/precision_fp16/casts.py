"""precision-fp16's Cast chains: back-to-back Casts merged where the first is exact (rule 4)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from trtcompile import ir
from trtcompile.pm import PassContext, PassResult

FLOAT = onnx.TensorProto.FLOAT
FLOAT16 = onnx.TensorProto.FLOAT16
BFLOAT16 = onnx.TensorProto.BFLOAT16

#: Float widenings a Cast chain may skip: ``a -> b -> c`` equals ``a -> c`` when ``a -> b`` is exact.
_EXACT_WIDENINGS = {
    (FLOAT16, FLOAT), (FLOAT16, onnx.TensorProto.DOUBLE), (FLOAT, onnx.TensorProto.DOUBLE),
    (onnx.TensorProto.BFLOAT16, FLOAT), (onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE),
}

#: Integer and bool element types.
_INTEGER_TYPES = {onnx.TensorProto.BOOL, onnx.TensorProto.INT8, onnx.TensorProto.INT16,
                  onnx.TensorProto.INT32, onnx.TensorProto.INT64, onnx.TensorProto.UINT8,
                  onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64}


def _integer_to_half(source: int, middle: int | None, target: int | None) -> bool:
    """True for ``integer -> float32 -> float16``, which equals ``integer -> float16``: float32
    holds every integer below 2^24 exactly, and float16 is infinite from 65520 on (a kept integer
    Cast read by a float16 layer makes this chain). Likewise for bfloat16 below 2^24; above, the
    direct Cast rounds once where the chain rounds twice."""
    return source in _INTEGER_TYPES and middle == FLOAT and target in (FLOAT16, BFLOAT16)


def merge_cast_chains(body: gs.Graph, types: dict[str, int],
                       protected_outputs: Sequence[gs.Tensor], ctx: PassContext,
                       result: PassResult) -> int:
    """Merge ``Cast -> Cast`` where the first is exact; drop a merged Cast that cancels."""
    protected = {t.name for t in protected_outputs} | ir.output_names(body)

    def elem_type(tensor: gs.Tensor) -> int | None:
        if isinstance(tensor, gs.Variable) and tensor.dtype is not None:
            return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(tensor.dtype))
        if isinstance(tensor, gs.Constant):
            return onnx.helper.np_dtype_to_tensor_dtype(tensor.values.dtype)
        return types.get(tensor.name)

    merged = 0
    for node in list(body.nodes):
        if node.op != "Cast" or not node.inputs:
            continue
        if (elem_type(node.inputs[0]) == node.attrs.get("to")
                and node.outputs[0].name not in protected):
            if not ctx.may_rewrite("remove-noop-cast", node, result):
                continue
            ir.replace_uses(node.outputs[0], node.inputs[0])  # a Cast to its own type
            node.inputs.clear()
            node.outputs.clear()
            merged += 1
            continue
        first = ir.producer(node.inputs[0])
        if first is None or first.op != "Cast" or not first.inputs:
            continue
        source = elem_type(first.inputs[0])
        middle = first.attrs.get("to")
        if source is None or (source != middle and (source, middle) not in _EXACT_WIDENINGS
                              and not _integer_to_half(source, middle, node.attrs.get("to"))):
            continue
        if not ctx.may_rewrite("merge-cast-chain", [first, node], result):
            continue
        node.inputs[0] = first.inputs[0]
        merged += 1
        if node.attrs.get("to") == source and node.outputs[0].name not in protected:
            ir.replace_uses(node.outputs[0], node.inputs[0])
            node.inputs.clear()
            node.outputs.clear()
    return merged
