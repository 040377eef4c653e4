"""transpose-cancellation, rule 2: how each kind of op is rewritten to read the untransposed tensor.

Each ``_plan_<kind>`` fills a :class:`_Plan` for one consumer of ``Y = Transpose(perm)(X)`` (the
operands it reads in ``X``'s layout, its attribute updates, the Transposes its outputs need) or
raises :class:`_Rejected` with the reason. The Flatten/Reshape kind falls back on rule 6
(:mod:`.weight_fold`) when the Transpose reorders elements.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from passes.transpose_cancellation.permutations import (
    Perm,
    _axis,
    _flatten_axis,
    _Operand,
    _optional_input,
    _permute_pads,
    _Plan,
    _Rejected,
    surviving_axes_perm,
    unsqueezed_perm,
)
from trtcompile import ir


class PushThrough:
    """Rule 2's plans, one method per op kind (a part of the pass's run, :class:`_Canceller`)."""

    def _layout_operand(self, consumer: gs.Node, index: int, output: gs.Tensor,
                        source: gs.Tensor, perm: Perm) -> _Operand:
        """Bring input ``index`` of ``consumer`` into the untransposed layout."""
        tensor = consumer.inputs[index]
        if tensor is output:
            return _Operand(index, "source", tensor=source)
        rank = len(perm)
        producer = ir.producer(tensor)
        if (producer is not None and producer.op == "Transpose" and not producer.domain
                and id(producer) not in self.removed and self.perm_of(producer) == perm):
            absorbed = tensor.name not in self.graph_outputs and all(
                reader is consumer for reader in tensor.outputs)
            return _Operand(index, "source", tensor=producer.inputs[0], through=producer,
                            absorbed=absorbed)
        values = ir.constant_value(tensor)
        if values is not None:
            if values.ndim > rank:
                raise _Rejected(f"{consumer.op} operand '{tensor.name}' has higher rank than the "
                                "transposed tensor")
            if values.size == 1:
                return _Operand(index, "keep")
            return _Operand(index, "constant", tensor=tensor)
        operand_rank = self.rank(tensor)
        if operand_rank is None:
            raise _Rejected(f"{consumer.op} operand '{tensor.name}' has unknown rank")
        if operand_rank < rank:
            raise _Rejected("non-constant broadcast operand of different rank")
        if operand_rank > rank:
            raise _Rejected(f"{consumer.op} operand '{tensor.name}' has higher rank than the "
                            "transposed tensor")
        return _Operand(index, "insert", tensor=tensor)

    def _plan_unary(self, consumer, output, source, perm, rank, plan: _Plan) -> None:
        if consumer.inputs[0] is not output:
            raise _Rejected(f"transpose feeds a side input of {consumer.op}")
        plan.operands.append(_Operand(0, "source", tensor=source))
        plan.output_perms = [perm] * len(consumer.outputs)

    def _plan_broadcast(self, consumer, output, source, perm, rank, plan: _Plan) -> None:
        for index, tensor in enumerate(consumer.inputs):
            if tensor.name == "":
                continue
            plan.operands.append(self._layout_operand(consumer, index, output, source, perm))
        plan.output_perms = [perm] * len(consumer.outputs)

    def _plan_concat(self, consumer, output, source, perm, rank, plan: _Plan) -> None:
        for index in range(len(consumer.inputs)):
            plan.operands.append(self._layout_operand(consumer, index, output, source, perm))
        axis = perm[_axis(consumer.attrs.get("axis", 0), rank)]
        plan.update = lambda: consumer.attrs.__setitem__("axis", axis)
        plan.output_perms = [perm]

    def _first_input_only(self, consumer: gs.Node, output: gs.Tensor, source: gs.Tensor,
                          plan: _Plan) -> None:
        if consumer.inputs[0] is not output or any(t is output for t in consumer.inputs[1:]):
            raise _Rejected(f"transpose feeds a side input of {consumer.op}")
        plan.operands.append(_Operand(0, "source", tensor=source))

    def _plan_split(self, consumer, output, source, perm, rank, plan: _Plan) -> None:
        self._first_input_only(consumer, output, source, plan)
        axis = perm[_axis(consumer.attrs.get("axis", 0), rank)]
        plan.update = lambda: consumer.attrs.__setitem__("axis", axis)
        plan.output_perms = [perm] * len(consumer.outputs)

    def _plan_softmax(self, consumer, output, source, perm, rank, plan: _Plan) -> None:
        if self.opset < 13:
            raise _Rejected(f"{consumer.op} before opset 13 flattens its input: the axis cannot be "
                            "permuted")
        self._first_input_only(consumer, output, source, plan)
        axis = perm[_axis(consumer.attrs.get("axis", -1), rank)]
        plan.update = lambda: consumer.attrs.__setitem__("axis", axis)
        plan.output_perms = [perm]

    def _plan_normalization(self, consumer, output, source, perm, rank, plan: _Plan) -> None:
        self._first_input_only(consumer, output, source, plan)
        if rank < 2 or perm[1] != 1:
            raise _Rejected(f"transpose moves the channel axis of {consumer.op}")
        if consumer.op == "InstanceNormalization" and perm[0] != 0:
            raise _Rejected("transpose moves the batch axis of InstanceNormalization")
        if sum(1 for t in consumer.outputs[1:] if self.is_read(t)):
            raise _Rejected(f"{consumer.op} in training mode (statistics outputs are read)")
        plan.output_perms = [perm] + [None] * (len(consumer.outputs) - 1)

    def _plan_pad(self, consumer, output, source, perm, rank, plan: _Plan) -> None:
        self._first_input_only(consumer, output, source, plan)
        axes_input = _optional_input(consumer, 3)
        if axes_input is not None:
            axes = self.constant_ints(consumer, axes_input, "Pad axes")
            new_axes = [perm[_axis(a, rank)] for a in axes]
            plan.update = self._set_input(consumer, 3, new_axes, "axes")
        elif "pads" in consumer.attrs:  # opset < 11
            new_pads = _permute_pads(list(consumer.attrs["pads"]), perm)
            plan.update = lambda: consumer.attrs.__setitem__("pads", new_pads)
        else:
            pads_input = _optional_input(consumer, 1)
            if pads_input is None:
                raise _Rejected("Pad has no pads")
            pads = self.constant_ints(consumer, pads_input, "Pad pads")
            if len(pads) != 2 * rank:
                raise _Rejected("Pad pads do not match the tensor rank")
            plan.update = self._set_input(consumer, 1, _permute_pads(pads, perm), "pads")
        plan.output_perms = [perm]

    def _plan_slice(self, consumer, output, source, perm, rank, plan: _Plan) -> None:
        self._first_input_only(consumer, output, source, plan)
        if "starts" in consumer.attrs:  # opset < 10: attributes
            count = len(consumer.attrs["starts"])
            axes = list(consumer.attrs.get("axes", range(count)))
            new_axes = [perm[_axis(a, rank)] for a in axes]
            plan.update = lambda: consumer.attrs.__setitem__("axes", new_axes)
        else:
            axes_input = _optional_input(consumer, 3)
            if axes_input is not None:
                axes = self.constant_ints(consumer, axes_input, "Slice axes")
            else:
                starts = _optional_input(consumer, 1)
                count = self.static_length(starts)
                if count is None:
                    raise _Rejected("Slice has implicit axes and starts of unknown length")
                axes = list(range(count))
            new_axes = [perm[_axis(a, rank)] for a in axes]
            plan.update = self._set_input(consumer, 3, new_axes, "axes")
        plan.output_perms = [perm]

    def _plan_reduce(self, consumer, output, source, perm, rank, plan: _Plan) -> None:
        self._first_input_only(consumer, output, source, plan)
        keepdims = bool(consumer.attrs.get("keepdims", 1))
        if consumer.op in ("ArgMax", "ArgMin"):
            axes = [_axis(consumer.attrs.get("axis", 0), rank)]
            new_axis = perm[axes[0]]
            plan.update = lambda: consumer.attrs.__setitem__("axis", new_axis)
        else:
            axes_input = _optional_input(consumer, 1)
            if "axes" in consumer.attrs:
                axes = [_axis(a, rank) for a in consumer.attrs["axes"]]
                new_axes = sorted(perm[a] for a in axes)
                plan.update = lambda: consumer.attrs.__setitem__("axes", new_axes)
            elif axes_input is not None:
                axes = [_axis(a, rank) for a in self.constant_ints(consumer, axes_input,
                                                                     f"{consumer.op} axes")]
                plan.update = self._set_input(consumer, 1, sorted(perm[a] for a in axes), "axes")
            else:
                axes = [] if consumer.attrs.get("noop_with_empty_axes", 0) else list(range(rank))
        if keepdims or not axes:
            # Reducing every axis with keepdims leaves only size-1 axes: no Transpose needed.
            all_reduced = len(set(axes)) == rank
            plan.output_perms = [None if all_reduced else perm]
        else:
            plan.output_perms = [surviving_axes_perm(perm, set(axes))]

    def _plan_squeeze(self, consumer, output, source, perm, rank, plan: _Plan) -> None:
        self._first_input_only(consumer, output, source, plan)
        axes = self.axes_of(consumer, "Squeeze")
        if axes is None:
            raise _Rejected("Squeeze without axes removes whichever axes have size 1: the "
                            "layout change is not provably equivalent")
        axes = [_axis(a, rank) for a in axes]
        new_axes = sorted(perm[a] for a in axes)
        plan.update = self._set_axes(consumer, new_axes)
        plan.output_perms = [surviving_axes_perm(perm, set(axes))]

    def _plan_unsqueeze(self, consumer, output, source, perm, rank, plan: _Plan) -> None:
        self._first_input_only(consumer, output, source, plan)
        axes = self.axes_of(consumer, "Unsqueeze")
        if axes is None:
            raise _Rejected("Unsqueeze axes are unknown")
        out_rank = rank + len(axes)
        plan.output_perms = [unsqueezed_perm(perm, {_axis(a, out_rank) for a in axes})]

    def _plan_reshape(self, consumer, output, source, perm, rank, plan: _Plan) -> None:
        self._first_input_only(consumer, output, source, plan)
        plan.output_perms = [None]
        if self._keeps_element_order(consumer, source, perm, rank):
            return
        why = f"transpose feeds {consumer.op}: layout change not provably equivalent"
        if not self.fold_matmul_weights:
            raise _Rejected(why)
        try:
            plan.update = self._plan_weight_fold(consumer, output, source, perm, rank)
        except _Rejected as rejection:
            raise _Rejected(f"{why} ({rejection})") from None
        plan.counted = ""  # the update counts each weight it permutes

    def _keeps_element_order(self, consumer, source, perm, rank) -> bool:
        """True if the Transpose moves only size-1 axes, so the Reshape/Flatten may read ``X``."""
        shape = None if source is None else ir.constant_shape(source)
        if shape is None or len(shape) != rank:
            return False
        moved = [perm[i] for i in range(rank) if shape[perm[i]] != 1]
        if moved != sorted(moved):  # the Transpose reorders elements in memory
            return False
        if consumer.op == "Reshape":
            target = ir.constant_value(consumer.inputs[1])
            return target is not None and (0 not in target.tolist()
                                           or bool(consumer.attrs.get("allowzero", 0)))
        axis = _flatten_axis(consumer.attrs.get("axis", 1), rank)
        transposed = [shape[p] for p in perm]
        return int(np.prod(shape[:axis])) == int(np.prod(transposed[:axis]))
