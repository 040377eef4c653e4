"""The engine layer report parser, on layer messages captured from real builds (tests/backend/data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.backend.models import CALL_NODES, CONV_NODE, RELU_NODE
from trtcompile.backend.engine_report import (
    EngineBuild,
    EngineLayer,
    find_layer_report,
    format_engine_layers,
    format_engine_summary,
    layer_type_histogram,
    parse_layer_line,
    parse_layer_report,
    parse_metadata,
    precision_histogram,
    read_layer_report,
)

DATA = Path(__file__).resolve().parent / "data"


def captured(name: str) -> str:
    return (DATA / f"{name}.layers.txt").read_text()


def build_of(layers: list[EngineLayer]) -> EngineBuild:
    return EngineBuild(plan=b"plan", backend="tensorrt_rtx", version="1.7", layers=layers,
                       build_seconds=0.5)


def test_conv_relu_names_with_commas_and_brackets():
    layers = parse_layer_report(captured("conv_relu"))
    assert [layer.type for layer in layers] == ["kgen", "correlation", "kgen"]
    conv = layers[1]
    assert conv.name == f"{CONV_NODE}_myl0_1"
    assert conv.onnx_nodes == [CONV_NODE, RELU_NODE]
    assert conv.datatypes == ["Float"]
    # Layout moves carry no metadata but are kernels: compute layers.
    assert layers[0].onnx_nodes == [] and layers[0].compute
    assert all(layer.profile == 0 and layer.stream == 0 for layer in layers)
    assert build_of(layers).compute_layers == 3


def test_function_calls_map_to_call_nodes_and_profiles_count_once():
    layers = parse_layer_report(captured("function_calls_two_profiles"))
    assert [(layer.type, layer.profile) for layer in layers] == [
        ("shape_call", 0), ("kgen", 0), ("correlation", 0), ("correlation", 0), ("kgen", 0),
        ("kgen", 1), ("correlation", 1), ("correlation", 1), ("kgen", 1),
    ]
    convs = [layer for layer in layers if layer.type == "correlation"]
    # Body nodes conv and relu of each call collapse into the call node, listed once.
    assert [layer.onnx_nodes for layer in convs] == [[CALL_NODES[0]], [CALL_NODES[1]]] * 2
    assert layers[0].compute is False  # the host shape call of the dynamic-shape engine
    build = build_of(layers)
    assert build.compute_layers == 4
    assert layer_type_histogram(layers, compute_only=True) == {"correlation": 2, "kgen": 2}
    assert layer_type_histogram(layers, profile=None) == {
        "correlation": 4, "kgen": 4, "shape_call": 1}


def test_synchronisation_markers_with_event_ids_and_streams():
    layers = parse_layer_report(captured("inceptionv3_head"))
    assert len(layers) == 14
    markers = [layer for layer in layers if not layer.compute]
    assert [(layer.type, layer.stream) for layer in markers] == [
        ("signal", 0), ("wait", 4), ("signal", 0), ("wait", 2)]
    assert all(layer.onnx_nodes == [] and layer.datatypes == [] for layer in markers)
    compute = [layer for layer in layers if layer.compute]
    assert layer_type_histogram(compute) == {"correlation": 6, "maxpool": 2, "avgpool": 1, "kgen": 1}
    assert compute[1].onnx_nodes == ["inception_v3_1/batch_normalization_1/batchnorm/mul",
                                     "inception_v3_1/activation_1/Relu"]
    assert {layer.stream for layer in compute} == {0}


def test_find_layer_report_picks_the_layers_message():
    message = captured("conv_relu")
    assert find_layer_report(["Building engine", message, "Engine size: 1"]) == message
    assert find_layer_report(["no layers here"]) is None


LINE = ("Name: {name}, LayerType: correlation, Inputs: [ {{ Name: {tensor}, Dimensions: [1,4], "
        "Datatype: Float, Format: (Linear) Row major linear format }}], Constants: [], Outputs: "
        "[ {{ Name: out, Dimensions: [1,4], Datatype: Half, Format: (Linear) Row major linear "
        "format }}, {{ Name: out2, Dimensions: [1,4], Datatype: Float, Format: (Linear) Row major "
        "linear format }}], TacticName: cask_0x1, StreamId: 1, Metadata: {metadata}")


def test_names_that_imitate_the_field_syntax():
    name = "evil, LayerType: gemm, x"
    tensor = "t], TacticName: x, StreamId: 0, Metadata: oops"
    metadata = "[ONNX Layer: a, b | c]\x1f[ONNX Layer: f(x) | call [2], y (Fn_k1)]"
    layer = parse_layer_line(LINE.format(name=name, tensor=tensor, metadata=metadata))
    assert layer.name == name
    assert layer.type == "correlation"
    assert layer.stream == 1
    assert layer.datatypes == ["Half", "Float"]
    # "a, b | c" has no "(Function)" tail: a plain node name that contains " | ".
    assert layer.onnx_nodes == ["a, b | c", "call [2], y"]


def test_metadata_without_separators_and_known_node_names():
    text = "[ONNX Layer: x | y | call (F)][ONNX Layer: plain (node)]"
    assert parse_metadata(text) == ["y | call", "plain (node)"]
    # The model's node names disambiguate a call node whose name contains " | ".
    assert parse_metadata(text, known_nodes={"y | call", "plain (node)"}) == ["y | call", "plain (node)"]
    assert parse_metadata(text, known_nodes={"call", "plain (node)"}) == ["call", "plain (node)"]
    assert parse_metadata("") == []


def test_newline_inside_a_name_continues_the_layer():
    line = LINE.format(name="two\nlines", tensor="t", metadata="[ONNX Layer: two\nlines]")
    layers = parse_layer_report("Layers:\n" + line + "\n\nI/O Tensors:\n Name: t")
    assert len(layers) == 1
    assert layers[0].name == "two\nlines" and layers[0].onnx_nodes == ["two\nlines"]


def test_malformed_lines_are_reported():
    with pytest.raises(ValueError, match="not an engine layer line"):
        parse_layer_report("Layers:\nSomething else entirely")
    with pytest.raises(ValueError, match="without TacticName"):
        parse_layer_report("Layers:\nName: a, LayerType: kgen, Inputs: [], Outputs: []")


def test_fp16_engine_gemm_from_conv1x1_lines_keep_every_layer():
    """FP16 engines mark 1x1 convolutions lowered to GEMMs with a note after the metadata."""
    report = read_layer_report(captured("resnet50_fp16"))
    assert report.problems == []
    assert len(report.layers) == 32
    noted = [(index, layer.type, layer.notes, layer.onnx_nodes)
             for index, layer in enumerate(report.layers) if layer.notes]
    assert noted[0] == (29, "gemm", ["__gemm_from_conv1x1"],
                        ["resnet50_1/conv4_block1_3_bn_1/batchnorm/mul_1"])
    # A fused conv call lowered to a GEMM still maps to its call node.
    assert noted[1][1:] == ("runtime_fusion", ["__gemm_from_conv1x1"],
                            ["resnet50_1/conv4_block2_1_bn_1/batchnorm/mul_1"])
    assert all(layer.onnx_nodes for layer in report.layers)
    assert precision_histogram(report.layers) == {"INT8": 0, "FP16": 32, "FP32": 0}
    # The input cast reads Float and Half (the weights it transposes): its narrowest type wins.
    assert report.layers[0].input_datatypes == ["Float", "Half"]
    assert report.layers[1].precision == "FP16"


def test_int8_engine_precisions():
    report = read_layer_report(captured("resnet50_int8"))
    assert report.problems == []
    convs = [layer for layer in report.layers if layer.type == "correlation"]
    assert len(convs) == 5
    assert all(layer.precision == "INT8" and layer.input_datatypes == ["Int8", "Float"]
               for layer in convs)
    # The quantizing reformats read Float and write Int8: FP32 layers.
    quantizers = [layer for layer in report.layers
                  if layer.type == "kgen" and layer.input_datatypes == ["Float"]]
    assert [layer.datatypes for layer in quantizers] == [["Int8"]] * 3
    assert all(layer.precision == "FP32" for layer in quantizers)
    assert precision_histogram(report.layers) == {"INT8": 7, "FP16": 0, "FP32": 3}
    build = build_of(report.layers)
    assert "by precision: INT8 7, FP16 0, FP32 3;" in format_engine_summary(build)
    assert build.to_dict(None)["compute_layer_precisions"] == {"INT8": 7, "FP16": 0, "FP32": 3}


def test_unreadable_line_keeps_the_rest_and_is_named():
    good = LINE.format(name="conv", tensor="x", metadata="[ONNX Layer: conv]")
    broken = "Name: odd, LayerType: gemm, Inputs: [ { Datatype: Int8, Format: x }], no tail here"
    unknown = "Something the builder added"
    report = read_layer_report("Layers:\n" + "\n".join([good, broken, good]) + "\n\nI/O Tensors:")
    assert [layer.name for layer in report.layers] == ["conv", "odd", "conv"]
    odd = report.layers[1]
    assert odd.onnx_nodes == [] and odd.compute and odd.precision == "INT8"
    assert len(report.problems) == 1
    assert report.problems[0].startswith("layer line 2 (kept without its ONNX nodes): engine layer "
                                         "line without TacticName")
    build = build_of(report.layers)
    build.layer_report_problems = report.problems
    assert build.compute_layers == 3
    assert "1 layer line(s) not fully read (first: layer line 2" in format_engine_summary(build)
    # A line that does not even start a layer is skipped and named; a following layer is read.
    report = read_layer_report(f"Layers:\n{unknown}\n{good}")
    assert [layer.name for layer in report.layers] == ["conv"]
    assert report.problems == [f"layer line 1 (skipped): not an engine layer line: {unknown!r}"]


def test_metadata_notes_do_not_hide_tensor_names_that_imitate_fields():
    metadata = "[ONNX Layer: a]__gemm_from_conv1x1"
    tensor = "t], TacticName: x, StreamId: 0, Metadata: __note, more"
    layer = parse_layer_line(LINE.format(name="n", tensor=tensor, metadata=metadata))
    assert layer.onnx_nodes == ["a"] and layer.notes == ["__gemm_from_conv1x1"]
    assert layer.stream == 1


def test_text_report_and_json():
    layers = parse_layer_report(captured("inceptionv3_head"))
    build = build_of(layers)
    text = format_engine_layers(build)
    lines = text.splitlines()
    assert lines[0].split() == ["#", "type", "precision", "datatypes", "onnx", "nodes"]
    assert len(lines) == 1 + 10 + 1  # header, ten compute layers, summary
    assert "inception_v3_1/max_pooling2d_1/MaxPool2d" in text
    assert lines[-1] == format_engine_summary(build) == (
        "10 engine compute layers (correlation 6, maxpool 2, avgpool 1, kgen 1); "
        "by precision: INT8 0, FP16 0, FP32 10; 4 synchronisation/shape markers (signal 2, wait 2)")
    assert len(format_engine_layers(build, include_markers=True).splitlines()) == 1 + 14 + 1
    short = format_engine_layers(build, max_rows=3).splitlines()
    assert short[-2] == "   ... 7 more layers"
    record = build.to_dict("model.plan")
    assert record["path"] == "model.plan" and record["compute_layers"] == 10
    assert record["plan_bytes"] == 4 and len(record["layers"]) == 14
    assert record["layers"][0] == {"name": "entry^bb^signal^4_myl0_0", "type": "signal",
                                   "onnx_nodes": [], "datatypes": [], "input_datatypes": [],
                                   "precision": "other", "compute": False, "profile": 0,
                                   "stream": 0}
    assert record["compute_layer_precisions"] == {"INT8": 0, "FP16": 0, "FP32": 10}
    assert record["layer_report_problems"] == []


def test_summary_of_a_build_without_layer_report():
    assert "reported no layer information" in format_engine_layers(build_of([]))
    assert build_of([]).compute_layers == 0
