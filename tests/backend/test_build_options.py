"""The engine-build controls (BuildOptions): each changes the built plan the way it should, what
the report and ``trtcompile inspect`` read back, and the one-line refusals. CPU-only builds: where
the TensorRT in use cannot do something without a GPU (TensorRT-RTX refits and strips weights only
with one), the test asserts the one-line reason instead."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.helpers import run_trtcompile
from trtcompile import backend
from trtcompile.backend import build_config, cache
from trtcompile.backend.layer_precision import apply_constraints
from trtcompile.backend.options import (
    BuildOptions,
    parse_compute_capabilities,
    parse_layer_output_types,
    parse_layer_precisions,
)
from trtcompile.backend.plan import read_header
from trtcompile.errors import BackendError, InputError


def conv_model(path: Path | None = None, channels: int = 16, size: int = 32) -> onnx.ModelProto:
    """Three Conv+Relu, named conv0..2 / relu0..2, weights w0..2 and b0..2."""
    nodes, weights, previous, inputs = [], [], "x", 3
    for i in range(3):
        weights += [numpy_helper.from_array(np.random.RandomState(i).randn(
            channels, inputs, 3, 3).astype(np.float32), f"w{i}"),
            numpy_helper.from_array(np.random.RandomState(10 + i).randn(channels).astype(
                np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", [previous, f"w{i}", f"b{i}"], [f"c{i}"], name=f"conv{i}",
                                   pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        previous, inputs = f"r{i}", channels
    graph = helper.make_graph(
        nodes, "convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, [1, channels, size, size])],
        weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if path is not None:
        onnx.save(model, str(path))
    return model


def test_trtexec_syntax_parses() -> None:
    assert parse_layer_precisions(["conv1:fp16,*:fp32", "a:b:bf16"]) == (
        ("conv1", "fp16"), ("*", "fp32"), ("a:b", "bf16"))
    assert parse_layer_output_types("split:fp16+fp32") == (("split", ("fp16", "fp32")),)
    assert parse_compute_capabilities(["8.6,89", "sm_120", "8.6"]) == ("8.6", "8.9", "12.0")
    with pytest.raises(InputError, match="at most one"):
        parse_layer_precisions("a*b*:fp16")
    with pytest.raises(InputError, match="int8"):
        parse_layer_precisions("conv0:int8")
    with pytest.raises(InputError, match="MAJOR.MINOR"):
        parse_compute_capabilities(["ampere"])


def test_values_are_checked_alone() -> None:
    with pytest.raises(InputError, match="--builder-optimization-level"):
        BuildOptions(optimization_level=7).validate()
    with pytest.raises(InputError, match="cannot be combined"):
        BuildOptions(strip_weights=True, weight_streaming_budget=0).validate()
    with pytest.raises(InputError, match="no such file"):
        BuildOptions(plugin_modules=("missing.py",)).validate()
    options = BuildOptions.from_mapping({"optimization_level": 5, "tiling_level": 1,
                                         "compute_capabilities": "8.9,12.0",
                                         "layer_precisions": {"conv0": "fp16"}})
    assert (options.tiling_level, options.compute_capabilities, options.layer_precisions) == (
        "fast", ("8.9", "12.0"), (("conv0", "fp16"),))
    with pytest.raises(InputError, match="unknown build option"):
        BuildOptions.from_mapping({"optimisation_level": 5})


def test_an_option_the_tensorrt_lacks_is_refused_naming_it() -> None:
    trt = backend.load_tensorrt()
    with pytest.raises(InputError) as error:
        build_config.check_supported(trt, BuildOptions(compute_capabilities=("9.0",)))
    message = str(error.value)
    assert "--compute-capability 9.0" in message and trt.__version__ in message
    assert "\n" not in message


def test_cli_refuses_an_unsupported_option_with_exit_2_and_writes_nothing(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    conv_model(model)
    result = run_trtcompile("compile", str(model), "-o", str(tmp_path / "out"),
                            "--compute-capability", "9.0", "--no-progress")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "--compute-capability 9.0" in result.stderr
    assert not (tmp_path / "out").exists()


def test_compute_capabilities_are_recorded_in_the_plan(tmp_path: Path) -> None:
    trt = backend.load_tensorrt()
    if not hasattr(trt.IBuilderConfig, "set_compute_capability"):
        pytest.skip("per-target builds are TensorRT-RTX's")
    targets = ("8.6", "8.9", "12.0")
    build = backend.build_engine(conv_model(), progress=False,
                                 build=BuildOptions(compute_capabilities=targets))
    assert read_header(build.plan, trt).compute_capabilities == list(targets)
    assert build.plan_properties["compute_capabilities"] == list(targets)
    single = backend.build_engine(conv_model(), progress=False,
                                  build=BuildOptions(compute_capabilities=("8.9",)))
    assert read_header(single.plan, trt).compute_capabilities == ["8.9"]
    assert read_header(single.plan, trt).version == trt.__version__


def test_levels_are_applied_and_reported() -> None:
    options = BuildOptions(optimization_level=0, tiling_level="full")
    build = backend.build_engine(conv_model(), progress=False, build=options)
    assert build.build_options["optimization_level"] == 0
    assert build.build_options["tiling_level"] == "full"
    record = build.to_dict("model.engine")
    assert record["build_options"] == options.to_dict()
    assert record["plan_properties"]["tensorrt_version"] == build.version


def test_layer_precisions_become_casts_and_the_engine_obeys_them() -> None:
    model = conv_model()
    constrained, applied = apply_constraints(model, parse_layer_precisions("conv1:fp16"),
                                             parse_layer_output_types("relu2:fp16"))
    casts = [node for node in constrained.graph.node if node.op_type == "Cast"]
    # conv1: x, w1 and b1 to fp16, its output back; relu2: stored in fp16, loaded back
    assert len(casts) == 6 and applied["conv1"] == {"precision": "fp16", "casts": 4}
    assert applied["relu2"]["output_types"] == ["fp16"]
    assert len(model.graph.node) == 6  # the input model is left alone
    onnx.checker.check_model(constrained)
    plain = backend.build_engine(model, progress=False)
    build = backend.build_engine(model, progress=False, build=BuildOptions(
        layer_precisions=parse_layer_precisions("conv1:fp16")))
    precision = {node: layer.precision for layer in build.layers for node in layer.onnx_nodes}
    assert precision["conv1"] == "FP16" and precision["conv0"] == "FP32"
    assert {layer.precision for layer in plain.layers if "conv1" in layer.onnx_nodes} == {"FP32"}
    assert build.plan_properties["precision_constraints"]["conv1"]["precision"] == "fp16"
    with pytest.raises(InputError, match="--layerPrecisions conv9: no node"):
        apply_constraints(model, parse_layer_precisions("conv9:fp16"))


def test_the_cache_is_created_reused_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "builder.cache"
    options = BuildOptions(timing_cache=str(path))
    first = backend.build_engine(conv_model(), progress=False, build=options)
    trt = backend.load_tensorrt()
    assert first.cache["status"] == "created" and first.cache["bytes_before"] == 0
    content = path.read_bytes()
    assert content.startswith(cache.MAGIC + f" {trt.__name__} {trt.__version__}\n".encode())
    assert first.cache["bytes_after"] == len(content) - content.index(b"\n") - 1
    second = backend.build_engine(conv_model(), progress=False, build=options)
    assert second.cache["bytes_before"] == first.cache["bytes_after"]
    if trt.__name__ == "tensorrt_rtx":  # no timing cache: the builder's words say what it did
        assert second.cache["status"] in ("reused", "rejected") and second.cache["notes"]
    else:
        assert second.cache["status"] == "reused" and second.cache["verdict"] == "hit"
        assert second.cache["misses"] == 0 and second.cache["hits"] > 0


def test_a_cache_of_another_tensorrt_version_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "old.cache"
    path.write_bytes(cache.MAGIC + b" tensorrt_rtx 1.0.0.1\n" + b"\0" * 16)
    with pytest.raises(InputError) as error:
        backend.build_engine(conv_model(), progress=False,
                             build=BuildOptions(timing_cache=str(path)))
    assert "written by tensorrt_rtx 1.0.0.1" in str(error.value)
    assert "\n" not in str(error.value)


def test_cache_verdicts() -> None:
    outcome = cache.CacheOutcome(path="c", status="reused", bytes_before=10, entries_before=5,
                                 entries_after=5)
    assert (outcome.verdict, outcome.to_dict()["hits"], outcome.misses) == ("hit", 5, 0)
    outcome.entries_after = 7
    assert (outcome.verdict, outcome.misses) == ("partial", 2)
    assert cache.CacheOutcome("c", "reused", 0, 0, 0, 3).verdict == "miss"


def test_stripped_plans_are_smaller_and_refit_restores_the_weights(tmp_path: Path) -> None:
    model_path = tmp_path / "m.onnx"
    model = conv_model(model_path, channels=64)
    try:
        refittable = backend.build_engine(model, progress=False,
                                          build=BuildOptions(refittable=True))
        stripped = backend.build_engine(model, progress=False,
                                        build=BuildOptions(refittable=True, strip_weights=True))
    except BackendError as error:  # TensorRT-RTX without a GPU: said in one line, with why
        assert "REFIT" in str(error) and "none is available here" in str(error)
        return
    assert len(stripped.plan) < len(refittable.plan)
    assert stripped.plan_properties["stripped"] and stripped.plan_properties["refittable"]
    from trtcompile.backend.refit import plan_weights, refit_plan

    refilled = refit_plan(stripped.plan, model_path)
    weights = plan_weights(refilled, ["w0", "b2"])
    np.testing.assert_array_equal(weights["w0"], numpy_helper.to_array(model.graph.initializer[0]))


def test_a_python_plugin_this_tensorrt_cannot_host_fails_in_one_line(tmp_path: Path) -> None:
    """A custom op with a Python plugin: where TensorRT ends the process while creating the
    layer, the build says so in one line (the parent process survives); where it can, the plugin
    layer is in the engine and named in the plan's properties."""
    plugins_file = Path(__file__).parent / "data" / "scale_plugin.py"
    model = conv_model()
    node = helper.make_node("MyScale", ["r2"], ["scaled"], name="myscale", domain="custom",
                            scale=2.0)
    model.graph.node.append(node)
    model.graph.output[0].name = "scaled"
    model.opset_import.append(helper.make_opsetid("custom", 1))
    options = BuildOptions(plugin_modules=(str(plugins_file),))
    try:
        build = backend.build_engine(model, progress=False, build=options)
    except BackendError as error:
        assert "ended the process" in str(error) and "'myscale' (MyScale)" in str(error)
        with pytest.raises(BackendError, match="ended the process"):
            backend.query_support(model, plugin_modules=options.plugin_modules)
        return
    assert build.plan_properties["plugin_nodes"] == {"myscale": "MyScale"}
    assert any("myscale" in layer.onnx_nodes for layer in build.layers)
    assert build.plan_properties["plugin_layers"]


def test_the_plugin_module_registers_its_creators() -> None:
    from trtcompile.backend.plugins import load_plugins

    plugins_file = Path(__file__).parent / "data" / "scale_plugin.py"
    loaded = load_plugins(backend.load_tensorrt(), (), (str(plugins_file),))
    assert loaded.creators == {"MyScale": str(plugins_file)}
    assert loaded.python_creators == {"MyScale"}


def test_done_command_builds_and_inspect_reads_the_result(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    conv_model(model)
    out = tmp_path / "out"
    args = ("compile", str(model), "-o", str(out), "--timingCacheFile", str(tmp_path / "c.cache"),
            "--builderOptimizationLevel", "5", "--computeCapabilities", "8.9",
            "--plugin-module", str(Path(__file__).parent / "data" / "scale_plugin.py"),
            "--no-progress", "-q")
    first = run_trtcompile(*args)
    assert first.returncode == 0, first.stderr
    second = run_trtcompile(*args)
    assert second.returncode == 0, second.stderr
    report = json.loads((out / "report.json").read_text())
    engine = report["engine"]
    assert engine["build_options"]["optimization_level"] == 5
    assert engine["cache"]["bytes_before"] > 0  # the second run found the first run's cache
    assert engine["plan_properties"]["compute_capabilities"] in (["8.9"], None)
    shown = run_trtcompile("inspect", str(out / "model.engine"))
    assert shown.returncode == 0, shown.stderr
    trt = backend.load_tensorrt()
    assert f"built with version {trt.__version__}" in shown.stdout
    assert "optimization_level=5" in shown.stdout and "conv1" in shown.stdout
    described = json.loads(run_trtcompile("inspect", str(out / "model.engine"), "--json").stdout)
    assert described["recorded"]["build_options"]["compute_capabilities"] == ["8.9"]
    assert described["deserialized"] or described["why_not"]


def test_inspect_says_what_a_file_is_not(tmp_path: Path) -> None:
    path = tmp_path / "x.engine"
    path.write_bytes(b"not a plan at all, just bytes" * 4)
    result = run_trtcompile("inspect", str(path))
    assert result.returncode == 0
    assert "not a TensorRT plan" in result.stdout
    assert "build options: not recorded" in result.stdout


def test_refit_without_a_gpu_says_why(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    conv_model(model)
    plan = tmp_path / "m.engine"
    plan.write_bytes(backend.build_engine(conv_model(), progress=False).plan)
    result = run_trtcompile("refit", str(plan), str(model), "-o", str(tmp_path / "r.engine"))
    if backend.current_compute_capability() is None:
        assert result.returncode == 3 and "GPU" in result.stderr
        assert not (tmp_path / "r.engine").exists()
    else:  # a plan built without --refittable
        assert result.returncode == 2 and "not refittable" in result.stderr


def test_running_refuses_a_plan_built_for_another_gpu() -> None:
    backend.check_targets({"compute_capabilities": ["8.9"]}, "8.9", "e")
    backend.check_targets({"compute_capabilities": ["8.9"]}, None, "e")
    backend.check_targets({"compute_capabilities": ["8.9"], "hardware_compatibility": "ampere+"},
                          "8.6", "e")
    with pytest.raises(InputError, match="built for compute capability 8.9; this GPU is 8.6"):
        backend.check_targets({"compute_capabilities": ["8.9"]}, "8.6", "out/model.engine")


def test_run_checks_the_targets_against_the_gpu(tmp_path: Path, monkeypatch) -> None:
    from trtcompile import runtime
    from trtcompile.flow import CompileOptions, compile_model

    model = tmp_path / "m.onnx"
    conv_model(model)
    trt = backend.load_tensorrt()
    if not hasattr(trt.IBuilderConfig, "set_compute_capability"):
        pytest.skip("per-target builds are TensorRT-RTX's")
    compile_model(model, tmp_path / "out", CompileOptions(
        progress=False, parity=False, build=BuildOptions(compute_capabilities=("8.9",))))
    monkeypatch.setattr(backend, "current_compute_capability", lambda: "7.5")
    with pytest.raises(InputError, match="this GPU is 7.5"):
        runtime.load(tmp_path / "out", device="tensorrt")


def test_a_manifest_entry_carries_build_options(tmp_path: Path) -> None:
    from trtcompile.golden import load_manifest
    from trtcompile.golden.runner import compile_options

    conv_model(tmp_path / "m.onnx")
    manifest = tmp_path / "golden.toml"
    manifest.write_text('[[model]]\nname = "m"\npath = "m.onnx"\nengine = true\n'
                        'build = { optimization_level = 5, compute_capabilities = ["8.9"], '
                        'timing_cache = "c.cache", layer_precisions = "conv1:fp16" }\n')
    (entry,) = load_manifest(manifest).entries
    assert entry.build == BuildOptions(optimization_level=5, compute_capabilities=("8.9",),
                                       timing_cache=str(tmp_path / "c.cache"),
                                       layer_precisions=(("conv1", "fp16"),))
    assert compile_options(entry).build == entry.build
    manifest.write_text('[[model]]\nname = "m"\npath = "m.onnx"\nengine = true\n'
                        'build = { optimisation_level = 5 }\n')
    with pytest.raises(InputError, match="key 'build': build: unknown build option"):
        load_manifest(manifest)


def test_the_converter_takes_build_options_flat(tmp_path: Path) -> None:
    from trtcompile import Converter

    conv_model(tmp_path / "m.onnx")
    converter = Converter(str(tmp_path / "m.onnx"), strip_weights=True, optimization_level=2)
    assert converter.options.build == BuildOptions(strip_weights=True, optimization_level=2)
