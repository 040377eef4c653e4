"""``trtcompile export OUT --triton REPO``: the model repository Triton would load, its
``config.pbtxt`` parsed against Triton's published ``model_config.proto`` (the ``tritonclient``
wheel's generated ``model_config_pb2``), and the repository's output-folder rules. Triton itself
needs a GPU server and does not run in these tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest

import trtcompile
from tests.backend import models
from tests.helpers import run_main
from trtcompile import ir
from trtcompile.flow import triton

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
text_format = pytest.importorskip("google.protobuf.text_format")


def parse_config(folder: Path):
    """``folder/config.pbtxt`` as Triton's ``ModelConfig`` (a text_format.ParseError when Triton
    would not read it)."""
    return text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def batched(tmp_path_factory) -> Path:
    """A whole-model engine of a dynamic-batch model with one profile: batch 1, 4, 8."""
    folder = tmp_path_factory.mktemp("batched")
    ir.save(models.function_call_model(batch="N"), folder / "calls.onnx")
    out = folder / "out"
    assert trtcompile.cli.main([
        "compile", str(folder / "calls.onnx"), "-o", str(out), "-q", "--no-progress",
        "--min-shapes", "input:1x3x8x8", "--opt-shapes", "input:4x3x8x8",
        "--max-shapes", "input:8x3x8x8"]) == 0
    return out


@pytest.fixture(scope="module")
def partitioned(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("partitioned")
    ir.save(models.rejected_op_model("BitShift"), folder / "bitshift.onnx")
    out = folder / "out"
    assert trtcompile.cli.main(["compile", str(folder / "bitshift.onnx"), "-o", str(out), "-q",
                                "--no-progress"]) == 0
    return out


def test_a_whole_model_engine_is_a_tensorrt_plan_with_batching_from_its_profile(
        batched, tmp_path, capsys) -> None:
    repo = tmp_path / "repo"
    code, stdout, _ = run_main(["export", str(batched), "--triton", str(repo), "--backend",
                                "tensorrt"], capsys)
    assert code == 0
    config = parse_config(repo / "calls")
    assert (config.name, config.platform, config.max_batch_size) == ("calls", "tensorrt_plan", 8)
    assert [(t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims))
            for t in config.input] == [("input", "TYPE_FP32", [3, 8, 8])]
    assert [(t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims))
            for t in config.output] == [("output", "TYPE_FP32", [4, 8, 8])]
    assert config.HasField("dynamic_batching")
    assert list(config.dynamic_batching.preferred_batch_size) == [4]
    engine = json.loads((batched / "report.json").read_text())["engine"]
    assert config.parameters["tensorrt_version"].string_value == engine["version"]
    assert config.parameters["tensorrt_backend"].string_value == engine["backend"]
    assert (repo / "calls" / "1" / "model.plan").read_bytes() == \
        (batched / "model.engine").read_bytes()
    assert sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file()) == [
        ".trtcompile-outputs.json", "calls/1/model.plan", "calls/config.pbtxt"]
    said = " ".join(stdout.split())  # the terminal wraps at 120 columns
    assert f"wrote {repo}/calls/: config.pbtxt, 1/model.plan" in said
    if engine["backend"] == "tensorrt_rtx":
        assert "note: model.plan was built by TensorRT-RTX" in said


def test_auto_serves_a_tensorrt_rtx_plan_through_onnx_runtime(batched, tmp_path, capsys) -> None:
    engine = json.loads((batched / "report.json").read_text())["engine"]
    if engine["backend"] != "tensorrt_rtx":
        pytest.skip("standard TensorRT built the plan: auto writes it as tensorrt_plan")
    repo = tmp_path / "repo"
    code, stdout, _ = run_main(["export", str(batched), "--triton", str(repo),
                                "--model-name", "calls_ort"], capsys)
    assert code == 0
    config = parse_config(repo / "calls_ort")
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 8
    accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert [a.name for a in accelerators] == ["tensorrt"]
    assert (repo / "calls_ort" / "1" / "model.onnx").read_bytes() == \
        (batched / "optimized.onnx").read_bytes()
    assert "TensorRT-RTX's, which Triton's TensorRT backend does not run" in " ".join(
        stdout.split())  # the terminal wraps at 120 columns


def test_a_partitioned_model_runs_on_onnx_runtime_with_the_tensorrt_provider(
        partitioned, tmp_path, capsys) -> None:
    repo = tmp_path / "repo"
    code, _, _ = run_main(["export", str(partitioned), "--triton", str(repo)], capsys)
    assert code == 0
    config = parse_config(repo / "bitshift")
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 0
    assert [(t.name, list(t.dims)) for t in config.input] == [("x", [1, 4, 8, 8])]
    assert [a.name for a in
            config.optimization.execution_accelerators.gpu_execution_accelerator] == ["tensorrt"]
    assert (repo / "bitshift" / "1" / "model.onnx").read_bytes() == \
        (partitioned / "partitioned.onnx").read_bytes()
    code, _, stderr = run_main(["export", str(partitioned), "--triton", str(tmp_path / "r2"),
                                "--backend", "tensorrt"], capsys)
    assert code == 2 and "the model is partitioned" in stderr and not (tmp_path / "r2").exists()


def test_segment_plans_of_standard_tensorrt_travel_as_the_epcontext_model(partitioned,
                                                                          tmp_path) -> None:
    out = tmp_path / "out"
    shutil.copytree(partitioned, out)
    report = json.loads((out / "report.json").read_text())
    for segment in report["partition"]["segments"]:
        segment["engine_report"]["backend"] = "tensorrt"
        segment["engine_report"]["version"] = "10.9.0"
    (out / "report.json").write_text(json.dumps(report))
    result = triton.export_triton(out, tmp_path / "repo")
    folder = tmp_path / "repo" / "bitshift"
    assert result.written == ["config.pbtxt", "1/model.onnx", "1/segments/segment_0.engine",
                              "1/segments/segment_1.engine"]
    model = onnx.load(str(folder / "1" / "model.onnx"))
    contexts = [node for node in model.graph.node if node.op_type == "EPContext"]
    for node in contexts:  # each engine path, relative to the model, is in the version folder
        path = onnx.helper.get_attribute_value(
            next(a for a in node.attribute if a.name == "ep_cache_context")).decode()
        assert (folder / "1" / path).read_bytes() == (out / path).read_bytes()
    assert len(contexts) == 2
    config = parse_config(folder)
    assert config.parameters["tensorrt_version"].string_value == "10.9.0"


def test_exports_share_a_repository_and_a_second_replaces_only_its_own(batched, partitioned,
                                                                       tmp_path, capsys) -> None:
    repo = tmp_path / "repo"
    (repo / "users_model" / "1").mkdir(parents=True)
    (repo / "users_model" / "config.pbtxt").write_text('name: "users_model"\n')
    assert run_main(["export", str(partitioned), "--triton", str(repo)], capsys)[0] == 0
    assert run_main(["export", str(batched), "--triton", str(repo)], capsys)[0] == 0
    assert run_main(["export", str(partitioned), "--triton", str(repo)], capsys)[0] == 0
    assert sorted(p.name for p in repo.iterdir()) == [".trtcompile-outputs.json", "bitshift",
                                                      "calls", "users_model"]
    manifest = json.loads((repo / ".trtcompile-outputs.json").read_text())
    assert sorted(manifest["files"]) == ["bitshift", "calls"]
    assert (repo / "users_model" / "config.pbtxt").read_text() == 'name: "users_model"\n'
    # A model folder the user wrote, or an export the user changed since: refused, untouched.
    for name in ("users_model", "calls"):
        if name == "calls":
            (repo / "calls" / "config.pbtxt").write_text("edited\n")
        before = sorted(p.as_posix() for p in repo.rglob("*"))
        code, stdout, stderr = run_main(["export", str(batched), "--triton", str(repo),
                                         "--model-name", name], capsys)
        assert code == 2 and stdout == ""
        assert stderr == (f"trtcompile: error: {repo / name} exists and is not a model an earlier "
                          "export wrote (or it changed since); remove it or choose another "
                          "--model-name\n")
        assert sorted(p.as_posix() for p in repo.rglob("*")) == before
    assert (repo / "calls" / "config.pbtxt").read_text() == "edited\n"


@pytest.mark.parametrize("args, message", [
    (["--triton", "{out}"], "is the compile's output folder"),
    (["--triton", "{tmp}/repo", "--model-name", ".hidden"], "a Triton model name is a folder name"),
    (["--triton", "{tmp}/repo", "--model-version", "0"], "--model-version 0: expected a positive"),
])
def test_bad_exports_are_refused_in_one_line_before_writing(batched, tmp_path, capsys, args,
                                                            message) -> None:
    args = [a.format(out=batched, tmp=tmp_path) for a in args]
    before = sorted(p.name for p in batched.iterdir())
    code, stdout, stderr = run_main(["export", str(batched), *args], capsys)
    assert code == 2 and stdout == "" and stderr.count("\n") == 1 and message in stderr
    assert not (tmp_path / "repo").exists() and sorted(p.name for p in batched.iterdir()) == before
    code, _, stderr = run_main(["export", str(tmp_path), "--triton", str(tmp_path / "repo")],
                               capsys)
    assert code == 2 and "not the output folder of a complete trtcompile compile" in stderr


@pytest.mark.parametrize("profiles, batch", [
    ([{"x": {"min": [1, 3], "opt": [4, 3], "max": [8, 3]}},
      {"x": {"min": [8, 3], "opt": [16, 3], "max": [32, 3]}}], (32, [4, 16])),
    ([{"x": {"min": [2, 3], "opt": [4, 3], "max": [8, 3]}}], (0, [])),  # batch 1 not served
    ([], (0, [])),
])
def test_batching_follows_the_profiles(profiles, batch) -> None:
    x = triton.TritonTensor("x", "TYPE_FP32", (-1, 3))
    y = triton.TritonTensor("y", "TYPE_FP32", (-1, 10))
    assert triton.batching([x], [y], profiles) == batch
    fixed = triton.TritonTensor("y", "TYPE_FP32", (1, 10))  # an output of batch 1 only
    assert triton.batching([x], [fixed], profiles) == (0, [])


def test_converter_save_writes_the_repository_too(tmp_path) -> None:
    from tests.helpers import CONV_BRANCHES

    converter = trtcompile.Converter(input_saved_model_dir=CONV_BRANCHES, log=lambda line: None)
    converter.convert()
    out = converter.save(tmp_path / "out", triton=True)
    config = parse_config(out / "triton" / "conv_branches")
    assert config.name == "conv_branches" and config.input[0].name
    assert json.loads((out / "report.json").read_text())["model"]["source"].endswith(
        "conv_branches.onnx")


def test_converter_save_refuses_its_own_folder_as_the_repository_before_writing(tmp_path) -> None:
    from tests.helpers import CONV_BRANCHES
    from trtcompile.errors import InputError

    converter = trtcompile.Converter(input_saved_model_dir=CONV_BRANCHES, log=lambda line: None)
    converter.convert()
    (tmp_path / "out").mkdir()
    with pytest.raises(InputError, match="is the compile's output folder"):
        converter.save(tmp_path / "out", triton=tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []
