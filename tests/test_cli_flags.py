"""The flags a TensorRT user types without thinking (trtexec's and Polygraphy's spellings), what
stderr shows (progress only on terminals unless asked, TensorRT's log with --verbose, nothing but
errors under -q), and a ``--help`` that imports nothing heavy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import CONV_BRANCHES, REPO, run_trtcompile
from trtcompile import cli

HEAVY_MODULES = ("numpy", "onnx", "onnx_graphsurgeon", "polygraphy", "tensorflow", "tqdm",
                 "ml_dtypes", "onnxruntime")


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["compile", "--help"],
                                  ["golden", "--help"]])
def test_help_and_version_import_nothing_heavy(argv: list[str]) -> None:
    script = ("import sys\nfrom trtcompile import cli\ntry:\n    cli.main(sys.argv[1:])\n"
              "except SystemExit:\n    pass\n"
              f"print(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True,
                            cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1] == "[]", result.stderr
    assert result.stdout  # the help or the version was printed


def options_of(argv: list[str]):
    args = cli.build_parser().parse_args(["compile", "m.onnx", *argv])
    return cli.compile_options(args)


ALIASES = [
    (["--shapes", "x:1x3x8x8"], ["--input-shape", "x:1x3x8x8"]),
    (["--shapes", "x:[1,3,8,8],y:[2,4]"], ["--input-shape", "x:1x3x8x8", "--input-shape", "y:2x4"]),
    (["--shapes", "x:[1,3,8,8] y:[2,4]"], ["--input-shape", "x:1x3x8x8,y:2x4"]),
    (["--minShapes", "x:1x3", "--optShapes", "x:[4,3]", "--maxShapes", "x:8x3"],
     ["--min-shapes", "x:1x3", "--opt-shapes", "x:4x3", "--max-shapes", "x:8x3"]),
    (["--fp16"], ["--precision", "fp16"]),
    (["--int8", "--calib-data", "d.npz"], ["--precision", "int8", "--calib-data", "d.npz"]),
    (["--workspace", "64"], ["--workspace-size", "64M"]),
    (["--memPoolSize", "workspace:64"], ["--workspace-size", str(64 * 2**20)]),
    (["--memPoolSize", "workspace:1G"], ["--workspace-size", "1024M"]),
    (["--saveEngine", "m.engine"], ["--save-engine", "m.engine"]),
]


@pytest.mark.parametrize("alias, flag", ALIASES, ids=[" ".join(a) for a, _ in ALIASES])
def test_trtexec_and_polygraphy_spellings_are_aliases(alias: list[str], flag: list[str]) -> None:
    assert options_of(alias) == options_of(flag)


def test_the_workspace_flags_set_the_builder_limit() -> None:
    assert options_of(["--memPoolSize", "workspace:512K"]).workspace_bytes == 512 * 1024
    assert options_of([]).workspace_bytes is None


def test_onnx_flag_names_the_model() -> None:
    args = cli.build_parser().parse_args(["compile", "--onnx", "m.onnx"])
    assert cli.model_argument(args) == "m.onnx"


@pytest.mark.parametrize("flags, message", [
    (["--memPoolSize", "dlaSRAM:1M"], "only the workspace pool can be limited"),
    (["--workspace-size", "0"], "expected a positive size"),
    (["--workspace", "lots"], "expected a size such as"),
    (["--shapes", "x:[1,a]"], "dimensions must be integers"),
])
def test_bad_builder_and_shape_values_are_one_line(tmp_path: Path, flags, message) -> None:
    result = run_trtcompile("compile", str(CONV_BRANCHES), *flags, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_the_trtexec_style_command_writes_the_engine_where_asked(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(CONV_BRANCHES.read_bytes())
    result = run_trtcompile("compile", "--onnx", "m.onnx", "--saveEngine", "m.engine", "--fp16",
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    engine = tmp_path / "m.engine"
    assert engine.is_file() and engine.read_bytes() == (tmp_path / "out" / "model.engine").read_bytes()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["parity"]["tolerances"]["precision"] == "fp16"
    assert "precision-fp16" in [record["name"] for record in report["passes"]]


def test_quiet_prints_nothing_but_errors(tmp_path: Path) -> None:
    result = run_trtcompile("compile", str(CONV_BRANCHES), "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")
    assert (tmp_path / "out" / "model.engine").is_file()


def test_progress_shows_on_stderr_only_when_asked_off_a_terminal(tmp_path: Path) -> None:
    plain = run_trtcompile("compile", str(CONV_BRANCHES), "--no-engine", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert "\r" not in plain.stderr and "passes:" not in plain.stderr
    asked = run_trtcompile("compile", str(CONV_BRANCHES), "--progress", cwd=tmp_path)
    assert asked.returncode == 0, asked.stderr
    for shown in ("passes:", "checking parity [", "Building engine:"):
        assert shown in asked.stderr, asked.stderr
    assert "passes:" not in asked.stdout and "\r" not in asked.stdout  # never on stdout


def test_verbose_shows_the_tensorrt_log(tmp_path: Path) -> None:
    quiet = run_trtcompile("compile", str(CONV_BRANCHES), cwd=tmp_path)
    verbose = run_trtcompile("compile", str(CONV_BRANCHES), "--verbose", cwd=tmp_path)
    assert quiet.returncode == verbose.returncode == 0, verbose.stderr
    assert "TensorRT verbose:" not in quiet.stderr
    assert "TensorRT verbose:" in verbose.stderr and "TensorRT info:" in verbose.stderr
