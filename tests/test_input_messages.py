"""A model that cannot run anywhere is told why in one line with exit 2: an opset outside what
ONNX Runtime and onnx support, an operator of a domain no runtime implements, a .keras file that
is no zip archive, a SavedModel with no serving signature. Never "its dynamic dimensions do not
take these sizes" for a static model."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from trtcompile import cli
from trtcompile.errors import EXIT_BAD_INPUT


def _one_op_model(path: Path, op: str, domain: str, opset: int) -> Path:
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], name="only", domain=domain)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = 10
    onnx.save(model, path)
    return path


def _error_line(capsys, argv: list[str]) -> str:
    try:
        code = cli.main(argv)
    except SystemExit as stopped:
        code = stopped.code
    assert code == EXIT_BAD_INPUT
    lines = [line for line in capsys.readouterr().err.splitlines() if "trtcompile" in line]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("opset", [1, 30])
def test_an_opset_outside_the_supported_range_is_named(tmp_path: Path, capsys, opset: int) -> None:
    model = _one_op_model(tmp_path / "m.onnx", "Relu", "", opset)
    line = _error_line(capsys, ["compile", "-q", str(model), "-o", str(tmp_path / "out")])
    assert f"ai.onnx opset {opset}, outside the opsets ONNX Runtime and onnx support (7 to " in line
    assert "dynamic dimensions" not in line
    assert not (tmp_path / "out").exists()


def test_a_custom_domain_op_is_named_not_blamed_on_dynamic_dimensions(tmp_path: Path, capsys) -> None:
    model = _one_op_model(tmp_path / "m.onnx", "MyOp", "com.example", 17)
    line = _error_line(capsys, ["compile", "-q", str(model), "-o", str(tmp_path / "out")])
    assert "no runtime implements op MyOp of domain com.example (node 'only')" in line
    assert "TensorRT would need a plugin" in line and "dynamic dimensions" not in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", [b"\xff\xfe garbage \x00\x81", b"plain text, not a zip\n"])
def test_a_keras_file_that_is_no_zip_is_not_a_keras_archive(tmp_path: Path, capsys, content) -> None:
    model = tmp_path / "m.keras"
    model.write_bytes(content)
    line = _error_line(capsys, ["compile", "-q", str(model), "-o", str(tmp_path / "out")])
    assert "not a Keras archive (.keras is a zip file" in line, line
    assert "File not found" not in line and "utf-8" not in line
    assert not (tmp_path / "out").exists()


def test_a_savedmodel_without_signatures_says_so(tmp_path: Path, capsys) -> None:
    tf = pytest.importorskip("tensorflow")
    module = tf.Module()
    module.v = tf.Variable(1.0)
    tf.saved_model.save(module, str(tmp_path / "sm"))
    line = _error_line(capsys, ["compile", "-q", str(tmp_path / "sm"), "-o", str(tmp_path / "out")])
    assert "has no serving signatures; export one with" in line, line
    assert "choose one with --signature" not in line
    assert not (tmp_path / "out").exists()
