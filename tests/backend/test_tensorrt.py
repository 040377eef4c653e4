"""Building engines with TensorRT: plans, layer reports, profiles, errors, progress, module choice."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import types

import numpy as np
import onnx
import pytest

from tests.backend import models
from trtcompile.backend import (
    NO_GPU_MESSAGE,
    BackendInfo,
    backend_info,
    build_engine,
    format_engine_layers,
    load_tensorrt,
    run_engine,
    save_plan,
)
from trtcompile.backend import build as backend_build
from trtcompile.backend import tensorrt as backend
from trtcompile.backend.progress import make_progress_monitor, progress_enabled
from trtcompile.errors import BackendError, InputError

DYNAMIC_PROFILES = [
    {"input": ([1, 3, 8, 8], [2, 3, 8, 8], [4, 3, 8, 8])},
    {"input": ([8, 3, 8, 8], [8, 3, 8, 8], [8, 3, 8, 8])},
]


@pytest.fixture(scope="module")
def conv_build():
    return build_engine(models.conv_relu_model(), progress=False)


def test_conv_model_builds_a_plan_with_its_layer_report(conv_build, tmp_path):
    build = conv_build
    assert len(build.plan) > 10_000
    trt = load_tensorrt()
    assert (build.backend, build.version) == (trt.__name__, trt.__version__)
    assert [layer.type for layer in build.layers] == ["kgen", "correlation", "kgen"]
    assert build.layers[1].onnx_nodes == [models.CONV_NODE, models.RELU_NODE]
    assert build.compute_layers == 3
    assert build.profiles == []
    assert build.build_seconds > 0
    assert any(line.startswith("[V] Layers:") for line in build.log_lines)
    assert models.CONV_NODE in format_engine_layers(build)
    path = save_plan(build, tmp_path / "out" / "model.plan")
    assert path.read_bytes() == build.plan
    assert [p.name for p in path.parent.iterdir()] == ["model.plan"]  # no temporary left behind
    record = build.to_dict(str(path))
    assert record["compute_layers"] == 3 and record["compute_layer_types"] == {
        "kgen": 2, "correlation": 1}


def test_function_calls_appear_as_their_call_nodes():
    build = build_engine(models.function_call_model(), progress=False, workspace_bytes=1 << 26)
    assert len(build.plan) > 0
    convs = [layer for layer in build.layers if layer.type == "correlation"]
    assert [layer.onnx_nodes for layer in convs] == [[models.CALL_NODES[0]], [models.CALL_NODES[1]]]
    assert len(build.layers) == 4 and build.compute_layers == 4  # move, two convs, transpose


def test_dynamic_inputs_need_profiles():
    with pytest.raises(BackendError, match=r"dynamic inputs \('input' \[-1, 3, 8, 8\]\)"):
        build_engine(models.function_call_model(batch="N"), progress=False)


def test_each_profile_is_added_and_compute_layers_count_the_first():
    build = build_engine(models.function_call_model(batch="N"), progress=False,
                         profiles=DYNAMIC_PROFILES)
    assert build.profiles == [
        {"input": {"min": [1, 3, 8, 8], "opt": [2, 3, 8, 8], "max": [4, 3, 8, 8]}},
        {"input": {"min": [8, 3, 8, 8], "opt": [8, 3, 8, 8], "max": [8, 3, 8, 8]}},
    ]
    assert {layer.profile for layer in build.layers} == {0, 1}
    first = [layer for layer in build.layers if layer.profile == 0]
    assert build.compute_layers == sum(layer.compute for layer in first) == 4
    assert "2 optimization profiles, counted once" in format_engine_layers(build)


@pytest.mark.parametrize("profiles, message", [
    ([{"image": ([1, 3, 8, 8],) * 3}], "profile 0 names 'image', not an input"),
    ([{"input": ([1, 3, 8, 8],) * 3}, {}], r"profile 1 gives no shapes for dynamic input\(s\) 'input'"),
    ([{"input": ([1, 3, 8, 8], [1, 3, 8, 8], [1, 3, 9, 8])}], "dimension 2 is fixed at 8"),
    ([{"input": ([2, 3, 8, 8], [1, 3, 8, 8], [4, 3, 8, 8])}], "0 <= min <= opt <= max"),
    ([{"input": ([1, 3, 8], [1, 3, 8], [1, 3, 8])}], "has rank 3, the input has rank 4"),
    ([{"input": "1x3x8x8"}], "expected three shapes"),
])
def test_profiles_that_do_not_fit_the_inputs(profiles, message):
    with pytest.raises(InputError, match=message):
        build_engine(models.function_call_model(batch="N"), progress=False, profiles=profiles)


def test_unsupported_op_names_the_node():
    with pytest.raises(BackendError) as caught:
        build_engine(models.unsupported_op_model(), progress=False)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("TensorRT's ONNX parser rejected the model: node "
                              "'head/frobnicate, v2' (Frobnicate): ")
    assert "Plugin not found" in message and "Assertion failed" not in message


def test_a_bare_false_from_the_parser_becomes_words():
    """The parser's checker for Unique answers only ``false``: the line names the op and checker."""
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Unique", ["x"], ["y"], name="dedupe", sorted=1)], "unique",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["u"])])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)],
                                   ir_version=10)
    with pytest.raises(BackendError) as caught:
        build_engine(model, progress=False)
    assert str(caught.value) == ("TensorRT's ONNX parser rejected the model: node 'dedupe' "
                                 "(Unique): the parser does not support Unique here (checkUnique)")


def test_invalid_model_names_the_node_and_reason():
    with pytest.raises(BackendError, match=r"node 'stem/conv' \(Conv\): Kernel weight dimension "
                                           r"failed to broadcast to input\.$"):
        build_engine(models.mismatched_conv_model(), progress=False)


def test_unparseable_bytes():
    broken = onnx.ModelProto()
    broken.ir_version = 10
    broken.graph.node.add(op_type="Relu", input=["missing"], output=["y"], name="lonely")
    with pytest.raises(BackendError, match="^TensorRT's ONNX parser rejected the model: "):
        build_engine(broken, progress=False)


@pytest.mark.parametrize("description, expected", [
    ('creator && "Plugin not found, check the name"', "Plugin not found, check the name"),
    ("Assertion failed: (a == (b)): Shapes do not match.", "Shapes do not match."),
    ("Assertion failed: model->Parse(x): Failed to parse.", "model->Parse(x): Failed to parse."),
    ("Unsupported\n  datatype", "Unsupported datatype"),
])
def test_parser_descriptions_keep_the_message(description, expected):
    assert backend.clean_parser_description(description) == expected


def test_external_data_resolves_against_model_dir(tmp_path):
    model = models.conv_relu_model()
    onnx.save_model(model, tmp_path / "model.onnx", save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    external = onnx.load(tmp_path / "model.onnx", load_external_data=False)
    assert backend.uses_external_data(external)
    with pytest.raises(InputError, match="external data"):
        build_engine(external, progress=False)
    build = build_engine(external, model_dir=tmp_path, progress=False)
    assert build.compute_layers == 3


def test_invalid_workspace():
    with pytest.raises(InputError, match="workspace size must be positive"):
        build_engine(models.conv_relu_model(), progress=False, workspace_bytes=0)


@pytest.mark.skipif(os.path.exists("/dev/nvidiactl"), reason="a GPU driver is present")
def test_running_an_engine_needs_a_gpu(conv_build):
    with pytest.raises(BackendError) as caught:
        run_engine(conv_build.plan, {"x": np.zeros((1, 3, 8, 8), np.float32)})
    assert str(caught.value).startswith(NO_GPU_MESSAGE)
    assert "\n" not in str(caught.value)


# --------------------------------------------------------------------------------------------
# Logging and progress
# --------------------------------------------------------------------------------------------


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class BrokenTerminal(FakeTerminal):
    def write(self, text: str) -> int:
        raise RuntimeError("terminal went away")


def test_progress_only_on_a_terminal():
    assert progress_enabled(True, FakeTerminal())
    assert not progress_enabled(False, FakeTerminal())
    assert not progress_enabled(True, io.StringIO())


def test_progress_monitor_draws_nested_bars():
    terminal = FakeTerminal()
    monitor = make_progress_monitor(load_tensorrt(), terminal)
    monitor.phase_start("Building engine", None, 2)
    monitor.phase_start("Timing tactics", "Building engine", 3)
    assert monitor.step_complete("Timing tactics", 0) is True
    monitor.phase_finish("Timing tactics")
    monitor.step_complete("Building engine", 1)
    monitor.phase_finish("Building engine")
    output = terminal.getvalue()
    assert "Building engine: 100%" in output and "  Timing tactics:" in output
    assert monitor.error is None


def test_a_build_draws_its_phases(monkeypatch):
    terminal = FakeTerminal()
    monkeypatch.setattr(backend_build, "progress_enabled", lambda requested: requested)
    monkeypatch.setattr(backend_build, "make_progress_monitor",
                        lambda module, **kw: make_progress_monitor(module, terminal, **kw))
    build_engine(models.conv_relu_model(), progress=True)
    assert "Building engine: 100%" in terminal.getvalue()
    assert "  Building engine from subgraph:" in terminal.getvalue()  # a nested phase


def test_exceptions_in_the_progress_display_do_not_stop_the_build(monkeypatch):
    trt = load_tensorrt()
    monkeypatch.setattr(backend_build, "progress_enabled", lambda requested: requested)
    monkeypatch.setattr(backend_build, "make_progress_monitor",
                        lambda module, **kw: make_progress_monitor(module, BrokenTerminal(), **kw))
    build = build_engine(models.conv_relu_model(), progress=True)
    assert build.compute_layers == 3
    assert any("progress display stopped: RuntimeError('terminal went away')" in line
               for line in build.log_lines)
    assert trt is load_tensorrt()


def test_a_pending_signal_cancels_the_build_and_raises_interrupted(monkeypatch):
    """TensorRT swallows exceptions raised in its callbacks; a signal recorded during the build is
    seen by the progress monitor (which cancels) and raised as Interrupted once the build ends."""
    from trtcompile import interrupts
    from trtcompile.errors import Interrupted

    monitors = []

    def recording_monitor(module, **kw):
        monitors.append(make_progress_monitor(module, **kw))
        return monitors[-1]

    monkeypatch.setattr(backend_build, "make_progress_monitor", recording_monitor)
    monkeypatch.setattr(interrupts, "_received", ["SIGTERM"])
    with pytest.raises(Interrupted, match="SIGTERM"):
        build_engine(models.conv_relu_model(), progress=False)
    assert monitors and monitors[0].cancelled


def test_warnings_are_echoed_only_when_asked(capsys):
    quiet = backend.LogCapture(echo=False)
    quiet.record("W", "weights are denormal")
    loud = backend.LogCapture(echo=True)
    loud.record("W", "weights are denormal")
    loud.record("V", "chatter")
    assert capsys.readouterr().err == "TensorRT warning: weights are denormal\n"
    assert loud.lines() == ["[W] weights are denormal", "[V] chatter"]


def test_a_build_next_to_another_libraries_builder_still_reports_layers():
    # TensorRT warns that the logger of a second live builder "is ignored"; the Python bindings
    # still deliver its messages, which the backend relies on (checked here in a fresh process).
    script = (
        "from trtcompile.backend import load_tensorrt, build_engine\n"
        "from tests.backend.models import conv_relu_model\n"
        "trt = load_tensorrt()\n"
        "other_builder = trt.Builder(trt.Logger(trt.Logger.ERROR))  # alive during the build\n"
        "build = build_engine(conv_relu_model(), progress=False)\n"
        "print(build.compute_layers, any('differs from one already registered' in line\n"
        "                                for line in build.log_lines))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, check=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert result.stdout.split() == ["3", "True"]


def test_fp16_conv_lowered_to_gemm_keeps_its_layer_report():
    """FP16 1x1 convolutions become GEMMs noted ``__gemm_from_conv1x1``; the report reads them."""
    build = build_engine(models.fp16_conv1x1_model(), progress=False)
    assert build.layer_report_problems == []
    gemms = [layer for layer in build.layers if layer.type == "gemm"]
    assert len(gemms) == 1
    assert gemms[0].notes == ["__gemm_from_conv1x1"]
    assert gemms[0].onnx_nodes == ["conv1x1", "relu"]
    assert all(layer.precision == "FP16" for layer in build.layers)
    assert build.to_dict(None)["compute_layer_precisions"] == {
        "INT8": 0, "FP16": build.compute_layers, "FP32": 0}


def test_missing_layer_report_is_explained():
    capture = backend.LogCapture()
    capture.record("W", "The logger passed into createInferBuilder differs from one already "
                        "registered for an existing builder, runtime, or refitter.")
    report, note = backend_build._engine_layers(capture, set())
    assert report.layers == [] and note.startswith("no engine layer report: another TensorRT logger")
    capture = backend.LogCapture()
    capture.record("I", "Engine built")
    report, note = backend_build._engine_layers(capture, set())
    assert report.layers == [] and note == "no engine layer report: the builder did not log its layers"
    capture.record("V", "Layers:\nName: broken")
    report, note = backend_build._engine_layers(capture, set())
    assert report.layers == [] and report.problems == [
        "layer line 1 (skipped): not an engine layer line: 'Name: broken'"]
    assert note.startswith("the engine layer report was not fully read: layer line 1 (skipped)")


# --------------------------------------------------------------------------------------------
# Choosing the TensorRT module
# --------------------------------------------------------------------------------------------


def test_tensorrt_is_preferred_when_importable(monkeypatch):
    fake = types.ModuleType("tensorrt")
    fake.__version__ = "10.99.0"
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    assert load_tensorrt() is fake
    assert backend_info() == BackendInfo(module="tensorrt", version="10.99.0")


def test_tensorrt_rtx_is_the_fallback(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` fail
    assert load_tensorrt().__name__ == "tensorrt_rtx"
    assert backend_info().module == "tensorrt_rtx"


def test_no_tensorrt_at_all(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)
    with pytest.raises(BackendError, match="no TensorRT Python module can be imported"):
        load_tensorrt()
