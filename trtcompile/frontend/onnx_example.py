"""The GoogLeNet-style ONNX example, generated deterministically with onnx-graphsurgeon and numpy
(see :mod:`trtcompile.examples` for what it contains and why).

The catalog in :mod:`trtcompile.examples` owns the example's seed, input shape and class count and
passes them in: the catalog is read by ``trtcompile --help``, which must not import numpy, and this
module must not import the catalog back.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from trtcompile import ir


class _Builder:
    """Emits named layers into a graphsurgeon graph with seeded weights."""

    def __init__(self, graph: gs.Graph, seed: int):
        self.graph = graph
        self.rng = np.random.default_rng(seed)

    def _constant(self, name: str, values: np.ndarray) -> gs.Constant:
        return gs.Constant(name, np.ascontiguousarray(values, dtype=np.float32))

    def conv(self, x: gs.Variable, name: str, out_channels: int, kernel: int, stride: int = 1) -> gs.Variable:
        """Conv with bias; He-initialized so activations keep their scale through the network."""
        in_channels = x.shape[1]
        fan_in = in_channels * kernel * kernel
        weight = self.rng.normal(0.0, np.sqrt(2.0 / fan_in), (out_channels, in_channels, kernel, kernel))
        bias = self.rng.uniform(-0.1, 0.1, out_channels)
        pad = kernel // 2
        height = (x.shape[2] + 2 * pad - kernel) // stride + 1
        width = (x.shape[3] + 2 * pad - kernel) // stride + 1
        y = gs.Variable(f"{name}_out", np.float32, [x.shape[0], out_channels, height, width])
        self.graph.nodes.append(gs.Node(
            "Conv", name, attrs={"kernel_shape": [kernel, kernel], "strides": [stride, stride],
                                 "pads": [pad, pad, pad, pad]},
            inputs=[x, self._constant(f"{name}.weight", weight), self._constant(f"{name}.bias", bias)],
            outputs=[y]))
        return y

    def batch_norm(self, x: gs.Variable, name: str) -> gs.Variable:
        """Inference BatchNormalization with non-trivial statistics (so folding changes weights)."""
        channels = x.shape[1]
        params = [
            self.rng.uniform(0.5, 1.5, channels),  # scale
            self.rng.uniform(-0.2, 0.2, channels),  # shift
            self.rng.uniform(-0.2, 0.2, channels),  # running mean
            self.rng.uniform(0.5, 1.5, channels),  # running variance
        ]
        names = ("scale", "bias", "mean", "var")
        y = gs.Variable(f"{name}_out", np.float32, list(x.shape))
        self.graph.nodes.append(gs.Node(
            "BatchNormalization", name, attrs={"epsilon": 1e-5},
            inputs=[x, *(self._constant(f"{name}.{n}", p) for n, p in zip(names, params))],
            outputs=[y]))
        return y

    def relu(self, x: gs.Variable, name: str) -> gs.Variable:
        y = gs.Variable(f"{name}_out", np.float32, list(x.shape))
        self.graph.nodes.append(gs.Node("Relu", name, inputs=[x], outputs=[y]))
        return y

    def conv_bn_relu(self, x: gs.Variable, name: str, out_channels: int, kernel: int,
                     stride: int = 1, relu: bool = True) -> gs.Variable:
        y = self.batch_norm(self.conv(x, f"{name}_conv", out_channels, kernel, stride), f"{name}_bn")
        return self.relu(y, f"{name}_relu") if relu else y

    def max_pool(self, x: gs.Variable, name: str, stride: int) -> gs.Variable:
        size = (x.shape[2] + 2 - 3) // stride + 1
        y = gs.Variable(f"{name}_out", np.float32, [x.shape[0], x.shape[1], size, size])
        self.graph.nodes.append(gs.Node(
            "MaxPool", name, attrs={"kernel_shape": [3, 3], "strides": [stride, stride],
                                    "pads": [1, 1, 1, 1]},
            inputs=[x], outputs=[y]))
        return y

    def concat(self, parts: list[gs.Variable], name: str) -> gs.Variable:
        channels = sum(p.shape[1] for p in parts)
        shape = list(parts[0].shape)
        shape[1] = channels
        y = gs.Variable(f"{name}_out", np.float32, shape)
        self.graph.nodes.append(gs.Node("Concat", name, attrs={"axis": 1}, inputs=parts, outputs=[y]))
        return y

    def inception(self, x: gs.Variable, name: str, c1: int, c3_reduce: int, c3: int,
                  c5_reduce: int, c5: int, pool_proj: int) -> gs.Variable:
        """GoogLeNet inception block; the 5x5 branch is two 3x3 convolutions (as in Inception-v2)."""
        # The three branch heads read the same tensor: horizontal fusion's pattern.
        branch1 = self.conv_bn_relu(x, f"{name}_1x1", c1, 1)
        branch2 = self.conv_bn_relu(x, f"{name}_3x3_reduce", c3_reduce, 1)
        branch2 = self.conv_bn_relu(branch2, f"{name}_3x3", c3, 3)
        branch3 = self.conv_bn_relu(x, f"{name}_5x5_reduce", c5_reduce, 1)
        branch3 = self.conv_bn_relu(branch3, f"{name}_5x5a", c5, 3)
        branch3 = self.conv_bn_relu(branch3, f"{name}_5x5b", c5, 3)
        branch4 = self.max_pool(x, f"{name}_pool", stride=1)
        branch4 = self.conv_bn_relu(branch4, f"{name}_pool_proj", pool_proj, 1)
        return self.concat([branch1, branch2, branch3, branch4], f"{name}_concat")

    def residual(self, x: gs.Variable, name: str) -> gs.Variable:
        channels = x.shape[1]
        y = self.conv_bn_relu(x, f"{name}_a", channels, 3)
        y = self.conv_bn_relu(y, f"{name}_b", channels, 3, relu=False)
        total = gs.Variable(f"{name}_add_out", np.float32, list(x.shape))
        self.graph.nodes.append(gs.Node("Add", f"{name}_add", inputs=[y, x], outputs=[total]))
        return self.relu(total, f"{name}_relu")


def googlenet_graph(seed: int, *, input_shape: Sequence[int], classes: int) -> gs.Graph:
    """The GoogLeNet-style example as an IR graph (input ``input`` NCHW of ``input_shape``, square,
    output ``logits`` of ``classes``); deterministic for a seed."""
    batch, channels, height, width = input_shape
    image = gs.Variable("input", np.float32, [batch, channels, height, width])
    graph = gs.Graph(inputs=[image], name="googlenet_example", opset=ir.DEFAULT_OPSET)
    build = _Builder(graph, seed)

    x = build.conv_bn_relu(image, "stem", 32, 3, stride=2)  # 32x32
    x = build.max_pool(x, "stem_pool", stride=2)  # 16x16
    x = build.inception(x, "inception_3a", 16, 16, 24, 8, 12, 12)  # 64 channels
    x = build.inception(x, "inception_3b", 32, 24, 32, 8, 16, 16)  # 96 channels
    x = build.max_pool(x, "pool_4", stride=2)  # 8x8
    x = build.residual(x, "residual_4")

    pooled = gs.Variable("global_pool_out", np.float32, [batch, x.shape[1], 1, 1])
    graph.nodes.append(gs.Node("GlobalAveragePool", "global_pool", inputs=[x], outputs=[pooled]))
    flat = gs.Variable("flatten_out", np.float32, [batch, x.shape[1]])
    graph.nodes.append(gs.Node("Flatten", "flatten", attrs={"axis": 1}, inputs=[pooled], outputs=[flat]))
    fan_in = x.shape[1]
    weight = build.rng.normal(0.0, np.sqrt(1.0 / fan_in), (classes, fan_in))
    bias = build.rng.uniform(-0.1, 0.1, classes)
    logits = gs.Variable("logits", np.float32, [batch, classes])
    graph.nodes.append(gs.Node(
        "Gemm", "classifier", attrs={"transB": 1},
        inputs=[flat, build._constant("classifier.weight", weight),
                build._constant("classifier.bias", bias)],
        outputs=[logits]))
    graph.outputs = [logits]
    return graph


def googlenet_onnx(seed: int, *, input_shape: Sequence[int], classes: int) -> onnx.ModelProto:
    """The GoogLeNet-style example as an ONNX model (see :func:`googlenet_graph`), checked."""
    model = ir.export_model(googlenet_graph(seed, input_shape=input_shape, classes=classes))
    model.producer_name = "trtcompile.examples"
    onnx.checker.check_model(model)
    return model
