"""Finding the node TensorRT's builder fails on (trtcompile.flow.culprits), and partitioning
around it: a NonMaxSuppression model the parser accepts and TensorRT-RTX cannot build."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

from tests.backend import models
from tests.helpers import run_main
from trtcompile import ir
from trtcompile.flow import culprits


def chain_model(length: int) -> onnx.ModelProto:
    """x -> Relu -> Relu ... (``length`` nodes named n0, n1, ...)."""
    graph = gs.Graph(opset=17)
    tensor = gs.Variable("x", np.float32, (1, 4))
    graph.inputs = [tensor]
    for index in range(length):
        out = gs.Variable(f"t{index}", np.float32, (1, 4))
        graph.nodes.append(gs.Node("Relu", f"n{index}", inputs=[tensor], outputs=[out]))
        tensor = out
    graph.outputs = [tensor]
    return ir.export_model(graph)


@pytest.mark.parametrize("bad", [0, 5, 12])
def test_binary_search_blames_the_first_node_whose_prefix_fails(bad: int) -> None:
    model = chain_model(13)
    built: list[int] = []

    def build(part: onnx.ModelProto) -> str | None:
        built.append(len(part.graph.node))
        names = {node.name for node in part.graph.node}
        return "TensorRT could not build the engine: no runner" if f"n{bad}" in names else None

    culprit = culprits.find_build_culprit(model, build, "TensorRT could not build the engine: no runner")
    assert (culprit.node, culprit.op) == (f"n{bad}", "Relu")
    assert culprit.builds == len(built) <= 4  # log2(13) rounded up
    assert all(n < 13 for n in built)  # every range built is a prefix, never the whole model
    assert culprit.reason == "TensorRT's builder fails on it: no runner"


def test_a_layer_the_builder_names_is_confirmed_with_two_builds() -> None:
    model = chain_model(13)
    built: list[int] = []

    def build(part: onnx.ModelProto) -> str | None:
        built.append(len(part.graph.node))
        return "boom" if "n9" in {node.name for node in part.graph.node} else None

    error = "[tacticSupply.cpp] Error Code 2: Internal Error (n9_163 has no runners that implement it)"
    culprit = culprits.find_build_culprit(model, build, error)
    assert culprit.node == "n9" and built == [10, 9]


def test_named_node_prefers_the_longest_name_and_needs_a_boundary() -> None:
    nodes = [onnx.helper.make_node("Relu", ["a"], ["b"], name=name) for name in ("n1", "n12", "nm")]
    assert culprits.named_node("layer n12_4 has no runners", nodes) == 1
    assert culprits.named_node("layer n1 failed", nodes) == 0
    assert culprits.named_node("layer n123 failed", nodes) is None


def test_node_ranges_are_models_of_their_own() -> None:
    model = chain_model(4)
    part = culprits.NodeRanges(model).range_model(0, 2)
    assert [n.name for n in part.graph.node] == ["n0", "n1"]
    assert [v.name for v in part.graph.input] == ["x"] and [v.name for v in part.graph.output] == ["t1"]
    onnx.checker.check_model(part, full_check=True)
    assert culprits.restrict_profiles([{"x": ([1, 4],) * 3, "y": ([1],) * 3}], part) == [
        {"x": ([1, 4],) * 3}]


def nms_model(with_bitshift: bool) -> onnx.ModelProto:
    """Convolutions, boxes and scores from them, NonMaxSuppression (TensorRT's parser accepts
    it, TensorRT-RTX's builder has no runner for it); with ``with_bitshift``, the convolutions
    are those of tests.backend.models.rejected_op_model (a BitShift the parser rejects)."""
    base = models.rejected_op_model("BitShift") if with_bitshift else models.conv_relu_model()
    graph = ir.import_model(base)
    (features,) = graph.outputs  # [1, C, 8, 8]
    flat = gs.Variable("flat", np.float32)
    boxes = gs.Variable("boxes", np.float32)
    scores = gs.Variable("scores", np.float32)
    mean = gs.Variable("mean", np.float32)
    selected = gs.Variable("selected", np.int64, ("selected_boxes", 3))
    graph.nodes += [
        gs.Node("Reshape", "flatten", inputs=[features, gs.Constant(
            "flat_shape", np.array([1, -1, 4], np.int64))], outputs=[flat]),
        gs.Node("Sigmoid", "box_coordinates", inputs=[flat], outputs=[boxes]),
        gs.Node("ReduceMean", "box_scores", inputs=[boxes], outputs=[mean],
                attrs={"axes": [2], "keepdims": 1}),
        gs.Node("Transpose", "scores_first", inputs=[mean],
                outputs=[scores], attrs={"perm": [0, 2, 1]}),
        gs.Node("NonMaxSuppression", "nms", inputs=[
            boxes, scores, gs.Constant("max_boxes", np.array([5], np.int64)),
            gs.Constant("iou", np.array([0.5], np.float32))], outputs=[selected]),
    ]
    graph.outputs = [selected]
    return ir.export_model(graph)


@pytest.fixture(scope="module")
def nms_paths(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("nms")
    paths = {}
    for name, with_bitshift in (("nms", False), ("nms_bitshift", True)):
        paths[name] = ir.save(nms_model(with_bitshift), folder / f"{name}.onnx")
    return paths


def test_whole_model_build_failure_partitions_instead_of_exit_3(nms_paths, tmp_path,
                                                                capsys) -> None:
    code, _, err = run_main(["compile", str(nms_paths["nms"]), "-o", str(tmp_path / "out"),
                             "--no-progress"], capsys)
    assert code == 0, err
    partition = json.loads((tmp_path / "out" / "report.json").read_text())["partition"]
    assert list(partition["build_failures"]) == ["nms"]
    assert [(f["node"], f["op"]) for f in partition["fallback"]] == [("nms", "NonMaxSuppression")]
    assert partition["build_checks"] >= 2 and partition["segments"][0]["engine"]


def test_a_segment_whose_build_fails_loses_only_the_failing_node(nms_paths, tmp_path,
                                                                 capsys) -> None:
    code, _, err = run_main(["compile", str(nms_paths["nms_bitshift"]), "-o",
                             str(tmp_path / "out"), "--no-progress"], capsys)
    assert code == 0, err
    partition = json.loads((tmp_path / "out" / "report.json").read_text())["partition"]
    assert partition["trigger"].startswith("TensorRT's parser rejects")
    assert partition["build_rounds"] == 2 and list(partition["build_failures"]) == ["nms"]
    ops = [f["op"] for f in partition["fallback"]]
    assert ops == ["Cast", "BitShift", "Cast", "NonMaxSuppression"]
    assert all(segment["engine"] for segment in partition["segments"])
    total = partition["compute_nodes"]
    in_engines = sum(s["compute_nodes"] for s in partition["segments"])
    assert partition["coverage"] == pytest.approx(in_engines / total, abs=1e-6)
    assert in_engines == total - 4
