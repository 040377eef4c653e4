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


def _conv_chain(graph: gs.Graph, x: gs.Variable, prefix: str, count: int, seed: int,
                channels: int = 4) -> gs.Variable:
    """``count`` Conv(3x3, pad 1)+Relu pairs (the last without Relu) named ``<prefix><i>``."""
    for index in range(count):
        weights = gs.Constant(f"{prefix}{index}_w", 0.3 * _weights(seed + index, channels,
                                                                    channels, 3, 3))
        conv_out = gs.Variable(f"{prefix}{index}_out", np.float32)
        graph.nodes.append(gs.Node("Conv", f"{prefix}{index}", inputs=[x, weights],
                                   outputs=[conv_out], attrs={"pads": [1, 1, 1, 1]}))
        x = conv_out
        if index < count - 1:
            relu_out = gs.Variable(f"{prefix}{index}_relu_out", np.float32)
            graph.nodes.append(gs.Node("Relu", f"{prefix}{index}_relu", inputs=[x],
                                       outputs=[relu_out]))
            x = relu_out
    return x


def rejected_op_model(op: str = "BitShift", batch: int | str = 1, head: int = 3,
                      tail: int = 3) -> onnx.ModelProto:
    """Convolutions, an op TensorRT's parser rejects, convolutions: ``head`` and ``tail`` conv
    layers on [batch, 4, 8, 8] around it.

    ``BitShift``: Cast to uint32, BitShift right by a uint32 initializer, Cast back to float.
    ``Unique``: the conv output flattened, Unique's inverse indices cast to float and reshaped
    back (so shapes after it stay static).
    """
    graph = gs.Graph(opset=17)
    x = gs.Variable("x", np.float32, (batch, 4, 8, 8))
    graph.inputs = [x]
    features = _conv_chain(graph, x, "head", head, seed=1)
    middle = gs.Variable("middle", np.float32)
    if op == "BitShift":
        as_int = gs.Variable("as_uint32", np.uint32)
        shifted = gs.Variable("shifted", np.uint32)
        scaled = gs.Variable("scaled", np.float32)
        graph.nodes += [
            gs.Node("Mul", "scale", inputs=[features, gs.Constant("sixteen", np.array(16.0, np.float32))],
                    outputs=[scaled]),
            gs.Node("Cast", "to_uint32", inputs=[gs.Variable("abs_out", np.float32)],
                    outputs=[as_int], attrs={"to": onnx.TensorProto.UINT32}),
            gs.Node("BitShift", "shift_right", inputs=[as_int, gs.Constant(
                "shift_amount", np.array([2], np.uint32))], outputs=[shifted],
                attrs={"direction": "RIGHT"}),
            gs.Node("Cast", "to_float", inputs=[shifted], outputs=[middle],
                    attrs={"to": onnx.TensorProto.FLOAT}),
        ]
        abs_node = gs.Node("Abs", "abs", inputs=[scaled], outputs=[graph.nodes[-3].inputs[0]])
        graph.nodes.insert(len(graph.nodes) - 3, abs_node)
    elif op == "Unique":
        flat = gs.Variable("flat", np.float32)
        unique = [gs.Variable(name, dtype) for name, dtype in (
            ("unique_values", np.float32), ("unique_indices", np.int64),
            ("inverse", np.int64), ("unique_counts", np.int64))]
        ranks = gs.Variable("ranks", np.float32)
        graph.nodes += [
            gs.Node("Reshape", "flatten", inputs=[features, gs.Constant("flat_shape", np.array(
                [-1], np.int64))], outputs=[flat]),
            gs.Node("Unique", "unique", inputs=[flat], outputs=unique, attrs={"sorted": 1}),
            gs.Node("Cast", "ranks_to_float", inputs=[unique[2]], outputs=[ranks],
                    attrs={"to": onnx.TensorProto.FLOAT}),
            gs.Node("Shape", "feature_shape", inputs=[features],
                    outputs=[shape := gs.Variable("feature_shape_out", np.int64)]),
            gs.Node("Reshape", "unflatten", inputs=[ranks, shape], outputs=[middle]),
        ]
    else:
        raise ValueError(f"no rejected-op model for {op}")
    y = _conv_chain(graph, middle, "tail", tail, seed=11)
    y.name = "y"
    y.dtype, y.shape = np.float32, (batch, 4, 8, 8)
    graph.outputs = [y]
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
