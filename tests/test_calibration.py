"""Calibration: range methods, the running histogram, data loading and its errors, the cache."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper
import pytest

from trtcompile import calibration, ir
from trtcompile.calibration import (AbsHistogram, Calibration, CalibrationCache, CalibrationData,
                                    collect_ranges, entropy_amax, load_calibration_data,
                                    model_fingerprint, parity_tolerances, percentile_amax,
                                    precision_tolerances,
                                    resolve_ranges)
from trtcompile.errors import EXIT_BAD_INPUT, InputError


def two_input_model(batch: int | str = "N") -> onnx.ModelProto:
    """y = Relu(a) + b, observing ``a``, ``b`` and ``r``."""
    nodes = [oh.make_node("Relu", ["a"], ["r"]), oh.make_node("Add", ["r", "b"], ["y"])]
    graph = oh.make_graph(nodes, "g",
                          [oh.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [batch, 4]),
                           oh.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [batch, 4])],
                          [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [batch, 4])])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = ir.IR_VERSION
    return model


def one_input_model() -> onnx.ModelProto:
    graph = oh.make_graph([oh.make_node("Relu", ["x"], ["y"])], "g",
                          [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 2])],
                          [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 3, 2])])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = ir.IR_VERSION
    return model


def feeds(count: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"a": rng.normal(0, 2, (count, 4)).astype(np.float32),
            "b": rng.laplace(0, 1, (count, 4)).astype(np.float32)}


# Range methods --------------------------------------------------------------------------------


def test_minmax_is_the_exact_max_abs_over_all_batches():
    data = feeds()
    data["a"][37, 2] = -11.5  # in the last batch, negative: ranges are symmetric
    ranges = collect_ranges(two_input_model(), ["a", "b", "r"], CalibrationData(data),
                            method="minmax", batch_size=8, progress=False)
    assert ranges["a"] == 11.5
    assert ranges["b"] == float(np.abs(data["b"]).max())
    assert ranges["r"] == float(np.maximum(data["a"], 0).max())


def test_histogram_grows_without_losing_counts():
    histogram = AbsHistogram(2048)
    rng = np.random.default_rng(0)
    batches = [rng.normal(0, scale, 1000) for scale in (0.1, 1.0, 50.0, 0.5)]
    for batch in batches:
        histogram.add(batch)
    values = np.abs(np.concatenate(batches))
    assert histogram.counts.sum() + histogram.zeros == values.size
    assert histogram.amax == pytest.approx(values.max())
    assert histogram.upper >= histogram.amax
    # Each count sits in the bin its value falls in (up to float32 rounding at bin edges).
    expected, _ = np.histogram(values, bins=2048, range=(0, histogram.upper))
    assert np.abs(expected - histogram.counts).sum() <= 4


def test_histogram_counts_zeros_apart():
    histogram = AbsHistogram(256)
    histogram.add(np.array([0.0, 0.0, 0.0, 1.0, -2.0]))
    assert histogram.zeros == 3 and histogram.counts.sum() == 2


def test_entropy_clips_heavy_tails_below_the_max():
    rng = np.random.default_rng(0)
    values = rng.standard_t(df=2, size=200_000)  # heavy tails: a few huge outliers
    histogram = AbsHistogram()
    histogram.add(values)
    threshold = entropy_amax(histogram.counts, histogram.bin_width)
    assert threshold < 0.5 * histogram.amax
    assert threshold > np.percentile(np.abs(values), 99)  # clips outliers, not the bulk


def test_entropy_keeps_the_range_of_a_uniform_distribution():
    values = np.random.default_rng(1).uniform(-3, 3, 200_000)
    histogram = AbsHistogram()
    histogram.add(values)
    threshold = entropy_amax(histogram.counts, histogram.bin_width)
    assert threshold == pytest.approx(3.0, rel=0.02)


def test_entropy_keeps_the_range_of_discrete_data():
    levels = np.random.default_rng(3).integers(0, 17, 100_000) / 16.0  # 4-bit pixel intensities
    histogram = AbsHistogram()
    histogram.add(levels)
    assert entropy_amax(histogram.counts, histogram.bin_width) == pytest.approx(1.0, rel=1e-3)


def test_entropy_keeps_the_range_of_data_bounded_away_from_zero():
    # A pooled positive feature: no mass near zero. A threshold just above the smallest value
    # would fold every sample into one bin, which the search must not mistake for a perfect match.
    values = np.random.default_rng(4).normal(1.1, 0.25, 512).clip(0.4, None)
    histogram = AbsHistogram()
    histogram.add(values)
    threshold = entropy_amax(histogram.counts, histogram.bin_width)
    assert threshold > np.percentile(values, 99)


def test_entropy_of_a_narrow_histogram_is_its_extent():
    counts = np.zeros(2048)
    counts[:100] = 5
    assert entropy_amax(counts, 0.01) == pytest.approx(1.0)


def test_percentile_matches_numpy_within_a_bin():
    values = np.random.default_rng(2).laplace(0, 1, 300_000)
    histogram = AbsHistogram()
    histogram.add(values)
    for percentile in (50.0, 99.0, 99.99):
        estimate = percentile_amax(histogram.counts, histogram.bin_width, percentile)
        assert estimate == pytest.approx(np.percentile(np.abs(values), percentile),
                                         abs=histogram.bin_width)


def test_collect_ranges_orders_methods_on_heavy_tails():
    data = feeds(count=400)
    model = two_input_model()
    ranges = {method: collect_ranges(model, ["b"], CalibrationData(data), method=method,
                                     percentile=99.0, progress=False)["b"]
              for method in ("minmax", "entropy", "percentile")}
    assert ranges["percentile"] < ranges["minmax"]
    assert ranges["entropy"] < ranges["minmax"]


def test_unknown_method_is_an_input_error():
    with pytest.raises(InputError, match="unknown calibration method 'kl': use entropy, minmax, percentile"):
        calibration.check_method("kl")
    with pytest.raises(InputError, match=r"percentile must be in \(0, 100\]"):
        calibration.check_method("percentile", 120.0)


# Data loading ----------------------------------------------------------------------------------


def test_npz_npy_and_folder_load(tmp_path):
    data = feeds()
    np.savez(tmp_path / "calib.npz", **data)
    loaded = load_calibration_data(tmp_path / "calib.npz", two_input_model())
    assert loaded.num_samples == 40 and np.array_equal(loaded.arrays["b"], data["b"])

    single = np.random.default_rng(0).normal(size=(20, 3, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", single)
    assert load_calibration_data(tmp_path / "x.npy", one_input_model()).num_samples == 20

    folder = tmp_path / "parts"
    folder.mkdir()
    np.savez(folder / "part0.npz", **{k: v[:25] for k, v in data.items()})
    np.savez(folder / "part1.npz", **{k: v[25:] for k, v in data.items()})
    (folder / "notes.txt").write_text("ignored")
    loaded = load_calibration_data(folder, two_input_model())
    assert loaded.num_samples == 40 and np.array_equal(loaded.arrays["a"], data["a"])


def test_batches_follow_a_fixed_batch_size_and_drop_the_remainder():
    data = CalibrationData(feeds(count=21))
    specs = calibration.model_input_specs(two_input_model(batch=4))
    size = data.batch_size(specs)
    assert size == 4
    batches = list(data.batches(size))
    assert len(batches) == 5 and all(b["a"].shape == (4, 4) for b in batches)
    assert len(list(data.batches(size, max_batches=2))) == 2


def _bad(tmp_path, name, writer):
    path = tmp_path / name
    writer(path)
    return path


@pytest.mark.parametrize("case, message", [
    ("missing", "does not match the model inputs (missing b); the model's inputs are: a, b"),
    ("unknown", "does not match the model inputs (unknown c); the model's inputs are: a, b"),
    ("dtype", "'a' is float64 but the model input is float32; save it as float32"),
    ("shape", "'a' has shape [40, 5] but the model input is [?,4] (axis 1: 5 != 4)"),
    ("rank", "'a' has shape [40] but the model input has rank 2 [?,4]"),
    ("counts", "inputs have different sample counts (a: 40, b: 39)"),
    ("none", "has 0 samples; calibration needs at least 1"),
    ("nan", "'b' contains NaN or infinite values"),
    ("empty", "is empty"),
    ("garbage", "is not a NumPy .npz/.npy file"),
    ("no-arrays", "holds no arrays"),
    ("npy-multi", "is a single .npy array but the model has several inputs"),
])
def test_bad_calibration_data_is_one_clear_line(tmp_path, case, message):
    data = feeds()
    path = tmp_path / "calib.npz"
    if case == "missing":
        np.savez(path, a=data["a"])
    elif case == "unknown":
        np.savez(path, c=data["a"], **data)
    elif case == "dtype":
        np.savez(path, a=data["a"].astype(np.float64), b=data["b"])
    elif case == "shape":
        np.savez(path, a=np.zeros((40, 5), np.float32), b=data["b"])
    elif case == "rank":
        np.savez(path, a=np.zeros(40, np.float32), b=data["b"])
    elif case == "counts":
        np.savez(path, a=data["a"], b=data["b"][:39])
    elif case == "none":
        np.savez(path, a=data["a"][:0], b=data["b"][:0])
    elif case == "nan":
        data["b"][3, 1] = np.nan
        np.savez(path, **data)
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "garbage":
        path.write_bytes(b"not numpy at all")
    elif case == "no-arrays":
        np.savez(path)
    elif case == "npy-multi":
        path = tmp_path / "calib.npy"
        np.save(path, data["a"])
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(InputError) as caught:
        load_calibration_data(path, two_input_model())
    text = str(caught.value)
    assert message in text and "\n" not in text
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_missing_file_and_empty_folder(tmp_path):
    with pytest.raises(InputError, match="calibration data not found"):
        load_calibration_data(tmp_path / "nope.npz", two_input_model())
    with pytest.raises(InputError, match="holds no .npz or .npy files"):
        load_calibration_data(tmp_path, two_input_model())


# Cache -----------------------------------------------------------------------------------------


def test_cache_round_trip_and_reuse(tmp_path):
    model = two_input_model()
    path = tmp_path / "cache.json"
    setup = Calibration(data=CalibrationData(feeds()), cache_path=path, progress=False)
    ranges, source = resolve_ranges(model, ["a", "r"], setup, method="entropy", percentile=99.99,
                                    num_bins=2048, batch_size=8, max_batches=0)
    assert source == "calibration"
    payload = json.loads(path.read_text())
    assert payload["format"] == calibration.CACHE_FORMAT and payload["method"] == "entropy"
    assert payload["model_fingerprint"] == model_fingerprint(model)
    assert payload["ranges"] == pytest.approx(ranges) and payload["num_samples"] == 40
    assert CalibrationCache.load(path).ranges == pytest.approx(ranges)

    again, source = resolve_ranges(model, ["a", "r"], Calibration(cache_path=path),
                                   method="entropy", percentile=99.99, num_bins=2048,
                                   batch_size=8, max_batches=0)
    assert source == "cache" and again == pytest.approx(ranges)


def test_stale_cache_for_another_model_is_refused(tmp_path):
    path = tmp_path / "cache.json"
    CalibrationCache(method="entropy", model_fingerprint=model_fingerprint(one_input_model()),
                     ranges={"a": 1.0}).save(path)
    with pytest.raises(InputError, match="was computed for a different model") as caught:
        resolve_ranges(two_input_model(), ["a"], Calibration(data=CalibrationData(feeds()),
                                                             cache_path=path),
                       method="entropy", percentile=99.99, num_bins=2048, batch_size=8,
                       max_batches=0)
    assert "delete it or point --calib-cache elsewhere" in str(caught.value)


def test_cache_of_another_method_is_refused(tmp_path):
    path = tmp_path / "cache.json"
    model = two_input_model()
    CalibrationCache(method="minmax", model_fingerprint=model_fingerprint(model),
                     ranges={"a": 1.0}).save(path)
    with pytest.raises(InputError, match="holds minmax ranges but percentile 99.9 was requested"):
        resolve_ranges(model, ["a"], Calibration(cache_path=path), method="percentile",
                       percentile=99.9, num_bins=2048, batch_size=8, max_batches=0)


@pytest.mark.parametrize("text, message", [
    ("{not json", "is unreadable"),
    ('{"format": "something-else"}', "is not a trtcompile calibration cache"),
    ('{"format": "trtcompile-calibration-cache", "version": 99}', "has version 99"),
    ('{"format": "trtcompile-calibration-cache", "version": 1, "method": "minmax"}', "is malformed"),
])
def test_broken_cache_files(tmp_path, text, message):
    path = tmp_path / "cache.json"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        CalibrationCache.load(path)


def test_incomplete_cache_without_data_says_what_to_do(tmp_path):
    path = tmp_path / "cache.json"
    model = two_input_model()
    CalibrationCache(method="entropy", model_fingerprint=model_fingerprint(model),
                     ranges={"a": 1.0}).save(path)
    with pytest.raises(InputError, match="lacks ranges for 1 tensors"):
        resolve_ranges(model, ["a", "r"], Calibration(cache_path=path), method="entropy",
                       percentile=99.99, num_bins=2048, batch_size=8, max_batches=0)


# Tolerances ------------------------------------------------------------------------------------


def test_parity_tolerances_follow_the_precision():
    assert parity_tolerances("fp32")[:2] == (1e-4, 1e-3)
    atol, rtol, note = parity_tolerances("fp16")
    assert (atol, rtol) == (1e-2, 1e-2) and "half precision" in note
    atol, rtol, note = parity_tolerances("INT8")
    assert (atol, rtol) == (1e-3, 0.1) and "top-1 agreement" in note
    assert precision_tolerances("fp16").atol_range == 1e-2
    assert precision_tolerances("int8").atol_range == 0.1
    assert precision_tolerances("fp32").atol_range == 0.0
    # No precision switches the elementwise check off.
    for precision in ("fp32", "fp16", "int8"):
        fitting = precision_tolerances(precision)
        assert all(math.isfinite(v) for v in (fitting.atol, fitting.rtol, fitting.atol_range))
    with pytest.raises(InputError, match="unknown precision 'fp8'"):
        parity_tolerances("fp8")


# Through the CLI --------------------------------------------------------------------------------


@pytest.mark.parametrize("flags, message", [
    (["--calib-data", "{bad}"], "does not match the model inputs (missing a, b; unknown img)"),
    (["--calib-data", "{good}", "--calib-cache", "{stale}"], "was computed for a different model"),
    ([], "--precision int8 needs --calib-data (or an existing --calib-cache)"),
])
def test_cli_bad_calibration_input_exits_2_and_writes_nothing(tmp_path, capsys, flags, message):
    from trtcompile.cli import main

    weights = onnx.numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    # The first MatMul feeds further matrix work, so it is quantized (the second is the head).
    graph = oh.make_graph([oh.make_node("MatMul", ["a", "w"], ["m"]), oh.make_node("Add", ["m", "b"], ["h"]),
                           oh.make_node("MatMul", ["h", "w"], ["y"])],
                          "g", [oh.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1, 4]) for n in "ab"],
                          [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])], [weights])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model_path = ir.save(model, tmp_path / "model.onnx")
    np.savez(tmp_path / "good.npz", **feeds())
    np.savez(tmp_path / "bad.npz", img=feeds()["a"])
    CalibrationCache(method="entropy", model_fingerprint="0" * 32, ranges={}).save(tmp_path / "stale.json")
    paths = {"bad": tmp_path / "bad.npz", "good": tmp_path / "good.npz", "stale": tmp_path / "stale.json"}
    argv = ["compile", str(model_path), "-o", str(tmp_path / "out"), "--precision", "int8",
            "--no-engine", "-q", *[f.format(**paths) for f in flags]]
    assert main(argv) == EXIT_BAD_INPUT
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert (tmp_path / "stale.json").read_text().count('"ranges": {}') == 1


# Precision-aware parity through the command line ------------------------------------------------


def _scaled_classifier(tmp_path, scale: float):
    """The conv classifier of the quantize-int8 tests with logits scaled by ``scale``."""
    from tests.passes.quantize_int8.test_quantize_int8 import conv_classifier

    model = conv_classifier(batch=1)
    for initializer in model.graph.initializer:
        if initializer.name in ("fc", "fc_bias"):
            initializer.CopyFrom(onnx.numpy_helper.from_array(
                onnx.numpy_helper.to_array(initializer) * np.float32(scale), initializer.name))
    return ir.save(model, tmp_path / "model.onnx")


def test_fp16_parity_scales_with_the_output_range(tmp_path, capsys):
    """Logits in the thousands: FP16 rounding exceeds a fixed atol but not the range-scaled one."""
    from trtcompile.cli import main

    model_path = _scaled_classifier(tmp_path, 3000.0)
    argv = ["compile", str(model_path), "-o", str(tmp_path / "out"), "--precision", "fp16",
            "--no-progress"]
    assert main(argv) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    # The engine report reads every layer of the FP16 engine and counts them by precision.
    engine = report["engine"]
    assert engine["layer_report_problems"] == []
    assert engine["compute_layer_precisions"]["FP16"] >= 2  # both convolutions
    assert sum(engine["compute_layer_precisions"].values()) == engine["compute_layers"]
    tolerances = report["parity"]["tolerances"]
    assert (tolerances["atol"], tolerances["rtol"], tolerances["atol_range"]) == (1e-2, 1e-2, 1e-2)
    worst = report["parity"]["comparisons"][0]["outputs"]["logits"]["max_abs"]
    assert worst > 1e-2  # beyond the fixed part of the bound: the range term carries it
    out = capsys.readouterr().out
    assert "parity: passed (seed 0, atol=0.01, rtol=0.01, atol_range=0.01)" in out
    assert "  compute layers by precision: INT8=0 FP16=" in out
    assert "tolerances: fp16: elementwise, atol=1e-2 + 1e-2 x output range" in out
    # The user's tolerances win and are said to be the user's.
    user = [*argv[:3], str(tmp_path / "user"), *argv[4:], "--no-engine", "--atol", "5", "--rtol", "0.5"]
    assert main(user) == 0
    tolerances = json.loads((tmp_path / "user" / "report.json").read_text())["parity"]["tolerances"]
    assert (tolerances["atol"], tolerances["rtol"]) == (5, 0.5) and "atol_range" not in tolerances
    assert tolerances["note"] == "fp16: user tolerances atol=5 rtol=0.5"


def test_int8_parity_is_finite_and_judged_by_held_out_top1(tmp_path, capsys):
    from trtcompile.cli import main

    model_path = _scaled_classifier(tmp_path, 1.0)
    np.savez(tmp_path / "calib.npz",
             x=np.random.default_rng(0).normal(0, 1, (40, 3, 12, 12)).astype(np.float32))
    argv = ["compile", str(model_path), "-o", str(tmp_path / "out"), "--precision", "int8",
            "--calib-data", str(tmp_path / "calib.npz"), "--no-progress"]
    assert main(argv) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    # Both convolutions run in INT8; the classifier head stays float (quantize-int8 rule 8).
    layers = [layer for layer in report["engine"]["layers"] if layer["compute"]]
    assert [layer["precision"] for layer in layers if layer["type"] == "correlation"] == ["INT8"] * 2
    assert report["engine"]["compute_layer_precisions"]["INT8"] >= 2
    tolerances = report["parity"]["tolerances"]
    assert all(math.isfinite(tolerances[k]) for k in ("atol", "rtol", "atol_range"))
    top1 = tolerances["top1_agreement"]
    assert top1["checked"] and top1["threshold"] == 0.9
    # 40 samples: 32 calibrate, the last 8 are held out and judge.
    assert top1["outputs"]["logits"]["samples"] == 8 and top1["outputs"]["logits"]["passed"]
    record = next(r for r in report["passes"] if r["name"] == "quantize-int8")
    assert record["counts"]["calibration_samples"] == 32
    out = capsys.readouterr().out
    assert "atol=inf" not in out
    assert "top-1 agreement of 'logits' with the input model: " in out


def test_large_npy_calibration_is_memory_mapped_and_streams_in_batches(tmp_path):
    """600 samples in an .npy: mapped from disk, calibrated batch by batch, held-out split intact."""
    model = conv_model_for_streaming()
    samples = np.random.default_rng(3).normal(0, 1, (600, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "calib.npy", samples)
    data = load_calibration_data(tmp_path / "calib.npy", model)
    assert isinstance(data.arrays["x"], np.memmap)
    batches = list(data.batches(32))
    assert len(batches) == 600 // 32 and all(b["x"].shape == (32, 3, 8, 8) for b in batches)
    assert not isinstance(batches[0]["x"], np.memmap)  # one batch copied at a time
    calibration_part, held_out = calibration.holdout_split(data)
    assert (calibration_part.num_samples, held_out.num_samples) == (480, 120)
    np.testing.assert_array_equal(held_out.arrays["x"][0], samples[480])
    ranges = collect_ranges(model, ["x"], calibration_part, method="minmax", batch_size=32,
                            progress=False)
    assert ranges["x"] == pytest.approx(float(np.abs(samples[:480 // 32 * 32]).max()))


def conv_model_for_streaming() -> onnx.ModelProto:
    weights = onnx.numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w")
    graph = oh.make_graph([oh.make_node("Conv", ["x", "w"], ["y"])], "g",
                          [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 8, 8])],
                          [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 4, 8, 8])],
                          [weights])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


def test_npz_members_stored_uncompressed_are_memory_mapped_and_stream(tmp_path):
    """np.savez stores members uncompressed: they are mapped from the archive like an .npy and
    read back batch by batch unchanged; compressed members are read whole, to the same values."""
    model = conv_model_for_streaming()
    samples = np.random.default_rng(5).normal(0, 1, (100, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "plain.npz", x=samples)
    np.savez_compressed(tmp_path / "packed.npz", x=samples)
    plain = load_calibration_data(tmp_path / "plain.npz", model)
    packed = load_calibration_data(tmp_path / "packed.npz", model)
    assert isinstance(plain.arrays["x"], np.memmap)
    assert not isinstance(packed.arrays["x"], np.memmap)
    for data in (plain, packed):
        batches = list(data.batches(32, drop_last=False))
        assert [b["x"].shape[0] for b in batches] == [32, 32, 32, 4]
        assert not any(isinstance(b["x"], np.memmap) for b in batches)
        np.testing.assert_array_equal(np.concatenate([b["x"] for b in batches]), samples)
    # Pages released after a batch are read again from the file: the data is still there.
    np.testing.assert_array_equal(plain.arrays["x"][-1], samples[-1])


def test_npz_with_a_nan_in_a_late_sample_is_refused(tmp_path):
    """The finiteness check runs a chunk of samples at a time and still sees the last one."""
    samples = np.zeros((200, 3, 8, 8), np.float32)
    samples[199, 2, 7, 7] = np.nan
    np.savez(tmp_path / "calib.npz", x=samples)
    with pytest.raises(InputError, match="'x' contains NaN or infinite values"):
        load_calibration_data(tmp_path / "calib.npz", conv_model_for_streaming())


def test_dynamic_batch_calibration_uses_every_sample():
    """With a dynamic batch dimension the short last batch runs too: minmax sees the largest
    value even when it is in the last, partial batch."""
    samples = np.random.default_rng(6).uniform(-1, 1, (70, 3, 8, 8)).astype(np.float32)
    samples[69, 0, 0, 0] = 9.0
    ranges = collect_ranges(conv_model_for_streaming(), ["x"], CalibrationData({"x": samples}),
                            method="minmax", batch_size=32, progress=False)
    assert ranges["x"] == pytest.approx(9.0)


# Samples from memory --------------------------------------------------------------------------


def test_samples_from_memory_name_what_does_not_match_the_model() -> None:
    model = two_input_model()
    with pytest.raises(InputError) as raised:
        calibration.calibration_data({"a": np.zeros((2, 4)), "z": np.zeros((2, 4))}, model)
    assert str(raised.value) == ("calibration batch 0 names 'z', not an input of the model "
                                 "(inputs: a, b)")
    with pytest.raises(InputError) as raised:
        calibration.calibration_data([(np.zeros((2, 4), np.float32),)], model)
    assert str(raised.value) == ("calibration batch 0 has 1 array(s); the model has 2 input(s) "
                                 "(a, b)")
    with pytest.raises(InputError) as raised:
        calibration.calibration_data(7, model)
    assert str(raised.value) == ("calibration samples: expected arrays, a dict of arrays or an "
                                 "iterable of batches, got int")


def test_batches_from_a_function_are_joined_along_the_sample_axis() -> None:
    def batches():
        for seed in range(3):
            yield feeds(2, seed)
    data = calibration.calibration_data(batches, two_input_model())
    assert {name: array.shape for name, array in data.arrays.items()} == {"a": (6, 4), "b": (6, 4)}


def test_an_array_like_is_one_batch() -> None:
    class Frames:
        """Not an ndarray, but converts to one (as a framework's tensor does)."""

        def __array__(self, dtype=None, copy=None):
            return np.ones((5, 3, 2), np.float32)

        def __iter__(self):
            raise AssertionError("iterated as batches")

    data = calibration.calibration_data(Frames(), one_input_model())
    assert data.arrays["x"].shape == (5, 3, 2)


def test_a_percentile_above_100_is_refused() -> None:
    with pytest.raises(InputError, match=r"^calibration percentile must be in \(0, 100\], got 100.5$"):
        calibration.check_method("percentile", 100.5)
    calibration.check_method("percentile", 100.0)


def test_a_histogram_of_zeros_has_range_zero_and_unknown_methods_are_named() -> None:
    statistics = calibration.TensorStatistics(histogram=AbsHistogram(2048))
    statistics.add(np.zeros(16, np.float32))
    assert statistics.range("entropy") == 0.0
    statistics.add(np.linspace(-1, 1, 64, dtype=np.float32))
    with pytest.raises(ValueError, match="^unknown calibration method 'median'$"):
        statistics.range("median")


def test_a_histogram_may_have_exactly_as_many_bins_as_quantized_levels() -> None:
    assert AbsHistogram(calibration.QUANTIZED_LEVELS).num_bins == calibration.QUANTIZED_LEVELS
    with pytest.raises(ValueError, match="histogram needs at least"):
        AbsHistogram(calibration.QUANTIZED_LEVELS - 1)


def test_samples_are_counted_against_the_floor_and_a_fixed_batch() -> None:
    specs = calibration.model_input_specs(two_input_model(batch=4))
    with pytest.raises(InputError, match="^calibration data has 2 samples; calibration needs at "
                                         "least 3 "):
        CalibrationData(feeds(2), min_samples=3).validate(specs)
    # A floor given to validate overrides the data's own.
    CalibrationData(feeds(8), min_samples=16).validate(specs, min_samples=4)
    # The default floor is one sample; a fixed batch still needs a whole batch.
    with pytest.raises(InputError) as raised:
        CalibrationData(feeds(2)).validate(specs)
    assert str(raised.value) == ("calibration data has 2 samples, fewer than the model's fixed "
                                 "batch size 4")


def test_a_file_is_held_to_the_floor_its_caller_gives(tmp_path) -> None:
    np.savez(tmp_path / "few.npz", **feeds(4))
    data = load_calibration_data(tmp_path / "few.npz", two_input_model(), min_samples=4)
    assert data.arrays["a"].shape == (4, 4)


def test_a_percentile_interpolates_inside_its_bin() -> None:
    assert percentile_amax(np.array([0, 4, 0, 0]), 1.0, 50.0) == 1.5


def test_a_histogram_grows_keeping_every_count_in_its_place() -> None:
    histogram = AbsHistogram(256)
    histogram.add(np.array([1.0, 0.5], np.float32))
    histogram.add(np.array([3.0], np.float32))  # the range grows 4 times: 4 bins become one
    assert histogram.upper == 4.0
    assert {int(i): int(histogram.counts[i]) for i in np.flatnonzero(histogram.counts)} == {
        32: 1, 63: 1, 192: 1}
    odd = AbsHistogram(200)  # 200 bins do not split into groups of 16: the last group is short
    odd.add(np.array([1.0, 0.01], np.float32))
    odd.add(np.array([10.0], np.float32))
    assert odd.upper == 16.0 and int(odd.counts.sum()) == 3
    assert {int(i): int(odd.counts[i]) for i in np.flatnonzero(odd.counts)} == {0: 1, 12: 1, 125: 1}


def test_the_int8_tolerances_say_what_they_are() -> None:
    assert precision_tolerances("int8").note == (
        "int8: elementwise against the FP32 input model on the same inputs, "
        "|int8 - fp32| <= 1e-3 + 0.1 x max|fp32 output| + 0.1 x |fp32| (127 levels per tensor); "
        "with --calib-data on the held-out samples, also by top-1 agreement")
