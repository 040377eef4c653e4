"""Which ONNX Runtime providers run what TensorRT does not (``trtcompile run``, ``load()``): CUDA
where this ONNX Runtime has it, the CPU otherwise, and the terminal says which. The GPU case is
played by monkeypatching the providers ONNX Runtime reports (and a session that keeps the
providers it was asked for, as onnxruntime-gpu's does on a GPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import trtcompile
from tests.backend import models
from tests.helpers import run_main
from trtcompile import ir, runtime
from trtcompile.errors import BackendError
from trtcompile.runtime import CPU_PROVIDER, CUDA_PROVIDER, TENSORRT_PROVIDER

GPU_BUILD = [TENSORRT_PROVIDER, CUDA_PROVIDER, CPU_PROVIDER]
REAL_SESSION = ort.InferenceSession


class GpuSession:
    """An ONNX Runtime session that uses the providers it is asked for (onnxruntime-gpu on a
    GPU); it computes on the CPU."""

    asked: list[list[str]] = []

    def __init__(self, source, providers):
        GpuSession.asked.append(list(providers))
        self._providers = list(providers)
        self._session = REAL_SESSION(source, providers=[CPU_PROVIDER])

    def get_providers(self):
        return self._providers

    def __getattr__(self, name):
        return getattr(self._session, name)


@pytest.fixture
def gpu_build(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: list(GPU_BUILD))
    monkeypatch.setattr(ort, "InferenceSession", GpuSession)
    GpuSession.asked = []
    return GpuSession


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("providers")
    ir.save(models.rejected_op_model("BitShift"), folder / "bitshift.onnx")
    out = folder / "out"
    assert trtcompile.cli.main(["compile", str(folder / "bitshift.onnx"), "-o", str(out), "-q",
                                "--no-progress"]) == 0
    return out


def feeds() -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(0).standard_normal((1, 4, 8, 8)).astype(np.float32)}


@pytest.mark.parametrize("fallback, available, chosen", [
    ("auto", [CUDA_PROVIDER, CPU_PROVIDER], [CUDA_PROVIDER, CPU_PROVIDER]),
    ("auto", GPU_BUILD, [CUDA_PROVIDER, CPU_PROVIDER]),  # TensorRT's provider only when asked
    ("auto", [CPU_PROVIDER], [CPU_PROVIDER]),
    ("tensorrt", GPU_BUILD, GPU_BUILD),
    ("cuda", [CUDA_PROVIDER, CPU_PROVIDER], [CUDA_PROVIDER, CPU_PROVIDER]),
    ("cpu", GPU_BUILD, [CPU_PROVIDER]),
])
def test_provider_selection(fallback, available, chosen) -> None:
    assert runtime.onnxruntime_providers(fallback, available)[0] == chosen


def test_auto_says_why_and_a_missing_provider_asked_for_is_an_error(monkeypatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU_PROVIDER])
    assert runtime.onnxruntime_providers() == (
        [CPU_PROVIDER], "this ONNX Runtime has no CUDAExecutionProvider (it has "
                        "CPUExecutionProvider; onnxruntime-gpu adds it)")
    for fallback, provider in (("cuda", CUDA_PROVIDER), ("tensorrt", TENSORRT_PROVIDER)):
        with pytest.raises(BackendError, match=f"--fallback {fallback}: this ONNX Runtime has no "
                                               f"{provider}") as caught:
            runtime.onnxruntime_providers(fallback)
        assert caught.value.exit_code == 3


def test_load_runs_on_cuda_where_onnxruntime_gpu_has_it(compiled, gpu_build) -> None:
    model = runtime.load(compiled)
    assert model.device == "onnxruntime"  # no GPU can run the engines here
    assert model.providers == [CUDA_PROVIDER, CPU_PROVIDER]
    assert model.onnxruntime_line == ("the model on ONNX Runtime's CUDAExecutionProvider, "
                                      "CPUExecutionProvider (CUDAExecutionProvider is available)")
    assert gpu_build.asked == [[CUDA_PROVIDER, CPU_PROVIDER]]
    reference = REAL_SESSION(str(compiled / "partitioned.onnx")).run(None, feeds())[0]
    np.testing.assert_array_equal(model.run(feeds())["y"], reference)


def test_fallback_nodes_between_segments_get_the_chosen_providers(compiled, gpu_build) -> None:
    """The TensorRT path: every fallback stage's session is asked for CUDA first."""
    partitioned = onnx.load(str(compiled / "partitioned.onnx"))
    executor = runtime.StagedExecutor(partitioned, lambda call, inputs: {},
                                      providers=[CUDA_PROVIDER, CPU_PROVIDER])
    assert [kind for kind, _ in executor.stages] == ["segment", "onnxruntime", "segment"]
    assert gpu_build.asked == [[CUDA_PROVIDER, CPU_PROVIDER]]


def test_run_says_which_providers_ran_the_model(compiled, tmp_path, capsys, monkeypatch) -> None:
    np.savez(tmp_path / "x.npz", **feeds())
    code, _, stderr = run_main(["run", str(compiled), "--inputs", str(tmp_path / "x.npz")], capsys)
    cpu_only = CUDA_PROVIDER not in ort.get_available_providers()
    assert code == 0
    if cpu_only:
        assert "; the model on ONNX Runtime's CPUExecutionProvider (this ONNX Runtime has no " \
               "CUDAExecutionProvider" in stderr
    monkeypatch.setattr(ort, "get_available_providers", lambda: list(GPU_BUILD))
    monkeypatch.setattr(ort, "InferenceSession", GpuSession)
    code, _, stderr = run_main(["run", str(compiled), "--inputs", str(tmp_path / "x.npz"),
                                "--fallback", "tensorrt"], capsys)
    assert code == 0
    assert stderr.splitlines()[0].endswith(
        "; the model on ONNX Runtime's TensorrtExecutionProvider, CUDAExecutionProvider, "
        "CPUExecutionProvider (asked for)")
    code, _, stderr = run_main(["run", str(compiled), "--inputs", str(tmp_path / "x.npz"),
                                "--fallback", "cpu"], capsys)
    assert code == 0 and "the model on ONNX Runtime's CPUExecutionProvider (asked for)" in stderr
