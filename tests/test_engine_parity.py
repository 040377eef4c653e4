"""Engine parity: the built engine run on the parity inputs and compared with the optimized model on
ONNX Runtime; "not run" (and why) where no GPU can execute it; --engine-parity auto/require/off.

This machine has no GPU an engine can run on, so the paths where the engine runs replace
``trtcompile.flow.parity.run_engine`` by a simulated GPU: ONNX Runtime on the very model the engine was built from.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

from tests.helpers import output_names, run_main, run_trtcompile
from trtcompile import examples, html_report, ir, report, verify
from trtcompile.flow import engine as flow_engine
from trtcompile.flow import parity as flow_parity
from trtcompile.flow import precision as flow_precision
from trtcompile.backend import NO_GPU_MESSAGE
from trtcompile.flow import CompileOptions, compile_model
from trtcompile.errors import BackendError, CheckFailed, InputError
from trtcompile.shapes import ShapeOptions

#: Engines can run here only if a GPU driver is present; the "not run" tests need its absence.
NO_GPU = pytest.mark.skipif(os.path.exists("/dev/nvidiactl"), reason="a GPU driver is present")


def options(**kwargs) -> CompileOptions:
    """The fast ONNX example, engine built, no progress bars."""
    kwargs.setdefault("progress", False)
    kwargs.setdefault("example", "googlenet-onnx")
    return CompileOptions(**kwargs)


class SimulatedGpu:
    """Stands in for a GPU: records every run and returns what ONNX Runtime computes for the model
    the engine was built from, optionally changed by ``perturb(name, array)``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, perturb=None, drop: str | None = None):
        self.runs: list[tuple[dict[str, np.ndarray], int]] = []
        self.perturb = perturb
        self.drop = drop
        #: The model each plan was built from (the compile builds more than one engine: the
        #: engine check builds the model as the passes received it too).
        self.models: dict[bytes, onnx.ModelProto] = {}
        real_build = flow_engine.build_engine

        def recording_build(optimized, loaded, opts, plan=None):
            build = real_build(optimized, loaded, opts, plan)
            self.models[bytes(build.plan)] = optimized
            return build

        monkeypatch.setattr(flow_engine, "build_engine", recording_build)
        monkeypatch.setattr(flow_parity, "run_engine", self.run)

    def run(self, plan: bytes, feeds: dict[str, np.ndarray], profile: int = 0) -> dict[str, np.ndarray]:
        assert isinstance(plan, bytes) and plan
        self.runs.append(({k: np.array(v) for k, v in feeds.items()}, profile))
        # The model this plan was built from, as parity runs it: as written.
        session = verify.inference_session(self.models[bytes(plan)])
        names = [o.name for o in session.get_outputs()]
        outputs = dict(zip(names, session.run(names, dict(feeds))))
        if self.drop:
            outputs.pop(self.drop)
        if self.perturb:
            outputs = {name: self.perturb(name, value) for name, value in outputs.items()}
        return outputs


# --------------------------------------------------------------------------------------------
# No GPU here: not run, and why
# --------------------------------------------------------------------------------------------


@NO_GPU
def test_without_a_gpu_engine_parity_is_not_run_and_the_compile_passes(tmp_path: Path) -> None:
    result = compile_model(None, tmp_path / "out", options())
    assert result.error is None and result.exit_code == 0
    assert result.engine is not None  # the engine was built; only running it is impossible
    parity = result.engine_parity
    assert parity.status == "not run" and parity.reason.startswith(NO_GPU_MESSAGE)
    recorded = json.loads((tmp_path / "out" / "report.json").read_text())
    engine = recorded["parity"]["engine"]
    assert engine == {
        "mode": "auto", "status": "not run", "reason": parity.reason, "reference": "optimized",
        "candidate": "engine", "atol": 0.01, "rtol": 0.01, "note": parity.note, "outputs": {},
        "comparisons": [], "input_shapes": [], "failed": []}
    assert "TF32" in parity.note
    assert recorded["status"] == {"passed": True, "exit_code": 0, "error": None}
    assert "engine_parity" not in recorded["seconds"]  # nothing ran
    text = report.render(recorded)
    assert f"\nengine parity: not run \u2014 {parity.reason}\n" in text
    assert sum("engine parity" in line for line in text.splitlines()) == 1


@NO_GPU
def test_require_without_a_gpu_exits_3_with_one_line_and_writes_the_outputs(tmp_path: Path) -> None:
    proc = run_trtcompile("compile", "--example", "googlenet-onnx", "-o", "out", "--no-progress",
                          "--engine-parity", "require", cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("trtcompile: error:")]
    assert len(errors) == 1
    assert errors[0].startswith("trtcompile: error: engine parity is required but did not run: "
                                + NO_GPU_MESSAGE)
    assert errors[0].endswith("outputs and report.json written to out for inspection")
    out = tmp_path / "out"
    assert output_names(out) == ["model.engine", "optimized.onnx", "report.json"]
    recorded = json.loads((out / "report.json").read_text())
    assert recorded["status"]["exit_code"] == 3 and recorded["status"]["passed"] is False
    assert recorded["parity"]["engine"]["mode"] == "require"
    assert recorded["parity"]["engine"]["status"] == "not run"
    assert "engine parity: not run \u2014 " + NO_GPU_MESSAGE in proc.stdout


@NO_GPU
def test_default_cli_run_says_so_in_one_line_and_exits_0(tmp_path: Path, capsys) -> None:
    code, stdout, err = run_main(["compile", "--example", "googlenet-onnx", "-o",
                                  str(tmp_path / "out"), "--no-progress"], capsys)
    assert code == 0, err
    lines = [line for line in stdout.splitlines() if line.startswith("engine parity")]
    assert len(lines) == 1 and lines[0].startswith("engine parity: not run \u2014 " + NO_GPU_MESSAGE)
    assert "trtcompile: error" not in err


# --------------------------------------------------------------------------------------------
# A (simulated) GPU runs the engine
# --------------------------------------------------------------------------------------------


def test_an_engine_matching_onnx_runtime_passes(tmp_path: Path, monkeypatch, capsys) -> None:
    gpu = SimulatedGpu(monkeypatch)
    code, stdout, err = run_main(["compile", "--example", "googlenet-onnx", "-o",
                                  str(tmp_path / "out"), "--no-progress",
                                  "--report-html", str(tmp_path / "report.html")], capsys)
    assert code == 0, err
    # The engine ran once, on the very inputs ONNX parity used (same generator, seed, shape).
    assert len(gpu.runs) == 1
    feeds, profile = gpu.runs[0]
    seeded = verify.feed_data(examples.load_example("googlenet-onnx").model, seed=0)
    assert profile == 0 and feeds.keys() == seeded.keys()
    assert all(np.array_equal(feeds[k], seeded[k]) for k in seeded)

    recorded = json.loads((tmp_path / "out" / "report.json").read_text())
    engine = recorded["parity"]["engine"]
    assert engine["status"] == "passed" and engine["reason"] is None
    assert (engine["reference"], engine["candidate"]) == ("optimized", "engine")
    assert engine["outputs"] == {"logits": {"max_abs": 0.0, "max_rel": 0.0, "passed": True}}
    assert engine["input_shapes"] == [{"input": [1, 3, 64, 64]}]
    assert [c["input_shapes"] for c in engine["comparisons"]] == [{"input": [1, 3, 64, 64]}]
    assert engine["failed"] == []
    assert recorded["seconds"]["engine_parity"] > 0
    assert "engine parity: passed (engine vs optimized on ONNX Runtime, seed 0, atol=0.01, " \
           "rtol=0.01)" in stdout
    row = next(line for line in stdout.splitlines() if line.strip().startswith("engine vs optimized"))
    assert row.split() == ["engine", "vs", "optimized", "logits", "max_abs=0", "max_rel=0", "ok"]

    page = (tmp_path / "report.html").read_text()
    assert page.count('<tr class="parity-row engine-parity-row">') == 1
    assert "<td>engine vs optimized</td><td class=\"mono\">logits</td>" in page
    assert 'id="engine-parity-status">Engine parity <span class="ok">passed</span>' in page


def test_an_engine_that_differs_fails_parity_exits_1_and_names_the_output(tmp_path: Path, monkeypatch,
                                                                          capsys) -> None:
    SimulatedGpu(monkeypatch, perturb=lambda name, value: value + np.float32(0.5))
    out = tmp_path / "out"
    code, stdout, err = run_main(["compile", "--example", "googlenet-onnx", "-o", str(out),
                                  "--no-progress", "--engine-parity", "require"], capsys)
    assert code == 1
    error = err.strip().splitlines()[-1]
    assert error.startswith("trtcompile: error: engine parity failed (atol=0.01, rtol=0.01): "
                            "engine vs optimized: output 'logits' (max_abs=0.5")
    recorded = json.loads((out / "report.json").read_text())
    engine = recorded["parity"]["engine"]
    assert engine["status"] == "failed" and engine["failed"] == ["logits"]
    assert engine["outputs"]["logits"]["passed"] is False
    assert engine["outputs"]["logits"]["max_abs"] == pytest.approx(0.5, rel=1e-6)
    assert recorded["parity"]["passed"] is True  # ONNX Runtime parity itself held
    assert recorded["status"]["exit_code"] == 1
    # The outputs are still written for inspection.
    assert output_names(out) == ["model.engine", "optimized.onnx", "report.json"]
    assert "engine parity: FAILED" in stdout
    row = next(line for line in stdout.splitlines() if line.strip().startswith("engine vs optimized"))
    assert row.split()[3] == "logits" and row.split()[-1] == "FAILED"


def test_a_small_tf32_like_error_passes_and_a_user_tolerance_applies(tmp_path: Path,
                                                                     monkeypatch) -> None:
    # Relative noise of 1e-3, what TF32 arithmetic does: within the engine's default tolerances...
    def noise(name, value):
        return value * np.float32(1.001)

    SimulatedGpu(monkeypatch, perturb=noise)
    result = compile_model(None, tmp_path / "a", options())
    assert result.engine_parity.status == "passed" and result.exit_code == 0
    # ... but not within tolerances the user sets tighter (they apply as given).
    result = compile_model(None, tmp_path / "b", options(atol=1e-6, rtol=1e-6))
    assert result.engine_parity.status == "failed" and isinstance(result.error, CheckFailed)
    assert result.engine_parity.note == "user tolerances atol=1e-06 rtol=1e-06"
    assert result.report["parity"]["engine"]["atol"] == 1e-6


def test_an_output_the_engine_does_not_produce_fails(tmp_path: Path, monkeypatch) -> None:
    SimulatedGpu(monkeypatch, drop="logits")
    result = compile_model(None, tmp_path / "out", options())
    assert result.engine_parity.status == "failed" and result.exit_code == 1
    comparison = result.report["parity"]["engine"]["comparisons"][0]
    assert comparison["outputs"]["logits"]["passed"] is False
    assert comparison["note"] == "outputs the engine did not produce: ['logits']"


def dynamic_googlenet() -> onnx.ModelProto:
    """The ONNX example with a symbolic batch dimension on every tensor."""
    graph = examples.googlenet_graph()
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Variable) and tensor.shape:
            tensor.shape = ["N", *tensor.shape[1:]]
    return ir.export_model(graph)


def test_every_profile_shape_runs_with_the_profile_that_holds_it(tmp_path: Path, monkeypatch) -> None:
    model = tmp_path / "dynamic.onnx"
    ir.save(dynamic_googlenet(), model)
    gpu = SimulatedGpu(monkeypatch)
    shapes = ShapeOptions(min_shapes=[{"input": (1, 3, 64, 64)}, {"input": (16, 3, 64, 64)}],
                          opt_shapes=[{"input": (4, 3, 64, 64)}, {"input": (16, 3, 64, 64)}],
                          max_shapes=[{"input": (8, 3, 64, 64)}, {"input": (16, 3, 64, 64)}])
    result = compile_model(model, tmp_path / "out", CompileOptions(progress=False, shapes=shapes))
    assert result.exit_code == 0, result.error
    assert [(feeds["input"].shape[0], profile) for feeds, profile in gpu.runs] == [
        (1, 0), (4, 0), (8, 0), (16, 1)]
    engine = result.report["parity"]["engine"]
    checked = [{"input": [n, 3, 64, 64]} for n in (1, 4, 8, 16)]
    assert engine["status"] == "passed" and engine["input_shapes"] == checked
    assert [c["input_shapes"] for c in engine["comparisons"]] == checked
    assert result.report["parity"]["input_shapes"] == checked  # the shapes ONNX parity checked


def test_a_backend_failure_while_running_is_not_run_under_auto_and_exit_3_under_require(
        tmp_path: Path, monkeypatch) -> None:
    def refuse(plan, feeds, profile=0):
        raise BackendError("TensorRT could not load the engine plan: unsupported SM 9.0")

    monkeypatch.setattr(flow_parity, "run_engine", refuse)
    result = compile_model(None, tmp_path / "auto", options())
    assert result.exit_code == 0
    assert result.engine_parity.status == "not run"
    assert result.engine_parity.reason == "TensorRT could not load the engine plan: unsupported SM 9.0"
    result = compile_model(None, tmp_path / "require", options(engine_parity="require"))
    assert isinstance(result.error, BackendError) and result.exit_code == 3
    assert str(result.error) == ("engine parity is required but did not run: TensorRT could not "
                                 "load the engine plan: unsupported SM 9.0")


# --------------------------------------------------------------------------------------------
# Skipped on purpose, and refused combinations
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, reason", [
    ({"engine_parity": "off"}, "--engine-parity off"),
    ({"engine": False}, "no engine (--no-engine)"),
    ({"parity": False}, "--no-parity"),
])
def test_skipped_stages_say_why(tmp_path: Path, monkeypatch, kwargs: dict, reason: str) -> None:
    gpu = SimulatedGpu(monkeypatch)
    result = compile_model(None, tmp_path / "out", options(**kwargs))
    assert result.exit_code == 0 and gpu.runs == []
    assert result.report["parity"]["engine"]["status"] == "not run"
    assert result.report["parity"]["engine"]["reason"] == reason
    assert f"engine parity: not run \u2014 {reason}" in report.render(result.report)


def test_no_engine_after_failed_parity_is_not_run(tmp_path: Path, monkeypatch) -> None:
    gpu = SimulatedGpu(monkeypatch)
    result = compile_model(None, tmp_path / "out", options(pipeline="none", atol=0, rtol=0,
                                                           precision="fp16"))
    assert isinstance(result.error, CheckFailed) and gpu.runs == []
    assert result.report["parity"]["engine"]["reason"] == "no engine (parity failed)"


@pytest.mark.parametrize("kwargs, message", [
    ({"engine_parity": "require", "engine": False},
     "--engine-parity require needs the engine: drop --no-engine"),
    ({"engine_parity": "require", "parity": False},
     "--engine-parity require is a parity check: drop --no-parity"),
    ({"engine_parity": "sometimes"}, "--engine-parity sometimes: expected one of auto, require, off"),
])
def test_contradictory_options_are_refused_before_writing(tmp_path: Path, kwargs: dict,
                                                          message: str) -> None:
    with pytest.raises(InputError) as caught:
        compile_model(None, tmp_path / "out", options(**kwargs))
    assert str(caught.value) == message
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_require_with_no_engine(tmp_path: Path, capsys) -> None:
    code, stdout, err = run_main(["compile", "--example", "googlenet-onnx", "-o", str(tmp_path / "o"),
                                  "--no-engine", "--engine-parity", "require"], capsys)
    assert code == 2 and stdout == ""
    assert err == "trtcompile: error: --engine-parity require needs the engine: drop --no-engine\n"


# --------------------------------------------------------------------------------------------
# Tolerances
# --------------------------------------------------------------------------------------------


def test_tolerances_follow_the_graph_precision() -> None:
    fp32 = flow_precision.engine_parity_tolerances(CompileOptions(), user_tolerances=False)
    assert fp32[:2] == (1e-2, 1e-2) and "TF32" in fp32[2]
    fp16 = flow_precision.engine_parity_tolerances(CompileOptions(precision="fp16"), user_tolerances=False)
    assert fp16[:2] == (1e-2, 1e-2) and fp16[2].startswith("fp16:")
    int8 = flow_precision.engine_parity_tolerances(CompileOptions(precision="int8"), user_tolerances=False)
    assert int8[:2] == (1e-3, 0.1) and int8[2].startswith("int8:")
    user = flow_precision.engine_parity_tolerances(CompileOptions(atol=3e-3, rtol=0), user_tolerances=True)
    assert user == (3e-3, 0, "user tolerances atol=0.003 rtol=0")


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------


def test_html_report_says_why_engine_parity_did_not_run(tmp_path: Path, monkeypatch) -> None:
    def no_gpu(plan, feeds, profile=0):
        raise BackendError(f"{NO_GPU_MESSAGE} (CUDA driver version is insufficient)")

    monkeypatch.setattr(flow_parity, "run_engine", no_gpu)
    result = compile_model(None, tmp_path / "out", options())
    page = html_report.render_html(result.report)
    assert (f'<p id="engine-parity-status">Engine parity: not run &mdash; {NO_GPU_MESSAGE} '
            "(CUDA driver version is insufficient)</p>") in page
    assert "engine-parity-row" not in page
