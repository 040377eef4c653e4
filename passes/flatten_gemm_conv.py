"""flatten-gemm-conv: a fully connected layer on a flattened feature map becomes a convolution whose
kernel covers the map.

``Gemm(Flatten(x), W, B)`` on ``x`` of shape ``[N, C, H, W]`` computes, for every output unit ``m``,
the sum over ``c, h, w`` of ``x[n, c, h, w] * W[m, c*H*W + h*W + w]``: exactly a ``Conv`` of ``x``
with the kernel ``W`` reshaped to ``[M, C, H, W]`` (one output position), then a ``Flatten``.
TensorRT lowers the Flatten of a convolution's map with more than one position to a copy out of the
convolution's vectorized layout (a ``Resh`` layer); a convolution reads that layout in place, and
the Flatten of its ``[N, M, 1, 1]`` result is free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from trtcompile import ir
from trtcompile.ir.rewrite import Match, Reject, RewriteRule, Scope, apply_rule
from trtcompile.pm import Pass, PassContext, PassResult


@dataclass
class _GemmConv(Match):
    """A Gemm/MatMul (the anchor) reading the flatten of a ``[N, C, H, W]`` map: ``map_shape`` is
    ``(C, H, W)``; the check fills in the kernel ``[M, C*H*W]`` and the bias."""

    map_shape: tuple[int, int, int] = (0, 0, 0)
    weights: np.ndarray | None = None
    bias: np.ndarray | None = None


@dataclass(frozen=True)
class FlattenGemmConv(Pass, RewriteRule):
    """Replace ``Gemm``/``MatMul`` of a flattened ``[N, C, H, W]`` map by ``Conv`` + ``Flatten``.

    Rules:
      1. The flatten is ``Flatten`` with ``axis`` 1, or a ``Reshape`` to a constant ``[a, C*H*W]``
         (``a`` is ``0``, ``-1`` or the known batch) or ``[a, -1]`` (``a`` is ``0`` or the known
         batch; ``0`` counts only without ``allowzero``), of a tensor of rank 4 whose ``C``, ``H``
         and ``W`` are known integers.
      2. ``H*W`` must be above 1. A flatten of a ``1x1`` map is free in TensorRT already, and the
         convolution then gains nothing (ResNet-50 and GoogLeNet light models: 58 = 58, 78 = 78).
      3. The reader is a ``Gemm`` with ``transA=0``, constant ``B`` and a constant ``C`` (if any)
         of shape ``[]``, ``[1]``, ``[M]`` or ``[1, M]``, or a ``MatMul`` with a constant 2-D second
         operand; float32 or float16 only (TensorRT has no float64, ONNX Runtime's
         CPU provider no double ``Conv``). ``alpha`` scales the kernel and ``beta`` the bias.
      4. The reader's result goes, through single-input pointwise layers (ReLU and the other
         activations), only to ``Gemm``/``MatMul`` layers (as their first operand) or a
         ``Softmax``, and none of those tensors is a graph output. Otherwise TensorRT builds the
         small Gemm as one generated kernel that reads the flatten itself, and a convolution's
         ``[N, M, 1, 1]`` result would need a copy out of its layout (measured on conv, MaxPool,
         Gemm and ReLU models of 8 to 512 channels: one layer more as a graph output, never more
         when a Gemm or Softmax follows, one fewer at VGG's size).
      5. Each such reader becomes ``Conv(x, K, bias)`` with ``K = (alpha * B')`` reshaped to
         ``[M, C, H, W]`` (``B'`` is ``B`` as ``[M, K]``), then ``Flatten(axis=1)`` writing the
         reader's output under its own name. The flatten stays while other layers read it.

    Measured on TensorRT-RTX 1.7 with the VGG-19 light model: 27 -> 26 engine layers (the ``Resh``
    copy before ``fc6`` goes; the convolution absorbs the ReLU). Exact up to summation order: the
    same products, summed over the same elements. The MACs are the same (``M * C * H * W``).
    Requires: nothing (shape inference supplies unknown input shapes). Preserves: graph inputs and
    outputs, topological order; the ``[N, units, 1, 1]`` map the convolution writes carries its
    shape and element type. Counts: ``gemm_convs``, ``matmul_convs``.
    """

    name: ClassVar[str] = "flatten-gemm-conv"
    anchor_ops: ClassVar[frozenset[str]] = frozenset({"Flatten", "Reshape"})
    needs_ops: ClassVar[frozenset[str]] = anchor_ops
    rule: ClassVar[str] = "gemm-to-conv"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        return apply_rule(self, graph, ctx, PassResult(), who=self.name)

    def match(self, flat: gs.Node, scope: Scope) -> list[_GemmConv] | Reject | None:
        """One candidate per Gemm/MatMul reading the flatten of a map (rules 1-2); the flatten
        goes with the last of its readers to become a convolution."""
        if len(flat.outputs) != 1:
            return None
        readers = [r for r in flat.outputs[0].outputs if r.op in ("Gemm", "MatMul")]
        if not readers:
            return None
        shape = scope.shapes.shape(flat.inputs[0])
        reason = self._flattens_map(flat, shape)
        if reason is not None:
            return Reject([flat, readers[0]], reason)
        return [_GemmConv([flat, reader], reader, map_shape=tuple(int(d) for d in shape[1:]))
                for reader in readers]

    def check(self, match: _GemmConv, scope: Scope) -> str | Reject | None:
        flat, reader = match.nodes
        channels, height, width = match.map_shape
        kernel = _kernel(reader, flat.outputs[0], channels * height * width)
        if isinstance(kernel, str):
            return Reject([reader], kernel)
        match.weights, match.bias = kernel
        if not _feeds_kernel(reader.outputs[0], scope.outputs):
            return ("the result is not read by a Gemm, MatMul or Softmax (through pointwise "
                    "layers): TensorRT would copy the conv's result out of its layout")
        return None

    def rewrite(self, match: _GemmConv, scope: Scope) -> list[gs.Node]:
        flat, reader = match.nodes
        names = scope.names
        channels, height, width = match.map_shape
        units = match.weights.shape[0]
        output = reader.outputs[0]
        # The map's shape is known here (it was checked): written down, as the shape inference
        # of the next compile would. Only with an element type: a value_info without one is
        # not written back.
        dtype = output.dtype if output.dtype is not None else flat.inputs[0].dtype
        batch = scope.shapes.shape(flat.inputs[0])[0]
        conv_out = gs.Variable(names.fresh(f"{reader.name}_map"), dtype=dtype,
                               shape=None if dtype is None else [batch, units, 1, 1])
        inputs = [flat.inputs[0], gs.Constant(names.fresh(f"{reader.name}_kernel"),
                                              np.ascontiguousarray(match.weights.reshape(
                                                  units, channels, height, width)))]
        if match.bias is not None:
            inputs.append(gs.Constant(names.fresh(f"{reader.name}_bias"), match.bias))
        conv = gs.Node("Conv", name=names.fresh(f"{reader.name}_conv"),
                       attrs={"kernel_shape": [height, width]}, inputs=inputs, outputs=[conv_out])
        flatten = gs.Node("Flatten", name=names.fresh(f"{reader.name}_flatten"),
                          attrs={"axis": 1}, inputs=[conv_out], outputs=[output])
        reader.inputs.clear()
        reader.outputs.clear()
        scope.count("gemm_convs" if reader.op == "Gemm" else "matmul_convs")
        return [conv, flatten]

    @staticmethod
    def _flattens_map(flat: gs.Node, shape) -> str | None:
        """None if ``flat`` flattens a known ``[N, C, H, W]`` map with more than one position, else
        why not."""
        if shape is None or len(shape) != 4:
            return "the flattened tensor is not of known rank 4"
        if not all(isinstance(d, int) and d > 0 for d in shape[1:]):
            return "the channels and spatial dimensions are not all known"
        features = math.prod(shape[1:])
        if flat.op == "Flatten":
            if int(flat.attrs.get("axis", 1)) % 4 != 1:
                return "the Flatten is not on axis 1"
        else:
            target = ir.constant_value(flat.inputs[1]) if len(flat.inputs) > 1 else None
            if target is None:
                return "the Reshape's shape is not constant"
            target = [int(v) for v in np.asarray(target).reshape(-1)]
            lead = {0} if not int(flat.attrs.get("allowzero", 0)) else set()
            if isinstance(shape[0], int):
                lead.add(shape[0])
            if len(target) != 2 or not (target[1] == features and target[0] in lead | {-1}
                                        or target[1] == -1 and target[0] in lead):
                return f"the Reshape to {target} is not a flatten to [N, {features}]"
        if shape[2] * shape[3] == 1:
            return "the map is 1x1: TensorRT reads its flatten in place, so a convolution gains nothing"
        return None


#: Single-input pointwise ops a result may pass through on its way to the next kernel.
_POINTWISE = frozenset({"Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "Elu", "HardSigmoid",
                        "HardSwish", "Identity", "Dropout"})


def _feeds_kernel(tensor: gs.Tensor, graph_outputs: set[str]) -> bool:
    """Whether every path from ``tensor`` through pointwise ops ends in a Gemm/MatMul (as the first
    operand) or a Softmax, and none of those tensors is a graph output."""
    pending = [tensor]
    while pending:
        current = pending.pop()
        if current.name in graph_outputs or not current.outputs:
            return False
        for reader in current.outputs:
            if not ir.is_onnx_op(reader) or reader.inputs[0] is not current:
                return False
            if reader.op == "Softmax" or (reader.op in ("Gemm", "MatMul")
                                          and not int(reader.attrs.get("transA", 0))):
                continue
            if reader.op not in _POINTWISE or len(reader.inputs) > 1 and reader.op != "Clip":
                return False
            pending.append(reader.outputs[0])
    return True


def _kernel(reader: gs.Node, flat: gs.Tensor,
            features: int) -> tuple[np.ndarray, np.ndarray | None] | str:
    """(kernel as ``[M, features]``, bias ``[M]`` or None) of a Gemm/MatMul reading ``flat``, or
    why it has none."""
    if not ir.is_onnx_op(reader) or reader.inputs[0] is not flat or len(reader.inputs) < 2:
        return "the flattened map is not the first operand"
    matrix = ir.constant_value(reader.inputs[1])
    if matrix is None or matrix.ndim != 2:
        return "the weights are not a constant matrix"
    if matrix.dtype not in (np.float32, np.float16):
        return (f"the weights are {matrix.dtype.name}, not float32 or float16: TensorRT has no "
                "float64 and ONNX Runtime's CPU provider no double Conv")
    bias = None
    if reader.op == "Gemm":
        if int(reader.attrs.get("transA", 0)):
            return "transA=1: the Gemm reads the map transposed"
        matrix = matrix if int(reader.attrs.get("transB", 0)) else matrix.T
        matrix = matrix * matrix.dtype.type(reader.attrs.get("alpha", 1.0))
        if len(reader.inputs) > 2 and not reader.inputs[2].is_empty():
            c = ir.constant_value(reader.inputs[2])
            units = matrix.shape[0]
            if c is None or c.shape not in ((), (1,), (units,), (1, units)):
                return "the bias is not a constant per output unit"
            bias = np.ascontiguousarray(np.broadcast_to(
                c.reshape(-1) * c.dtype.type(reader.attrs.get("beta", 1.0)), (units,)),
                dtype=matrix.dtype)
    else:
        matrix = matrix.T
    if matrix.shape[1] != features:
        return f"the weights have {matrix.shape[1]} inputs, the map {features}"
    return np.ascontiguousarray(matrix), bias


__all__ = ["FlattenGemmConv"]
