"""INT8 judged in distribution: parity runs on the calibration samples the user gave (held out
from calibration when there are enough), or within the calibrated ranges of a cache; generated
standard-normal inputs only when there is neither (trtcompile.flow.judging)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtcompile import calibration
from trtcompile.cli import main
from trtcompile.flow import CompileOptions, compile_model, judging, parity
from trtcompile.flow.compilation import Compilation


def _digits_cnn(seed: int = 0) -> onnx.ModelProto:
    """Conv-ReLU x2, global pooling, a 10-way MatMul: a classifier of 8x8 images in [0, 1]."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def conv(x: str, cin: int, cout: int, name: str) -> str:
        w = (rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2 / (cin * 9))).astype(np.float32)
        b = (rng.standard_normal(cout) * 0.1).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(b, f"{name}_b")])
        nodes.append(helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [name], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [name], [f"{name}_relu"]))
        return f"{name}_relu"

    x = conv(conv("image", 1, 16, "c1"), 16, 32, "c2")
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"]))
    inits.append(numpy_helper.from_array((rng.standard_normal((32, 10)) * 0.3).astype(np.float32), "fc"))
    nodes.append(helper.make_node("MatMul", ["flat", "fc"], ["logits"]))
    graph = helper.make_graph(
        nodes, "digits_cnn", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def _digits(count: int) -> np.ndarray:
    """The first ``count`` of scikit-learn's 8x8 digits, scaled to [0, 1], NCHW."""
    from sklearn.datasets import load_digits

    return (load_digits().images[:count] / 16.0).astype(np.float32)[:, None]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "digits.onnx"
    onnx.save(_digits_cnn(), path)
    return path


def _options(calib: Path | None, **kwargs) -> CompileOptions:
    return CompileOptions(precision="int8", calib_data=str(calib) if calib else None,
                          engine=False, progress=False, **kwargs)


def test_int8_parity_runs_on_the_held_out_samples(model_path, tmp_path) -> None:
    calib = tmp_path / "calib.npy"
    np.save(calib, _digits(200))
    compilation = Compilation(model_path, _options(calib))
    compilation.load()
    compilation.optimize()
    verdict = compilation.check_parity()
    assert verdict.passed and compilation.error is None
    assert compilation.parity_inputs["kind"] == "held-out calibration samples"
    assert compilation.parity_inputs["samples"] == 40  # the last 20% of 200
    assert compilation.parity_inputs["seen_by_calibration"] is False
    assert compilation.parity_inputs["source"].endswith("(held-out samples 160-199)")
    # The same optimized model on generated standard-normal inputs: negative pixels and values
    # far outside the calibrated [0, 1] clip, as INT8 does by design; that check fails.
    generated = parity.check_parity_at_shapes(compilation.loaded, compilation.optimized,
                                              compilation.options, compilation.plan)
    assert not generated.passed


def test_samples_are_compared_in_batches_at_every_profile_shape(model_path, tmp_path) -> None:
    calib = tmp_path / "calib.npy"
    np.save(calib, _digits(200))
    out = tmp_path / "out"
    assert main(["compile", str(model_path), "-o", str(out), "--precision", "int8",
                 "--calib-data", str(calib), "--no-engine", "-q"]) == 0
    tolerances = json.loads((out / "report.json").read_text())["parity"]["tolerances"]
    assert tolerances["inputs"]["kind"] == "held-out calibration samples"
    assert tolerances["top1_agreement"]["outputs"]["logits"]["samples"] == 40
    # The tolerance says what it is relative to.
    assert "against the FP32 input model on the same inputs" in tolerances["note"]
    assert "0.1 x max|fp32 output|" in tolerances["note"]


def test_few_samples_calibrate_and_judge_saying_so(model_path, tmp_path, capsys) -> None:
    calib = tmp_path / "few.npy"
    np.save(calib, _digits(12))
    out = tmp_path / "out"
    assert main(["compile", str(model_path), "-o", str(out), "--precision", "int8",
                 "--calib-data", str(calib), "--no-engine"]) == 0
    printed = capsys.readouterr().out
    assert "inputs: all 12 calibration samples (too few to hold some out: calibration saw them too)" in printed
    report = json.loads((out / "report.json").read_text())
    inputs = report["parity"]["tolerances"]["inputs"]
    assert inputs["kind"] == "calibration samples" and inputs["seen_by_calibration"] is True
    assert "top1_agreement" not in report["parity"]["tolerances"]  # nothing held out to judge by


def test_a_cache_alone_draws_inputs_within_the_calibrated_ranges(model_path, tmp_path) -> None:
    calib, cache = tmp_path / "calib.npy", tmp_path / "ranges.json"
    np.save(calib, _digits(200))
    first = compile_model(model_path, tmp_path / "first", _options(calib, calib_cache=str(cache)))
    assert first.exit_code == 0 and cache.is_file()
    amax = calibration.CalibrationCache.load(cache).ranges["image"]
    second = compile_model(model_path, tmp_path / "second", _options(None, calib_cache=str(cache)))
    assert second.exit_code == 0, second.error
    inputs = json.loads((tmp_path / "second" / "report.json").read_text())["parity"]["tolerances"]["inputs"]
    assert inputs["kind"] == "calibrated ranges"
    assert inputs["ranges"] == {"image": [-amax, amax]}
    assert "from the calibration cache" in inputs["floating_point"]


def test_user_data_range_wins_over_the_cache(model_path, tmp_path) -> None:
    calib, cache = tmp_path / "calib.npy", tmp_path / "ranges.json"
    np.save(calib, _digits(200))
    assert compile_model(model_path, tmp_path / "a", _options(calib, calib_cache=str(cache))).exit_code == 0
    result = compile_model(model_path, tmp_path / "b",
                           _options(None, calib_cache=str(cache), data_range=(0.0, 1.0)))
    inputs = json.loads((tmp_path / "b" / "report.json").read_text())["parity"]["tolerances"]["inputs"]
    assert result.exit_code == 0
    assert inputs["floating_point"] == "uniform [0, 1)" and "kind" not in inputs


def test_fp32_compiles_keep_generated_inputs(model_path, tmp_path) -> None:
    result = compile_model(model_path, tmp_path / "out", CompileOptions(engine=False, progress=False))
    inputs = json.loads((tmp_path / "out" / "report.json").read_text())["parity"]["tolerances"]["inputs"]
    assert result.exit_code == 0 and inputs["floating_point"] == "standard normal"


# ---------------------------------------------------------------------------------------------
# ParitySamples and the range helpers
# ---------------------------------------------------------------------------------------------


def _samples(count: int, held_out: bool = True) -> judging.ParitySamples:
    arrays = {"image": np.arange(count * 4, dtype=np.float32).reshape(count, 1, 2, 2)}
    return judging.ParitySamples(calibration.CalibrationData(arrays, source="s.npy"), held_out)


def test_batches_take_each_shape_sets_batch_size_up_to_the_limit() -> None:
    batches = _samples(10).batches({"image": (3, 1, 2, 2)}, limit=8)
    assert [b["image"].shape[0] for b in batches] == [3, 3, 3]
    firsts = [int(b["image"][0, 0, 0, 0]) // 4 for b in batches]
    assert firsts == [0, 3, 6]


def test_a_batch_larger_than_the_samples_repeats_them() -> None:
    (batch,) = _samples(3).batches({"image": (5, 1, 2, 2)})
    assert [int(v) // 4 for v in batch["image"][:, 0, 0, 0]] == [0, 1, 2, 0, 1]


def test_samples_of_other_dimensions_do_not_fit() -> None:
    assert _samples(4).batches({"image": (1, 1, 4, 4)}) is None
    assert _samples(4).batches({"other": (1, 1, 2, 2)}) is None


def test_without_shapes_one_batch_holds_up_to_the_limit() -> None:
    (batch,) = _samples(50).batches(None)
    assert batch["image"].shape[0] == judging.PARITY_SAMPLES


def test_samples_say_whether_calibration_saw_them() -> None:
    assert _samples(8, held_out=True).to_dict()["seen_by_calibration"] is False
    assert "never seen by calibration" in _samples(8, held_out=True).describe()
    assert "calibration saw them too" in _samples(8, held_out=False).describe()
    assert _samples(2).ranges() == {"image": (0.0, 7.0)}


def test_within_ranges_redraws_floats_only_inside_their_range() -> None:
    feeds = {"x": np.full((100,), 50.0, np.float32), "ids": np.arange(4), "y": np.zeros(3, np.float32)}
    drawn = judging.within_ranges(feeds, {"x": (-2.0, 3.0), "ids": (0.0, 1.0)}, seed=1)
    assert drawn["x"].dtype == np.float32 and drawn["x"].min() >= -2.0 and drawn["x"].max() < 3.0
    assert len(np.unique(drawn["x"])) > 50
    np.testing.assert_array_equal(drawn["ids"], np.arange(4))  # integers keep their values
    np.testing.assert_array_equal(drawn["y"], feeds["y"])  # no range given: unchanged


def test_cached_ranges_follow_layout_ops_to_the_quantized_tensor(tmp_path) -> None:
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Relu", ["t"], ["y"]),
             helper.make_node("Relu", ["z"], ["w"])]
    graph = helper.make_graph(nodes, "g", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 2, 3]),
        helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, None)])
    model = helper.make_model(graph)
    cache = calibration.CalibrationCache(method="minmax", model_fingerprint="f", ranges={"t": 2.5})
    path = cache.save(tmp_path / "c.json")
    resources = {"quantize-int8": calibration.Calibration(data=None, cache_path=path)}
    assert judging.cached_input_ranges(model, resources) == {"x": 2.5}  # z has no range
    with_data = {"quantize-int8": calibration.Calibration(data=_samples(2).data, cache_path=path)}
    assert judging.cached_input_ranges(model, with_data) == {}  # samples decide then
    assert judging.parity_samples(with_data).held_out is False
    assert judging.parity_samples({}) is None
