"""The engine verdict on global-pool-window and flatten-gemm-conv: TensorRT's compute layers.

Each model is built as given (after ``dead-layer-elimination``, which changes nothing here) and
after the default pipeline; the counts are what TensorRT-RTX 1.7 builds for these graphs, and the
negative models are the forms where the rewrite would cost a layer, which the passes leave alone.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import pytest
from onnx import numpy_helper

from trtcompile import ir, verify
from trtcompile.backend import build_engine
from trtcompile.pass_manager import PassManager


def _model(text: str, shapes: dict[str, tuple[int, ...]]) -> onnx.ModelProto:
    model = onnx.parser.parse_model(text)
    rng = np.random.default_rng(0)
    for name, shape in shapes.items():
        model.graph.initializer.append(numpy_helper.from_array(
            (rng.standard_normal(shape) * 0.05).astype(np.float32), name))
    model.ir_version = 10
    return model


def _resnet_head() -> onnx.ModelProto:
    """A 1x1 conv with residual Add and ReLU on a 2048x7x7 map, global pool, Flatten, Gemm."""
    return _model("""
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[1,2048,7,7] x) => (float[1,10] y) {
          c = Conv(x, W)
          a = Add(c, x)
          r = Relu(a)
          p = GlobalAveragePool(r)
          f = Flatten<axis = 1>(p)
          y = Gemm<transB = 1>(f, F, FB)
        }""", {"W": (2048, 2048, 1, 1), "F": (10, 2048), "FB": (10,)})


def _squeeze_excitation() -> onnx.ModelProto:
    """A 1x1 conv and ReLU on 256x14x14, its global pool gating it through two 1x1 convs."""
    return _model("""
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[1,256,14,14] x) => (float[1,256,14,14] y) {
          c = Conv(x, W)
          r = Relu(c)
          p = GlobalAveragePool(r)
          s1 = Conv(p, S1)
          s1r = Relu(s1)
          s2 = Conv(s1r, S2)
          s = Sigmoid(s2)
          y = Mul(r, s)
        }""", {"W": (256, 256, 1, 1), "S1": (4, 256, 1, 1), "S2": (256, 4, 1, 1)})


def _vgg_classifier() -> onnx.ModelProto:
    """VGG's classifier at its size: conv, MaxPool to 512x7x7, Flatten, Gemm, ReLU, Gemm."""
    return _model("""
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[1,512,14,14] x) => (float[1,10] y) {
          c = Conv<pads = [1, 1, 1, 1]>(x, W)
          r = Relu(c)
          m = MaxPool<kernel_shape = [2, 2], strides = [2, 2]>(r)
          f = Flatten<axis = 1>(m)
          h = Gemm<transB = 1>(f, F, FB)
          hr = Relu(h)
          y = Gemm<transB = 1>(hr, G, GB)
        }""", {"W": (512, 512, 3, 3), "F": (1024, 25088), "FB": (1024,), "G": (10, 1024),
               "GB": (10,)})


def _pool_as_output() -> onnx.ModelProto:
    """A conv, ReLU and global pool whose result is the graph output (TensorRT fuses the mean)."""
    return _model("""
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[1,8,7,7] x) => (float[1,8,1,1] y) {
          c = Conv<pads = [1, 1, 1, 1]>(x, W)
          r = Relu(c)
          y = GlobalAveragePool(r)
        }""", {"W": (8, 8, 3, 3)})


def _small_classifier_output() -> onnx.ModelProto:
    """A Gemm on a flattened 64x7x7 map whose ReLU is the graph output (one generated kernel)."""
    return _model("""
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[1,64,14,14] x) => (float[1,128] y) {
          c = Conv<pads = [1, 1, 1, 1]>(x, W)
          r = Relu(c)
          m = MaxPool<kernel_shape = [2, 2], strides = [2, 2]>(r)
          f = Flatten<axis = 1>(m)
          h = Gemm<transB = 1>(f, F, FB)
          y = Relu(h)
        }""", {"W": (64, 64, 3, 3), "F": (128, 3136), "FB": (128,)})


def _layers(model: onnx.ModelProto, pipeline: str) -> tuple[int, dict[str, int], onnx.ModelProto]:
    graph = ir.import_model(model)
    report = PassManager(pipeline).run(graph)
    stats: dict[str, int] = {}
    for record in report.records:
        for key, value in record.counts.items():
            stats[key] = stats.get(key, 0) + value
    optimized = ir.export_model(graph)
    return build_engine(optimized, progress=False).compute_layers, stats, optimized


@pytest.mark.parametrize("make, rule, before, after", [
    (_resnet_head, "windowed_pools", 5, 4),
    (_squeeze_excitation, "windowed_pools", 7, 6),
    (_vgg_classifier, "gemm_convs", 6, 5),
], ids=["resnet-head", "squeeze-excitation", "vgg-classifier"])
def test_rewrite_removes_an_engine_layer(make, rule, before, after):
    model = make()
    as_given, _, _ = _layers(model, "dead-layer-elimination")
    optimized, stats, optimized_model = _layers(model, "default")
    assert stats.get(rule) == 1
    assert (as_given, optimized) == (before, after)
    parity = verify.compare_models(model, optimized_model, seed=0)
    assert parity.passed, parity


@pytest.mark.parametrize("make, layers", [
    (_pool_as_output, 3),
    (_small_classifier_output, 4),
], ids=["pool-as-output", "small-classifier-output"])
def test_rewrite_left_alone_where_it_would_cost_a_layer(make, layers):
    model = make()
    optimized, stats, _ = _layers(model, "default")
    assert "windowed_pools" not in stats and "gemm_convs" not in stats
    assert optimized == _layers(model, "dead-layer-elimination")[0] == layers
