"""trtcompile.testing: parity and layer-count assertions, and manifests as pytest cases."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest

from tests.helpers import CONV_BRANCHES, CONV_PIPELINE, GOLDEN, measured_layers
from trtcompile import testing
from trtcompile.flow.registry import build_registry

NEGATE_FIRST_BIAS = '''
from dataclasses import dataclass
from typing import ClassVar

import onnx_graphsurgeon as gs

from trtcompile.pass_manager import Pass, PassResult


@dataclass(frozen=True)
class NegateFirstBias(Pass):
    """Negates the first Conv's bias: changes what the model computes, on purpose."""

    name: ClassVar[str] = "negate-first-bias"

    def run(self, graph, ctx):
        result = PassResult()
        conv = next(node for node in graph.nodes if node.op == "Conv")
        bias = conv.inputs[2]
        conv.inputs[2] = gs.Constant(bias.name + "_negated", -bias.values)
        result.count("negated_biases")
        return result
'''


def test_assert_parity_returns_the_check() -> None:
    model = onnx.load(CONV_BRANCHES)
    before = model.SerializeToString()
    check = testing.assert_parity(model, CONV_PIPELINE, atol=1e-5, rtol=1e-4)
    assert model.SerializeToString() == before  # the caller's model is not touched
    assert check.parity.passed and set(check.parity.outputs) == {"output"}
    assert check.layers == measured_layers()[0] < 11
    assert check.optimized.functions  # fused layers are model-local functions
    # A path works as well as a model.
    assert testing.assert_parity(CONV_BRANCHES, "dead-layer-elimination").layers == 11


def test_assert_parity_names_what_regressed(tmp_path: Path) -> None:
    module = tmp_path / "negate.py"
    module.write_text(NEGATE_FIRST_BIAS)
    registry = build_registry([module])
    with pytest.raises(AssertionError) as caught:
        testing.assert_parity(CONV_BRANCHES, "negate-first-bias", registry=registry, seed=4)
    message = str(caught.value)
    assert message.startswith("parity failed after pipeline 'negate-first-bias' (atol=0.0001, "
                              "rtol=0.001, inputs standard normal, seed 4, at input:1x4x8x8): "
                              "'output' max_abs=")
    assert message.endswith("layers after each pass: input 11, negate-first-bias 11")


def test_assert_layer_counts_passes_and_fails_with_every_mismatch() -> None:
    layers, after = measured_layers()
    check = testing.assert_parity(CONV_BRANCHES, CONV_PIPELINE)
    assert testing.assert_layer_counts(check, layers=layers, passes=after) is check
    with pytest.raises(AssertionError) as caught:
        testing.assert_layer_counts(check, layers=layers + 1, passes={
            "horizontal-fusion": after["horizontal-fusion"],
            "concat-elimination": after["concat-elimination"] - 1})
    message = str(caught.value)
    assert message.startswith(f"layer counts regressed after pipeline '{CONV_PIPELINE}': layers: "
                              f"expected {layers + 1}, got {layers} (1 fewer); "
                              f"passes.concat-elimination: expected {after['concat-elimination'] - 1}, "
                              f"got {after['concat-elimination']} (1 more); layers after each pass: input 11")
    assert "passes.horizontal-fusion" not in message
    with pytest.raises(AssertionError, match="passes.transpose-cancellation: expected 3, but the "
                                             "pass did not run"):
        testing.assert_layer_counts(CONV_BRANCHES, pipeline=CONV_PIPELINE,
                                    passes={"transpose-cancellation": 3})


def test_assert_layer_counts_checks_the_engine() -> None:
    check = testing.assert_parity(CONV_BRANCHES, CONV_PIPELINE)
    from trtcompile import backend

    compute = backend.build_engine(check.optimized, progress=False).compute_layers
    assert compute > 0
    testing.assert_layer_counts(check, engine_compute_layers=compute)
    with pytest.raises(AssertionError, match=rf"engine_compute_layers: expected {compute + 5}, "
                                             rf"got {compute} \(5 fewer\)"):
        testing.assert_layer_counts(check, engine_compute_layers=compute + 5)


# The project's manifest as pytest cases (the engine entry runs in test_golden_manifest.py).
@pytest.mark.parametrize("case", testing.golden_cases(GOLDEN / "manifest.toml",
                                                      "conv-branches,nhwc-transposes"))
def test_project_manifest_case(case) -> None:
    testing.check_golden_case(case)


def test_golden_cases_ids_and_failure_message(tmp_path: Path) -> None:
    shutil.copy(CONV_BRANCHES, tmp_path / "m.onnx")
    (tmp_path / "manifest.toml").write_text(
        '[[model]]\nname = "good"\npath = "m.onnx"\n\n'
        f'[[model]]\nname = "bad-count"\npath = "m.onnx"\npipeline = "{CONV_PIPELINE}"\n'
        '[model.expect]\nlayers = 42\n')
    cases = testing.golden_cases(tmp_path / "manifest.toml")
    assert [case.id for case in cases] == ["good", "bad-count"]
    testing.check_golden_case(cases[0].values[0])
    with pytest.raises(pytest.fail.Exception) as caught:
        testing.check_golden_case(cases[1].values[0])
    message = str(caught.value)
    layers = measured_layers()[0]
    assert message.splitlines()[:2] == ["bad-count (m.onnx): REGRESSED",
                                        f"  layers: expected 42, got {layers} ({42 - layers} fewer)"]
    assert "layers after each pass: input 11, fold-constants 11" in message
    assert [case.id for case in testing.golden_cases(tmp_path / "manifest.toml", "bad*")] == ["bad-count"]


#: What a user's test does with the public API: compile, load and run, assert parity and layers.
USER_TEST = '''
import sys
import tempfile

import numpy as np

import trtcompile
from trtcompile.flow import CompileOptions, compile_model
from trtcompile.testing import assert_layer_counts, assert_parity

model = sys.argv[1]
out = tempfile.mkdtemp()
result = compile_model(model, out, CompileOptions(progress=False))
compiled = trtcompile.load(out)
compiled.run({name: np.zeros([d or 1 for d in dims], dtype)
              for name, (dtype, dims) in compiled.input_types.items()})
check = assert_parity(model)
assert_layer_counts(check, layers=check.layers)
print("used the API")
'''


def test_the_public_api_emits_no_deprecation_warning_of_its_dependencies(tmp_path) -> None:
    """In a fresh interpreter (import-time warnings count: a user's pytest run imports it anew)
    with every DeprecationWarning an error, as ``-W error::DeprecationWarning`` makes it; this
    suite's own configuration ignores them, so the check sets its own filter. Polygraphy's
    deprecations also log a line, so nothing printed may say "deprecated" either."""
    import os
    import subprocess
    import sys

    from tests.helpers import REPO

    script = tmp_path / "user_test.py"
    script.write_text(USER_TEST)
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONWARNINGS="error::DeprecationWarning,error::PendingDeprecationWarning")
    result = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-W",
                             "error::PendingDeprecationWarning", str(script), str(CONV_BRANCHES)],
                            capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.rstrip().endswith("used the API")
    assert "deprecat" not in (result.stdout + result.stderr).lower()


def test_the_deprecation_check_fails_on_a_deprecated_call(tmp_path) -> None:
    """The check above catches what it looks for: a deprecated Polygraphy call under the same
    filter fails the same way."""
    import subprocess
    import sys

    script = tmp_path / "deprecated.py"
    script.write_text("from polygraphy.comparator import CompareFunc\n"
                      "CompareFunc.simple(atol=1e-4)\n")
    result = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", str(script)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "DeprecationWarning" in result.stderr
    assert "CompareFunc.simple is deprecated" in result.stderr
