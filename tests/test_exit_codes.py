"""Exit codes mean one thing each: numeric flags are validated before any work (a tolerance that
would switch a check off is refused), unwritable outputs are bad input, and a bug exits 70 with
one line saying where its traceback went."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import CONV_BRANCHES, run_trtcompile
from trtcompile import cli
from trtcompile.flow import CompileOptions, compile_model
from trtcompile.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, InputError

BAD_NUMBERS = [
    (["--rtol", "nan"], "--rtol: nan: expected a finite number >= 0"),
    (["--atol", "nan"], "--atol: nan: expected a finite number >= 0"),
    (["--atol", "inf"], "--atol: inf: expected a finite number >= 0"),
    (["--rtol", "-0.5"], "--rtol: -0.5: expected a finite number >= 0"),
    (["--atol", "tight"], "--atol: 'tight' is not a number"),
    (["--seed", "-1"], "--seed: -1: expected an integer from 0 to 4294967295"),
    (["--seed", str(2**32)], "--seed: 4294967296: expected an integer from 0 to 4294967295"),
    (["--opset", "30"], "--opset: 30 is not supported (use 13 to 18)"),
    (["--opset", "1"], "--opset: 1 is not supported (use 13 to 18)"),
    (["--calib-batches", "-2"], "--calib-batches: -2: expected an integer >= 0"),
]


@pytest.mark.parametrize("flags, message", BAD_NUMBERS, ids=[" ".join(f) for f, _ in BAD_NUMBERS])
def test_numeric_flags_out_of_range_exit_2_with_one_line(tmp_path: Path, capsys, flags,
                                                         message) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["compile", str(CONV_BRANCHES), "-o", str(tmp_path / "out"), *flags])
    assert stopped.value.code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("trtcompile compile: error: argument ") and message in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("field, value", [("atol", math.nan), ("rtol", math.inf), ("atol", -1.0),
                                          ("seed", -1), ("workspace_bytes", 0)])
def test_compile_options_out_of_range_are_refused_before_any_work(tmp_path: Path, field,
                                                                  value) -> None:
    options = CompileOptions(**{field: value})
    with pytest.raises(InputError, match="expected"):
        compile_model(tmp_path / "absent.onnx", tmp_path / "out", options)  # refused before load
    assert not (tmp_path / "out").exists()


def test_an_unwritable_output_folder_is_bad_input(tmp_path: Path) -> None:
    result = run_trtcompile("compile", str(CONV_BRANCHES), "-o", "/proc/trtcompile-out",
                            "--no-engine", cwd=tmp_path)
    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    assert result.stderr.splitlines() == [
        "trtcompile: error: cannot write to /proc (No such file or directory); choose another "
        "output folder"]


def test_a_flag_error_is_one_line_not_the_usage(capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["compile", "--no-such-flag"])
    assert stopped.value.code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err == ("trtcompile: error: unrecognized arguments: --no-such-flag (see 'trtcompile --help')"
                   "\n")


def test_an_internal_error_exits_70_and_says_where_the_traceback_is(tmp_path: Path, capsys,
                                                                    monkeypatch) -> None:
    def broken(args):
        raise ZeroDivisionError("the stage divided by zero")

    monkeypatch.setattr(cli.parser, "run_compile", broken)  # the handler the parser binds
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    code = cli.main(["compile", str(CONV_BRANCHES), "-o", str(tmp_path / "out")])
    assert code == EXIT_INTERNAL == 70
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert "internal error" in err and "ZeroDivisionError: the stage divided by zero" in err
    written = list(tmp_path.glob("trtcompile-traceback-*.txt"))
    assert len(written) == 1 and f"traceback written to {written[0]}" in err
    text = written[0].read_text()
    assert "Traceback (most recent call last)" in text and "in broken" in text
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------
# Unusable input is one line and exit 2, never an internal error
# --------------------------------------------------------------------------------------------


def _relu_model(path: Path, shape: list[int], elem_type: int = 1) -> Path:
    """One Relu over an input of ``shape`` (float32 unless ``elem_type`` says otherwise)."""
    import onnx
    from onnx import helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "g",
                              [helper.make_tensor_value_info("x", elem_type, shape)],
                              [helper.make_tensor_value_info("y", elem_type, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.save(model, path)
    return path


def _npy_member(header: str, payload: bytes = b"\0" * 16) -> bytes:
    """An .npy file with ``header`` as its header dictionary (padded as np.save pads it)."""
    text = header.encode("latin1")
    padding = (64 - (10 + len(text) + 1) % 64) % 64
    text += b" " * padding + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + payload


#: Broken .npz members: a header that does not parse, and a 16-byte member whose header claims a
#: 10^12-element array (NumPy would try to allocate 3.6 TiB).
MALFORMED_NPZ = {
    "unparsable-header": _npy_member("{'descr': '<f4', 'fortran_order': Fa"),
    "huge-header": _npy_member("{'descr': '<f4', 'fortran_order': False, "
                               "'shape': (1000000, 1000000), }"),
}


def _malformed_npz(path: Path, kind: str, name: str = "x") -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{name}.npy", MALFORMED_NPZ[kind])
    return path


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("trtcompile")]
    assert len(lines) == 1, err
    assert "internal error" not in lines[0], err
    return lines[0]


def test_a_model_declaring_a_huge_input_is_refused_before_allocating(tmp_path: Path,
                                                                      capsys) -> None:
    model = _relu_model(tmp_path / "huge.onnx", [1_000_000, 1_000_000])
    code = cli.main(["compile", "-q", str(model), "-o", str(tmp_path / "out")])
    assert code == EXIT_BAD_INPUT
    line = _one_error_line(capsys.readouterr().err)
    assert ("input 'x' has 1000000000000 elements at shape 1000000x1000000 (3.6 TiB as float32): "
            "parity inputs of that size do not fit in the ") in line, line
    assert line.endswith("the model declares this shape: fix it, or skip parity (--no-parity)")
    assert not (tmp_path / "out").exists()


BAD_PYTHON = "from dataclasses import dataclass\n\ndef broken(:\n    pass\n"


def test_a_pass_module_with_a_syntax_error_is_bad_input(tmp_path: Path, capsys) -> None:
    module = tmp_path / "bad.py"
    module.write_text(BAD_PYTHON)
    code = cli.main(["compile", "-q", str(CONV_BRANCHES), "-o", str(tmp_path / "out"),
                     "--pass-module", str(module), "--no-engine"])
    assert code == EXIT_BAD_INPUT
    assert _one_error_line(capsys.readouterr().err) == (
        f"trtcompile: error: pass module {module} is not valid Python: invalid syntax (line 3)")
    assert not (tmp_path / "out").exists()

    manifest = tmp_path / "manifest.toml"
    manifest.write_text(f'[[model]]\nname = "m"\npath = "{CONV_BRANCHES}"\n'
                        'pass_modules = ["bad.py"]\n')
    code = cli.main(["golden", "-q", str(manifest)])
    assert code == EXIT_BAD_INPUT
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"trtcompile: error: {manifest}:1: model 'm', key 'pipeline': pass "
                           f"module {module} is not valid Python: invalid syntax (line 3)"), line


@pytest.fixture(scope="module")
def compiled_relu(tmp_path_factory) -> Path:
    """The output folder of a compile of a one-Relu model taking float32 [1, 4]."""
    folder = tmp_path_factory.mktemp("relu")
    model = _relu_model(folder / "relu.onnx", [1, 4])
    assert cli.main(["compile", "-q", str(model), "-o", str(folder / "out"), "--no-engine"]) == 0
    return folder / "out"


@pytest.mark.parametrize("kind", sorted(MALFORMED_NPZ))
@pytest.mark.parametrize("reader", ["--calib-data", "golden data", "run --inputs"])
def test_a_malformed_npz_is_bad_input_wherever_it_is_read(tmp_path: Path, capsys, compiled_relu,
                                                          reader: str, kind: str) -> None:
    data = _malformed_npz(tmp_path / "data.npz", kind)
    if reader == "--calib-data":
        argv = ["compile", "-q", str(CONV_BRANCHES), "-o", str(tmp_path / "out"), "--no-engine",
                "--precision", "int8", "--calib-data", str(data)]
        where = f"calibration data {data}: array 'x'"
    elif reader == "golden data":
        manifest = tmp_path / "manifest.toml"
        manifest.write_text(f'[[model]]\nname = "m"\npath = "{compiled_relu.parent / "relu.onnx"}"'
                            '\ndata = "data.npz"\n')
        argv = ["golden", "-q", str(manifest)]
        where = f"model 'm', key 'data': {data}: array 'x'"
    else:
        argv = ["run", str(compiled_relu), "--inputs", str(data)]
        where = f"--inputs {data}: array 'x'"
    code = cli.main(argv)
    assert code == EXIT_BAD_INPUT
    line = _one_error_line(capsys.readouterr().err)
    problem = ("its array header is malformed (not one np.save writes)" if kind == "unparsable-header"
               else "its header declares 4000000000000 bytes of array data but the file holds 16 "
                    "(a truncated or corrupted file?)")
    assert f"{where}: {problem}" in line, line
    assert "fortran_order" not in line  # the header's text is never echoed
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("feeds, problem", [
    ({"x": np.zeros((1, 4), np.float64)},
     "input 'x' is float64 but the model input is float32; save it as float32"),
    ({"x": np.zeros((2, 4), np.float32)},
     "input 'x' has shape [2, 4] but the model input is [1,4] (axis 0: 2 != 1)"),
    ({"x": np.zeros((4,), np.float32)},
     "input 'x' has shape [4] but the model input has rank 2 [1,4]"),
    ({"image": np.zeros((1, 4), np.float32)}, "no data for input(s) x (inputs: x)"),
], ids=["float64", "shape", "rank", "name"])
def test_run_refuses_arrays_the_input_does_not_take(tmp_path: Path, capsys, compiled_relu,
                                                    feeds, problem) -> None:
    import trtcompile

    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, **feeds)
    code = cli.main(["run", str(compiled_relu), "--inputs", str(inputs), "-o",
                     str(tmp_path / "y.npz")])
    assert code == EXIT_BAD_INPUT
    assert capsys.readouterr().err == f"trtcompile: error: --inputs {inputs}: {problem}\n"
    assert not (tmp_path / "y.npz").exists()
    with pytest.raises(InputError) as raised:
        trtcompile.load(compiled_relu).run(feeds)
    assert str(raised.value) == problem


# --------------------------------------------------------------------------------------------
# A precision that cannot be built here: one line, exit 6
# --------------------------------------------------------------------------------------------


def _tensorrt_without_bf16():
    """A TensorRT 8.6 module as far as the BF16 check reads it: no BF16 data type."""
    import enum
    import types

    return types.SimpleNamespace(
        __name__="tensorrt", __version__="8.6.1",
        DataType=enum.Enum("DataType", "FLOAT HALF INT8 INT32 BOOL"),
        NetworkDefinitionCreationFlag=enum.Enum("NetworkDefinitionCreationFlag",
                                                "EXPLICIT_BATCH STRONGLY_TYPED"))


def test_bf16_where_tensorrt_has_none_exits_6_before_any_work(tmp_path: Path, capsys,
                                                              monkeypatch) -> None:
    from trtcompile.errors import EXIT_UNSUPPORTED

    monkeypatch.setattr("trtcompile.backend.loader.load_tensorrt", _tensorrt_without_bf16)
    code = cli.main(["compile", str(CONV_BRANCHES), "-o", str(tmp_path / "out"),
                     "--precision", "bf16"])
    assert code == EXIT_UNSUPPORTED == 6
    assert _one_error_line(capsys.readouterr().err) == (
        "trtcompile: error: --precision bf16 cannot be built with TensorRT 8.6.1 (tensorrt): it "
        "has no BF16 data type (or compile with --no-engine, or --precision fp16)")
    assert not (tmp_path / "out").exists()
    # The graph alone needs no TensorRT: --no-engine writes it.
    assert cli.main(["compile", str(CONV_BRANCHES), "-o", str(tmp_path / "graph"),
                     "--precision", "bf16", "--no-engine"]) == 0


def test_bf16_of_a_model_below_opset_13_exits_6(tmp_path: Path, capsys) -> None:
    import onnx

    from trtcompile.errors import EXIT_UNSUPPORTED

    model = onnx.load(_relu_model(tmp_path / "relu.onnx", [2, 4]))
    model.opset_import[0].version = 12
    onnx.save(model, tmp_path / "relu12.onnx")
    code = cli.main(["compile", str(tmp_path / "relu12.onnx"), "-o", str(tmp_path / "out"),
                     "--precision", "bf16", "--no-engine"])
    assert code == EXIT_UNSUPPORTED
    assert _one_error_line(capsys.readouterr().err) == (
        "trtcompile: error: bfloat16 needs ONNX opset 13 or later (Cast to bfloat16); the model "
        "is at opset 12: convert it to opset 13+ or use --precision fp16")
    assert not (tmp_path / "out").exists()


def test_bf16_with_a_weakly_typed_network_is_refused() -> None:
    from trtcompile.backend.build_config import precision_problem
    from trtcompile.backend.loader import load_tensorrt
    from trtcompile.backend.options import BuildOptions

    trt = load_tensorrt()
    assert precision_problem(trt, "bf16", BuildOptions()) is None
    assert precision_problem(trt, "fp16", BuildOptions(strongly_typed=False)) is None
    assert "drop --no-strongly-typed" in precision_problem(trt, "bf16",
                                                           BuildOptions(strongly_typed=False))
