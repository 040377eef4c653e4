"""Loading ONNX files: every kind of bad input is one clear InputError; good models load."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import pytest
from onnx import external_data_helper

from trtcompile import ir, verify
from trtcompile.errors import EXIT_BAD_INPUT, InputError
from trtcompile.frontend import FrontendOptions, load_model, onnx_loader


def small_model() -> onnx.ModelProto:
    """y = Relu(x * W + B) with 4x4 weights (big enough to store externally)."""
    rng = np.random.default_rng(0)
    weight = onnx.numpy_helper.from_array(rng.normal(size=(4, 4)).astype(np.float32), "W")
    bias = onnx.numpy_helper.from_array(rng.normal(size=(4,)).astype(np.float32), "B")
    nodes = [onnx.helper.make_node("MatMul", ["x", "W"], ["m"], name="matmul"),
             onnx.helper.make_node("Add", ["m", "B"], ["a"], name="add"),
             onnx.helper.make_node("Relu", ["a"], ["y"], name="relu")]
    graph = onnx.helper.make_graph(
        nodes, "small", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 4])],
        initializer=[weight, bias])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = ir.IR_VERSION
    onnx.checker.check_model(model)
    return model


def write(path: Path, model: onnx.ModelProto) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def save_external(model: onnx.ModelProto, path: Path, location: str) -> Path:
    """Save with every initializer in external file ``location`` (relative to ``path``)."""
    external_data_helper.convert_model_to_external_data(
        model, all_tensors_to_one_file=True, location=location, size_threshold=0)
    onnx.save_model(model, os.fspath(path))
    return path


def expect_input_error(path, match: str, options: FrontendOptions | None = None) -> str:
    with pytest.raises(InputError) as info:
        load_model(path, options)
    message = str(info.value)
    assert match in message
    assert "\n" not in message
    assert info.value.exit_code == EXIT_BAD_INPUT
    return message


def test_a_valid_model_loads(tmp_path: Path) -> None:
    loaded = load_model(write(tmp_path / "m.onnx", small_model()))
    assert loaded.kind == "onnx"
    assert loaded.source_path == tmp_path / "m.onnx"
    assert loaded.model_dir == tmp_path.resolve()
    assert loaded.lowering is None and loaded.reference is None
    assert loaded.description == "ONNX model m.onnx (opset 17, 3 nodes)"
    assert [n.name for n in loaded.model.graph.node] == ["matmul", "add", "relu"]


def test_missing_path(tmp_path: Path) -> None:
    expect_input_error(tmp_path / "nope.onnx", "model not found")
    with pytest.raises(InputError, match="model not found"):
        onnx_loader.load(tmp_path / "nope.onnx")


def test_folder_that_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    expect_input_error(tmp_path / "stuff", "is a folder but not a TensorFlow SavedModel")
    with pytest.raises(InputError, match="is a folder, not an ONNX file"):
        onnx_loader.load(tmp_path / "stuff")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.onnx").write_bytes(b"")
    expect_input_error(tmp_path / "empty.onnx", "is empty (0 bytes)")


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "random.onnx"
    path.write_bytes(np.random.default_rng(seed).bytes(4096))
    expect_input_error(path, "is not an ONNX model")


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a model\n")
    expect_input_error(path, "is not an ONNX model")


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.999])
def test_truncated_model(tmp_path: Path, fraction: float) -> None:
    data = small_model().SerializeToString()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[:int(len(data) * fraction)])
    expect_input_error(path, "truncated or")


def test_graph_reading_an_undefined_tensor(tmp_path: Path) -> None:
    model = small_model()
    model.graph.node[1].input[0] = "ghost"
    model.graph.node.remove(model.graph.node[0])
    message = expect_input_error(write(tmp_path / "m.onnx", model),
                                 "node 'add' reads tensor 'ghost', which no node, initializer or "
                                 "graph input defines")
    assert message.startswith(str(tmp_path / "m.onnx"))


def test_graph_output_nobody_produces(tmp_path: Path) -> None:
    model = small_model()
    model.graph.output[0].name = "nothing"
    expect_input_error(write(tmp_path / "m.onnx", model), "graph output 'nothing' is not produced")


def test_checker_failure_is_one_line(tmp_path: Path) -> None:
    model = small_model()
    model.graph.node[2].op_type = "NoSuchOp"
    expect_input_error(write(tmp_path / "m.onnx", model), "is not a valid ONNX model: ")


def test_external_data_inside_the_folder_loads(tmp_path: Path) -> None:
    model = small_model()
    expected = onnx.numpy_helper.to_array(model.graph.initializer[0])
    (tmp_path / "weights").mkdir()
    path = save_external(model, tmp_path / "m.onnx", "weights/m.bin")
    loaded = load_model(path)
    values = onnx.numpy_helper.to_array(loaded.model.graph.initializer[0])
    np.testing.assert_array_equal(values, expected)
    assert not any(external_data_helper.uses_external_data(t) for t in loaded.model.graph.initializer)


@pytest.mark.parametrize("location, match", [
    ("../outside.bin", "outside the model's folder"),
    ("weights/../../outside.bin", "outside the model's folder"),
    ("/etc/hostname", "an absolute path"),
])
def test_external_data_outside_the_folder_is_refused(tmp_path: Path, location: str, match: str) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    path = save_external(small_model(), model_dir / "m.onnx", "m.bin")
    (tmp_path / "outside.bin").write_bytes((model_dir / "m.bin").read_bytes())
    model = onnx.load(os.fspath(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    write(path, model)
    expect_input_error(path, match)


def test_external_data_through_a_symlink_leaving_the_folder_is_refused(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    path = save_external(small_model(), model_dir / "m.onnx", "m.bin")
    os.replace(model_dir / "m.bin", tmp_path / "secret.bin")
    (model_dir / "m.bin").symlink_to(tmp_path / "secret.bin")
    expect_input_error(path, "outside the model's folder")


def test_external_data_file_missing(tmp_path: Path) -> None:
    path = save_external(small_model(), tmp_path / "m.onnx", "m.bin")
    (tmp_path / "m.bin").unlink()
    expect_input_error(path, "'m.bin', which does not exist next to the model")


def test_external_data_file_truncated(tmp_path: Path) -> None:
    path = save_external(small_model(), tmp_path / "m.onnx", "m.bin")
    data = (tmp_path / "m.bin").read_bytes()
    (tmp_path / "m.bin").write_bytes(data[:10])
    expect_input_error(path, "past the end of the file (10 bytes")


def test_ir_version_too_new_is_read_as_supported(tmp_path: Path) -> None:
    model = small_model()
    model.ir_version = 14  # what onnx >= 1.23 writes; ONNX Runtime 1.31 refuses it
    loaded = load_model(write(tmp_path / "m.onnx", model))
    assert loaded.model.ir_version == ir.IR_VERSION
    assert "IR version 14 read as 10" in loaded.description
    parity = verify.compare_models(loaded.model, loaded.model, input_shapes={"x": [2, 4]})
    assert parity.passed


def test_input_shapes_fix_dynamic_dimensions(tmp_path: Path) -> None:
    options = FrontendOptions(input_shapes={"x": [3, 4]})
    loaded = load_model(write(tmp_path / "m.onnx", small_model()), options)
    dims = [d.dim_value for d in loaded.model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [3, 4]


@pytest.mark.parametrize("shapes, match", [
    ({"nope": [1, 4]}, "--input-shape names 'nope', which is not an input of m.onnx (inputs: x)"),
    ({"x": [1, 4, 4]}, "--input-shape x: 3 dimensions given, the input has 2"),
    ({"x": [1, 5]}, "--input-shape x: dimension 1 is fixed to 4 in the model, got 5"),
])
def test_bad_input_shapes(tmp_path: Path, shapes, match: str) -> None:
    expect_input_error(write(tmp_path / "m.onnx", small_model()), match,
                       FrontendOptions(input_shapes=shapes))


@pytest.mark.parametrize("options, flag", [
    (FrontendOptions(signature="other"), "--signature applies to TensorFlow models only"),
    (FrontendOptions(inputs_as_nchw=("x",)), "--inputs-as-nchw applies"),
    (FrontendOptions(opset=13, outputs=("y",)), "--opset, --outputs apply to TensorFlow models only"),
    (FrontendOptions(lowering="tf2onnx-optimized"), "--lowering applies"),
])
def test_tensorflow_flags_are_refused_for_onnx(tmp_path: Path, options, flag: str) -> None:
    expect_input_error(write(tmp_path / "m.onnx", small_model()), flag, options)


def test_loading_never_writes(tmp_path: Path) -> None:
    path = write(tmp_path / "m.onnx", small_model())
    before = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    load_model(path)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
