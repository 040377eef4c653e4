"""The built-in examples: the generated ONNX GoogLeNet (deterministic, valid, shaped like GoogLeNet)
and the default Keras GoogLeNet (exported once into the cache, lowered from TensorFlow, deterministic)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from trtcompile import examples, ir
from trtcompile.errors import InputError
from trtcompile.frontend import keras_example


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


def test_the_generator_builds_the_shape_and_classes_the_catalog_gives() -> None:
    """The catalog owns the example's input shape and class count and hands them to the generator,
    which needs nothing from the catalog (``--help`` reads the catalog without numpy)."""
    from trtcompile.frontend import onnx_example

    def dims(value: onnx.ValueInfoProto) -> list[int]:
        return [d.dim_value for d in value.type.tensor_type.shape.dim]

    catalog = examples.googlenet_onnx()
    assert dims(catalog.graph.input[0]) == list(examples.GOOGLENET_INPUT_SHAPE)
    assert dims(catalog.graph.output[0]) == [examples.GOOGLENET_INPUT_SHAPE[0], examples.GOOGLENET_CLASSES]
    other = onnx_example.googlenet_onnx(examples.EXAMPLE_SEED, input_shape=(2, 3, 32, 32), classes=5)
    assert (dims(other.graph.input[0]), dims(other.graph.output[0])) == ([2, 3, 32, 32], [2, 5])
    session = ort.InferenceSession(other.SerializeToString(), providers=["CPUExecutionProvider"])
    data = np.random.default_rng(0).uniform(0, 1, (2, 3, 32, 32)).astype(np.float32)
    assert session.run(None, {"input": data})[0].shape == (2, 5)

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
    loaded = examples.load_example("googlenet-onnx")
    assert loaded.kind == "example"
    assert loaded.source_path is None and loaded.reference is None and loaded.lowering is None
    assert loaded.description == examples.EXAMPLES["googlenet-onnx"].description
    assert "built-in example" in loaded.description
    assert loaded.model.SerializeToString() == examples.googlenet_onnx().SerializeToString()


def test_the_default_example_is_the_tensorflow_one() -> None:
    assert examples.DEFAULT_EXAMPLE == "googlenet-keras"
    assert sorted(examples.EXAMPLES) == ["googlenet-keras", "googlenet-onnx"]


def test_unknown_example_is_an_input_error() -> None:
    with pytest.raises(InputError, match="unknown example 'nope' \\(examples: .*googlenet-onnx"):
        examples.load_example("nope")


# --------------------------------------------------------------------------------------------
# The default example: a Keras model lowered through the TensorFlow frontend
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keras_loaded():
    """The default example, loaded the way ``trtcompile compile`` loads it (lowering in a worker).
    Its SavedModel is exported into the test session's cache folder (see tests/conftest.py)."""
    return examples.load_example()


def test_keras_example_lowers_from_tensorflow(keras_loaded) -> None:
    model = keras_loaded.model
    onnx.checker.check_model(model)
    assert keras_loaded.kind == "savedmodel" and keras_loaded.reference_name == "tensorflow"
    assert keras_loaded.description == examples.EXAMPLES["googlenet-keras"].description
    assert keras_loaded.source_path.parent == keras_example.cache_dir() / "examples"
    lowering = keras_loaded.lowering
    assert lowering.tool.startswith("tf2onnx ") and lowering.mode == "faithful"
    assert lowering.source_kind == "savedmodel" and lowering.source_ops > lowering.onnx_nodes > 0
    assert lowering.onnx_nodes == len(model.graph.node)
    (image,) = model.graph.input
    dims = image.type.tensor_type.shape.dim
    assert image.name == "image"
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [64, 64, 3]  # NHWC, batch unknown
    ops = Counter(node.op_type for node in model.graph.node)
    # stem 1 + two inception blocks of 6 + residual 2 convolutions; NHWC<->NCHW transposes around them.
    assert ops["Conv"] == 15 and ops["Concat"] == 2 and ops["MaxPool"] == 3 and ops["Softmax"] == 1
    assert ops["Transpose"] > 0


def test_keras_example_matches_tensorflow(keras_loaded) -> None:
    data = np.random.default_rng(7).uniform(0, 1, (2, 64, 64, 3)).astype(np.float32)
    session = ort.InferenceSession(keras_loaded.model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    (output,) = session.get_outputs()
    (lowered,) = session.run(None, {"image": data})
    expected = keras_loaded.reference({"image": data})[output.name]
    assert lowered.shape == expected.shape == (2, 10)
    np.testing.assert_allclose(lowered, expected, atol=1e-4, rtol=1e-3)
    np.testing.assert_allclose(lowered.sum(axis=1), 1.0, rtol=1e-5)  # softmax probabilities
    assert not np.allclose(lowered[0], lowered[1])  # the weights make the inputs matter


def test_keras_example_is_deterministic_and_reuses_its_cache(keras_loaded, monkeypatch) -> None:
    folder = keras_loaded.source_path
    assert (folder / keras_example.CACHE_COMPLETE_MARKER).is_file()
    graph_before = (folder / "saved_model.pb").stat()

    def no_export(directory):
        raise AssertionError("the cached example was exported again")

    monkeypatch.setattr(keras_example, "example_savedmodel", no_export)
    again = examples.load_example("googlenet-keras")
    assert again.source_path == folder
    assert (folder / "saved_model.pb").stat().st_mtime_ns == graph_before.st_mtime_ns
    assert again.model.SerializeToString() == keras_loaded.model.SerializeToString()


def _fake_export(calls: list[Path], fail: bool = False):
    """Stands in for the Keras export (the cache logic is about folders, not TensorFlow): writes a
    SavedModel-shaped folder, or half of one and then fails, as an interrupted export would."""

    def export(directory) -> Path:
        path = Path(directory) / "googlenet_example"
        (path / "variables").mkdir(parents=True)
        (path / "saved_model.pb").write_bytes(b"graph %d" % len(calls))
        calls.append(path)
        if fail:
            raise KeyboardInterrupt
        (path / "variables" / "variables.index").write_bytes(b"index")
        return path

    return export


def test_cache_folder_comes_from_the_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TRTCOMPILE_CACHE_DIR", str(tmp_path / "explicit"))
    assert keras_example.cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("TRTCOMPILE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert keras_example.cache_dir() == tmp_path / "xdg" / "trtcompile"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert keras_example.cache_dir() == tmp_path / "home" / ".cache" / "trtcompile"


def test_cache_is_exported_once_and_reused(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TRTCOMPILE_CACHE_DIR", str(tmp_path))
    calls: list[Path] = []
    monkeypatch.setattr(keras_example, "example_savedmodel", _fake_export(calls))
    path = keras_example.cached_example_savedmodel()
    assert path.parent == tmp_path / "examples" and len(calls) == 1
    assert (path / keras_example.CACHE_COMPLETE_MARKER).is_file()
    assert keras_example.cached_example_savedmodel() == path and len(calls) == 1
    # No staging folder left; the lock file that serialises exports across processes stays.
    assert sorted(p.name for p in (tmp_path / "examples").iterdir()) == [path.name,
                                                                      path.name + ".lock"]


def test_an_interrupted_export_leaves_nothing_that_is_used(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TRTCOMPILE_CACHE_DIR", str(tmp_path))
    calls: list[Path] = []
    monkeypatch.setattr(keras_example, "example_savedmodel", _fake_export(calls, fail=True))
    with pytest.raises(KeyboardInterrupt):
        keras_example.cached_example_savedmodel()
    assert [p.name for p in (tmp_path / "examples").iterdir()] == [  # only the lock file
        f"googlenet_example-seed{keras_example.EXAMPLE_SEED}-keras{version('keras')}.lock"]
    monkeypatch.setattr(keras_example, "example_savedmodel", _fake_export(calls))
    path = keras_example.cached_example_savedmodel()
    assert len(calls) == 2 and (path / "variables" / "variables.index").is_file()


def test_a_partial_cache_folder_is_rebuilt_not_used(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TRTCOMPILE_CACHE_DIR", str(tmp_path))
    calls: list[Path] = []
    monkeypatch.setattr(keras_example, "example_savedmodel", _fake_export(calls))
    path = keras_example.cached_example_savedmodel()
    # A partial copy: the graph is there, the completion marker and the variables are not; and the
    # staging folder of an export killed before it could clean up.
    (path / keras_example.CACHE_COMPLETE_MARKER).unlink()
    (path / "variables" / "variables.index").unlink()
    (path / "saved_model.pb").write_bytes(b"truncated")
    killed = tmp_path / "examples" / ".googlenet_example.killed" / "googlenet_example"
    killed.mkdir(parents=True)
    (killed / "saved_model.pb").write_bytes(b"half")
    rebuilt = keras_example.cached_example_savedmodel()
    assert rebuilt == path and len(calls) == 2
    assert (rebuilt / "saved_model.pb").read_bytes() == b"graph 1"
    assert (rebuilt / "variables" / "variables.index").is_file()
    assert (rebuilt / keras_example.CACHE_COMPLETE_MARKER).is_file()
    assert sorted(p.name for p in (tmp_path / "examples").iterdir()) == [
        ".googlenet_example.killed", path.name, path.name + ".lock"]


def test_a_cache_hit_does_not_import_tensorflow(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TRTCOMPILE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(keras_example, "example_savedmodel", _fake_export([]))
    path = keras_example.cached_example_savedmodel()
    code = ("import sys; from trtcompile.frontend import keras_example; "
            "print(keras_example.cached_example_savedmodel()); "
            "assert not {'keras', 'tensorflow'} & set(sys.modules), 'imported on a cache hit'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=dict(os.environ), check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(path)
