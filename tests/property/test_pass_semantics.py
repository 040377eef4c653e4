"""Every pass, alone and in the default pipeline, keeps what a random CNN computes.

For each generated model the optimized model must pass the onnx checker (full check), keep the
graph's input and output names, shapes and dtypes, and match the original's ONNX Runtime outputs
within tolerance (FP32 for every pass; FP16 for passes that lower precision). The pass list is read
from ``passes.BUILTIN_PASSES`` and the default pipeline from the pass manager, so passes added later
are covered without editing this file. A failure leaves its shrunk model as a regression case (see
tests/property/oracle.py and docs/testing.md).
"""

from __future__ import annotations

import pytest
from hypothesis import given

from tests.property import oracle, profiles
from tests.property.strategies import cnn_models

MODELS = cnn_models(max_layers=profiles.max_layers())


def _pass_params() -> list:
    params = []
    for name in oracle.builtin_pass_names():
        tolerance = oracle.pass_tolerance(name)
        marks = () if tolerance else pytest.mark.skip(
            reason=f"{name} needs calibration data that random models do not come with")
        params.append(pytest.param(name, tolerance, id=name, marks=marks))
    return params


def _lowering_pipelines() -> list:
    """The default pipeline followed by each precision-lowering pass (how they are used)."""
    return [pytest.param(f"default,{name}", oracle.pass_tolerance(name), id=f"default+{name}")
            for name in oracle.builtin_pass_names()
            if oracle.pass_tolerance(name) not in (None, oracle.FP32)]


@profiles.examples(2.0)
@given(MODELS)
def test_default_pipeline_preserves_semantics(case) -> None:
    oracle.check_pipeline(case.model, oracle.default_pipeline(), oracle.FP32, label="default")


@profiles.examples(2.0)
@given(MODELS)
def test_all_fp32_passes_preserve_semantics(case) -> None:
    oracle.check_pipeline(case.model, oracle.all_fp32_passes_pipeline(), oracle.FP32,
                          label="all passes")


@pytest.mark.parametrize(("pass_name", "tolerance"), _pass_params())
@profiles.examples()
@given(case=MODELS)
def test_pass_alone_preserves_semantics(pass_name: str, tolerance: oracle.Tolerance, case) -> None:
    oracle.check_pipeline(case.model, pass_name, tolerance, label=pass_name)


@pytest.mark.parametrize(("pipeline", "tolerance"), _lowering_pipelines())
@profiles.examples()
@given(case=MODELS)
def test_precision_lowering_after_default_pipeline(pipeline: str, tolerance: oracle.Tolerance,
                                                   case) -> None:
    oracle.check_pipeline(case.model, pipeline, tolerance, label=pipeline)
