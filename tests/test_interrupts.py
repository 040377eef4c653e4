"""SIGINT and SIGTERM stop a compile at any stage with exit code 130 and leave nothing behind.

Each test starts the command in a child process (stderr not a terminal, as in CI), waits for the
stage's marker on stderr, sends the signal and checks the exit code, the one-line message and that
neither the output folder nor a staging folder exists. TensorRT swallows exceptions raised in its
callbacks, so the engine build is the case that needs the progress monitor's cancellation.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.helpers import REPO
from trtcompile.errors import EXIT_INTERRUPTED


def conv_chain(path: Path, layers: int = 600) -> Path:
    """A chain of Conv+Relu pairs: passes, parity and the engine build each take long enough (the
    build about 3 s) for a signal sent at the stage's marker to land inside the stage."""
    rng = np.random.default_rng(0)
    nodes, initializers, previous = [], [], "x"
    for index in range(layers):
        initializers += [
            numpy_helper.from_array((rng.standard_normal((16, 16, 3, 3)) * 0.08).astype(np.float32),
                                    f"w{index}"),
            numpy_helper.from_array(np.zeros(16, np.float32), f"b{index}")]
        nodes += [helper.make_node("Conv", [previous, f"w{index}", f"b{index}"], [f"c{index}"],
                                   pads=[1, 1, 1, 1], name=f"conv{index}"),
                  helper.make_node("Relu", [f"c{index}"], [f"r{index}"], name=f"relu{index}")]
        previous = f"r{index}"
    graph = helper.make_graph(
        nodes, "conv_chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 32, 32])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, [1, 16, 32, 32])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.save(model, path)
    return path


def interrupt_at(marker: str, args: list[str], cwd: Path, signum: int,
                 timeout: float = 300) -> tuple[int, str, float]:
    """Run ``trtcompile <args>``, send ``signum`` as soon as ``marker`` shows on stderr; return
    (exit code, stderr, seconds from the signal to the exit, for diagnostics)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    child = subprocess.Popen([sys.executable, "-m", "trtcompile.cli", *args], cwd=cwd, env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    seen = b""
    deadline = time.monotonic() + timeout
    try:
        # Read raw chunks: progress lines end in carriage returns, not newlines.
        while marker.encode() not in seen:
            chunk = os.read(child.stderr.fileno(), 65536)
            if not chunk or time.monotonic() > deadline:
                child.kill()
                child.wait()
                pytest.fail(f"the compile ended before {marker!r} showed:\n{seen.decode()}")
            seen += chunk
        child.send_signal(signum)
        sent = time.monotonic()
        rest = child.stderr.read()
        code = child.wait(timeout=timeout)
        return code, (seen + rest).decode(errors="replace"), time.monotonic() - sent
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def assert_stopped_cleanly(code: int, stderr: str, folder: Path, signum: int) -> None:
    name = signal.Signals(signum).name
    assert code == EXIT_INTERRUPTED, stderr
    assert stderr.splitlines()[-1] == f"trtcompile: interrupted ({name}); nothing was written", stderr
    assert "Exception caught" not in stderr and "Traceback" not in stderr, stderr
    assert not (folder / "out").exists()
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # no staging folder


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Path:
    return conv_chain(tmp_path_factory.mktemp("chain") / "chain.onnx")


STAGES = [
    ("running the pass pipeline", signal.SIGINT),
    ("checking parity on ONNX Runtime", signal.SIGINT),
    ("building the TensorRT engine", signal.SIGINT),
    ("building the TensorRT engine", signal.SIGTERM),
]


@pytest.mark.parametrize("marker, signum", STAGES,
                         ids=[f"{m.split()[-1]}-{signal.Signals(s).name}" for m, s in STAGES])
def test_a_signal_during_a_stage_exits_130_and_writes_nothing(tmp_path: Path, chain: Path,
                                                              marker: str, signum: int) -> None:
    code, stderr, _ = interrupt_at(marker, ["compile", str(chain), "-o", "out"], tmp_path, signum)
    assert_stopped_cleanly(code, stderr, tmp_path, signum)
    # That the progress monitor cancels the build (rather than letting it finish) is checked in
    # tests/backend/test_tensorrt.py; timing it here would only measure the machine's load.


def test_a_signal_at_the_very_start_of_the_engine_build(tmp_path: Path, chain: Path) -> None:
    """Sent with the marker (the TensorRT module may still be importing): not a missing module."""
    code, stderr, _ = interrupt_at("building the TensorRT engine",
                                   ["compile", str(chain), "-o", "out", "--no-parity"], tmp_path,
                                   signal.SIGINT)
    assert "no TensorRT Python module" not in stderr
    assert_stopped_cleanly(code, stderr, tmp_path, signal.SIGINT)


@pytest.mark.slow
@pytest.mark.parametrize("marker, signum", [
    ("lowering ", signal.SIGINT),
    ("importing TensorFlow for the reference run", signal.SIGTERM),
], ids=["lowering-worker-SIGINT", "tensorflow-import-SIGTERM"])
def test_a_signal_during_the_tensorflow_stages(tmp_path: Path, marker: str, signum: int) -> None:
    code, stderr, _ = interrupt_at(marker, ["compile", "-o", "out", "--progress", "--no-engine"],
                                   tmp_path, signum, timeout=600)
    assert_stopped_cleanly(code, stderr, tmp_path, signum)
