"""transpose-cancellation, rule 6: a Flatten of the transposed tensor read by MatMul/Gemm weights.

``Flatten(Transpose(perm)(X)) @ W`` equals ``Flatten(X) @ W'`` with ``W``'s rows permuted to
``X``'s flattening order, when ``perm`` keeps the batch axis. The flatten may be a Reshape whose
target is computed from ``Shape(Y)`` (a dynamic batch): :meth:`WeightFold.shape_vector` follows such
shape arithmetic as far as the rule needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx_graphsurgeon as gs

from passes.transpose_cancellation.permutations import (
    _BATCH,
    SHAPE_TRACE_DEPTH,
    Perm,
    _axis,
    _clamp,
    _flatten_axis,
    _permuted_shape,
    _Rejected,
    _slice_indices,
    _unique,
    inverse,
)
from trtcompile import ir


class WeightFold:
    """Rule 6 (a part of the pass's run, :class:`_Canceller`)."""

    def _plan_weight_fold(self, consumer: gs.Node, output: gs.Tensor, source: gs.Tensor | None,
                          perm: Perm, rank: int) -> Callable[[], None]:
        """Check that ``consumer`` flattens ``Y`` to ``[N, C*H*W]`` for constant MatMul/Gemm
        weights only; return the update permuting those weights. Raises _Rejected (the detail)."""
        if perm[0] != 0:
            raise _Rejected("the transpose moves the batch axis")
        target = None
        if consumer.op == "Flatten":
            if _flatten_axis(consumer.attrs.get("axis", 1), rank) != 1:
                raise _Rejected("Flatten axis is not 1")
        else:
            target = self.shape_vector(consumer.inputs[1], {id(output), id(source)})
            if target is None or target[1] or len(target[0]) != 2:
                raise _Rejected("Reshape target is not [N, -1]")
            target = target[0]
        flattened = consumer.outputs[0]
        if flattened.name in self.graph_outputs:
            raise _Rejected("the flattened tensor is a graph output")
        readers = _unique(flattened.outputs)
        if not readers:
            raise _Rejected("the flattened tensor is not read")
        weights = [self._matmul_weight(reader, flattened) for reader in readers]

        dims = self.dims(source) if source is not None else None
        if dims is None or len(dims) != rank or not all(isinstance(d, int) for d in dims[1:]):
            transposed = self.dims(output)
            if transposed is not None and len(transposed) == rank:
                dims = _permuted_shape(transposed, inverse(perm))
        if dims is None or not all(isinstance(d, int) and d >= 0 for d in dims[1:]):
            raise _Rejected("dims of the transposed tensor beyond the batch are unknown")
        features = math.prod(dims[1:])
        if target is not None and not self._is_batch_flatten(target, dims[0], features,
                                                             consumer.attrs.get("allowzero", 0)):
            raise _Rejected("Reshape target is not [N, -1]")
        for reader, (index, values, rows_axis) in zip(readers, weights):
            if values.shape[rows_axis] != features:
                raise _Rejected(f"{reader.op} weight '{reader.inputs[index].name}' has "
                                f"{values.shape[rows_axis]} rows, not the {features} features")

        transposed_dims = [dims[a] for a in perm]

        def update() -> None:
            # Feature j of Flatten(X) is feature order[j] of Flatten(Y).
            order = np.transpose(np.arange(features).reshape([1, *transposed_dims[1:]]),
                                 inverse(perm)).reshape(-1)
            for reader, (index, _, rows_axis) in zip(readers, weights):
                old = reader.inputs[index]
                reader.inputs[index] = self.row_permuted_constant(old, order, rows_axis)
                self.drop_unread_constant(old)
                self.result.count("folded_into_matmul_weights")
        return update

    @staticmethod
    def _is_batch_flatten(target: list, batch, features: int, allowzero) -> bool:
        """True if the Reshape ``target`` (ints, ``_BATCH`` or None) is ``[N, features]``."""
        first, second = target
        if second == -1:
            return first is _BATCH or (first == 0 and not allowzero) or (
                isinstance(batch, int) and first == batch)
        # With the feature count given, the element count fixes the first dim to N.
        return second == features and (first is _BATCH or first == -1 or (
            first == 0 and not allowzero) or (isinstance(batch, int) and first == batch))

    def _matmul_weight(self, reader: gs.Node, flattened: gs.Tensor) -> tuple[int, np.ndarray, int]:
        """(input index, values, axis of the feature rows) of the constant weight ``reader``
        multiplies the flattened tensor with. Raises _Rejected."""
        op = reader.op
        if not ir.is_onnx_op(reader) or op not in ("MatMul", "Gemm"):
            raise _Rejected(f"the flattened tensor is also read by {op}")
        if reader.inputs[0] is not flattened or any(t is flattened for t in reader.inputs[1:]):
            raise _Rejected(f"{op} reads the flattened tensor as its right operand")
        if op == "Gemm" and reader.attrs.get("transA", 0):
            raise _Rejected("Gemm reads the flattened tensor transposed (transA=1)")
        weight = reader.inputs[1]
        values = ir.constant_value(weight)
        if values is None:
            raise _Rejected(f"{op} weight '{weight.name}' is not constant")
        if values.ndim != 2:
            raise _Rejected(f"{op} weight '{weight.name}' is not 2-D")
        rows_axis = 1 if op == "Gemm" and reader.attrs.get("transB", 0) else 0
        return 1, values, rows_axis

    def row_permuted_constant(self, weight: gs.Tensor, order: np.ndarray,
                              rows_axis: int) -> gs.Constant:
        """A new constant: ``weight`` with its feature rows (or columns) taken in ``order``.

        One per (weight, order), so a weight shared by several readers is permuted once.
        """
        key = (id(weight), order.tobytes(), rows_axis)
        if key not in self.row_permuted:
            values = np.take(ir.constant_value(weight), order, axis=rows_axis)
            permuted = gs.Constant(self.names.fresh(f"{weight.name}_permuted"),
                                   np.ascontiguousarray(values))
            self.row_permuted[key] = (weight, permuted)  # holds the key's tensor alive
        return self.row_permuted[key][1]

    def shape_vector(self, tensor: gs.Tensor, batch_of: set[int],
                     depth: int = 0) -> tuple[list, bool] | None:
        """The value of an integer shape computation, as far as the pass needs to know it.

        Returns (items, is_scalar): each item is an int, ``_BATCH`` (dim 0 of a tensor whose id
        is in ``batch_of``) or None (unknown); None if the computation is not understood.
        """
        values = ir.constant_value(tensor)
        if values is not None:
            if values.dtype.kind not in "iu" or values.ndim > 1:
                return None
            return [int(v) for v in values.reshape(-1)], values.ndim == 0
        producer = ir.producer(tensor)
        if producer is None or depth > SHAPE_TRACE_DEPTH or not ir.is_onnx_op(producer):
            return None
        op, inputs = producer.op, producer.inputs
        if op == "Shape":
            dims = self.dims(inputs[0])
            if dims is None:
                rank = self.rank(inputs[0])
                if rank is None:
                    return None
                dims = [None] * rank
            items = [d if isinstance(d, int) and d >= 0 else None for d in dims]
            if id(inputs[0]) in batch_of and items:
                items[0] = _BATCH
            rank = len(items)
            start = _clamp(producer.attrs.get("start", 0), rank)
            end = _clamp(producer.attrs.get("end", rank), rank)
            return items[start:end], False
        if op in ("Cast", "Identity"):
            return self.shape_vector(inputs[0], batch_of, depth + 1)
        if op == "Concat":
            parts = [self.shape_vector(t, batch_of, depth + 1) for t in inputs]
            if any(part is None or part[1] for part in parts):
                return None
            return [item for part in parts for item in part[0]], False
        vector = self.shape_vector(inputs[0], batch_of, depth + 1) if inputs else None
        if vector is None:
            return None
        items, scalar = vector
        if op == "Squeeze":
            return (items, True) if not scalar and len(items) == 1 else None
        if op == "Unsqueeze":
            return (items, False) if scalar else None
        if scalar:
            return None
        try:
            if op == "Gather" and _axis(producer.attrs.get("axis", 0), 1) == 0:
                indices = ir.constant_value(inputs[1])
                if indices is None or indices.ndim > 1:
                    return None
                picked = [items[_axis(i, len(items))] for i in indices.reshape(-1)]
                return picked, indices.ndim == 0
            if op == "Slice":
                picked = _slice_indices(producer, len(items))
                return None if picked is None else ([items[i] for i in picked], False)
        except _Rejected:
            return None
        return None

    def dims(self, tensor: gs.Tensor | None) -> list | None:
        """The tensor's dims (ints where known), from its shape or from shape inference."""
        if tensor is None:
            return None
        values = ir.constant_value(tensor)
        if values is not None:
            return list(values.shape)
        if tensor.shape is not None:
            return [int(d) if hasattr(d, "__index__") else d for d in tensor.shape]
        return self.inferred.get(tensor.name)

    def needs_shape_inference(self) -> bool:
        """True if rule 6 may need ONNX shape inference: some Transpose keeps the batch axis and
        some flatten to 2-D, read by a MatMul/Gemm with a constant 2-D weight, reads a tensor
        whose dims beyond the batch are not all known. (Narrow on purpose: Reshape -> MatMul with
        dynamic dims is everywhere in transformers, and inference costs a graph export.)"""
        if not any(node.op == "Transpose" and list(node.attrs.get("perm", [1]))[:1] == [0]
                   for node in self.graph.nodes):
            return False
        for node in self.graph.nodes:
            if node.op not in ("Reshape", "Flatten") or len(node.outputs) != 1:
                continue
            if node.op == "Reshape":
                target = self.shape_vector(node.inputs[1], set())
                if target is None or target[1] or len(target[0]) != 2:
                    continue
            if not any(reader.op in ("MatMul", "Gemm") and len(reader.inputs) > 1
                       and getattr(ir.constant_value(reader.inputs[1]), "ndim", 0) == 2
                       for reader in node.outputs[0].outputs):
                continue
            shape = node.inputs[0].shape
            if shape is None or not all(hasattr(d, "__index__") for d in shape[1:]):
                return True
        return False
