"""Dynamic-batch models end to end: default profile, profile flags, files and strategies, parity at
every profile shape, several profiles in one engine, and bad shape input refused before writing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

from tests.helpers import run_main, run_trtcompile
from trtcompile import examples, ir
from trtcompile.flow import CompileOptions, compile_model
from trtcompile.shapes import ShapeOptions

#: Every built-in pass, so the test shows none of them bakes a batch size.
ALL_PASSES = ("fold-constants,conv-bias-activation-fusion,horizontal-fusion,concat-elimination,"
              "transpose-cancellation,dead-layer-elimination")

#: Replaces Flatten by a Reshape to [1, -1]: right at batch 1 only, as a batch-baking pass would be.
BATCH_BAKING_PASS = '''
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from trtcompile.pass_manager import Pass, PassResult


@dataclass(frozen=True)
class BakeBatch(Pass):
    """Rewrites Flatten as Reshape(x, [1, -1]), baking batch 1 into the target."""

    name: ClassVar[str] = "bake-batch"

    def run(self, graph, ctx):
        result = PassResult()
        for node in graph.nodes:
            if node.op == "Flatten":
                node.op = "Reshape"
                node.attrs.clear()
                node.inputs.append(gs.Constant(node.name + "_target", np.array([1, -1], np.int64)))
                result.count("baked_reshapes")
        return result
'''


def dynamic_googlenet() -> onnx.ModelProto:
    """The built-in example with a symbolic batch dimension ``N`` on every tensor (its Flatten and
    Gemm are batch-agnostic)."""
    graph = examples.googlenet_graph()
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Variable) and tensor.shape:
            tensor.shape = ["N", *tensor.shape[1:]]
    return ir.export_model(graph)


@pytest.fixture(scope="module")
def dynamic_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "googlenet_dynamic.onnx"
    ir.save(dynamic_googlenet(), path)
    return path


def interface(model: onnx.ModelProto) -> dict[str, list]:
    values = list(model.graph.input) + list(model.graph.output)
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``trtcompile compile <argv> --no-progress`` in this process."""
    return run_main(["compile", *argv, "--no-progress"], capsys)


# --------------------------------------------------------------------------------------------
# No flags: the default profile
# --------------------------------------------------------------------------------------------


def test_dynamic_batch_compiles_without_flags(dynamic_model: Path, tmp_path: Path) -> None:
    """A subprocess run of the command: the default profile is used and said so."""
    out = tmp_path / "out"
    proc = run_trtcompile("compile", str(dynamic_model), "-o", str(out), "--pipeline", ALL_PASSES,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert ("optimization profiles: default profile (unknown batch dimension set to 1): input "
            "1x3x64x64; set shapes with --min-shapes/--opt-shapes/--max-shapes") in proc.stderr
    assert "optimization profiles (default):\n  0: input 1x3x64x64" in proc.stdout
    assert "input shapes checked: input:1x3x64x64" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["shapes"]["source"] == "default"
    assert report["shapes"]["dynamic_inputs"] == {"input": ["N", 3, 64, 64]}
    assert report["engine"]["built"] is True
    assert report["engine"]["profiles"] == [
        {"input": {"min": [1, 3, 64, 64], "opt": [1, 3, 64, 64], "max": [1, 3, 64, 64]}}]
    # ONNX Runtime parity also runs at batch 3, beyond the engine's default profile.
    assert report["parity"]["input_shapes"] == [{"input": [1, 3, 64, 64]}, {"input": [3, 3, 64, 64]}]
    optimized = onnx.load(str(out / "optimized.onnx"))
    assert interface(optimized) == {"input": ["N", 3, 64, 64], "logits": ["N", 10]}


def test_undefaultable_dimension_is_an_input_error(tmp_path: Path, capsys) -> None:
    model = dynamic_googlenet()
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].Clear()
    dims[2].dim_param = "H"
    path = tmp_path / "dynamic_height.onnx"
    ir.save(model, path)
    code, _, err = run_cli([str(path), "-o", str(tmp_path / "out")], capsys)
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        "trtcompile: error: input 'input' [N,3,H,64] has unknown dimension 2 that cannot be "
        "defaulted (only an unknown first dimension defaults to batch 1); give a profile with "
        "--min-shapes/--opt-shapes/--max-shapes input:1x3x8x64 or fix the shape with "
        "--input-shape input:1x3x8x64")
    assert not (tmp_path / "out").exists()
    # --input-shape makes the model static: no profile is needed any more.
    code, _, err = run_cli([str(path), "-o", str(tmp_path / "fixed"), "--no-engine",
                            "--input-shape", "input:2x3x64x64"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "fixed" / "report.json").read_text())
    assert report["shapes"]["source"] == "static"
    assert report["parity"]["input_shapes"] == [{"input": [2, 3, 64, 64]}]


# --------------------------------------------------------------------------------------------
# Profiles given by flags, file, strategy
# --------------------------------------------------------------------------------------------


def test_two_profiles_from_flag_groups_one_engine(dynamic_model: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code, stdout, err = run_cli([
        str(dynamic_model), "-o", str(out), "--pipeline", ALL_PASSES,
        "--min-shapes", "input:1x3x64x64", "--opt-shapes", "input:4x3x64x64",
        "--max-shapes", "input:8x3x64x64",
        "--min-shapes", "input:16x3x64x64", "--opt-shapes", "input:16x3x64x64",
        "--max-shapes", "input:16x3x64x64"], capsys)
    assert code == 0, err
    assert "optimization profiles (flags):" in stdout
    assert "  0: input min 1x3x64x64 opt 4x3x64x64 max 8x3x64x64" in stdout
    assert "  1: input 16x3x64x64" in stdout
    report = json.loads((out / "report.json").read_text())
    expected = [{"input": {"min": [1, 3, 64, 64], "opt": [4, 3, 64, 64], "max": [8, 3, 64, 64]}},
                {"input": {"min": [16, 3, 64, 64], "opt": [16, 3, 64, 64], "max": [16, 3, 64, 64]}}]
    assert report["shapes"]["profiles"] == expected
    assert report["engine"]["profiles"] == expected
    # The engine holds one copy of the network per profile.
    assert {layer["profile"] for layer in report["engine"]["layers"]} == {0, 1}
    # Parity ran at min, opt and max of every profile, each comparison recording its shapes.
    checked = [{"input": [n, 3, 64, 64]} for n in (1, 4, 8, 16)]
    assert report["parity"]["input_shapes"] == checked
    assert [c["input_shapes"] for c in report["parity"]["comparisons"]] == checked
    assert report["parity"]["passed"] is True
    assert "optimized vs input at input:16x3x64x64" in stdout
    optimized = onnx.load(str(out / "optimized.onnx"))
    assert interface(optimized) == {"input": ["N", 3, 64, 64], "logits": ["N", 10]}
    assert report["layers"]["optimized"] < report["layers"]["input"]  # the passes did work


def test_profile_file_and_strategy(dynamic_model: Path, tmp_path: Path, capsys) -> None:
    toml = tmp_path / "profiles.toml"
    toml.write_text('[[profiles]]\ninput = { min = "2x3x64x64", opt = "2x3x64x64", max = "6x3x64x64" }\n')
    code, stdout, err = run_cli([str(dynamic_model), "-o", str(tmp_path / "file"),
                                 "--profiles", str(toml)], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "file" / "report.json").read_text())
    assert report["shapes"]["source"] == "file"
    assert report["engine"]["profiles"] == [
        {"input": {"min": [2, 3, 64, 64], "opt": [2, 3, 64, 64], "max": [6, 3, 64, 64]}}]
    assert report["parity"]["input_shapes"] == [{"input": [2, 3, 64, 64]}, {"input": [6, 3, 64, 64]}]

    shapes_file = tmp_path / "shapes.txt"
    shapes_file.write_text("input:1x3x64x64\ninput:4x3x64x64\ninput:1x3x64x64\n")
    code, stdout, err = run_cli([str(dynamic_model), "-o", str(tmp_path / "strategy"),
                                 "--profile-strategy", "range+optimal",
                                 "--representative-shapes", f"@{shapes_file}"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "strategy" / "report.json").read_text())
    assert report["shapes"]["source"] == "strategy:range+optimal"
    assert [{k: (v["min"][0], v["opt"][0], v["max"][0]) for k, v in p.items()}
            for p in report["engine"]["profiles"]] == [
        {"input": (1, 1, 1)}, {"input": (4, 4, 4)}, {"input": (1, 4, 4)}]
    assert {layer["profile"] for layer in report["engine"]["layers"]} == {0, 1, 2}
    assert report["parity"]["input_shapes"] == [{"input": [1, 3, 64, 64]}, {"input": [4, 3, 64, 64]}]


def test_api_profiles(dynamic_model: Path, tmp_path: Path) -> None:
    options = CompileOptions(pipeline="none", engine=False, progress=False, shapes=ShapeOptions(
        profiles=[{"input": ((1, 3, 64, 64), (3, 3, 64, 64), (5, 3, 64, 64))}]))
    result = compile_model(dynamic_model, tmp_path / "out", options).check()
    assert result.report["shapes"]["source"] == "api"
    assert [s["input"][0] for s in result.report["parity"]["input_shapes"]] == [1, 3, 5]
    assert result.parity.input_shapes == result.report["parity"]["input_shapes"]


# --------------------------------------------------------------------------------------------
# Parity at every profile shape catches a baked batch size
# --------------------------------------------------------------------------------------------


def test_parity_at_max_shape_catches_a_baked_batch(dynamic_model: Path, tmp_path: Path, capsys) -> None:
    module = tmp_path / "bake_batch.py"
    module.write_text(BATCH_BAKING_PASS)
    base = [str(dynamic_model), "--pass-module", str(module), "--pipeline", "bake-batch"]
    # At the default profile's batch 1 the baked Reshape happens to be right; parity also runs
    # at batch 3, where it is not.
    code, _, err = run_cli([*base, "-o", str(tmp_path / "default")], capsys)
    assert code == 1, err
    assert "optimized vs input at input:3x3x64x64: output 'logits'" in err
    assert "optimized vs input at input:1x3x64x64: output" not in err
    code, stdout, err = run_cli([*base, "-o", str(tmp_path / "ranged"), "--min-shapes",
                                 "input:1x3x64x64", "--max-shapes", "input:4x3x64x64"], capsys)
    assert code == 1
    assert ("optimized vs input at input:4x3x64x64: output 'logits'" in err)
    assert "optimized vs input at input:1x3x64x64: output" not in err
    report = json.loads((tmp_path / "ranged" / "report.json").read_text())
    assert report["engine"] == {"built": False, "reason": "parity failed"}
    assert report["parity"]["failed"] == [
        {"reference": "input", "candidate": "optimized", "output": "logits"}]


def test_input_model_that_does_not_take_the_profile_sizes(tmp_path: Path, capsys) -> None:
    """A model whose batch is symbolic on the interface but fixed inside (a Reshape to [1, -1])
    cannot run at batch 4: the profile is the user's to change, nothing is written."""
    graph = ir.import_model(dynamic_googlenet())
    flatten = next(node for node in graph.nodes if node.op == "Flatten")
    flatten.op = "Reshape"
    flatten.attrs.clear()
    flatten.inputs.append(gs.Constant("flatten_target", np.array([1, -1], np.int64)))
    path = tmp_path / "fixed_inside.onnx"
    ir.save(ir.export_model(graph), path)
    code, _, err = run_cli([str(path), "-o", str(tmp_path / "out"), "--min-shapes",
                            "input:1x3x64x64", "--max-shapes", "input:4x3x64x64"], capsys)
    assert code == 2
    line = err.strip().splitlines()[-1]
    assert line.startswith("trtcompile: error: the input model does not run on ONNX Runtime at "
                           "input:4x3x64x64 (")
    assert line.endswith("its dynamic dimensions do not take these sizes: give profile shapes it "
                         "runs at")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------
# Bad shape input: one line, exit 2, nothing written
# --------------------------------------------------------------------------------------------

PROFILE_FLAGS = "--min-shapes/--opt-shapes/--max-shapes"


@pytest.mark.parametrize("flags, message", [
    (["--min-shapes", "input:8x3x64x64", "--max-shapes", "input:4x3x64x64"],
     f"{PROFILE_FLAGS}, input 'input': min 8x3x64x64 exceeds max 4x3x64x64 at dimension 0"),
    (["--min-shapes", "input:1x3x64x64", "--opt-shapes", "input:9x3x64x64",
      "--max-shapes", "input:8x3x64x64"],
     f"{PROFILE_FLAGS}, input 'input': opt 9x3x64x64 lies outside [min 1x3x64x64, max 8x3x64x64] "
     "at dimension 0"),
    (["--opt-shapes", "image:1x3x64x64"],
     f"{PROFILE_FLAGS} names 'image', which is not an input of the model (inputs: input)"),
    (["--opt-shapes", "input:1x3x64"],
     f"{PROFILE_FLAGS}, input 'input' [N,3,64,64]: min shape 1x3x64 has rank 3, the input has rank 4"),
    (["--opt-shapes", "input:1x3x32x32"],
     f"{PROFILE_FLAGS}, input 'input' [N,3,64,64]: dimension 2 is fixed at 64 in the model, the "
     "min shape 1x3x32x32 gives 32"),
    (["--opt-shapes", "input:1x3xx64"], "--opt-shapes 'input:1x3xx64': dimensions must be integers"),
    (["--min-shapes", "input:1x3x64x64"], "--min-shapes needs --max-shapes"),
    (["--profile-strategy", "optimal"], "--profile-strategy optimal needs --representative-shapes"),
    (["--representative-shapes", "input:2x3x64x64;input:1x4x64x64"],
     "--representative-shapes, set 1, input 'input' [N,3,64,64]: dimension 1 is fixed at 3"),
    (["--opt-shapes", "input:1x3x64x64", "--representative-shapes", "input:2x3x64x64"],
     f"give optimization profiles one way, not with {PROFILE_FLAGS} and "
     "--profile-strategy/--representative-shapes"),
    (["--profiles", "missing.toml"], "--profiles missing.toml: no such file"),
])
def test_bad_shape_input(dynamic_model: Path, tmp_path: Path, capsys, flags: list[str],
                         message: str) -> None:
    out = tmp_path / "out"
    code, stdout, err = run_cli([str(dynamic_model), "-o", str(out), *flags], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert lines[-1].startswith("trtcompile: error: ") and message in lines[-1], err
    assert not out.exists()
    assert not list(tmp_path.glob(".out.*"))  # no staging folder left behind


# --------------------------------------------------------------------------------------------
# TensorFlow: a Keras model exported with a dynamic batch
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_keras_export_with_dynamic_batch_compiles_without_flags(tmp_path: Path) -> None:
    pytest.importorskip("trtcompile.frontend.tensorflow")
    keras = pytest.importorskip("keras")
    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(4, name="scores")(x)
    model = keras.Model(inputs, outputs)
    model(np.zeros((2, 16, 16, 3), np.float32))
    saved = tmp_path / "saved"
    model.export(str(saved), verbose=False)

    out = tmp_path / "out"
    proc = run_trtcompile("compile", str(saved), "-o", str(out), "--no-progress", "--pipeline",
                          ALL_PASSES)
    assert proc.returncode == 0, proc.stderr
    assert "optimization profiles: default profile (unknown batch dimension set to 1)" in proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["shapes"]["source"] == "default"
    (name, dims), = report["shapes"]["dynamic_inputs"].items()
    assert isinstance(dims[0], str) and dims[1:] == [16, 16, 3]
    assert report["engine"]["built"] is True
    assert report["engine"]["profiles"] == [{name: {"min": [1, 16, 16, 3], "opt": [1, 16, 16, 3],
                                                    "max": [1, 16, 16, 3]}}]
    # TensorFlow was compared with the optimized model at the profile's shape.
    assert {(c["reference"], c["candidate"]) for c in report["parity"]["comparisons"]} >= {
        ("tensorflow", "optimized")}
    optimized = onnx.load(str(out / "optimized.onnx"))
    assert isinstance(interface(optimized)[name][0], str)

    # The same SavedModel with a batch range: TensorFlow parity at batch 1, 3 and 5.
    proc = run_trtcompile("compile", str(saved), "-o", str(tmp_path / "ranged"), "--no-progress",
                          "--no-engine", "--min-shapes", f"{name}:1x16x16x3",
                          "--opt-shapes", f"{name}:3x16x16x3", "--max-shapes", f"{name}:5x16x16x3")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "ranged" / "report.json").read_text())
    assert [s[name][0] for s in report["parity"]["input_shapes"]] == [1, 3, 5]
    assert report["parity"]["passed"] is True
