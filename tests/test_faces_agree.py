"""Every face of the compile flow gives the same result for the same model and options.

The command line (``trtcompile compile``), the Python API (:func:`trtcompile.compile_model`),
``trtcompile.Converter`` (convert, build, save) and the golden runner each compile a matrix of
models x options; for each case all four must give the same optimized graph (its structural
digest), the same engine compute layers, the same partition (fallback ops, segment
engines) and the same verdict. The cases are the ones where faces used to wire the compile
themselves and disagree: FP32 (the Converter failed at its default precision), FP16, BF16, INT8 with a
calibration method inside ``engine-guided(...)`` (it was dropped), a model with an op TensorRT
rejects (the Converter did not partition), a dynamic profile, and ``tuned`` (engine-guided judged
without the compile's profiles outside the CLI).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import trtcompile
from tests.backend import models
from tests.helpers import CONV_BRANCHES
from trtcompile import cli, ir
from trtcompile.flow import CompileOptions, compile_model
from trtcompile.golden import load_manifest, run_entry
from trtcompile.shapes import ShapeOptions

PROFILE = {"min_shapes": {"input": [1, 4, 8, 8]}, "opt_shapes": {"input": [2, 4, 8, 8]},
           "max_shapes": {"input": [4, 4, 8, 8]}}


def _spec(shape: list[int]) -> str:
    return "input:" + "x".join(map(str, shape))


#: case -> (model, pipeline, precision, calibration method, profile)
CASES = {
    "fp32": ("conv", "default", "fp32", None, None),
    "fp16": ("conv", "default", "fp16", None, None),
    "fp16-measured-on-data": ("conv", "default", "fp16", None, None),
    "bf16": ("conv", "default", "bf16", None, None),
    "int8-percentile-engine-guided": ("conv", "engine-guided(quantize-int8)", "int8", "percentile",
                                      None),
    "rejected-op-partitions": ("bitshift", "default", "fp32", None, None),
    "dynamic-profile": ("dynamic", "default", "fp32", None, PROFILE),
    "tuned": ("conv", "tuned", "fp32", None, None),
}


def _with_data(case: str) -> bool:
    """Whether the case gives the calibration samples (INT8 calibrates, FP16 measures on them)."""
    return CASES[case][2] == "int8" or case == "fp16-measured-on-data"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """The models and the calibration samples of the matrix."""
    folder = tmp_path_factory.mktemp("faces")
    dynamic = onnx.load(CONV_BRANCHES)
    for value in (*dynamic.graph.input, *dynamic.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    del dynamic.graph.value_info[:]
    paths = {"conv": CONV_BRANCHES, "bitshift": folder / "bitshift.onnx",
             "dynamic": folder / "dynamic.onnx", "calib": folder / "calib.npz"}
    ir.save(models.rejected_op_model("BitShift"), paths["bitshift"])
    ir.save(dynamic, paths["dynamic"])
    rng = np.random.default_rng(0)
    np.savez(paths["calib"], input=rng.standard_normal((24, 4, 8, 8)).astype(np.float32))
    return paths




def _from_report(report: dict, optimized: Path) -> dict:
    """What a face's written output says: graph, engine, partition, verdict."""
    partition = report.get("partition")
    engine_layers = report["engine"].get("compute_layers")
    if partition is not None:
        engine_layers = sum(s["compute_layers"] or 0 for s in partition["segments"])
    passes = [record["pipeline_text"] for record in report["passes"]]
    return {
        "digest": ir.model_digest(onnx.load(optimized)),
        "engine_compute_layers": engine_layers,
        "fallback": sorted(f["op"] for f in partition["fallback"]) if partition else None,
        "segment_engines": sum(s["engine"] is not None for s in partition["segments"])
        if partition else None,
        "parity": report["parity"]["passed"],
        "passes": passes,
    }


def _cli(case: str, paths: dict[str, Path], out: Path) -> dict:
    model, pipeline, precision, method, profile = CASES[case]
    argv = ["compile", str(paths[model]), "-o", str(out), "--no-progress", "-q",
            "--pipeline", pipeline, "--precision", precision]
    if _with_data(case):
        argv += ["--calib-data", str(paths["calib"])]
    if method:
        argv += ["--calib-method", method]
    if profile:
        argv += ["--min-shapes", _spec(profile["min_shapes"]["input"]),
                 "--opt-shapes", _spec(profile["opt_shapes"]["input"]),
                 "--max-shapes", _spec(profile["max_shapes"]["input"])]
    assert cli.main(argv) == 0
    return _from_report(json.loads((out / "report.json").read_text()), out / "optimized.onnx")


def _options(case: str, paths: dict[str, Path]) -> dict:
    _, pipeline, precision, method, profile = CASES[case]
    options = {"pipeline": pipeline, "precision": precision, "progress": False}
    if _with_data(case):
        options["calib_data"] = paths["calib"]
    if method:
        options["calib_method"] = method
    if profile:
        options["shapes"] = ShapeOptions(**{k: [v] for k, v in profile.items()})
    return options


def _api(case: str, paths: dict[str, Path], out: Path) -> dict:
    result = compile_model(paths[CASES[case][0]], out, CompileOptions(**_options(case, paths)))
    assert result.error is None, result.error
    return _from_report(result.report, out / "optimized.onnx")


def _converter(case: str, paths: dict[str, Path], out: Path) -> dict:
    options = _options(case, paths)
    precision = options.pop("precision").upper()
    pipeline = options.pop("pipeline")
    converter = trtcompile.Converter(input_saved_model_dir=paths[CASES[case][0]],
                                     precision_mode=precision, pipeline=pipeline, **options)
    converter.convert()
    converter.build()
    converter.save(out)
    return _from_report(json.loads((out / "report.json").read_text()), out / "optimized.onnx")


def _golden(case: str, paths: dict[str, Path], out: Path) -> dict:
    model, pipeline, precision, method, profile = CASES[case]
    lines = ["[[model]]", f'name = "{case}"', f'path = "{paths[model]}"',
             f'pipeline = "{pipeline}"', f'precision = "{precision}"', "engine = true"]
    if _with_data(case):
        lines.append(f'calib_data = "{paths["calib"]}"')
    if method:
        lines.append(f'calib_method = "{method}"')
    for key, shapes in (profile or {}).items():
        lines.append(f"{key} = {{ input = {shapes['input']} }}")
    out.mkdir()
    manifest = out / "manifest.toml"
    manifest.write_text("\n".join(lines) + "\n")
    (entry,) = load_manifest(manifest).entries
    outcome = run_entry(entry)
    assert outcome.error is None, outcome.error
    partition = outcome.partition
    return {
        "digest": outcome.digest,
        "engine_compute_layers": outcome.engine_compute_layers,
        "fallback": sorted(f["op"] for f in partition.fallback) if partition else None,
        "segment_engines": sum(s.engine is not None for s in partition.segments)
        if partition else None,
        "parity": outcome.parity.passed,
        "passes": [record.text for record in outcome.pipeline_report.records],
    }


FACES = {"cli": _cli, "api": _api, "converter": _converter, "golden": _golden}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_every_face_gives_the_same_graph_engine_partition_and_verdict(case, inputs, tmp_path):
    results = {face: run(case, inputs, tmp_path / face) for face, run in FACES.items()}
    reference = results["cli"]
    assert reference["parity"] is True
    assert reference["engine_compute_layers"], reference
    for face, result in results.items():
        assert result == reference, f"{face} differs from the command line: {result} != {reference}"
    if case == "rejected-op-partitions":
        assert "BitShift" in reference["fallback"] and reference["segment_engines"] == 2
    if case == "fp16-measured-on-data":
        assert "precision-fp16{keep=auto}" in reference["passes"], reference["passes"]
    if case == "int8-percentile-engine-guided":
        assert any("quantize-int8{method=percentile" in text for text in reference["passes"]), \
            reference["passes"]
