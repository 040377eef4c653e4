"""Small ONNX models the backend tests build (each builds in well under a second)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from trtcompile import ir

#: Name of the conv node of :func:`conv_relu_model`: commas, brackets and parentheses on purpose.
CONV_NODE = "conv, [1] (x)"
RELU_NODE = "relu_1"
#: Call nodes of :func:`function_call_model`.
CALL_NODES = ("block1/conv", "block2/conv, x")
FUNCTION_NAME = "ConvBiasRelu_k3x3_s1x1_p1x1x1x1_d1x1_g1"


def _weights(seed: int, *shape: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def conv_relu_model(batch: int = 1) -> onnx.ModelProto:
    """Conv(3->4, 3x3, pad 1) + Relu on 1x3x8x8 with awkward node names."""
    graph = gs.Graph(opset=17)
    x = gs.Variable("x", np.float32, (batch, 3, 8, 8))
    conv_out = gs.Variable("conv_out", np.float32)
    y = gs.Variable("y", np.float32, (batch, 4, 8, 8))
    graph.nodes = [
        gs.Node("Conv", CONV_NODE, attrs={"pads": [1, 1, 1, 1], "kernel_shape": [3, 3]},
                inputs=[x, gs.Constant("w", _weights(0, 4, 3, 3, 3)),
                        gs.Constant("b", _weights(1, 4))], outputs=[conv_out]),
        gs.Node("Relu", RELU_NODE, inputs=[conv_out], outputs=[y]),
    ]
    graph.inputs, graph.outputs = [x], [y]
    return ir.export_model(graph)


def conv_bias_relu_function() -> gs.Function:
    """The fused-layer function ``Conv(x, w, b) -> Relu`` with every conv attribute explicit."""
    x, w, b = (gs.Variable(name, np.float32) for name in ("x", "w", "b"))
    conv_out, y = gs.Variable("conv_out", np.float32), gs.Variable("y", np.float32)
    function = gs.Function(
        FUNCTION_NAME, domain=ir.TRTCOMPILE_DOMAIN,
        nodes=[
            gs.Node("Conv", "conv", inputs=[x, w, b], outputs=[conv_out],
                    attrs={"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1],
                           "dilations": [1, 1], "group": 1}),
            gs.Node("Relu", "relu", inputs=[conv_out], outputs=[y]),
        ],
        inputs=[x, w, b], outputs=[y])
    function.opset = 17
    return function


def function_call_model(batch: int | str = 1) -> onnx.ModelProto:
    """Two calls of the Conv+Relu function (3->4->4 channels); ``batch`` may be a symbolic name."""
    graph = gs.Graph(opset=17)
    function = ir.add_local_function(graph, conv_bias_relu_function())
    x = gs.Variable("input", np.float32, (batch, 3, 8, 8))
    hidden = gs.Variable("hidden", np.float32)
    y = gs.Variable("output", np.float32, (batch, 4, 8, 8))
    graph.nodes = [
        ir.call(function, CALL_NODES[0],
                [x, gs.Constant("w1", _weights(2, 4, 3, 3, 3)), gs.Constant("b1", _weights(3, 4))],
                [hidden]),
        ir.call(function, CALL_NODES[1],
                [hidden, gs.Constant("w2", _weights(4, 4, 4, 3, 3)),
                 gs.Constant("b2", _weights(5, 4))], [y]),
    ]
    graph.inputs, graph.outputs = [x], [y]
    return ir.export_model(graph)


def unsupported_op_model() -> onnx.ModelProto:
    """Relu followed by an op no TensorRT importer or plugin provides."""
    graph = gs.Graph(opset=17)
    x = gs.Variable("x", np.float32, (1, 3, 8, 8))
    hidden = gs.Variable("hidden", np.float32, (1, 3, 8, 8))
    y = gs.Variable("y", np.float32, (1, 3, 8, 8))
    graph.nodes = [
        gs.Node("Relu", "relu", inputs=[x], outputs=[hidden]),
        gs.Node("Frobnicate", "head/frobnicate, v2", domain="com.example", inputs=[hidden],
                outputs=[y]),
    ]
    graph.inputs, graph.outputs = [x], [y]
    model = ir.export_model(graph)
    model.opset_import.append(onnx.helper.make_opsetid("com.example", 1))
    return model


def mismatched_conv_model() -> onnx.ModelProto:
    """A Conv whose weights expect 5 input channels on a 3-channel input (an invalid model)."""
    graph = gs.Graph(opset=17)
    x = gs.Variable("x", np.float32, (1, 3, 8, 8))
    y = gs.Variable("y", np.float32)
    graph.nodes = [gs.Node("Conv", "stem/conv", inputs=[x, gs.Constant("w", _weights(6, 4, 5, 3, 3))],
                           outputs=[y])]
    graph.inputs, graph.outputs = [x], [y]
    return ir.export_model(graph)


def fp16_conv1x1_model(channels: int = 256, features: int = 1024, size: int = 14) -> onnx.ModelProto:
    """A float16 1x1 Conv + Relu large enough that TensorRT lowers it to a GEMM
    (``__gemm_from_conv1x1`` in the layer report)."""
    graph = gs.Graph(opset=17)
    x = gs.Variable("x", np.float16, (1, channels, size, size))
    conv_out = gs.Variable("conv_out", np.float16)
    y = gs.Variable("y", np.float16, (1, features, size, size))
    weights = (0.05 * _weights(2, features, channels, 1, 1)).astype(np.float16)
    graph.nodes = [
        gs.Node("Conv", "conv1x1", attrs={"kernel_shape": [1, 1]},
                inputs=[x, gs.Constant("w", weights),
                        gs.Constant("b", _weights(3, features).astype(np.float16))],
                outputs=[conv_out]),
        gs.Node("Relu", "relu", inputs=[conv_out], outputs=[y]),
    ]
    graph.inputs, graph.outputs = [x], [y]
    return ir.export_model(graph)
