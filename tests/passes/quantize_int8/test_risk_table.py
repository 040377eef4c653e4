"""The INT8 precision risk table: each quantized layer measured alone on the calibration samples,
the layers left in higher precision with their reason."""

from __future__ import annotations

import numpy as np
import onnx

from tests.passes.quantize_int8.test_quantize_int8 import conv_classifier, mlp, quantize, samples
from trtcompile import report


def risk_rows(record) -> dict[str, dict]:
    return {row["name"]: row for row in record.tables["precision_risk"]}


def test_each_quantized_layer_has_its_error_alone_and_the_head_its_reason() -> None:
    data = {"x": samples((3, 12, 12), 32, seed=1)}
    _, pipeline_report, _ = quantize(conv_classifier(), data, "quantize-int8{method=minmax}")
    record = pipeline_report.records[-1]
    rows = risk_rows(record)
    assert set(rows) >= {"conv1", "conv2", "fc"}
    for name in ("conv1", "conv2"):
        assert rows[name]["kept"] is False and rows[name]["reason"] is None
        assert 0 < rows[name]["alone_error"] < 0.05  # 127 levels: a few percent at most
    assert rows["fc"]["kept"] is True and rows["fc"]["alone_error"] is None
    assert rows["fc"]["reason"] == "network output layer stays in higher precision"
    # minmax calibrates on all 32 samples; the table measures the first 8
    assert rows["conv1"]["amax"] == float(f"{np.abs(data['x']).max():.6g}")
    assert rows["conv1"]["max_abs_fp32"] == float(f"{np.abs(data['x'][:8]).max():.6g}")
    assert record.counts["measured_samples"] == 8
    table = record.tables["precision_risk"]
    assert [row["kept"] for row in table] == sorted(row["kept"] for row in table)
    measured = [row["alone_error"] for row in table if not row["kept"]]
    assert measured == sorted(measured, reverse=True)  # riskiest first


def test_the_error_alone_is_the_layer_on_its_int8_grids() -> None:
    """fc1 of the MLP reads the model input: its error alone is reproduced with numpy."""
    model = mlp()
    data = {"x": samples((32,), 16, seed=2)}
    _, pipeline_report, _ = quantize(model, data, "quantize-int8{method=minmax risk-samples=16}")
    row = risk_rows(pipeline_report.records[-1])["fc1"]
    (weights,) = [onnx.numpy_helper.to_array(init) for init in model.graph.initializer
                  if init.name == "w1"]
    x = data["x"]
    scale = np.float32(np.abs(x).max() / 127)
    x_q = np.clip(np.rint(x / scale), -128, 127) * scale
    w_scale = np.abs(weights).max(axis=0) / 127
    w_q = np.clip(np.rint(weights / w_scale), -127, 127) * w_scale
    expected = x @ weights
    error = np.abs(x_q @ w_q - expected).max() / np.abs(expected).max()
    assert abs(row["alone_error"] - error) <= 1e-3 * error


def test_no_table_without_samples_or_with_risk_samples_0() -> None:
    data = {"x": samples((32,), 16, seed=2)}
    _, pipeline_report, _ = quantize(mlp(), data, "quantize-int8{risk-samples=0}")
    assert "precision_risk" not in pipeline_report.records[-1].tables


def test_the_terminal_names_int8_and_higher_precision() -> None:
    data = {"x": samples((3, 12, 12), 32, seed=1)}
    _, pipeline_report, _ = quantize(conv_classifier(), data)
    passes = [record.to_dict() for record in pipeline_report.records]
    section = report.precision_risk_section(passes)
    assert section["precision"] == "int8" and section["data_max"] is None
    lines = report.format_precision_risk({"precision_risk": section})
    assert lines[0].startswith("precision risk (quantize-int8, 8 samples): ")
    assert "layers considered" in lines[0] and "left in higher precision" in lines[0]
    assert "int8 error alone" in lines[1]
    runs = {line.split()[0]: line.split() for line in lines[2:]}
    assert runs["conv1"][4] == "INT8" and runs["fc"][3:5] == ["-", "float"]
