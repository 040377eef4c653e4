"""global-pool-window: a global average pool of a convolution's output, read by linear layers, becomes
an AveragePool whose window is the whole feature map.

Both compute the mean over the spatial positions of every channel. TensorRT lowers the two
differently: a ``GlobalAveragePool`` (or a ``ReduceMean`` over the spatial axes) becomes a reduction
kernel that reads the linear layout, so behind a convolution it costs a layout copy out of the
convolution's vectorized format and a reduction (``Tran`` and ``Mean`` layers), unless the builder
fuses the mean into the convolution itself; a pooling layer reads the convolution's format in place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from trtcompile import ir
from trtcompile.ir.fused_layer import is_fused_conv
from trtcompile.ir.rewrite import Match, Reject, RewriteRule, Scope, apply_rule
from trtcompile.pm import Pass, PassContext, PassResult

#: Largest pooling window TensorRT builds: the product of the window's dimensions must stay below
#: 100,000 (``addPoolingNd`` rejects a 320x320 window, builds 300x300; measured with TensorRT-RTX 1.7).
MAX_WINDOW_ELEMENTS = 99_999

#: Ops that read a pooled ``[N, C, 1, 1]`` tensor as a linear layer (its data input), besides calls of
#: fused conv functions.
_CONV_READERS = frozenset({"Conv"})
#: Ops that read a flattened ``[N, C]`` pooled tensor as a linear layer: the first operand.
_MATRIX_READERS = frozenset({"Gemm", "MatMul"})


@dataclass
class _WindowPool(Match):
    """A global mean over the spatial axes: the window it becomes and whether it keeps the dims."""

    spatial: tuple = ()
    keepdims: bool = True


@dataclass(frozen=True)
class GlobalPoolWindow(Pass, RewriteRule):
    """Replace ``GlobalAveragePool(conv)`` read by linear layers with ``AveragePool`` over the map.

    Rules:
      1. The pool is a ``GlobalAveragePool``, or a ``ReduceMean`` whose axes (attribute, or a
         constant input from opset 18) are exactly the spatial axes ``2 .. rank-1``; with
         ``keepdims=0`` it becomes the pool followed by a ``Flatten`` (axis 1) to the same
         ``[N, C]`` tensor.
      2. The input has 1 to 3 spatial dimensions, all known integers, whose product (the window)
         is below 100,000 elements (TensorRT's pooling window limit). Its element type is a
         floating-point type.
      3. The input is produced by a convolution layer: a ``Conv`` or a call of a fused conv
         function (``conv-bias-activation-fusion``). Behind other layers TensorRT fuses the mean
         into their kernel: DenseNet-121's pool after BatchNorm, ReLU and Concat is one ``kgen``
         layer, and an ``AveragePool`` there is one more (189 -> 190 engine layers).
      4. Every reader of the pooled result starts a kernel of its own: a ``Conv`` reading it as
         data, a call of a fused conv function, a ``Softmax``, or a ``Gemm``/``MatMul`` reading it
         as the first operand (directly when ``keepdims=0``); or a ``Flatten``/``Reshape`` read
         only by ``Gemm``, ``MatMul`` and ``Softmax`` layers. Where the result is a graph output or
         feeds a pointwise layer, TensorRT can fuse the mean into the convolution's epilogue, and
         a pooling layer is then one layer more (measured: a 1x1 conv, ReLU and global pool on
         1x8x7x7 to 1x1024x7x7 maps build to 3 layers as written, 4 with the window).
      5. The pool keeps its name, input and output; it becomes ``AveragePool`` with
         ``kernel_shape`` = the spatial dims (no pads, strides 1): the same sum over the same
         elements, divided by the same count.

    Measured on TensorRT-RTX 1.7 (docs/benchmarks.md): ResNet-50 (torchvision) 58 -> 57 engine
    layers (the classifier's ``Tran`` and ``Mean`` become one ``avgpool``), MobileNetV3-Large
    87 -> 82 (the squeeze-excitation pools behind hard-swish convolutions), SqueezeNet 33 -> 32
    (its pool feeds the Softmax); EfficientNet-B0 116 -> 116. On a grid of conv + pool + reader
    models (channels 8 to 2048, maps 7x7 to 112x112; Gemm, Conv, Softmax and squeeze-excitation
    readers) the window was never more layers, and one fewer on the larger maps. Exact up to summation order. Adds no MACs.
    Requires: nothing (shape inference supplies unknown input shapes). Preserves: graph inputs and
    outputs, node names, topological order; the ``[N, C, 1, 1]`` result a ``Flatten`` now reads
    carries its shape and element type. Counts: ``windowed_pools``, ``windowed_means``.
    """

    name: ClassVar[str] = "global-pool-window"
    anchor_ops: ClassVar[frozenset[str]] = frozenset({"GlobalAveragePool", "ReduceMean"})
    needs_ops: ClassVar[frozenset[str]] = anchor_ops
    rule: ClassVar[str] = "window-pool"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        return apply_rule(self, graph, ctx, PassResult(), who=self.name)

    def match(self, pool: gs.Node, scope: Scope) -> _WindowPool | Reject | None:
        if len(pool.outputs) != 1:
            return None
        shape = scope.shapes.shape(pool.inputs[0])
        keepdims = self._mean_form(scope.graph, pool, shape)
        if isinstance(keepdims, str):
            return Reject([pool], keepdims)
        return _WindowPool([pool], spatial=shape[2:], keepdims=keepdims)

    def check(self, match: _WindowPool, scope: Scope) -> str | None:
        pool, spatial = match.anchor, match.spatial
        x = pool.inputs[0]
        if not spatial or len(spatial) > 3 or not all(isinstance(d, int) and d > 0 for d in spatial):
            return "the spatial dimensions of the input are not all known"
        if math.prod(spatial) > MAX_WINDOW_ELEMENTS:
            return (f"a {'x'.join(map(str, spatial))} window exceeds TensorRT's pooling window "
                    f"limit ({MAX_WINDOW_ELEMENTS + 1} elements)")
        if x.dtype is not None and not np.issubdtype(np.dtype(x.dtype), np.floating):
            return f"the input is {np.dtype(x.dtype).name}, not floating point"
        source = ir.producer(x)
        if source is None or not (source.op == "Conv" and ir.is_onnx_op(source)
                                  or is_fused_conv(scope.graph, source)):
            return ("the input is not a convolution's output: TensorRT fuses the mean into the "
                    "producing kernel")
        return _non_linear_reader(scope.graph, pool.outputs[0], match.keepdims, scope.outputs)

    def rewrite(self, match: _WindowPool, scope: Scope) -> list[gs.Node]:
        pool = match.anchor
        scope.count("windowed_pools" if pool.op == "GlobalAveragePool" else "windowed_means")
        output = pool.outputs[0]
        pool.op = "AveragePool"
        pool.attrs = {"kernel_shape": [int(d) for d in match.spatial]}
        while len(pool.inputs) > 1:  # a ReduceMean's axes (their Constant goes with them)
            pool.inputs.pop()
        if match.keepdims:
            return [pool]
        # The window's result ([N, C, 1, ...]) carries its shape, as the shape inference of a next
        # compile would give it; only with an element type, which a written shape needs.
        shape = scope.shapes.shape(pool.inputs[0])
        dtype = output.dtype if output.dtype is not None else pool.inputs[0].dtype
        pooled = gs.Variable(scope.names.fresh(f"{output.name}_window"), dtype=dtype,
                             shape=None if dtype is None else
                             [shape[0], shape[1], *[1] * len(match.spatial)])
        pool.outputs = [pooled]
        return [pool, gs.Node("Flatten", name=scope.names.fresh(f"{pool.name}_flatten"),
                              attrs={"axis": 1}, inputs=[pooled], outputs=[output])]

    @staticmethod
    def _mean_form(graph: gs.Graph, pool: gs.Node, shape) -> bool | str:
        """``keepdims`` of a global mean over the spatial axes, or why the pool is not one."""
        if shape is None:
            return "the input's shape is not known"
        rank = len(shape)
        if pool.op == "GlobalAveragePool":
            return True
        if ir.opset(graph) >= 18:
            if len(pool.inputs) > 1 and not pool.inputs[1].is_empty():
                axes = ir.constant_value(pool.inputs[1])
                if axes is None:
                    return "the ReduceMean axes are not constant"
            else:
                axes = None
        else:
            axes = pool.attrs.get("axes")
        if axes is None:
            return "the ReduceMean reduces every axis, not only the spatial ones"
        axes = sorted(int(a) % rank for a in np.asarray(axes).reshape(-1))
        if rank < 3 or axes != list(range(2, rank)):
            return f"the ReduceMean axes {axes} are not the spatial axes {list(range(2, rank))}"
        return bool(int(pool.attrs.get("keepdims", 1)))

def _matrix_reader(node: gs.Node, tensor: gs.Tensor) -> bool:
    """Whether ``node`` is a Gemm/MatMul reading ``tensor`` as its (untransposed) first operand, or
    a Softmax of it."""
    if not ir.is_onnx_op(node) or node.inputs[0] is not tensor:
        return False
    if node.op == "Softmax":
        return True
    return node.op in _MATRIX_READERS and (node.op != "Gemm" or not int(node.attrs.get("transA", 0)))


def _non_linear_reader(graph: gs.Graph, pooled: gs.Tensor, keepdims: bool,
                       graph_outputs: set[str]) -> str | None:
    """Why a reader of the pooled tensor could take the mean into its kernel (None when every
    reader is a linear layer or a Softmax, which start kernels of their own)."""
    if pooled.name in graph_outputs:
        return "the pooled result is a graph output: TensorRT can fuse the mean into the conv"
    if not pooled.outputs:
        return "the pooled result is not read"
    for reader in pooled.outputs:
        if keepdims and reader.inputs[0] is pooled and (
                reader.op in _CONV_READERS and ir.is_onnx_op(reader) or is_fused_conv(graph, reader)):
            continue
        if _matrix_reader(reader, pooled) and (not keepdims or reader.op == "Softmax"):
            continue
        if keepdims and reader.op in ("Flatten", "Reshape") and reader.inputs[0] is pooled:
            flat = reader.outputs[0]
            if (flat.name not in graph_outputs and flat.outputs
                    and all(_matrix_reader(r, flat) for r in flat.outputs)):
                continue
            return "the flattened pooled result is read by other than Gemm, MatMul or Softmax"
        return (f"the pooled result is read by {reader.op}: TensorRT can fuse the mean into the "
                "conv and that reader")
    return None


__all__ = ["GlobalPoolWindow", "MAX_WINDOW_ELEMENTS"]
