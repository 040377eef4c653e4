"""Exit codes mean one thing each: numeric flags are validated before any work (a tolerance that
would switch a check off is refused), unwritable outputs are bad input, and a bug exits 70 with
one line saying where its traceback went."""

from __future__ import annotations

import math
from pathlib import Path

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
