"""trtcompile.Converter, the TF-TRT-shaped face of the compile flow: convert, build (profiles from
the shapes input_fn yields), summary, save; INT8 calibration from arrays, dicts and generators."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import trtcompile
from tests.helpers import CONV_BRANCHES, REPO, conv_branches_opset22, output_names
from trtcompile.errors import InputError


def test_an_onnx_model_through_convert_build_summary_and_save(tmp_path: Path) -> None:
    converter = trtcompile.Converter(input_saved_model_dir=CONV_BRANCHES, precision_mode="FP16",
                                     minimum_segment_size=5, max_workspace_size_bytes=1 << 26)
    assert converter.options.min_segment_size == 5 and converter.options.workspace_bytes == 1 << 26
    converter.convert()
    converter.build(input_fn=lambda: iter([(np.zeros((1, 4, 8, 8), np.float32),)]))
    lines: list[str] = []
    assert converter.summary(print_fn=lines.append) is None
    assert lines[0] == "[*] Total number of TensorRT engines: 1"
    assert lines[1].startswith("[*] % of OPs Converted: 100.00% [")
    assert "[engine]" in lines and any(line.startswith("  - Precision: FP16") for line in lines)
    out = converter.save(tmp_path / "saved")
    assert output_names(out) == ["model.engine", "optimized.onnx", "report.json"]
    report = json.loads((out / "report.json").read_text())
    assert report["engine"]["built"] is True and report["parity"]["passed"] is True
    assert report["parity"]["tolerances"]["precision"] == "fp16"


def test_bf16_is_accepted_as_precision_bf16_and_builds(tmp_path: Path) -> None:
    """TF-TRT has no BF16 mode; precision_mode="BF16" compiles as --precision bf16."""
    converter = trtcompile.Converter(input_saved_model_dir=conv_branches_opset22(tmp_path),
                                     precision_mode="BF16")
    assert converter.options.precision == "bf16"
    converter.convert()
    converter.build(input_fn=lambda: iter([(np.zeros((1, 4, 8, 8), np.float32),)]))
    report = json.loads((converter.save(tmp_path / "saved") / "report.json").read_text())
    assert report["parity"]["passed"] is True
    assert report["parity"]["tolerances"]["precision"] == "bf16"
    assert report["engine"]["built"] is True
    assert report["engine"]["compute_layer_precisions"]["BF16"] > 0


def test_int8_calibrates_from_a_generator_a_dict_or_an_array(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    samples = rng.standard_normal((16, 4, 8, 8)).astype(np.float32)

    def batches():
        for start in range(0, 16, 4):
            yield (samples[start:start + 4],)

    for given in (batches, batches(), {"input": samples}, samples):
        converter = trtcompile.Converter(input_saved_model_dir=CONV_BRANCHES,
                                         precision_mode="INT8", engine=False)
        converter.convert(calibration_input_fn=given)
        records = converter.compilation.pipeline_report.records
        (quantize,) = [r for r in records if r.name == "quantize-int8"]
        assert quantize.counts["calibration_samples"] == 16, quantize.counts
        assert quantize.counts["qdq_weights"] > 0, quantize.counts


@pytest.mark.parametrize("kwargs, message", [
    ({"precision_mode": "FP8"}, "precision_mode 'FP8': expected one of FP32, FP16, BF16, INT8"),
    ({"minimum_segment_size": 0}, "minimum_segment_size 0: expected an integer >= 1"),
    ({"max_workspace_size_bytes": -1}, "max_workspace_size_bytes -1: expected an integer >= 1"),
    ({"atoll": 1.0}, "unknown option(s) atoll"),
    ({"dynamic_shape_profile_strategy": "Widest"}, "dynamic_shape_profile_strategy 'Widest'"),
    ({"conversion_params": {"max_batch_size": 1, "precison_mode": "FP16"}},
     "conversion_params: unknown field(s) precison_mode"),
])
def test_bad_converter_arguments_are_one_line_input_errors(kwargs, message) -> None:
    with pytest.raises(InputError) as caught:
        trtcompile.Converter(input_saved_model_dir=CONV_BRANCHES, **kwargs)
    assert str(caught.value).endswith(message) or message in str(caught.value)


def test_int8_without_calibration_and_save_before_convert_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="needs calibration_input_fn"):
        trtcompile.Converter(input_saved_model_dir=CONV_BRANCHES, precision_mode="INT8").convert()
    with pytest.raises(AssertionError, match=r"save\(\) needs convert\(\) first"):
        trtcompile.Converter(input_saved_model_dir=CONV_BRANCHES).save(tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_savedmodel_through_convert_build_and_save(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(REPO / "fixtures" / "make_keras_fixtures.py"),
                    str(tmp_path / "fixtures"), "--only", "conv_bn_relu"], check=True,
                   capture_output=True)
    saved_model = tmp_path / "fixtures" / "conv_bn_relu" / "savedmodel"
    converter = trtcompile.Converter(input_saved_model_dir=str(saved_model),
                                     precision_mode="FP16", minimum_segment_size=3,
                                     max_workspace_size_bytes=1 << 28)
    converter.convert()

    def input_fn():  # TF-TRT's input_fn: NHWC batches of two sizes -> one profile spanning both
        for batch in (1, 4):
            yield (np.zeros((batch, 16, 16, 3), np.float32),)

    converter.build(input_fn=input_fn)
    out = converter.save(tmp_path / "converted")
    report = json.loads((out / "report.json").read_text())
    assert report["engine"]["built"] is True and (out / "model.engine").stat().st_size > 0
    assert (out / "lowered.onnx").is_file() and report["parity"]["passed"] is True
    (profile,) = report["engine"]["profiles"]
    (shapes,) = profile.values()
    assert shapes["min"][0] == 1 and shapes["max"][0] == 4


def test_every_tftrt_argument_is_accepted_mapped_or_noted() -> None:
    notes: list[str] = []
    converter = trtcompile.Converter(
        input_saved_model_dir=CONV_BRANCHES, input_saved_model_tags=["serve", "gpu"],
        input_saved_model_signature_key=None, use_dynamic_shape=False,
        dynamic_shape_profile_strategy="Optimal", max_workspace_size_bytes=1 << 26,
        precision_mode="INT8", minimum_segment_size=4, maximum_cached_engines=2,
        use_calibration=False, allow_build_at_runtime=False,
        conversion_params={"minimum_segment_size": 5, "max_batch_size": 1}, log=notes.append)
    assert converter.options.min_segment_size == 5 and converter.options.workspace_bytes == 1 << 26
    assert converter.options.precision == "fp32" and converter.profile_strategy == "optimal"
    assert converter.options.frontend.signature == "serving_default"
    assert [note.split(":")[0].split("=")[0] for note in notes] == [
        "use_calibration", "input_saved_model_tags", "use_dynamic_shape",
        "maximum_cached_engines", "allow_build_at_runtime"]
    assert notes == converter.notes


def test_tftrt_call_order_errors() -> None:
    converter = trtcompile.Converter(input_saved_model_dir=CONV_BRANCHES, log=lambda line: None)
    with pytest.raises(RuntimeError, match=r"Need to call convert\(\) before build\(\)"):
        converter.build(lambda: iter([]))
    with pytest.raises(RuntimeError, match=r"summary\(\) before calling convert\(\)"):
        converter.summary()
    with pytest.raises(ValueError, match="INT8 calibration is not needed"):
        converter.convert(calibration_input_fn=lambda: iter([]))
    converter.convert()
    with pytest.raises(AssertionError, match=r"convert\(\) was already called"):
        converter.convert()
    with pytest.raises(RuntimeError, match="input_fn is None"):
        converter.build(None)
    with pytest.raises(ValueError, match="INT8 calibration is needed"):
        trtcompile.Converter(input_saved_model_dir=CONV_BRANCHES, precision_mode="INT8").convert()


def test_int8_calibrates_from_few_samples_and_says_none_were_held_out(tmp_path: Path) -> None:
    notes: list[str] = []
    samples = np.random.default_rng(0).standard_normal((3, 4, 8, 8)).astype(np.float32)
    # Three samples make poor ranges (parity would say so): what matters here is that they are
    # taken, as TF-TRT takes them.
    converter = trtcompile.Converter(input_saved_model_dir=CONV_BRANCHES, precision_mode="INT8",
                                     engine=False, parity=False, log=notes.append)
    converter.convert(calibration_input_fn=lambda: iter([(samples,)]))
    (quantize,) = [r for r in converter.compilation.pipeline_report.records
                   if r.name == "quantize-int8"]
    assert quantize.counts["calibration_samples"] == 3
    note = ("INT8: calibrating on all 3 samples; none held out for the top-1 agreement check "
            "(that needs 40 or more)")
    assert converter.notes == [note] and note in notes  # the log gets the compile's lines too
    converter.save(tmp_path / "out", save_gpu_specific_engines=False, options=object())
    assert converter.notes[1].startswith("save_gpu_specific_engines=False")
    assert converter.notes[2].startswith("save(options=...)")
    assert (tmp_path / "out" / "optimized.onnx").is_file()
