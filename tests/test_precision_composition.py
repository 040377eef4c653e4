"""``--precision`` composes with the user's own precision pass in ``--pipeline``: that pass runs
once, with the user's options; flags fill in what it leaves at defaults and a contradiction is
refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import CONV_BRANCHES, conv_branches_opset22
from trtcompile.flow import CompileOptions, compile_model
from trtcompile.flow.precision import with_precision_pass
from trtcompile.flow.registry import build_registry
from trtcompile.errors import InputError
from trtcompile.pass_manager import iter_passes, parse_pipeline, print_pipeline


def composed(pipeline: str, **options) -> str:
    registry = build_registry(())
    compile_options = CompileOptions(pipeline=pipeline, **options)
    return print_pipeline(with_precision_pass(parse_pipeline(pipeline, registry), compile_options,
                                              registry))


def test_the_precision_pass_is_appended_when_the_pipeline_has_none() -> None:
    assert composed("fold-constants", precision="fp16") == "fold-constants,precision-fp16"


def test_the_users_fp16_pass_keeps_its_options_and_runs_once() -> None:
    assert composed("fold-constants,precision-fp16{keep-ops=Softmax}", precision="fp16") == \
        "fold-constants,precision-fp16{keep-ops=Softmax}"


def test_int8_flags_fill_in_what_the_users_pass_leaves_at_defaults() -> None:
    text = composed("quantize-int8{exclude=head_conv}", precision="int8", calib_data="d.npz",
                    calib_method="minmax", calib_batches=4)
    assert text.count("quantize-int8") == 1
    (only,) = iter_passes(parse_pipeline(text, build_registry(())))
    assert (only.exclude, only.method, only.max_batches) == (("head_conv",), "minmax", 4)


def test_a_flag_contradicting_the_users_pass_is_refused() -> None:
    with pytest.raises(InputError, match=r"^--calib-method percentile contradicts "
                                         r"quantize-int8\{method=minmax\} in --pipeline"):
        composed("quantize-int8{method=minmax}", precision="int8", calib_data="d.npz",
                 calib_method="percentile")


def test_inside_a_fixed_point_group_the_users_pass_is_the_one_filled_in() -> None:
    text = composed("fixed-point(fold-constants,quantize-int8{exclude=a})", precision="int8",
                    calib_data="d.npz", calib_batches=2)
    assert text.count("quantize-int8") == 1 and "max-batches=2" in text and "exclude=a" in text


def test_a_compile_runs_the_users_fp16_pass_once_with_its_options(tmp_path: Path) -> None:
    result = compile_model(CONV_BRANCHES, tmp_path / "out", CompileOptions(
        pipeline="fold-constants,precision-fp16{keep-ops=Conv}", precision="fp16", engine=False,
        progress=False))
    runs = [r for r in result.report["passes"] if r["name"] == "precision-fp16"]
    assert [r["pipeline_text"] for r in runs] == ["precision-fp16{keep-ops=Conv}"]
    assert result.error is None


def test_fp16_with_data_measures_its_keep_list() -> None:
    assert composed("fold-constants", precision="fp16", calib_data="d.npz") == \
        "fold-constants,precision-fp16{keep=auto}"
    assert composed("fold-constants", precision="fp16", inputs="x.npz") == \
        "fold-constants,precision-fp16{keep=auto}"
    assert composed("precision-fp16{keep-ops=Exp}", precision="fp16", calib_data="d.npz") == \
        "precision-fp16{keep-ops=Exp keep=auto}"


def test_the_users_keep_choice_is_not_a_contradiction() -> None:
    """keep is the flow's choice, not a flag: a pipeline forcing static keeps it with data."""
    assert composed("precision-fp16{keep=static}", precision="fp16", calib_data="d.npz") == \
        "precision-fp16{keep=static}"


def test_a_calibration_cache_is_refused_for_fp16() -> None:
    with pytest.raises(InputError, match=r"^--calib-cache applies to --precision int8 only"):
        composed("default", precision="fp16", calib_cache="ranges.json")


def test_bf16_appends_the_fp16_pass_writing_bfloat16() -> None:
    assert composed("fold-constants", precision="bf16") == \
        "fold-constants,precision-fp16{dtype=bfloat16}"
    assert composed("fold-constants", precision="bf16", calib_data="d.npz") == \
        "fold-constants,precision-fp16{keep=auto dtype=bfloat16}"


def test_bf16_fills_in_the_users_fp16_pass_and_keeps_its_options() -> None:
    assert composed("precision-fp16{keep-ops=Exp}", precision="bf16") == \
        "precision-fp16{keep-ops=Exp dtype=bfloat16}"
    assert composed("precision-fp16{dtype=bfloat16 keep=static}", precision="bf16",
                    calib_data="d.npz") == "precision-fp16{keep=static dtype=bfloat16}"


def test_a_bfloat16_pass_contradicting_precision_fp16_is_refused() -> None:
    with pytest.raises(InputError) as refused:
        composed("precision-fp16{dtype=bfloat16}", precision="fp16")
    assert str(refused.value) == (
        "--precision fp16 contradicts precision-fp16{dtype=bfloat16} in --pipeline "
        "(dtype=bfloat16); give --precision bf16 or drop dtype")


def test_a_calibration_cache_is_refused_for_bf16() -> None:
    with pytest.raises(InputError, match=r"^--calib-cache applies to --precision int8 only "
                                         r"\(bf16 measures"):
        composed("default", precision="bf16", calib_cache="ranges.json")


def test_bf16_compiles_with_its_tolerances_and_reports_bf16(tmp_path: Path) -> None:
    result = compile_model(conv_branches_opset22(tmp_path), tmp_path / "out", CompileOptions(
        precision="bf16", engine=False, progress=False))
    assert result.error is None, result.error
    tolerances = result.report["parity"]["tolerances"]
    assert (tolerances["atol"], tolerances["rtol"], tolerances["atol_range"]) == (5e-2, 5e-2, 5e-2)
    assert tolerances["note"].startswith("bf16: elementwise")
    runs = [r for r in result.report["passes"] if r["name"] == "precision-fp16"]
    assert [r["pipeline_text"] for r in runs] == ["precision-fp16{dtype=bfloat16}"]
    assert runs[0]["counts"]["converted_layers"] > 0


def test_bf16_with_data_measures_its_keep_list_and_judges_on_the_samples(tmp_path: Path) -> None:
    import numpy as np

    samples = np.random.default_rng(0).standard_normal((16, 4, 8, 8)).astype(np.float32) * 100
    np.savez(tmp_path / "samples.npz", input=samples)
    result = compile_model(conv_branches_opset22(tmp_path), tmp_path / "out", CompileOptions(
        precision="bf16", calib_data=tmp_path / "samples.npz", engine=False, progress=False))
    assert result.error is None, result.error
    risk = result.report["precision_risk"]
    assert (risk["pass"], risk["precision"]) == ("precision-fp16{keep=auto dtype=bfloat16}", "bf16")
    assert risk["data_max"] > 1e36  # bfloat16's range: values of 857 are no overflow risk
    assert not any(node["kept_by"] for node in risk["nodes"])
    assert [node["kept"] for node in risk["nodes"]] == [False] * len(risk["nodes"])
    assert result.report["parity"]["passed"] is True
    assert result.report["parity"]["tolerances"]["inputs"]["floating_point"].startswith(
        "all 16 samples given for BF16")
