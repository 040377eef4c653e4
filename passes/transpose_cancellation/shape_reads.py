"""transpose-cancellation, rule 5: a Shape of the transposed tensor reads the untransposed one.

``Shape(Y)[k] == Shape(X)[perm[k]]``: when every use of the shape vector picks dims by constant
index, the picks are mapped through ``perm`` and the Shape reads ``X``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_graphsurgeon as gs

from passes.transpose_cancellation.permutations import (
    SHAPE_TRACE_DEPTH,
    Perm,
    _axis,
    _clamp,
    _Plan,
    _Rejected,
    _slice_indices,
    _unique,
)
from trtcompile import ir


class ShapeReads:
    """Rule 5 (a part of the pass's run, :class:`_Canceller`)."""

    def _plan_shape(self, consumer, output, source, perm, rank, plan: _Plan) -> None:
        self._first_input_only(consumer, output, source, plan)
        plan.output_perms = [None]
        if "start" in consumer.attrs or "end" in consumer.attrs:
            start = _clamp(consumer.attrs.get("start", 0), rank)
            end = _clamp(consumer.attrs.get("end", rank), rank)
            read = [perm[k] for k in range(start, end)]
            if read == list(range(start, end)):
                return
            if read != list(range(read[0], read[0] + len(read))):
                raise _Rejected("transpose feeds Shape: its start/end dims are reordered by the "
                                "transpose")
            new_start, new_end = read[0], read[0] + len(read)
            plan.update = lambda: consumer.attrs.update(start=new_start, end=new_end)
            return
        rewrites: list[Callable[[], None]] = []
        self._shape_reads(consumer.outputs[0], perm, rewrites, 0)
        if rewrites:
            plan.update = lambda: [rewrite() for rewrite in rewrites]

    def _shape_reads(self, tensor: gs.Tensor, perm: Perm, rewrites: list, depth: int) -> None:
        """Collect the rewrites mapping every read of the shape vector ``tensor`` through
        ``perm``; raise _Rejected if some read does not pick dims by constant index."""
        if tensor.name in self.graph_outputs:
            raise _Rejected("transpose feeds Shape: the shape vector is a graph output")
        rank = len(perm)
        for reader in _unique(tensor.outputs):
            op = reader.op
            side_input = any(t is tensor for t in reader.inputs[1:])
            if (id(reader) not in self.position or not ir.is_onnx_op(reader) or side_input
                    or op not in ("Cast", "Identity", "Gather", "Slice")):
                raise _Rejected(f"transpose feeds Shape: the shape vector is read whole by {op}")
            if op in ("Cast", "Identity"):
                if depth >= SHAPE_TRACE_DEPTH:
                    raise _Rejected("transpose feeds Shape: the shape vector is read too far away")
                self._shape_reads(reader.outputs[0], perm, rewrites, depth + 1)
            elif op == "Gather":
                if _axis(reader.attrs.get("axis", 0), 1) != 0:
                    raise _Rejected("transpose feeds Shape: Gather axis is not 0")
                indices = ir.constant_value(reader.inputs[1])
                if indices is None or indices.dtype.kind not in "iu":
                    raise _Rejected("transpose feeds Shape: Gather indices are not constant")
                picked = np.asarray([_axis(i, rank) for i in indices.reshape(-1)], np.int64)
                mapped = np.asarray([perm[i] for i in picked], np.int64)
                if not np.array_equal(mapped, picked):
                    rewrites.append(self._gather_rewrite(reader, mapped.reshape(indices.shape)))
            else:
                picked = _slice_indices(reader, rank)
                if picked is None:
                    raise _Rejected("transpose feeds Shape: Slice of the shape vector has "
                                    "non-constant or non-zero-axis bounds")
                mapped = [perm[i] for i in picked]
                if mapped != picked:
                    rewrites.append(self._gather_rewrite(reader, np.asarray(mapped, np.int64)))

    def _gather_rewrite(self, reader: gs.Node, indices: np.ndarray) -> Callable[[], None]:
        """An update making ``reader`` (a Gather or Slice of a shape vector) a Gather of
        ``indices`` on axis 0."""
        def rewrite() -> None:
            constant = gs.Constant(self.names.fresh(f"{reader.name}_indices"), indices)
            data, old = reader.inputs[0], list(reader.inputs[1:])
            reader.op, reader.attrs = "Gather", {"axis": 0}
            reader.inputs.clear()
            reader.inputs.extend([data, constant])
            for tensor in old:
                self.drop_unread_constant(tensor)
            self.result.count("remapped_shape_reads")
        return rewrite
