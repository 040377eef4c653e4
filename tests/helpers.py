"""Helpers shared by the test modules: the repository's paths, running the command (in a child
process or in this one), the small golden model and what the conv pipeline does to it, and pass
registries extended with test-only passes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

from trtcompile import cli, ir
from trtcompile.pass_manager import Pass, PassManager, PassRegistry, default_registry

#: The repository's root folder.
REPO = Path(__file__).resolve().parent.parent

#: Models and the manifest of the golden suite (tests/golden).
GOLDEN = REPO / "tests" / "golden"

#: A small convolutional model with parallel branches (see tests/golden/make_models.py).
CONV_BRANCHES = GOLDEN / "conv_branches.onnx"

def conv_branches_opset22(folder: Path) -> Path:
    """CONV_BRANCHES converted to opset 22, where ONNX's Conv takes bfloat16 (``--precision
    bf16`` leaves the convolutions of an older opset in float32), saved in ``folder``."""
    import onnx
    import onnx.version_converter

    path = folder / "conv_branches_opset22.onnx"
    onnx.save(onnx.version_converter.convert_version(onnx.load(CONV_BRANCHES), 22), path)
    return path


#: The passes that rewrite CONV_BRANCHES: fusion, horizontal fusion and concat elimination.
CONV_PIPELINE = "fold-constants,conv-bias-activation-fusion,horizontal-fusion,concat-elimination"


def run_trtcompile(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None,
                   timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m trtcompile.cli <args>`` in a child process, TensorFlow quiet, output captured.

    ``env`` adds to (or overrides) this process's environment.
    """
    child_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run([sys.executable, "-m", "trtcompile.cli", *args], cwd=cwd, env=child_env,
                          capture_output=True, text=True, timeout=timeout)


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``trtcompile <argv>`` in this process: (exit code, stdout, stderr)."""
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def measured_layers(model: Path = CONV_BRANCHES, pipeline: str = CONV_PIPELINE
                    ) -> tuple[int, dict[str, int]]:
    """What ``pipeline`` does to ``model`` today: (final layer count, layers after each pass).

    Tests of runners and assertions compare against a direct pass-manager run rather than
    hard-coding counts the passes may improve.
    """
    report = PassManager(pipeline).run(ir.load(model))
    return report.layers_after, report.layers_after_pass()


def registry_with(passes: Iterable[type[Pass]]) -> PassRegistry:
    """The built-in passes plus ``passes`` (a pass whose name is built in replaces nothing: the
    first registration of a name wins)."""
    registry = default_registry()
    for cls in passes:
        if cls.name not in registry:
            registry.register(cls)
    return registry


#: A user pass module whose pass doubles the first Conv's weight: it changes what the model computes
#: on purpose (parity must fail), and rejects that Conv with a reason full of HTML metacharacters.
BREAKING_PASS = '''
from dataclasses import dataclass
from typing import ClassVar

import onnx_graphsurgeon as gs

from trtcompile.pass_manager import Pass, PassResult


@dataclass(frozen=True)
class ScaleFirstWeight(Pass):
    """Doubles the first Conv's weight <on purpose>."""

    name: ClassVar[str] = "scale-first-weight"

    def run(self, graph, ctx):
        result = PassResult()
        conv = next(node for node in graph.nodes if node.op == "Conv")
        conv.inputs[1] = gs.Constant(conv.inputs[1].name + "_x2", conv.inputs[1].values * 2)
        result.count("scaled_weights")
        result.reject(conv, "weights <b>too</b> small & odd")
        return result
'''


def output_names(folder: Path) -> list[str]:
    """The names in a compile's output folder, sorted, without the hidden manifest in which the
    compile records what it wrote (tests/test_compiler.py checks that one)."""
    return sorted(p.name for p in folder.iterdir() if p.name != ".trtcompile-outputs.json")
