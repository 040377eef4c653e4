"""quantize-int8: post-training INT8 quantization written into the graph as Q/DQ pairs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from trtcompile import calibration, ir, verify
from trtcompile.calibration import measuring
from trtcompile.pm import Pass, PassContext, PassResult

#: Largest magnitude of symmetric int8 (TensorRT quantizes to [-127, 127]).
INT8_MAX = 127

#: Opset that introduced per-axis DequantizeLinear.
PER_AXIS_OPSET = 13


@dataclass(frozen=True)
class QuantizeInt8(Pass):
    """Quantize the layers TensorRT runs in INT8 with calibrated QuantizeLinear/DequantizeLinear.

    TensorRT 11 and TensorRT-RTX have no INT8 calibrator: the ranges must be in the graph. This
    pass calibrates on user data with ONNX Runtime and writes them as explicit quantization, placed
    the way TensorRT's explicit-quantization guide and NVIDIA Model Optimizer's ONNX quantizer
    place them, so that TensorRT fuses each Q/DQ pair into the layer that reads it.

    Rules:
      1. Quantizable layers are top-level ``Conv``, ``MatMul`` and ``Gemm`` nodes and fused conv
         layers (calls of a local function whose body convolves the call's inputs), whose
         activation input is a float32 tensor computed at run time and whose weight is a float32
         constant (``Gemm``: any ``transA``, the activation is quantized per-tensor). Other
         candidates are rejected with the reason (weights computed at run time, two activations,
         excluded by option, already quantized: an input written by a DequantizeLinear, ...).
         Everything else stays float.
      2. Activations: each distinct activation input gets one shared pair
         ``QuantizeLinear -> DequantizeLinear`` (per-tensor, symmetric: int8 zero point 0,
         ``scale = amax / 127``) read only by the quantized layers; other readers keep the float
         tensor. ``amax`` comes from calibration (``method``: ``entropy`` = TensorRT's KL
         calibrator, ``minmax``, ``percentile``) or from a valid calibration cache.
      3. Weights: stored as int8 constants with one scale per output channel (``Conv``/fused conv:
         axis 0; ``MatMul``: the last axis; ``Gemm``: axis 0 with ``transB=1``, else 1), read
         through ``DequantizeLinear``; ``scale = max|W_channel| / 127`` (1 for all-zero channels).
      4. Q/DQ only on the *inputs* of quantized layers, never on their outputs: nothing is placed
         between a convolution and its bias, BatchNormalization or activation, so TensorRT keeps
         Conv + bias + BN + activation one INT8 layer. Biases stay float (TensorRT folds them into
         the INT8 kernel).
      5. A fused conv layer quantizes as one layer: the Q/DQ pairs go on the call's ``X`` and
         ``W`` inputs, the function body is unchanged, and TensorRT runs the convolution in Int8.
      6. Residual ``Add``: the conv-side input of an Add gets no Q/DQ (rule 4), so TensorRT fuses
         the Add (and a following activation) into the convolution. The skip input is not given a
         pair of its own: it is quantized where a quantized layer reads it (the block input read
         by the next block's convolutions), and TensorRT reads the sum at the precision its
         epilogue writes. Measured on TensorRT-RTX 1.7: the Add fuses into the convolution's
         epilogue with the skip unquantized, sharing the block input's pair, or with a pair of
         its own, at the same layer count, so the pass adds none.
      7. Pooling gets no pair of its own: it runs quantized only next to quantized neighbours,
         where TensorRT moves the DequantizeLinear of the next layer's input across a MaxPool
         (commutes Q/DQ) and runs it in Int8 (``maxpool`` Int8 in the engine report of
         ResNet50). TensorRT-RTX 1.7 runs an AveragePool between two quantized layers in Float
         and quantizes its output in a kernel of its own; a second pair on the pool's input does
         not change that (measured, see the INT8 layer accounting in docs/precision.md), so the
         pass adds none. A pooling whose output no quantized layer reads stays in higher
         precision, with the reason "pooling output is not read by a quantized layer".
      8. Network output layers stay in higher precision (``keep_output_layers``): a quantizable
         layer whose result reaches a graph output only through layers that do no matrix work
         (Softmax, Sigmoid, Flatten, Reshape, ...) is the classifier head, where quantization
         error shows directly in the scores; it is rejected with "network output layer stays in
         higher precision". Softmax, LayerNormalization and every other op are never quantized
         (rule 1): their inputs get no Q/DQ; Softmax, LogSoftmax and LayerNormalization are
         listed with the reason "<op> stays in higher precision (never quantized)".

    Calibration data and the cache path come from ``ctx.resources["quantize-int8"]``
    (:class:`trtcompile.calibration.Calibration`); a cache computed for another model or method is
    refused. Requires: opset >= 13 (per-axis DequantizeLinear). Preserves: graph inputs and outputs;
    outputs change by quantization error (judge by task accuracy, not elementwise).
    Options: ``method``, ``percentile``, ``ops`` (which plain op types to quantize), ``fused_conv``,
    ``exclude`` (node names kept float), ``keep_output_layers`` (rule 8), ``batch_size`` (for
    dynamic batch), ``max_batches`` (0 = all calibration data), ``num_bins``, ``risk_samples``.

    Precision risk table: with calibration samples, each quantized layer runs alone on the first
    ``risk_samples`` of them (0: no table): its activation rounded to the int8 grid of its
    calibrated range and its weights to their per-channel grid, against the FP32 layer on the
    same captured inputs; the error is the largest ``|int8 - fp32|`` of its output over the
    largest ``|fp32|``. With the FP32 range of its input and the calibrated ``amax``, one row per
    layer the pass considered (the result's ``precision_risk`` table).
    """

    name: ClassVar[str] = "quantize-int8"
    #: Counts of calibration, reported whether or not a layer may be rewritten (rewrite limit).
    classification_counts: ClassVar[tuple[str, ...]] = (
        "calibrated_tensors", "ranges_from_cache", "calibration_samples", "measured_samples")

    method: str = "entropy"
    percentile: float = calibration.DEFAULT_PERCENTILE
    ops: tuple[str, ...] = ("Conv", "MatMul", "Gemm")
    fused_conv: bool = True
    exclude: tuple[str, ...] = ()
    keep_output_layers: bool = True
    batch_size: int = calibration.DEFAULT_BATCH_SIZE
    max_batches: int = 0
    num_bins: int = calibration.DEFAULT_NUM_BINS
    risk_samples: int = 8

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = PassResult()
        calibration.check_method(self.method, self.percentile)
        layers = self._find_layers(graph, result)
        if not layers:
            _report_higher_precision(graph, result)
            return result
        if ir.opset(graph) < PER_AXIS_OPSET:
            result.reject([layer.node for layer in layers],
                          f"opset {ir.opset(graph)} < {PER_AXIS_OPSET} has no per-axis "
                          "DequantizeLinear")
            return result
        setup = ctx.resources.get(self.name)
        if isinstance(setup, calibration.CalibrationData):
            setup = calibration.Calibration(data=setup)
        if not isinstance(setup, calibration.Calibration):
            raise ValueError('quantize-int8 needs ctx.resources["quantize-int8"] = '
                             "trtcompile.calibration.Calibration(data=..., cache_path=...)")

        activations = list(dict.fromkeys(layer.activation.name for layer in layers))
        model = ir.export_model(graph.copy())
        ranges, source = calibration.resolve_ranges(
            model, activations, setup, method=self.method, percentile=self.percentile,
            num_bins=self.num_bins, batch_size=self.batch_size, max_batches=self.max_batches)
        setup.info.update({"source": source, "method": self.method, "tensors": len(ranges)})
        result.count("ranges_from_cache" if source == "cache" else "calibrated_tensors",
                     len(ranges))
        if setup.data is not None and source == "calibration":
            result.count("calibration_samples", setup.data.num_samples)

        self._rewrite(graph, layers, ranges, result, ctx)
        ir.toposort(graph)
        _report_higher_precision(graph, result)
        if setup.data is not None and self.risk_samples:
            _risk_table(model, layers, ranges, setup.data, result, self.risk_samples)
        return result

    # Candidates ------------------------------------------------------------------------------

    def _find_layers(self, graph: gs.Graph, result: PassResult) -> list[_Layer]:
        excluded = set(self.exclude)
        functions = ir.functions_by_key(graph)
        graph_outputs = ir.output_names(graph)
        layers = []
        for node in graph.nodes:
            if node.op in self.ops and ir.is_onnx_op(node):
                kind, positions = node.op.lower(), _plain_positions(node)
            elif self.fused_conv and ir.call_key(node) in functions:
                positions = _fused_conv_positions(functions[ir.call_key(node)])
                if positions is None:
                    continue
                kind = "fused_conv"
            else:
                continue
            if node.name in excluded:
                result.reject(node, "excluded by option")
                continue
            layer = self._check(node, kind, positions, result)
            if layer is None:
                continue
            if self.keep_output_layers and _is_output_layer(node, graph_outputs):
                result.reject(node, "network output layer stays in higher precision")
                continue
            layers.append(layer)
        return layers

    @staticmethod
    def _check(node: gs.Node, kind: str, positions: tuple[int, int, int] | None,
               result: PassResult) -> _Layer | None:
        if positions is None:
            result.reject(node, f"{node.op} has too few inputs")
            return None
        x_index, w_index, axis = positions
        if max(x_index, w_index) >= len(node.inputs):
            result.reject(node, f"{node.op} has too few inputs")
            return None
        activation, weight = node.inputs[x_index], node.inputs[w_index]
        if any(_is_dequantized(tensor) for tensor in (activation, weight)):
            result.reject(node, "already quantized")
            return None
        weight_values = ir.constant_value(weight)
        if weight_values is None:
            if ir.constant_value(activation) is not None and kind in ("matmul", "gemm"):
                result.reject(node, "constant operand is not the weight input")
            elif kind == "matmul":
                result.reject(node, "MatMul of two activations (no constant weight)")
            else:
                result.reject(node, "weights are computed at run time")
            return None
        if ir.constant_value(activation) is not None:
            result.reject(node, "activation input is a constant")
            return None
        if activation.dtype is not None and np.dtype(activation.dtype) != np.float32:
            result.reject(node, f"activation is {np.dtype(activation.dtype)}, not float32")
            return None
        if weight_values.dtype != np.float32:
            result.reject(node, f"weights are {weight_values.dtype}, not float32")
            return None
        if axis < 0:
            axis += weight_values.ndim
        if not 0 <= axis < weight_values.ndim:
            result.reject(node, "weights have no output-channel axis")
            return None
        return _Layer(node, kind, activation, w_index, weight_values, axis)

    # Rewrite ---------------------------------------------------------------------------------

    def _rewrite(self, graph: gs.Graph, layers: list[_Layer], ranges: dict[str, float],
                 result: PassResult, ctx: PassContext) -> None:
        scope = ir.NameScope(graph)
        zero = gs.Constant(scope.fresh("int8_zero_point"), np.zeros((), dtype=np.int8))
        dequantized: dict[str, gs.Variable] = {}
        dequantized_weights: dict[tuple[int, int], gs.Variable] = {}
        for layer in layers:
            if not ctx.may_rewrite(f"quantize-{layer.kind}", layer.node, result):
                continue
            name = layer.activation.name
            if name not in dequantized:
                amax = float(ranges[name])
                scale = gs.Constant(scope.fresh(f"{name}_scale"),
                                    np.array(_scale(amax), dtype=np.float32))
                quantized = gs.Variable(scope.fresh(f"{name}_quantized"), dtype=np.int8,
                                        shape=layer.activation.shape)
                restored = gs.Variable(scope.fresh(f"{name}_dequantized"), dtype=np.float32,
                                       shape=layer.activation.shape)
                graph.nodes.append(gs.Node("QuantizeLinear", scope.fresh(f"{name}_quantize"),
                                           inputs=[layer.activation, scale, zero],
                                           outputs=[quantized]))
                graph.nodes.append(gs.Node("DequantizeLinear", scope.fresh(f"{name}_dequantize"),
                                           inputs=[quantized, scale, zero], outputs=[restored]))
                dequantized[name] = restored
                result.count("qdq_activations")
            layer.node.inputs[layer.node.inputs.index(layer.activation)] = dequantized[name]

            weight = layer.node.inputs[layer.weight_index]
            key = (id(layer.weight_values), layer.axis)
            if key not in dequantized_weights:
                values, scales = quantize_per_channel(layer.weight_values, layer.axis)
                base = weight.name
                int8_weight = gs.Constant(scope.fresh(f"{base}_int8"), values)
                channel_scale = gs.Constant(scope.fresh(f"{base}_scale"), scales)
                channel_zero = gs.Constant(scope.fresh(f"{base}_zero_point"),
                                           np.zeros(scales.shape, dtype=np.int8))
                restored = gs.Variable(scope.fresh(f"{base}_dequantized"), dtype=np.float32,
                                       shape=list(layer.weight_values.shape))
                graph.nodes.append(gs.Node(
                    "DequantizeLinear", scope.fresh(f"{base}_dequantize"),
                    attrs={"axis": layer.axis},
                    inputs=[int8_weight, channel_scale, channel_zero], outputs=[restored]))
                dequantized_weights[key] = restored
                result.count("qdq_weights")
            layer.node.inputs[layer.weight_index] = dequantized_weights[key]
            result.count(f"quantized_{layer.kind}")


#: Ops that always stay in higher precision (rule 8): exponentials and normalizations, whose
#: inputs are never quantized. Their ``--why-not`` reason says so.
HIGHER_PRECISION_OPS = frozenset({"Softmax", "LogSoftmax", "LayerNormalization"})

#: Pooling ops (rule 7): Int8 only where a quantized layer reads their output.
POOLING_OPS = frozenset({"MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool"})


def _report_higher_precision(graph: gs.Graph, result: PassResult) -> None:
    """Record why Softmax/LayerNorm (rule 8) and pooling without a quantized reader (rule 7)
    stay in higher precision, so ``--why-not quantize-int8`` lists them."""
    for node in graph.nodes:
        if not ir.is_onnx_op(node):
            continue
        if node.op in HIGHER_PRECISION_OPS:
            result.reject(node, f"{node.op} stays in higher precision (never quantized)")
        elif node.op in POOLING_OPS and not any(
                consumer.op == "QuantizeLinear" for output in node.outputs
                for consumer in ir.consumers(output)):
            result.reject(node, "pooling output is not read by a quantized layer (runs in "
                          "higher precision)")


@dataclass
class _Layer:
    node: gs.Node
    kind: str  # conv | matmul | gemm | fused_conv
    activation: gs.Tensor
    weight_index: int
    weight_values: np.ndarray
    axis: int  # output-channel axis of the weight


#: Ops that do no matrix work: a quantizable layer reaching a graph output only through them is
#: a network output layer (rule 8).
OUTPUT_PASSTHROUGH_OPS = frozenset({
    "Softmax", "LogSoftmax", "Sigmoid", "Tanh", "Relu", "Identity", "Flatten", "Reshape",
    "Squeeze", "Unsqueeze", "Transpose", "Cast", "Add", "Mul", "ArgMax", "TopK",
})


def _is_output_layer(node: gs.Node, graph_outputs: set[str]) -> bool:
    """Whether every path from ``node``'s outputs ends at a graph output through
    :data:`OUTPUT_PASSTHROUGH_OPS` only (and at least one path exists)."""
    frontier = list(node.outputs)
    seen: set[int] = set()
    reaches_output = False
    while frontier:
        tensor = frontier.pop()
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        if tensor.name in graph_outputs:
            reaches_output = True
        for consumer in ir.consumers(tensor):
            if consumer.op not in OUTPUT_PASSTHROUGH_OPS or not ir.is_onnx_op(consumer):
                return False
            frontier.extend(consumer.outputs)
    return reaches_output


def _is_dequantized(tensor: gs.Tensor) -> bool:
    """Whether ``tensor`` is written by a DequantizeLinear (the layer is quantized already)."""
    producer = ir.producer(tensor)
    return producer is not None and producer.op == "DequantizeLinear"


def _plain_positions(node: gs.Node) -> tuple[int, int, int] | None:
    """(activation input, weight input, weight output-channel axis) of a plain op."""
    if len(node.inputs) < 2:
        return None
    if node.op == "Conv":
        return 0, 1, 0
    if node.op == "MatMul":
        return 0, 1, -1
    if node.op == "Gemm":
        # transA only transposes the activation, which is quantized per-tensor: the weight's
        # output-channel axis depends on transB alone.
        return 0, 1, 0 if node.attrs.get("transB", 0) else 1
    return None


def _fused_conv_positions(function: gs.Function) -> tuple[int, int, int] | None:
    """(X, W, axis 0) call-input positions if the function body convolves two of its inputs."""
    body_inputs = {id(t): i for i, t in enumerate(function.inputs)}
    for node in function.nodes:
        if node.op == "Conv" and len(node.inputs) >= 2:
            x_index = body_inputs.get(id(node.inputs[0]))
            w_index = body_inputs.get(id(node.inputs[1]))
            if x_index is not None and w_index is not None:
                return x_index, w_index, 0
    return None


def _scale(amax: float) -> float:
    """Per-tensor scale for a symmetric range; a tensor that was always zero gets scale 1."""
    return amax / INT8_MAX if amax > 0 and np.isfinite(amax) else 1.0


def _risk_table(model: onnx.ModelProto, layers: list[_Layer], ranges: dict[str, float],
                data: calibration.CalibrationData, result: PassResult, samples: int) -> None:
    """Per layer the pass considered: the FP32 range of its activation on the samples, its
    calibrated ``amax``, the error it makes quantized alone (see the class docstring), whether it
    stayed in higher precision and why; riskiest first, in ``result.tables``."""
    nodes = {node.name: node for node in model.graph.node}
    reasons: dict[str, str] = {}
    for rejection in result.rejections:
        for name in rejection.nodes:
            reasons.setdefault(name, rejection.reason)
    quantized = [layer for layer in layers if layer.node.name not in reasons]
    constants = {init.name for init in model.graph.initializer}
    watched = {layer.node.name: layer.activation.name for layer in layers}
    watched.update({name: nodes[name].input[0] for name in reasons
                    if name in nodes and nodes[name].input and nodes[name].input[0]})
    read = [n for layer in quantized for n in [*nodes[layer.node.name].input,
                                              *nodes[layer.node.name].output]
            if n and n not in constants]
    batches = measuring.sample_batches(model, data, samples)
    session = verify.inference_session(measuring.capture_model(model, [*watched.values(), *read]))
    names = [o.name for o in session.get_outputs()]
    peaks: dict[str, float] = {}
    alone: dict[str, measuring.RelativeError] = {}
    sessions: dict[str, object] = {}
    for feed in batches:
        values = {**dict(zip(names, session.run(None, feed))), **feed}
        for name, tensor in watched.items():
            if tensor in values:
                peaks[name] = max(peaks.get(name, 0.0), verify.output_peak([values[tensor]]))
        for layer in quantized:
            _quantized_alone(layer, nodes[layer.node.name], model, ranges, values, sessions,
                             alone.setdefault(layer.node.name, measuring.RelativeError()))
    errors = {name: error.value for name, error in alone.items() if error.value is not None}
    rows = []
    for name in dict.fromkeys([*(layer.node.name for layer in layers), *reasons]):
        if name not in nodes:
            continue
        activation = watched.get(name)
        amax = ranges.get(activation) if name not in reasons else None
        error = errors.get(name)
        rows.append({"name": name, "op": nodes[name].op_type,
                     "max_abs_fp32": measuring.json_number(peaks.get(name, 0.0)),
                     "amax": None if amax is None else measuring.json_number(float(amax)),
                     "alone_error": None if error is None else measuring.json_number(error),
                     "kept": name in reasons, "kept_by": None, "reason": reasons.get(name)})
    rows.sort(key=lambda row: (row["kept"], -(errors.get(row["name"], -1.0))))
    result.tables["precision_risk"] = rows
    result.count("measured_samples", sum(measuring.batch_size(feed) for feed in batches))


def _quantized_alone(layer: _Layer, node: onnx.NodeProto, model: onnx.ModelProto,
                     ranges: dict[str, float], values: dict[str, np.ndarray],
                     sessions: dict[str, object], error: measuring.RelativeError) -> None:
    """Add to ``error`` ``node`` run alone on one batch with its weights and activation on their
    int8 grids (as the graph's Q/DQ pairs give them), against its captured FP32 output."""
    if node.name not in sessions:
        int8_values, scales = quantize_per_channel(layer.weight_values, layer.axis)
        shape = [1] * layer.weight_values.ndim
        shape[layer.axis] = -1
        restored = int8_values.astype(np.float32) * scales.reshape(shape)
        single = measuring.single_node_model(model, node,
                                             {node.input[layer.weight_index]: restored})
        sessions[node.name] = verify.inference_session(measuring.typed(single, values))
    session = sessions[node.name]
    scale = np.float32(_scale(float(ranges[layer.activation.name])))
    feed = {}
    for item in session.get_inputs():
        array = np.asarray(values[item.name])
        if item.name == layer.activation.name:  # QuantizeLinear: round half to even, saturate
            array = (np.clip(np.rint(array / scale), -128, INT8_MAX) * scale).astype(np.float32)
        feed[item.name] = array
    (got,) = session.run([node.output[0]], feed)
    error.add(values[node.output[0]], got)


def quantize_per_channel(weights: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel int8 quantization of ``weights`` along ``axis``.

    Returns ``(int8 values, float32 scales)`` with ``values * scales ~= weights``.
    """
    reduce_axes = tuple(a for a in range(weights.ndim) if a != axis)
    amax = np.abs(weights).max(axis=reduce_axes) if reduce_axes else np.abs(weights)
    scales = np.where(amax > 0, amax / INT8_MAX, 1.0).astype(np.float32)
    shape = [1] * weights.ndim
    shape[axis] = -1
    values = np.clip(np.rint(weights / scales.reshape(shape)), -INT8_MAX, INT8_MAX).astype(np.int8)
    return values, scales
