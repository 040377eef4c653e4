"""Every optimized graph the property suite produces also parses and builds with TensorRT.

ONNX Runtime accepting a model does not mean TensorRT does (local functions, attribute forms,
dtypes, layer support differ), so a pass must not emit ONNX TensorRT rejects. Building is slower
than running ONNX Runtime, so this runs on a sample of the examples the other properties see.
"""

from __future__ import annotations

from hypothesis import assume, given

from tests.property import oracle, profiles
from tests.property.strategies import cnn_models


@profiles.examples(0.5)
@given(cnn_models(max_layers=profiles.max_layers()))
def test_default_pipeline_output_builds_with_tensorrt(case) -> None:
    try:
        oracle.tensorrt_build(case.model)
    except AssertionError:
        # The generator's own model does not build (or crashes TensorRT): not a pass's doing
        # (test_strategies.py asserts unoptimized models build), so it tells nothing about passes.
        assume(False)
    optimized, _ = oracle.check_pipeline(case.model, oracle.default_pipeline(), oracle.FP32,
                                         label="default")
    oracle.tensorrt_build(optimized)
