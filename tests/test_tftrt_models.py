"""TF-TRT users' models, end to end through the command and the Converter: every one converts, or
partitions around what TensorRT cannot build.

The models (tests/tf_models.py) are written once per module by a process of their own; each
compile lowers in the frontend's worker process, so this process never imports TensorFlow.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import trtcompile
from tests.helpers import REPO, run_main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tf_models(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tf_models")
    subprocess.run([sys.executable, str(REPO / "tests" / "tf_models.py"), str(out)], check=True,
                   capture_output=True)
    return out


def compile_report(model: Path, out: Path, capsys, *flags: str) -> tuple[int, str, dict]:
    code, _, err = run_main(["compile", str(model), "-o", str(out), "--no-progress", *flags],
                            capsys)
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() \
        else {}
    return code, err, report


@pytest.mark.parametrize("name, flags", [("gru_savedmodel", ()), ("gru.h5", ("--no-engine",))])
def test_stacked_keras3_grus_lower_faithfully_and_pass_parity(tf_models, tmp_path, capsys, name,
                                                              flags) -> None:
    code, err, report = compile_report(tf_models / name, tmp_path / "out", capsys, *flags)
    assert code == 0, err
    lowering = report["lowering"]
    # One TensorListFromTensor per GRU became an Identity with two inputs: cleaned, not a fallback.
    assert lowering["mode"] == "faithful" and lowering["note"] == ""
    assert lowering["cleaned"] == {"identity_extra_inputs": 2, "unused_initializers": 2}
    assert report["parity"]["passed"] is True
    if not flags:
        assert report["engine"]["built"] is True


def test_combined_nms_partitions_around_the_node_the_builder_fails_on(tf_models, tmp_path,
                                                                      capsys) -> None:
    code, err, report = compile_report(tf_models / "combined_nms", tmp_path / "out", capsys)
    assert code == 0, err
    partition = report["partition"]
    assert partition["trigger"] == "TensorRT's builder fails on 1 node its parser accepts"
    assert [entry["op"] for entry in partition["fallback"]] == ["NonMaxSuppression"]
    (reason,) = partition["build_failures"].values()
    assert reason.startswith("TensorRT's builder fails on it:") and "no runners" in reason
    assert partition["fallback"][0]["reason"] == reason
    # What --exclude-ops NonMaxSuppression gives: every compute node but NMS in engines.
    total = partition["compute_nodes"]
    assert partition["coverage"] == pytest.approx((total - 1) / total, abs=1e-6)
    assert partition["coverage"] > 0.95 and partition["builds_tried"] is True
    assert all(segment["engine"] for segment in partition["segments"])
    assert report["status"]["passed"] and partition["parity"]["passed"]
    assert "finding the node it fails on" in err


def test_partition_only_says_no_build_was_tried(tf_models, tmp_path, capsys) -> None:
    code, err, report = compile_report(tf_models / "combined_nms", tmp_path / "out", capsys,
                                       "--partition-only", "--no-parity")
    assert code == 0, err
    partition = report["partition"]
    assert partition["builds_tried"] is False and partition["build_failures"] == {}
    assert "segments that TensorRT's builder fails on are not found" in err


def test_single_nms_through_the_converter(tf_models, tmp_path) -> None:
    converter = trtcompile.Converter(input_saved_model_dir=str(tf_models / "single_nms"),
                                     precision_mode="FP32", log=lambda line: None)
    converter.convert()
    converter.build(input_fn=lambda: iter([(np.zeros((1, 16, 16, 3), np.float32),)]))
    lines: list[str] = []
    converter.summary(print_fn=lines.append, line_length=80)
    assert lines[0] == "[*] Total number of TensorRT engines: 2"
    outcome = converter.compilation.partition_outcome
    converted = outcome.total_compute_nodes - 1
    assert lines[1] == (f"[*] % of OPs Converted: {converted / outcome.total_compute_nodes:.2%} "
                        f"[{converted}/{outcome.total_compute_nodes}]")
    assert "[TensorRTSegment_0]" in lines and "[TensorRTSegment_1]" in lines
    assert any(line.startswith("  - NonMaxSuppression") for line in lines)
    assert all(len(line) <= 80 for line in lines)
    out = converter.save(tmp_path / "saved")
    assert (out / "segments" / "segment_1.engine").stat().st_size > 0


def test_string_input_generates_numbers_and_takes_given_strings(tf_models, tmp_path,
                                                                capsys) -> None:
    model = tf_models / "string_input"
    code, err, report = compile_report(model, tmp_path / "generated", capsys)
    assert code == 0, err
    assert report["parity"]["passed"] is True
    fallback = report["partition"]["fallback"]
    assert [entry["op"] for entry in fallback] == ["Cast"] and "string" in fallback[0]["reason"]
    text = np.array([[[f"{(r * 8 + c) / 10:.1f}" for c in range(8)] for r in range(8)]])
    np.savez(tmp_path / "inputs.npz", text=text)
    code, err, report = compile_report(model, tmp_path / "given", capsys,
                                       "--inputs", str(tmp_path / "inputs.npz"), "--no-engine")
    assert code == 0, err
    assert report["parity"]["passed"] is True
    # The given strings are what runs: words that are not numbers stop the lowered model.
    np.savez(tmp_path / "words.npz", text=np.full((1, 8, 8), "seven"))
    code, err, _ = compile_report(model, tmp_path / "words", capsys,
                                  "--inputs", str(tmp_path / "words.npz"), "--no-engine")
    assert code == 1 and "does not run on ONNX Runtime" in err
    np.savez(tmp_path / "floats.npz", text=np.zeros((1, 8, 8), np.float32))
    code, err, _ = compile_report(model, tmp_path / "floats", capsys,
                                  "--inputs", str(tmp_path / "floats.npz"), "--no-engine")
    assert code == 2 and "'text' is float32, the model's input is a string tensor" in err


def test_hash_table_lowers_with_its_contents_and_the_lookup_falls_back(tf_models, tmp_path,
                                                                      capsys) -> None:
    code, err, report = compile_report(tf_models / "hash_table", tmp_path / "out", capsys)
    assert code == 0, err
    assert report["lowering"]["tables"] == 1 and report["parity"]["passed"] is True
    partition = report["partition"]
    assert [entry["op"] for entry in partition["fallback"]] == ["ai.onnx.ml.CategoryMapper"]
    assert partition["segments"] and all(s["engine"] for s in partition["segments"])


def test_a_lookup_tf2onnx_cannot_lower_names_the_tensorflow_op(tf_models, tmp_path,
                                                                capsys) -> None:
    code, err, _ = compile_report(tf_models / "vocabulary_table", tmp_path / "out", capsys, "-q")
    assert code == 2
    assert "TensorFlow op StringToHashBucketFast" in err and "LookupTableFindV2" not in err
    assert len(err.strip().splitlines()) == 1
