"""Small float models whose INT8 engines the layer accounting is measured on, and the Q/DQ
placement variants of their quantized graphs (tests/backend/capture_logs.py records both).

* :func:`residual_blocks`: a ResNet-style stem (Conv + MaxPool) and three bottleneck blocks, two of
  them with a projection convolution, residual Add + Relu, then GlobalAveragePool and a Gemm head;
* :func:`concat_pooling`: an Inception-style block (1x1, 1x1 -> 3x3, MaxPool -> 1x1 branches,
  Concat), a convolution, AveragePool between two convolutions, and a Gemm head;
* :func:`matmul_chain`: two transformer MLP blocks (MatMul + bias, Relu, MatMul + bias, residual
  Add, LayerNormalization) and two projections in a row;
* :func:`attention_projections`: the Q, K, V and output projections of one attention layer;
* :func:`squeeze_excitation`: a squeeze-excitation gate between two convolutions;
* :func:`split_heads`: a MatMul whose output is split into heads (Reshape, Transpose) for the next.

Weights are seeded; calibration samples (:func:`calibration_samples`) are seeded uniform ``[-1, 1)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class _Builder:
    """Nodes and seeded initializers of one model."""

    def __init__(self, seed: int = 0):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(seed)

    def constant(self, name: str, values: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(values.astype(np.float32), name))
        return name

    def shape(self, name: str, dims: list[int]) -> str:
        self.initializers.append(numpy_helper.from_array(np.array(dims, np.int64), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [f"{name}_out"], name=name, **attrs))
        return f"{name}_out"

    def conv(self, x: str, cin: int, cout: int, k: int, name: str, stride: int = 1,
             relu: bool = True) -> str:
        scale = (2.0 / (cin * k * k)) ** 0.5
        w = self.constant(f"{name}_w", self.rng.standard_normal((cout, cin, k, k)) * scale)
        b = self.constant(f"{name}_b", np.full(cout, 0.01))
        y = self.node("Conv", [x, w, b], name, kernel_shape=[k, k], strides=[stride] * 2,
                      pads=[k // 2] * 4)
        return self.node("Relu", [y], f"{name}_relu") if relu else y

    def linear(self, x: str, cin: int, cout: int, name: str) -> str:
        w = self.constant(f"{name}_w", self.rng.standard_normal((cin, cout)) * (2.0 / cin) ** 0.5)
        b = self.constant(f"{name}_b", np.full(cout, 0.01))
        return self.node("Add", [self.node("MatMul", [x, w], name), b], f"{name}_bias")

    def head(self, x: str, features: int) -> str:
        flat = self.node("Flatten", [self.node("GlobalAveragePool", [x], "gap")], "flat")
        w = self.constant("fc_w", self.rng.standard_normal((10, features)) * features ** -0.5)
        return self.node("Gemm", [flat, w], "fc", transB=1)

    def model(self, name: str, input_shape: list[int], output: str,
              output_shape: list[int]) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, name, [helper.make_tensor_value_info("input", TensorProto.FLOAT, input_shape)],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, output_shape)],
            self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        onnx.checker.check_model(model)
        return model


def residual_blocks() -> onnx.ModelProto:
    """Stem, MaxPool, three bottleneck blocks (the first and last with a projection), head."""
    m = _Builder()
    x = m.node("MaxPool", [m.conv("input", 3, 32, 3, "stem", stride=2)], "pool",
               kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    for index, (cin, mid, cout, projection) in enumerate(
            [(32, 16, 64, True), (64, 16, 64, False), (64, 32, 128, True)]):
        block = f"b{index}"
        y = m.conv(m.conv(m.conv(x, cin, mid, 1, f"{block}_c1"), mid, mid, 3, f"{block}_c2"),
                   mid, cout, 1, f"{block}_c3", relu=False)
        skip = m.conv(x, cin, cout, 1, f"{block}_proj", relu=False) if projection else x
        x = m.node("Relu", [m.node("Add", [y, skip], f"{block}_add")], f"{block}_relu")
    return m.model("residual_blocks", [1, 3, 64, 64], m.head(x, 128), [1, 10])


def concat_pooling() -> onnx.ModelProto:
    """Three branches (one through MaxPool) concatenated, a conv, AveragePool, a conv, head."""
    m = _Builder()
    x = m.conv("input", 3, 32, 3, "stem")
    branches = [m.conv(x, 32, 16, 1, "br_a"),
                m.conv(m.conv(x, 32, 16, 1, "br_b1"), 16, 32, 3, "br_b2"),
                m.conv(m.node("MaxPool", [x], "br_c_pool", kernel_shape=[3, 3], pads=[1] * 4),
                       32, 16, 1, "br_c")]
    y = m.conv(m.node("Concat", branches, "cat", axis=1), 64, 64, 3, "after_cat")
    y = m.node("AveragePool", [y], "avg", kernel_shape=[2, 2], strides=[2, 2])
    return m.model("concat_pooling", [1, 3, 32, 32], m.head(m.conv(y, 64, 64, 3, "after_avg"), 64),
                   [1, 10])


def matmul_chain(width: int = 128, hidden: int = 512) -> onnx.ModelProto:
    """Two MLP blocks with residual Add and LayerNormalization, two projections, a mean."""
    m = _Builder()
    gamma, beta = m.constant("ln_g", np.ones(width)), m.constant("ln_b", np.zeros(width))
    x = "input"
    for index in range(2):
        block = f"l{index}"
        h = m.node("Relu", [m.linear(x, width, hidden, f"{block}_fc1")], f"{block}_act")
        h = m.node("Add", [m.linear(h, hidden, width, f"{block}_fc2"), x], f"{block}_res")
        x = m.node("LayerNormalization", [h, gamma, beta], f"{block}_ln", axis=-1)
    h = m.linear(m.linear(x, width, width, "proj1"), width, width, "proj2")
    y = m.node("ReduceMean", [m.node("Add", [h, x], "final_res")], "pooled", axes=[1],
               keepdims=0)
    return m.model("matmul_chain", [1, 32, width], y, [1, width])


def attention_projections(width: int = 128, heads: int = 4) -> onnx.ModelProto:
    """Q, K and V projections of one input (MatMul + bias, split into heads), attention scores,
    Softmax, the weighted sum, and an output projection."""
    m = _Builder()
    x = m.node("LayerNormalization", ["input", m.constant("ln_g", np.ones(width)),
                                      m.constant("ln_b", np.zeros(width))], "ln", axis=-1)
    shape = m.shape("heads_shape", [1, 32, heads, width // heads])
    split = {}
    for part in ("q", "k", "v"):
        h = m.node("Reshape", [m.linear(x, width, width, part), shape], f"{part}_split")
        split[part] = m.node("Transpose", [h], f"{part}_heads", perm=[0, 2, 1, 3])
    keys = m.node("Transpose", [split["k"]], "k_t", perm=[0, 1, 3, 2])
    scores = m.node("Softmax", [m.node("MatMul", [split["q"], keys], "scores")], "probs", axis=-1)
    context = m.node("Transpose", [m.node("MatMul", [scores, split["v"]], "context")],
                     "context_t", perm=[0, 2, 1, 3])
    merged = m.shape("merged_shape", [1, 32, width])
    y = m.linear(m.node("Reshape", [context, merged], "merge"), width, width, "out_proj")
    y = m.node("ReduceMean", [m.node("Add", [y, "input"], "res")], "pooled", axes=[1], keepdims=0)
    return m.model("attention_projections", [1, 32, width], y, [1, width])


def squeeze_excitation(channels: int = 96, squeezed: int = 4) -> onnx.ModelProto:
    """A convolution, a squeeze-excitation gate (GlobalAveragePool, 1x1 reduce + Relu, 1x1
    expand + Sigmoid, Mul), and a convolution after the gated tensor."""
    m = _Builder()
    x = m.conv("input", 3, channels, 3, "stem")
    pooled = m.node("GlobalAveragePool", [x], "se_pool")
    gate = m.node("Sigmoid", [m.conv(m.conv(pooled, channels, squeezed, 1, "se_reduce"),
                                      squeezed, channels, 1, "se_expand", relu=False)], "se_gate")
    y = m.conv(m.node("Mul", [x, gate], "se_excite"), channels, channels, 3, "after_se")
    return m.model("squeeze_excitation", [1, 3, 32, 32], m.head(y, channels), [1, 10])


def split_heads(width: int = 128, heads: int = 4) -> onnx.ModelProto:
    """A projection, its output split into heads (Reshape, Transpose), a per-head projection."""
    m = _Builder()
    w1 = m.constant("qkv_w", m.rng.standard_normal((width, width)) * width ** -0.5)
    h = m.node("Reshape", [m.node("MatMul", ["input", w1], "qkv"),
                           m.shape("heads_shape", [1, 32, heads, width // heads])], "split")
    h = m.node("Transpose", [h], "heads_first", perm=[0, 2, 1, 3])
    w2 = m.constant("head_w", m.rng.standard_normal((width // heads, 64)) * 0.2)
    y = m.node("ReduceMean", [m.node("MatMul", [h, w2], "head_proj")], "pooled", axes=[1, 2],
               keepdims=0)
    return m.model("split_heads", [1, 32, width], y, [1, 64])


#: Model name -> (builder, calibration sample shape).
MODELS: dict[str, tuple[Callable[[], onnx.ModelProto], list[int]]] = {
    "residual_blocks": (residual_blocks, [16, 3, 64, 64]),
    "concat_pooling": (concat_pooling, [16, 3, 32, 32]),
    "matmul_chain": (matmul_chain, [16, 32, 128]),
    "attention_projections": (attention_projections, [16, 32, 128]),
    "squeeze_excitation": (squeeze_excitation, [16, 3, 32, 32]),
    "split_heads": (split_heads, [16, 32, 128]),
}


def calibration_samples(name: str) -> dict[str, np.ndarray]:
    """Seeded calibration samples of model ``name``'s input."""
    shape = MODELS[name][1]
    return {"input": np.random.default_rng(1).uniform(-1, 1, shape).astype(np.float32)}


# Q/DQ placement variants of the quantized graphs (the graph quantize-int8 wrote, edited) ----------


def skip_reads_dequantized(quantized: onnx.ModelProto, block: str = "b1",
                           previous: str = "b0") -> onnx.ModelProto:
    """The residual Add of ``block`` reads its skip input through the DequantizeLinear that the
    block's first convolution reads (a pair on the skip input), not the float tensor."""
    model = onnx.ModelProto()
    model.CopyFrom(quantized)
    skip, dequantized = f"{previous}_relu_out", f"{previous}_relu_out_dequantized"
    readers = [node for node in model.graph.node if node.name.startswith(f"{block}_")
               and skip in node.input and node.op_type != "QuantizeLinear"]
    assert readers, f"no node of {block} reads {skip}"
    for node in readers:
        node.input[list(node.input).index(skip)] = dequantized
    return model


def pair_before_average_pool(quantized: onnx.ModelProto, pool: str = "avg") -> onnx.ModelProto:
    """A second Q/DQ pair (the scale of the pool's output pair) on the AveragePool's input, so
    the pool reads a dequantized tensor as well as the next convolution does."""
    model = onnx.ModelProto()
    model.CopyFrom(quantized)
    nodes = list(model.graph.node)
    node = next(n for n in nodes if n.name == pool)
    quantize = next(n for n in nodes if n.name == f"{pool}_out_quantize")
    source = node.input[0]
    pair = [helper.make_node("QuantizeLinear", [source, *quantize.input[1:]], [f"{source}_q"],
                             name=f"{pool}_input_quantize"),
            helper.make_node("DequantizeLinear", [f"{source}_q", *quantize.input[1:]],
                             [f"{source}_dq"], name=f"{pool}_input_dequantize")]
    node.input[0] = f"{source}_dq"
    at = nodes.index(node)
    del model.graph.node[:]
    model.graph.node.extend([*nodes[:at], *pair, *nodes[at:]])
    return model


def pair_before_reshape(quantized: onnx.ModelProto, reshape: str = "split",
                        reader: str = "head_proj") -> onnx.ModelProto:
    """The pair of ``reader``'s activation moved before ``reshape``: Q/DQ, Reshape, Transpose,
    then ``reader`` reads the transposed tensor (the builder must carry Int8 through both)."""
    model = onnx.ModelProto()
    model.CopyFrom(quantized)
    nodes = list(model.graph.node)
    by_name = {node.name: node for node in nodes}
    target = by_name[reader]
    dequantize = next(n for n in nodes if n.op_type == "DequantizeLinear"
                      and n.output[0] == target.input[0])
    quantize = next(n for n in nodes if n.op_type == "QuantizeLinear"
                    and n.output[0] == dequantize.input[0])
    moved_from = quantize.input[0]
    quantize.input[0] = by_name[reshape].input[0]
    by_name[reshape].input[0] = dequantize.output[0]
    target.input[0] = moved_from
    order = [quantize, dequantize]
    rest = [node for node in nodes if node not in order]
    at = rest.index(by_name[reshape])
    del model.graph.node[:]
    model.graph.node.extend([*rest[:at], *order, *rest[at:]])
    return model
