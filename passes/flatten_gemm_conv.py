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
from trtcompile.pass_manager import Pass, PassContext, PassResult


@dataclass(frozen=True)
class FlattenGemmConv(Pass):
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
    outputs, topological order. Counts: ``gemm_convs``, ``matmul_convs``.
    """

    name: ClassVar[str] = "flatten-gemm-conv"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = PassResult()
        flats = [node for node in graph.nodes if ir.is_onnx_op(node)
                 and node.op in ("Flatten", "Reshape") and len(node.outputs) == 1
                 and any(r.op in ("Gemm", "MatMul") for r in node.outputs[0].outputs)]
        if not flats:
            return result
        graph_outputs = ir.output_names(graph)
        dims: dict[str, list] | None = None
        scope: ir.NameScope | None = None
        added: dict[int, list[gs.Node]] = {}
        removed: set[int] = set()
        for flat in flats:
            x = flat.inputs[0]
            shape = ir.static_shape(x)
            if shape is None:
                if dims is None:
                    try:
                        dims = ir.inferred_dims(graph)
                    except ValueError as exc:
                        ctx.log(f"flatten-gemm-conv: {exc}; using known shapes")
                        dims = {}
                known = dims.get(x.name)
                shape = tuple(known) if known is not None else None
            readers = [r for r in flat.outputs[0].outputs if r.op in ("Gemm", "MatMul")]
            if not self._flattens_map(flat, shape, readers, result):
                continue
            channels, height, width = (int(d) for d in shape[1:])
            features = channels * height * width
            for reader in readers:
                kernel = _kernel(reader, flat.outputs[0], features, result)
                if kernel is None:
                    continue
                weights, bias = kernel
                if not _feeds_kernel(reader.outputs[0], graph_outputs):
                    result.reject([flat, reader], "the result is not read by a Gemm, MatMul or "
                                                  "Softmax (through pointwise layers): TensorRT "
                                                  "would copy the conv's result out of its layout")
                    continue
                if not ctx.may_rewrite("gemm-to-conv", [flat, reader], result):
                    continue
                if scope is None:
                    scope = ir.NameScope(graph)
                units = weights.shape[0]
                output = reader.outputs[0]
                conv_out = gs.Variable(scope.fresh(f"{reader.name}_map"), dtype=output.dtype)
                inputs = [x, gs.Constant(scope.fresh(f"{reader.name}_kernel"), np.ascontiguousarray(
                    weights.reshape(units, channels, height, width)))]
                if bias is not None:
                    inputs.append(gs.Constant(scope.fresh(f"{reader.name}_bias"), bias))
                conv = gs.Node("Conv", name=scope.fresh(f"{reader.name}_conv"),
                               attrs={"kernel_shape": [height, width]}, inputs=inputs,
                               outputs=[conv_out])
                flatten = gs.Node("Flatten", name=scope.fresh(f"{reader.name}_flatten"),
                                  attrs={"axis": 1}, inputs=[conv_out], outputs=[output])
                reader.inputs.clear()
                reader.outputs.clear()
                added[id(reader)] = [conv, flatten]
                removed.add(id(reader))
                result.count("gemm_convs" if reader.op == "Gemm" else "matmul_convs")
            if not flat.outputs[0].outputs and flat.outputs[0].name not in graph_outputs:
                target = ir.producer(flat.inputs[1]) if len(flat.inputs) > 1 else None
                if (target is not None and target.op == "Constant" and not any(
                        t.outputs != [flat] or t.name in graph_outputs for t in target.outputs)):
                    removed.add(id(target))  # the shape fed only this Reshape
                flat.inputs.clear()
                flat.outputs.clear()
                removed.add(id(flat))
        if added:
            nodes: list[gs.Node] = []
            for node in graph.nodes:
                nodes.extend(added.get(id(node), []))
                if id(node) not in removed:
                    nodes.append(node)
            graph.nodes = nodes
        return result

    @staticmethod
    def _flattens_map(flat: gs.Node, shape, readers: list[gs.Node], result: PassResult) -> bool:
        """Whether ``flat`` flattens a known ``[N, C, H, W]`` map with more than one position."""
        nodes = [flat, readers[0]]
        if shape is None or len(shape) != 4:
            result.reject(nodes, "the flattened tensor is not of known rank 4")
            return False
        if not all(isinstance(d, int) and d > 0 for d in shape[1:]):
            result.reject(nodes, "the channels and spatial dimensions are not all known")
            return False
        features = math.prod(shape[1:])
        if flat.op == "Flatten":
            if int(flat.attrs.get("axis", 1)) % 4 != 1:
                result.reject(nodes, "the Flatten is not on axis 1")
                return False
        else:
            target = ir.constant_value(flat.inputs[1]) if len(flat.inputs) > 1 else None
            if target is None:
                result.reject(nodes, "the Reshape's shape is not constant")
                return False
            target = [int(v) for v in np.asarray(target).reshape(-1)]
            lead = {0} if not int(flat.attrs.get("allowzero", 0)) else set()
            if isinstance(shape[0], int):
                lead.add(shape[0])
            if len(target) != 2 or not (target[1] == features and target[0] in lead | {-1}
                                        or target[1] == -1 and target[0] in lead):
                result.reject(nodes, f"the Reshape to {target} is not a flatten to "
                                     f"[N, {features}]")
                return False
        if shape[2] * shape[3] == 1:
            result.reject(nodes, "the map is 1x1: TensorRT reads its flatten in place, so a "
                                 "convolution gains nothing")
            return False
        return True


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


def _kernel(reader: gs.Node, flat: gs.Tensor, features: int,
            result: PassResult) -> tuple[np.ndarray, np.ndarray | None] | None:
    """(kernel as ``[M, features]``, bias ``[M]`` or None) of a Gemm/MatMul reading ``flat``, or
    None with the rejection recorded."""
    nodes = [reader]
    if not ir.is_onnx_op(reader) or reader.inputs[0] is not flat or len(reader.inputs) < 2:
        result.reject(nodes, "the flattened map is not the first operand")
        return None
    matrix = ir.constant_value(reader.inputs[1])
    if matrix is None or matrix.ndim != 2:
        result.reject(nodes, "the weights are not a constant matrix")
        return None
    if matrix.dtype not in (np.float32, np.float16):
        result.reject(nodes, f"the weights are {matrix.dtype.name}, not float32 or float16: "
                             "TensorRT has no float64 and ONNX Runtime's CPU provider no double Conv")
        return None
    bias = None
    if reader.op == "Gemm":
        if int(reader.attrs.get("transA", 0)):
            result.reject(nodes, "transA=1: the Gemm reads the map transposed")
            return None
        matrix = matrix if int(reader.attrs.get("transB", 0)) else matrix.T
        matrix = matrix * matrix.dtype.type(reader.attrs.get("alpha", 1.0))
        if len(reader.inputs) > 2 and not reader.inputs[2].is_empty():
            c = ir.constant_value(reader.inputs[2])
            units = matrix.shape[0]
            if c is None or c.shape not in ((), (1,), (units,), (1, units)):
                result.reject(nodes, "the bias is not a constant per output unit")
                return None
            bias = np.ascontiguousarray(np.broadcast_to(
                c.reshape(-1) * c.dtype.type(reader.attrs.get("beta", 1.0)), (units,)),
                dtype=matrix.dtype)
    else:
        matrix = matrix.T
    if matrix.shape[1] != features:
        result.reject(nodes, f"the weights have {matrix.shape[1]} inputs, the map {features}")
        return None
    return np.ascontiguousarray(matrix), bias


__all__ = ["FlattenGemmConv"]
