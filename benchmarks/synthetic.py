"""Synthetic CNN-like graphs of a chosen size, for timing the pass pipeline.

The graph repeats one block until it holds the requested number of nodes: a Conv followed by a bias
Add, a BatchNormalization and a Relu (vertical-fusion work), two parallel 1x1 Convs that share the
block input and are concatenated (horizontal-fusion and concat work), an Identity (dead-layer work) and a
residual Add. Tensors are tiny (1x4x4x4) so building and exporting stay cheap; what is measured is the
passes' cost per node, not arithmetic.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from trtcompile import ir

#: Nodes in one repeated block (see the module docstring).
BLOCK_NODES = 10


def synthetic_graph(num_nodes: int, channels: int = 4, size: int = 4, seed: int = 0) -> gs.Graph:
    """A graph of about ``num_nodes`` nodes made of repeated blocks (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    blocks = max(1, num_nodes // BLOCK_NODES)
    half = channels // 2
    shape = [1, channels, size, size]
    x = gs.Variable("input", dtype=np.float32, shape=shape)
    nodes: list[gs.Node] = []
    current = x

    def const(name: str, array: np.ndarray) -> gs.Constant:
        return gs.Constant(name, array.astype(np.float32))

    def var(name: str, c: int = channels) -> gs.Variable:
        return gs.Variable(name, dtype=np.float32, shape=[1, c, size, size])

    for b in range(blocks):
        p = f"b{b}_"
        conv_out, bias_out, bn_out, relu_out = var(p + "conv"), var(p + "bias"), var(p + "bn"), var(p + "relu")
        nodes.append(gs.Node("Conv", p + "conv", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
                             [current, const(p + "w", rng.standard_normal((channels, channels, 3, 3)) * 0.1)],
                             [conv_out]))
        nodes.append(gs.Node("Add", p + "bias_add", inputs=[conv_out, const(p + "b", rng.standard_normal((channels, 1, 1)) * 0.1)],
                             outputs=[bias_out]))
        nodes.append(gs.Node("BatchNormalization", p + "bn", {"epsilon": 1e-5}, [
            bias_out, const(p + "gamma", rng.uniform(0.5, 1.5, channels)), const(p + "beta", rng.standard_normal(channels) * 0.1),
            const(p + "mean", rng.standard_normal(channels) * 0.1), const(p + "var", rng.uniform(0.5, 1.5, channels))], [bn_out]))
        nodes.append(gs.Node("Relu", p + "relu", inputs=[bn_out], outputs=[relu_out]))
        left, right = var(p + "left", half), var(p + "right", channels - half)
        nodes.append(gs.Node("Conv", p + "left_conv", {"kernel_shape": [1, 1]},
                             [relu_out, const(p + "wl", rng.standard_normal((half, channels, 1, 1)) * 0.3)], [left]))
        nodes.append(gs.Node("Conv", p + "right_conv", {"kernel_shape": [1, 1]},
                             [relu_out, const(p + "wr", rng.standard_normal((channels - half, channels, 1, 1)) * 0.3)], [right]))
        left_relu = var(p + "left_relu", half)
        nodes.append(gs.Node("Relu", p + "left_relu", inputs=[left], outputs=[left_relu]))
        cat, ident, out = var(p + "cat"), var(p + "ident"), var(p + "out")
        nodes.append(gs.Node("Concat", p + "concat", {"axis": 1}, [left_relu, right], [cat]))
        nodes.append(gs.Node("Identity", p + "identity", inputs=[cat], outputs=[ident]))
        nodes.append(gs.Node("Add", p + "residual", inputs=[ident, current], outputs=[out]))
        current = out
    current.name = "output"
    return gs.Graph(nodes=nodes, inputs=[x], outputs=[current], opset=ir.DEFAULT_OPSET, name="synthetic")
