"""A full-size Keras application through the command line, measured as the benchmark measures it.

MobileNetV2 (``weights=None``, logits) exported as a SavedModel, compiled by ``trtcompile compile``
in a child process with the default pipeline, then its lowered model built by TensorRT alone. The
figures come from the compile's own ``report.json`` (see ``benchmarks/keras_applications.py``).
"""

from __future__ import annotations

import os

import pytest

from benchmarks import keras_applications as bench


@pytest.mark.slow
def test_mobilenet_v2_savedmodel_compiles_end_to_end(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", POLYGRAPHY_USE_TENSORRT_RTX="1")
    network = bench.measure("mobilenetv2", tmp_path, env)
    (run,) = network.compiles
    assert run.measured.exit_code == 0, run.measured.output_tail
    assert run.ok, run.status

    # The lowering is the first row; the passes' rows lead from its node count to the final count.
    assert run.lowering["source_kind"] == "savedmodel" and run.lowering["mode"] == "faithful"
    assert run.layers_input == run.lowering["onnx_nodes"]
    assert run.passes[0].layers_before == run.layers_input
    assert run.passes[-1].layers_after == run.layers_optimized
    for earlier, later in zip(run.passes, run.passes[1:]):
        assert later.layers_before == earlier.layers_after
    assert run.layers_input + sum(run.pass_deltas().values()) == run.layers_optimized
    assert run.pass_deltas()["transpose-cancellation"] < -100  # ~120 NHWC/NCHW pairs in the lowering
    assert run.pass_deltas()["conv-bias-activation-fusion"] < -40

    # Only the Transpose of the NHWC graph input is left, nothing inside and none in fused layers.
    assert set(run.transposes) <= {"graph input", "graph output"}, run.transposes

    # Parity: TensorFlow vs lowered vs optimized, and the errors are small at the logits' own scale.
    comparisons = {p["comparison"]: p for p in run.parity}
    assert set(comparisons) == {"lowered vs tensorflow", "optimized vs lowered", "optimized vs tensorflow"}
    assert all(p["passed"] for p in comparisons.values())
    scale = max(s["max_abs"] for s in network.logit_scale.values())
    assert scale > 0
    for p in comparisons.values():
        assert p["max_abs"] / scale < 1e-4, (p, scale)

    # The engine from the optimized model has fewer compute layers than TensorRT makes of the
    # faithful lowering alone (which keeps a layout copy per NHWC/NCHW Transpose).
    assert run.engine["built"] and run.engine["compute_layers"] > 0
    alone = network.tensorrt_alone
    assert alone is not None and alone.ok, alone.status if alone else None
    assert alone.layers_optimized == alone.layers_input == run.layers_input
    assert run.engine["compute_layers"] < alone.engine["compute_layers"]
    assert run.measured.peak_rss_mib < bench.MEMORY_LIMIT_MIB
