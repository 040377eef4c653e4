"""The built-in example model: deterministic, valid, and shaped like GoogLeNet."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from trtcompile import examples, ir
from trtcompile.errors import InputError


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return examples.googlenet_onnx()


def test_example_is_deterministic(model: onnx.ModelProto) -> None:
    assert examples.googlenet_onnx().SerializeToString() == model.SerializeToString()
    other = examples.googlenet_onnx(seed=1)
    assert other.SerializeToString() != model.SerializeToString()


def test_example_is_valid_and_runs(model: onnx.ModelProto) -> None:
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == ir.IR_VERSION
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (image,) = session.get_inputs()
    assert (image.name, image.shape) == ("input", [1, 3, 64, 64])
    data = np.random.default_rng(0).uniform(0, 1, (1, 3, 64, 64)).astype(np.float32)
    (logits,) = session.run(None, {"input": data})
    assert logits.shape == (1, 10)
    assert np.all(np.isfinite(logits))
    # He-initialized weights keep activations in a useful range (not vanishing, not exploding).
    assert 0.1 < np.abs(logits).max() < 100


def test_example_has_the_googlenet_structure(model: onnx.ModelProto) -> None:
    ops = Counter(node.op_type for node in model.graph.node)
    assert ops == {"Conv": 17, "BatchNormalization": 17, "Relu": 17, "MaxPool": 4, "Concat": 2,
                   "Add": 1, "GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1}
    nodes = {node.name: node for node in model.graph.node}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    # Every Conv has a bias and feeds an unfused BatchNormalization.
    for node in model.graph.node:
        if node.op_type == "Conv":
            assert len(node.input) == 3
            assert [c.op_type for c in consumers[node.output[0]]] == ["BatchNormalization"]
    # Each inception block: three 1x1 convolutions and a MaxPool share the block input; Concat of 4.
    for block, block_input in (("inception_3a", "stem_pool_out"),
                               ("inception_3b", "inception_3a_concat_out")):
        readers = consumers[block_input]
        heads = sorted(n.name for n in readers if n.op_type == "Conv")
        assert heads == [f"{block}_1x1_conv", f"{block}_3x3_reduce_conv", f"{block}_5x5_reduce_conv"]
        assert all(dict((a.name, a.ints) for a in nodes[h].attribute)["kernel_shape"] == [1, 1]
                   for h in heads)
        assert [n.op_type for n in readers if n.op_type != "Conv"] == ["MaxPool"]
        assert len(nodes[f"{block}_concat"].input) == 4
    # The residual Add reads the block input and the second BN.
    add = nodes["residual_4_add"]
    assert list(add.input) == ["residual_4_b_bn_out", "pool_4_out"]
    assert [n.op_type for n in model.graph.node][-3:] == ["GlobalAveragePool", "Flatten", "Gemm"]


def test_load_example_returns_a_loaded_model() -> None:
    loaded = examples.load_example()
    assert loaded.kind == "example"
    assert loaded.source_path is None and loaded.reference is None and loaded.lowering is None
    assert "built-in example" in loaded.description
    assert examples.DEFAULT_EXAMPLE in examples.EXAMPLES


def test_unknown_example_is_an_input_error() -> None:
    with pytest.raises(InputError, match="unknown example 'nope' \\(examples: .*googlenet-onnx"):
        examples.load_example("nope")
