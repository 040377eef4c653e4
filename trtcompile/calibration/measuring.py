"""Measuring a model node by node on the user's samples, for the precision passes' risk tables.

``precision-fp16`` (which nodes stay FP32) and ``quantize-int8`` (what each quantized layer costs)
both run the FP32 model with its intermediate tensors read out, run single nodes alone in reduced
precision on the values captured, and compare; what they share lives here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import onnx

from trtcompile.calibration.data import (
    CalibrationData,
    has_fixed_batch,
    model_input_specs,
)

#: Samples per batch when the model's batch dimension is dynamic. A capture of every tensor holds
#: one batch of all of them at once, so batches stay small.
BATCH_SAMPLES = 4


def sample_batches(model: onnx.ModelProto, data: CalibrationData,
                   samples: int) -> list[dict[str, np.ndarray]]:
    """Feed dicts covering the first ``samples`` samples of ``data`` (validated against the
    model's inputs; InputError naming the problem), at the model's fixed batch size (a short last
    batch dropped) or :data:`BATCH_SAMPLES` at a time."""
    specs = model_input_specs(model)
    data.validate(specs)
    size = data.batch_size(specs, requested=min(BATCH_SAMPLES, max(1, samples)))
    count = max(1, math.ceil(min(samples, data.num_samples) / size))
    return list(data.batches(size, max_batches=count, drop_last=has_fixed_batch(specs)))


def batch_size(feed: Mapping[str, np.ndarray]) -> int:
    """Samples in one feed dict."""
    return int(next(iter(feed.values())).shape[0]) if feed else 0


def capture_model(model: onnx.ModelProto, names: Iterable[str] | None = None) -> onnx.ModelProto:
    """``model`` with ``names`` (default: every top-level node output) as graph outputs too; their
    types are left to ONNX Runtime."""
    capture = onnx.ModelProto()
    capture.CopyFrom(model)
    present = {value.name for value in capture.graph.output}
    if names is None:
        names = [name for node in capture.graph.node for name in node.output]
    for name in names:
        if name and name not in present:
            capture.graph.output.append(onnx.ValueInfoProto(name=name))
            present.add(name)
    return capture


def single_node_model(model: onnx.ModelProto, node: onnx.NodeProto,
                      replaced: Mapping[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """A model of ``node`` alone: its computed inputs become (untyped) graph inputs, its
    constants stay, those named in ``replaced`` with the values given there."""
    replaced = replaced or {}
    initializers = {init.name: init for init in model.graph.initializer}
    inputs, constants = [], []
    for name in dict.fromkeys(n for n in node.input if n):
        if name in replaced:
            constants.append(onnx.numpy_helper.from_array(replaced[name], name))
        elif name in initializers:
            constants.append(initializers[name])
        else:
            inputs.append(onnx.ValueInfoProto(name=name))
    outputs = [onnx.ValueInfoProto(name=name) for name in node.output if name]
    graph = onnx.helper.make_graph([node], f"{node.name}_alone", inputs, outputs, constants)
    single = onnx.helper.make_model(graph, opset_imports=list(model.opset_import),
                                    functions=list(model.functions))
    single.ir_version = model.ir_version
    return single


def typed(single: onnx.ModelProto, values: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """``single`` with its inputs and outputs typed from the captured arrays ``values`` (element
    type and rank; dimensions left unknown)."""
    result = onnx.ModelProto()
    result.CopyFrom(single)
    for value in [*result.graph.input, *result.graph.output]:
        array = np.asarray(values[value.name])
        elem = onnx.helper.np_dtype_to_tensor_dtype(array.dtype)
        value.CopyFrom(onnx.helper.make_tensor_value_info(value.name, elem, [None] * array.ndim))
    return result


class RelativeError:
    """The largest ``|got - expected|`` over the largest ``|expected|`` of a node's outputs, over
    every batch added (the absolute error when ``|expected|`` is 0 throughout), taken where
    ``expected`` is finite; infinite once ``got`` is NaN or infinite where ``expected`` is not.
    Independent of how the samples are batched."""

    def __init__(self) -> None:
        self.error = 0.0
        self.peak = 0.0
        self.measured = False

    def add(self, expected: np.ndarray, got: np.ndarray) -> None:
        """One output of one batch (tensors that are not floating-point are ignored)."""
        expected = np.asarray(expected)
        if expected.dtype.kind != "f" or not expected.size:
            return
        got = np.asarray(got).astype(np.float32)
        finite = np.isfinite(expected)
        self.measured = True
        if np.any(finite & ~np.isfinite(got)):
            self.error = math.inf
        if finite.any():
            self.error = max(self.error, float(np.abs(got[finite] - expected[finite]).max()))
            self.peak = max(self.peak, float(np.abs(expected[finite]).max()))

    @property
    def value(self) -> float | None:
        """The relative error, or None when no floating-point output was added."""
        if not self.measured:
            return None
        return self.error / self.peak if self.peak > 0 else self.error


def json_number(value: float) -> float | str:
    """A measured number for report.json: six significant digits, ``"inf"``/``"nan"`` as text."""
    if math.isinf(value) or math.isnan(value):
        return str(value)
    return float(f"{value:.6g}")


__all__ = ["BATCH_SAMPLES", "batch_size", "capture_model", "json_number", "RelativeError",
           "sample_batches", "single_node_model", "typed"]
