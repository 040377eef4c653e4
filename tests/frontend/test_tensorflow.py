"""The TensorFlow frontend: every fixture in every format lowers to ONNX that matches TensorFlow.

Fixtures are built once per session by fixtures/make_keras_fixtures.py, in a separate process (so the
custom-object fixture's class is not registered in this one). Most lowerings run in-process
(``isolate=False``) to keep the suite fast; the worker-process path has its own tests.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.helpers import REPO
from trtcompile.errors import InputError
from trtcompile.frontend import FrontendOptions, load_model
from trtcompile.frontend import tensorflow as tf_frontend

MODELS = ["conv_bn_relu", "inception_block", "residual_block", "mlp_sequential", "two_input", "multi_output"]
FORMATS = ["savedmodel", "model.keras", "model.h5", "frozen.pb"]
ATOL = 1e-4


@pytest.fixture(scope="session")
def fixtures_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tf_fixtures")
    subprocess.run([sys.executable, str(REPO / "fixtures" / "make_keras_fixtures.py"), str(out)],
                   check=True, capture_output=True)
    return out


@pytest.fixture(scope="session")
def manifest(fixtures_dir) -> dict:
    return json.loads((fixtures_dir / "manifest.json").read_text())


def lower(path: Path, isolate: bool = False, **options):
    return tf_frontend.load(path, FrontendOptions(**options), isolate=isolate)


def options_for(manifest: dict, name: str, fmt: str) -> dict:
    return {"outputs": manifest[name]["frozen_outputs"]} if fmt == "frozen.pb" else {}


def io_shapes(values) -> dict[str, list]:
    return {v.name: [d.dim_value if d.HasField("dim_value") else d.dim_param
                     for d in v.type.tensor_type.shape.dim] for v in values}


def random_feeds(model: onnx.ModelProto, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal([d if isinstance(d, int) and d > 0 else batch for d in shape])
            .astype(np.float32) for name, shape in io_shapes(model.graph.input).items()}


def assert_matches_tensorflow(loaded, feeds=None) -> dict[str, np.ndarray]:
    feeds = feeds or random_feeds(loaded.model)
    session = ort.InferenceSession(loaded.model.SerializeToString(), providers=["CPUExecutionProvider"])
    onnx_outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    reference = loaded.reference(feeds)
    assert set(reference) == set(onnx_outputs)
    for name, expected in reference.items():
        np.testing.assert_allclose(onnx_outputs[name], expected, atol=ATOL, rtol=1e-4, err_msg=name)
    return onnx_outputs


# --------------------------------------------------------------------------------------------
# Every fixture, every format
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", MODELS)
def test_fixture_lowers_and_matches_tensorflow(fixtures_dir, manifest, name, fmt):
    loaded = lower(fixtures_dir / name / fmt, **options_for(manifest, name, fmt))
    onnx.checker.check_model(loaded.model)
    entry = manifest[name]
    # Input names and shapes come from the model; the unknown batch stays symbolic.
    inputs = io_shapes(loaded.model.graph.input)
    assert list(inputs) == list(entry["inputs"])
    for input_name, shape in entry["inputs"].items():
        assert isinstance(inputs[input_name][0], str) and inputs[input_name][0]
        assert inputs[input_name][1:] == shape[1:]
    expected_outputs = {
        "savedmodel": entry["savedmodel_outputs"],
        "frozen.pb": [t.removesuffix(":0") for t in entry["frozen_outputs"]],
    }.get(fmt, entry["keras_outputs"])
    assert [o.name for o in loaded.model.graph.output] == expected_outputs
    assert loaded.kind == {"savedmodel": "savedmodel", "model.keras": "keras", "model.h5": "h5",
                           "frozen.pb": "frozen-pb"}[fmt]
    assert loaded.reference_name == "tensorflow"
    assert_matches_tensorflow(loaded)


def test_formats_lower_to_the_same_graph_structure(fixtures_dir, manifest):
    histograms = {fmt: Counter(n.op_type for n in lower(fixtures_dir / "inception_block" / fmt,
                                                         **options_for(manifest, "inception_block", fmt))
                               .model.graph.node) for fmt in FORMATS}
    assert all(h == histograms["savedmodel"] for h in histograms.values()), histograms
    # Faithful lowering: 6 convs, each wrapped by tf2onnx's NHWC<->NCHW layout transposes.
    assert histograms["savedmodel"]["Conv"] == 6
    assert histograms["savedmodel"]["Concat"] == 1
    assert histograms["savedmodel"]["Transpose"] >= 10


def test_lowering_record_fields(fixtures_dir):
    import tf2onnx

    loaded = lower(fixtures_dir / "residual_block" / "savedmodel")
    record = loaded.lowering
    assert record.tool == f"tf2onnx {tf2onnx.__version__}"
    assert record.mode == "faithful"
    assert record.source_kind == "savedmodel"
    assert record.onnx_nodes == len(loaded.model.graph.node)
    assert record.seconds > 0
    assert record.peak_rss_mb and record.peak_rss_mb > 100
    # source_ops: operations of the frozen graph (Const/Identity/NoOp/Placeholder not counted). The
    # block has 4 convolutions, 2 batch norms, add, relus, pool, dense: well above 10.
    assert 10 <= record.source_ops <= 60
    assert set(record.to_dict()) == {"tool", "mode", "source_kind", "source_ops", "onnx_nodes",
                                     "seconds", "peak_rss_mb", "note", "cleaned", "tables"}
    assert record.note == "" and record.tables == 0


def test_tf2onnx_optimized_mode_removes_layout_transposes(fixtures_dir):
    faithful = lower(fixtures_dir / "inception_block" / "savedmodel")
    optimized = lower(fixtures_dir / "inception_block" / "savedmodel", lowering="tf2onnx-optimized")
    assert optimized.lowering.mode == "tf2onnx-optimized"
    transposes = lambda m: sum(n.op_type == "Transpose" for n in m.graph.node)  # noqa: E731
    assert transposes(optimized.model) < transposes(faithful.model)
    assert optimized.lowering.onnx_nodes < faithful.lowering.onnx_nodes
    assert_matches_tensorflow(optimized)


# --------------------------------------------------------------------------------------------
# Options: signature, input shapes, NCHW inputs, opset
# --------------------------------------------------------------------------------------------


def test_signature_selection(fixtures_dir):
    default = lower(fixtures_dir / "multi_signature")
    embedding = lower(fixtures_dir / "multi_signature", signature="embedding")
    assert [o.name for o in default.model.graph.output] == ["logits"]
    assert [o.name for o in embedding.model.graph.output] == ["embedding"]
    assert io_shapes(embedding.model.graph.output)["embedding"][1] == 6
    assert_matches_tensorflow(default)
    assert_matches_tensorflow(embedding)


def test_input_shape_override_fixes_the_batch(fixtures_dir):
    loaded = lower(fixtures_dir / "two_input" / "model.keras", input_shapes={"image": [3, 10, 10, 3]})
    shapes = io_shapes(loaded.model.graph.input)
    assert shapes["image"] == [3, 10, 10, 3]
    assert isinstance(shapes["meta"][0], str)  # not overridden: still dynamic
    assert_matches_tensorflow(loaded, random_feeds(loaded.model, batch=3))


def test_inputs_as_nchw(fixtures_dir):
    loaded = lower(fixtures_dir / "conv_bn_relu" / "savedmodel", inputs_as_nchw=["image"],
                   input_shapes={"image": [2, 16, 16, 3]})
    assert io_shapes(loaded.model.graph.input)["image"] == [2, 3, 16, 16]
    nchw = random_feeds(loaded.model)
    outputs = assert_matches_tensorflow(loaded, nchw)  # the reference transposes back to NHWC
    nhwc = lower(fixtures_dir / "conv_bn_relu" / "savedmodel")
    expected = nhwc.reference({"image": np.transpose(nchw["image"], (0, 2, 3, 1))})
    np.testing.assert_allclose(outputs["output_0"], expected["output_0"], atol=ATOL)


def test_opset_option(fixtures_dir):
    loaded = lower(fixtures_dir / "mlp_sequential" / "model.keras", opset=13)
    assert {o.domain: o.version for o in loaded.model.opset_import}[""] == 13
    assert_matches_tensorflow(loaded)


def test_multi_input_and_multi_output_names(fixtures_dir):
    two = lower(fixtures_dir / "two_input" / "model.keras")
    assert [i.name for i in two.model.graph.input] == ["image", "meta"]
    many = lower(fixtures_dir / "multi_output" / "model.keras")
    assert [o.name for o in many.model.graph.output] == ["logits", "embedding"]
    assert [io_shapes(many.model.graph.output)[n][1] for n in ("logits", "embedding")] == [4, 6]


def test_keras_example_lowers(tmp_path):
    from trtcompile.frontend.keras_example import example_savedmodel

    path = example_savedmodel(tmp_path)
    loaded = lower(path)
    ops = Counter(n.op_type for n in loaded.model.graph.node)
    # stem conv + 2 x 6 inception convs + 2 residual convs; two concats; one residual Add kept.
    assert ops["Conv"] == 15 and ops["Concat"] == 2 and ops["MaxPool"] == 3
    assert io_shapes(loaded.model.graph.input)["image"][1:] == [64, 64, 3]
    outputs = assert_matches_tensorflow(loaded)
    np.testing.assert_allclose(outputs["output_0"].sum(axis=1), 1.0, atol=1e-5)


# --------------------------------------------------------------------------------------------
# The worker process, lazy TensorFlow
# --------------------------------------------------------------------------------------------


def test_worker_process_lowering_equals_in_process(fixtures_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    isolated = lower(fixtures_dir / "multi_output" / "savedmodel", isolate=True)
    in_process = lower(fixtures_dir / "multi_output" / "savedmodel")
    # Same graph (tf2onnx's generated names carry process-wide counters, so compare structure).
    assert [n.op_type for n in isolated.model.graph.node] == [n.op_type for n in in_process.model.graph.node]
    assert ([i.name for i in isolated.model.graph.input], [o.name for o in isolated.model.graph.output]) == \
        ([i.name for i in in_process.model.graph.input], [o.name for o in in_process.model.graph.output])
    assert isolated.lowering.source_ops == in_process.lowering.source_ops
    assert isolated.lowering.peak_rss_mb > 100
    assert_matches_tensorflow(isolated)
    assert list(tmp_path.iterdir()) == []  # the worker's folder is gone


def test_worker_process_reports_bad_input(fixtures_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    with pytest.raises(InputError, match=r"TensorFlow op Lgamma \(node '[^']*log_gamma'\)"):
        load_model(fixtures_dir / "unsupported_op")
    assert list(tmp_path.iterdir()) == []


def test_importing_the_frontend_does_not_import_tensorflow():
    code = ("import sys, trtcompile.frontend, trtcompile.frontend.tensorflow, "
            "trtcompile.frontend.keras_example; assert 'tensorflow' not in sys.modules, 'tf imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------
# Bad input: one line, InputError, nothing written
# --------------------------------------------------------------------------------------------


def one_line_input_error(call, pattern: str) -> str:
    with pytest.raises(InputError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    assert caught.value.exit_code == 2
    assert re.search(pattern, message), message
    return message


def test_folder_that_is_not_a_savedmodel(tmp_path):
    (tmp_path / "variables").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    one_line_input_error(lambda: load_model(tmp_path), r"is a folder but not a TensorFlow SavedModel")
    one_line_input_error(lambda: tf_frontend.load(tmp_path), r"not a TensorFlow SavedModel")


def test_corrupt_savedmodel(tmp_path):
    (tmp_path / "saved_model.pb").write_bytes(b"not a protobuf at all")
    one_line_input_error(lambda: lower(tmp_path), r"cannot load SavedModel")


def test_missing_signature_lists_the_available_ones(fixtures_dir):
    one_line_input_error(lambda: lower(fixtures_dir / "multi_signature", signature="nope"),
                         r"no signature 'nope' \(available: embedding, serving_default\)")


def test_keras_custom_object_cannot_be_loaded(fixtures_dir):
    one_line_input_error(lambda: lower(fixtures_dir / "custom_object.keras"),
                         r"custom object 'fixture_private>ScaledDense'|custom object '.*ScaledDense'")


def test_keras_safe_mode_refuses_python_code(fixtures_dir):
    one_line_input_error(lambda: lower(fixtures_dir / "lambda_layer.keras"), r"safe mode refuses")


def test_frozen_graph_without_outputs(fixtures_dir):
    one_line_input_error(lambda: lower(fixtures_dir / "conv_bn_relu" / "frozen.pb"), r"needs --outputs")


def test_frozen_graph_with_unknown_output(fixtures_dir):
    one_line_input_error(lambda: lower(fixtures_dir / "conv_bn_relu" / "frozen.pb", outputs=["nope:0"]),
                         r"output 'nope:0' is not a node .* \(graph outputs look like: Identity:0\)")


def test_savedmodel_graph_passed_as_frozen_graph(fixtures_dir):
    one_line_input_error(lambda: lower(fixtures_dir / "conv_bn_relu" / "savedmodel" / "saved_model.pb",
                                       outputs=["x:0"]), r"graph of a SavedModel: pass its folder")


def test_not_a_graphdef(tmp_path):
    bad = tmp_path / "garbage.pb"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    one_line_input_error(lambda: lower(bad, outputs=["y:0"]), r"not a frozen TensorFlow GraphDef")


@pytest.mark.parametrize("source", ["unsupported_op", "unsupported_op.pb"])
def test_unsupported_tensorflow_op_names_op_and_node(fixtures_dir, manifest, source):
    options = {"outputs": manifest["unsupported_op"]["frozen_outputs"]} if source.endswith(".pb") else {}
    one_line_input_error(lambda: lower(fixtures_dir / source, **options),
                         r"TensorFlow op Lgamma \(node '([^']*/)?log_gamma'\) has no ONNX lowering")


@pytest.mark.parametrize("options, pattern", [
    ({"inputs_as_nchw": ["nope"]}, r"--inputs-as-nchw names 'nope', which is not an input \(inputs: image\)"),
    ({"input_shapes": {"nope": [1, 16, 16, 3]}}, r"--input-shape names 'nope'"),
    ({"input_shapes": {"image": [1, 16, 15, 3]}}, r"conflicts with the model's \[\?,16,16,3\] "
     r".*; --input-shape takes the TensorFlow model's NHWC layout$"),
    # The NCHW form of the shape, with --inputs-as-nchw: the error names the layout and the
    # NHWC shape meant.
    ({"input_shapes": {"image": [2, 3, 16, 16]}, "inputs_as_nchw": ["image"]},
     r"--input-shape image=\[2,3,16,16\] conflicts with the model's \[\?,16,16,3\] .*; "
     r"--input-shape takes the TensorFlow model's NHWC layout, also with --inputs-as-nchw "
     r"image: image:2x16x16x3$"),
    ({"input_shapes": {"image": [1, 16, 16]}}, r"rank 3 does not match"),
    ({"opset": 7}, r"--opset 7 is not supported \(use 13 to 18\)"),
    ({"lowering": "fast"}, r"--lowering must be 'faithful' or 'tf2onnx-optimized'"),
])
def test_bad_options(fixtures_dir, options, pattern):
    one_line_input_error(lambda: lower(fixtures_dir / "conv_bn_relu" / "savedmodel", **options), pattern)


def test_nchw_on_a_vector_input_is_refused(fixtures_dir):
    one_line_input_error(lambda: lower(fixtures_dir / "mlp_sequential" / "model.keras", inputs_as_nchw=["vector"]),
                         r"not a 4-D NHWC image")


# --------------------------------------------------------------------------------------------
# A full-size Keras application
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_mobilenet_v2_lowers_and_matches_tensorflow(tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    path = tmp_path / "mobilenet_v2.keras"
    keras.applications.MobileNetV2(weights=None).save(path)
    loaded = lower(path, isolate=True)
    ops = Counter(n.op_type for n in loaded.model.graph.node)
    assert ops["Conv"] == 52  # 35 pointwise/standard + 17 depthwise (group) convolutions
    assert io_shapes(loaded.model.graph.input)["input_layer"][1:] == [224, 224, 3]
    assert_matches_tensorflow(loaded, random_feeds(loaded.model, batch=1))
