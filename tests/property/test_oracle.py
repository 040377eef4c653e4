"""The property machinery catches a wrong pass, shrinks its failure and saves a regression case.

A deliberately wrong pass (it turns Relu into LeakyRelu) runs under the same harness as the real
passes; the test asserts that hypothesis fails, that the case written is the minimal graph (one
input, one Relu) in pass-case format, and that the pass-case harness can load it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import onnx
import onnx.parser
import onnx_graphsurgeon as gs
import pytest
from hypothesis import given, settings

from tests import pass_cases
from tests.helpers import registry_with
from tests.property import oracle
from tests.property.strategies import cnn_models
from trtcompile.pass_manager import Pass, PassContext, PassResult


@dataclass(frozen=True)
class LeakyRelu(Pass):
    """Rewrites every Relu into LeakyRelu(alpha=0.5): a wrong rewrite the oracle must catch."""

    name: ClassVar[str] = "wrong-relu"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = PassResult()
        for node in graph.nodes:
            if node.op == "Relu":
                node.op = "LeakyRelu"
                node.attrs["alpha"] = 0.5
                result.count("rewrote_relu")
        return result


@dataclass(frozen=True)
class DropOutput(Pass):
    """Removes the last graph output: an interface change the oracle must catch."""

    name: ClassVar[str] = "drop-output"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = PassResult()
        if len(graph.outputs) > 1:
            graph.outputs.pop()
            graph.cleanup(remove_unused_graph_inputs=False)
            result.count("dropped_output")
        return result


def _registry():
    return registry_with([LeakyRelu, DropOutput])


def test_wrong_pass_is_caught_shrunk_and_saved(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TRTCOMPILE_PROPERTY_FAILURES", str(tmp_path))
    registry = _registry()

    @settings(max_examples=200, derandomize=True, database=None, print_blob=False)
    @given(cnn_models())
    def property_(case) -> None:
        oracle.check_pipeline(case.model, "dead-layer-elimination,wrong-relu", label="wrong relu",
                              registry=registry)

    with pytest.raises(AssertionError, match="differs from the original"):
        property_()
    saved = tmp_path / "wrong_relu" / "regression_wrong_relu.onnxtxt"
    assert saved.exists(), sorted(p.name for p in tmp_path.rglob("*"))
    text = saved.read_text()
    assert "# pipeline: dead-layer-elimination,wrong-relu" in text
    model = onnx.parser.parse_model(text)
    # Shrunk to the essence: one input, one Relu, one output.
    assert [node.op_type for node in model.graph.node] == ["Relu"]
    assert len(model.graph.input) == 1 and len(model.graph.output) == 1
    case = pass_cases.load_case(saved)
    assert case.pipeline == "dead-layer-elimination,wrong-relu"
    onnx.checker.check_model(case.model())


def test_dropped_output_is_caught(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TRTCOMPILE_PROPERTY_FAILURES", str(tmp_path))
    registry = _registry()

    @settings(max_examples=200, derandomize=True, database=None, print_blob=False)
    @given(cnn_models())
    def property_(case) -> None:
        oracle.check_pipeline(case.model, "drop-output", label="drop output", registry=registry)

    with pytest.raises(AssertionError, match="graph outputs changed"):
        property_()
    saved = tmp_path / "drop_output" / "regression_drop_output.onnxtxt"
    model = onnx.parser.parse_model(saved.read_text())
    # Shrunk towards the essence: exactly two outputs (the fewest that fail), a short graph.
    assert len(model.graph.output) == 2 and len(model.graph.node) <= 8
