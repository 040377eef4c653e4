"""The engine check: a compile never delivers a model whose engine has more compute layers than
the model as the passes received it (trtcompile.flow.engine_check). Engines are built with the
installed TensorRT (TensorRT-RTX builds on CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtcompile.cli import main
from trtcompile.flow import CompileOptions, compile_model, engine_check
from trtcompile.flow.registry import build_registry
from trtcompile.pm import parse_pipeline

#: A pass that makes TensorRT's engine worse: every Conv becomes two Convs on halves of its output
#: channels joined by a Concat (exact; TensorRT builds 4 -> 7 compute layers on two convs).
SPLIT_CONV = '''
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from trtcompile.pm import Pass, PassContext, PassResult


@dataclass(frozen=True)
class SplitConv(Pass):
    """Split every Conv with constant weights in two along its output channels."""

    name: ClassVar[str] = "split-conv"

    def run(self, graph, ctx):
        result = PassResult()
        for node in list(graph.nodes):
            if node.op != "Conv" or not isinstance(node.inputs[1], gs.Constant):
                continue
            weights, bias = node.inputs[1].values, node.inputs[2].values
            half, out = weights.shape[0] // 2, node.outputs[0]
            parts = []
            for index, (lo, hi) in enumerate(((0, half), (half, weights.shape[0]))):
                piece = gs.Variable(f"{out.name}_part{index}", dtype=out.dtype)
                graph.nodes.append(gs.Node("Conv", f"{node.name}_part{index}", dict(node.attrs),
                    inputs=[node.inputs[0], gs.Constant(f"{node.name}_w{index}", weights[lo:hi].copy()),
                            gs.Constant(f"{node.name}_b{index}", bias[lo:hi].copy())],
                    outputs=[piece]))
                parts.append(piece)
            node.outputs.clear()
            graph.nodes.append(gs.Node("Concat", f"{node.name}_concat", {"axis": 1}, inputs=parts,
                                       outputs=[out]))
            result.count("split_convs")
        graph.cleanup().toposort()
        return result
'''


def two_convs_model(path: Path) -> None:
    """Two Conv+Relu layers on [1, 3, 16, 16] (TensorRT builds 4 compute layers, 7 once split)."""
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "input"
    for i, (cin, cout) in enumerate([(3, 16), (16, 16)]):
        inits += [numpy_helper.from_array((rng.standard_normal((cout, cin, 3, 3)) * 0.2).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array((rng.standard_normal(cout) * 0.1).astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        x = f"r{i}"
    graph = helper.make_graph(
        nodes, "two_convs", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 16, 16, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("engine_check")
    (folder / "split_conv.py").write_text(SPLIT_CONV)
    two_convs_model(folder / "two_convs.onnx")
    return folder


def _compile(work: Path, out: Path, pipeline: str, **kwargs):
    options = CompileOptions(pipeline=pipeline, pass_modules=(str(work / "split_conv.py"),),
                             progress=False, engine_parity="off", **kwargs)
    return compile_model(work / "two_convs.onnx", out, options)


def _ops(path: Path) -> list[str]:
    return [node.op_type for node in onnx.load(path).graph.node]


def test_a_group_that_makes_the_engine_worse_is_undone(work, tmp_path) -> None:
    result = _compile(work, tmp_path / "out", "dead-layer-elimination,split-conv")
    assert result.exit_code == 0, result.error
    check = result.report["engine_check"]
    assert check["status"] == "regrouped"
    assert (check["baseline_layers"], check["optimized_layers"]) == (4, 7)
    assert check["delivered_layers"] == 4
    assert check["undone"] == [{"group": "split-conv", "reason": "engine 4 -> 7 compute layers"}]
    assert check["builds"] >= 3  # the baseline, the groups judged, the delivered engine
    # The delivered model is the one without the split, its engine that model's, its parity checked.
    assert "Concat" not in _ops(tmp_path / "out" / "optimized.onnx")
    assert result.report["engine"]["compute_layers"] == 4
    assert result.report["parity"]["passed"]


def test_terminal_and_why_not_show_the_engine_verdict(work, tmp_path, capsys) -> None:
    code = main(["compile", str(work / "two_convs.onnx"), "-o", str(tmp_path / "out"),
                 "--pass-module", str(work / "split_conv.py"),
                 "--pipeline", "dead-layer-elimination,split-conv", "--engine-parity", "off",
                 "--why-not", "split-conv"])
    printed = capsys.readouterr().out
    assert code == 0
    assert ("engine check: 7 compute layers after the pipeline, 4 without it: undid 1 group(s) "
            "by engine verdict, delivered 4") in printed
    assert "    undone: split-conv (engine 4 -> 7 compute layers)" in printed
    assert "why not split-conv: the engine check undid its rewrites" in printed
    assert "  engine verdict: the compile undid split-conv (engine 4 -> 7 compute layers)" in printed


def test_an_engine_no_worse_is_kept_with_one_extra_build(work, tmp_path) -> None:
    result = _compile(work, tmp_path / "out", "default")
    check = result.report["engine_check"]
    assert result.exit_code == 0
    assert check["status"] == "kept" and check["builds"] == 1 and check["undone"] == []
    assert check["optimized_layers"] <= check["baseline_layers"]


def test_no_engine_check_delivers_the_pipelines_model(work, tmp_path) -> None:
    result = _compile(work, tmp_path / "out", "dead-layer-elimination,split-conv", engine_check=False)
    assert result.report["engine_check"] == {
        "status": "not run", "reason": "--no-engine-check", "baseline_layers": None,
        "optimized_layers": None, "delivered_layers": None, "undone": [], "builds": 0, "seconds": 0.0}
    assert _ops(tmp_path / "out" / "optimized.onnx").count("Concat") == 2
    assert result.report["engine"]["compute_layers"] == 7


def test_without_an_engine_there_is_nothing_to_check(work, tmp_path, capsys) -> None:
    assert main(["compile", str(work / "two_convs.onnx"), "-o", str(tmp_path / "out"),
                 "--no-engine"]) == 0
    assert "engine check" not in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["engine_check"]["status"] == "not run"
    assert report["engine_check"]["reason"] == "no engine (--no-engine)"


def test_the_baseline_is_delivered_when_groups_cannot_be_judged(work, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(engine_check, "guided_pipeline", lambda pipeline: None)
    result = _compile(work, tmp_path / "out", "dead-layer-elimination,split-conv")
    check = result.report["engine_check"]
    assert check["status"] == "baseline delivered" and check["delivered_layers"] == 4
    assert "cannot be judged one by one" in check["reason"]
    assert _ops(tmp_path / "out" / "optimized.onnx") == ["Conv", "Relu", "Conv", "Relu"]


# ---------------------------------------------------------------------------------------------
# Regrouping a pipeline
# ---------------------------------------------------------------------------------------------


def _parse(text: str):
    return parse_pipeline(text, build_registry(()))


def test_precision_passes_stay_after_the_judged_rewrites() -> None:
    guided = engine_check.guided_pipeline(_parse("fold-constants,fixed-point(dead-layer-elimination),"
                                                 "precision-fp16"))
    assert [element.to_text() for element in guided] == [
        "engine-guided(fold-constants,fixed-point(dead-layer-elimination))", "precision-fp16"]
    assert (guided[0].max_builds, guided[0].max_seconds) == (engine_check.MAX_BUILDS,
                                                             engine_check.MAX_SECONDS)
    assert [p.name for p in engine_check.baseline_pipeline(_parse("fold-constants,precision-fp16"))] == [
        "precision-fp16"]
    assert engine_check.baseline_pipeline(_parse("fold-constants")) == ()


@pytest.mark.parametrize("text", ["engine-guided(fold-constants)",
                                  "fixed-point(fold-constants,precision-fp16)",
                                  "precision-fp16"])
def test_pipelines_that_cannot_be_regrouped(text) -> None:
    assert engine_check.guided_pipeline(_parse(text)) is None
