"""compile_model: the stages, the outputs it writes (atomically) and the reference comparisons."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.helpers import output_names
from trtcompile import examples, flow, ir
from trtcompile.errors import CheckFailed, InputError, PassFailed, PipelineError
from trtcompile.flow import CompileOptions, compile_model
from trtcompile.flow import compilation as flow_compilation
from trtcompile.flow import engine as flow_engine
from trtcompile.frontend import LoadedModel, LoweringRecord

PASS_MODULE = '''
from dataclasses import dataclass
from typing import ClassVar

from trtcompile.pass_manager import Pass, PassResult


@dataclass(frozen=True)
class Explode(Pass):
    """Raises on purpose."""

    name: ClassVar[str] = "explode"

    def run(self, graph, ctx):
        raise ValueError("deliberate")
'''


def options(**kwargs) -> CompileOptions:
    """Options of these tests: no engine, no progress, and (with no model) the fast ONNX example;
    the default TensorFlow example is compiled end to end in tests/test_cli.py."""
    kwargs.setdefault("engine", False)
    kwargs.setdefault("progress", False)
    kwargs.setdefault("example", "googlenet-onnx")
    return CompileOptions(**kwargs)


@pytest.fixture(scope="module")
def example_run(tmp_path_factory) -> flow.CompileResult:
    out = tmp_path_factory.mktemp("example") / "out"
    return compile_model(None, out, options(dump_after_each=True))


def test_example_compiles_and_writes_its_outputs(example_run: flow.CompileResult) -> None:
    out = example_run.output_dir
    assert example_run.error is None and example_run.exit_code == 0
    # The hidden manifest records what this compile wrote (size, SHA-256), so a later compile
    # removes only that.
    assert sorted(p.name for p in out.iterdir()) == [
        ".trtcompile-outputs.json", "optimized.onnx", "passes", "report.json"]
    optimized = onnx.load(out / "optimized.onnx")
    assert optimized.ir_version == ir.IR_VERSION
    onnx.checker.check_model(optimized)
    assert len(optimized.graph.node) == example_run.pipeline_report.layers_after
    # No temporary folder is left next to the output.
    assert [p.name for p in out.parent.iterdir()] == ["out"]


def test_report_json_matches_the_pipeline_report(example_run: flow.CompileResult) -> None:
    report = json.loads((example_run.output_dir / "report.json").read_text())
    assert report == json.loads(json.dumps(example_run.report))
    pipeline = example_run.pipeline_report
    assert report["pipeline"] == pipeline.pipeline
    assert report["layers"] == {"input": 61, "optimized": pipeline.layers_after}
    assert [(p["name"], p["layers_before"], p["layers_after"], p["counts"]) for p in report["passes"]] \
        == [(r.name, r.layers_before, r.layers_after, r.counts) for r in pipeline.records]
    assert report["histogram"]["input"]["Conv"] == 17
    assert report["model"]["kind"] == "example"
    assert report["model"]["inputs"] == [{"name": "input", "shape": [1, 3, 64, 64], "dtype": "float32"}]
    assert report["parity"]["checked"] and report["parity"]["passed"]
    assert set(report["parity"]["outputs"]) == {"logits"}
    assert report["parity"]["tolerances"] == {
        "atol": 1e-4, "rtol": 1e-3, "seed": 0,
        "inputs": {"floating_point": "standard normal", "integer": "Polygraphy default (0 or 1)",
                   "seed": 0}}
    assert [(c["reference"], c["candidate"]) for c in report["parity"]["comparisons"]] == [
        ("input", "optimized")]
    assert report["engine"] == {"built": False, "reason": "--no-engine"}
    assert report["lowering"] is None
    assert report["status"] == {"passed": True, "exit_code": 0, "error": None}
    assert report["files"] == {"optimized": "optimized.onnx", "passes": "passes",
                               "report": "report.json"}
    assert report["tools"]["onnxruntime"]


def test_dump_after_each_writes_one_model_per_pass(example_run: flow.CompileResult) -> None:
    dumps = sorted(p.name for p in (example_run.output_dir / "passes").iterdir())
    expected = ["000_input.onnx"] + [f"{r.index:03d}_{r.name}.onnx"
                                     for r in example_run.pipeline_report.records]
    assert dumps == expected


def test_optimized_model_matches_the_example_numerically(example_run: flow.CompileResult) -> None:
    data = np.random.default_rng(3).uniform(0, 1, (1, 3, 64, 64)).astype(np.float32)
    outputs = []
    for model in (examples.googlenet_onnx(), onnx.load(example_run.output_dir / "optimized.onnx")):
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        outputs.append(session.run(None, {"input": data})[0])
    np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-4, rtol=1e-3)


def test_an_onnx_file_compiles_and_report_json_copy_is_written(tmp_path: Path) -> None:
    source = tmp_path / "model.onnx"
    ir.save(examples.googlenet_onnx(), source)
    result = compile_model(source, tmp_path / "out", options(
        pipeline="dead-layer-elimination", parity=False, report_json=tmp_path / "copy" / "r.json"))
    assert result.report["model"]["source"] == str(source)
    assert result.report["parity"]["checked"] is False
    assert json.loads((tmp_path / "copy" / "r.json").read_text()) == \
        json.loads((tmp_path / "out" / "report.json").read_text())


def test_outputs_of_an_earlier_run_that_this_run_does_not_produce_are_removed(tmp_path: Path) -> None:
    """Only what an earlier compile recorded writing (and that is unchanged) is removed: files of
    the same names that no compile wrote are the user's and stay."""
    out = tmp_path / "out"
    (out / "passes").mkdir(parents=True)
    (out / "passes" / "001_old-pass.onnx").write_bytes(b"old")
    (out / "model.engine").write_bytes(b"old engine")
    (out / "notes.txt").write_text("mine")
    compile_model(None, out, options(parity=False, pipeline="none"))
    assert output_names(out) == ["model.engine", "notes.txt", "optimized.onnx", "passes",
                                 "report.json"]
    assert (out / "model.engine").read_bytes() == b"old engine"
    assert (out / "notes.txt").read_text() == "mine"

    mine = tmp_path / "mine"
    compile_model(None, mine, options(parity=False, pipeline="dead-layer-elimination",
                                      dump_after_each=True))
    assert (mine / "passes").is_dir()
    compile_model(None, mine, options(parity=False, pipeline="none"))
    assert output_names(mine) == ["optimized.onnx", "report.json"]


def test_a_report_page_in_out_from_an_earlier_run_is_removed(tmp_path: Path) -> None:
    """--report-html OUT/report.html is recorded in report.json's files; a later compile into OUT
    that writes no page removes it (it describes the earlier run), and leaves other files."""
    out = tmp_path / "out"
    first = compile_model(None, out, options(parity=False, pipeline="none",
                                             report_html=out / "report.html",
                                             report_json=out / "copy.json"))
    assert first.report["files"] == {"optimized": "optimized.onnx", "report": "report.json",
                                     "report_html": "report.html", "report_json": "copy.json"}
    assert first.files["report_html"] == out / "report.html" and (out / "report.html").is_file()
    (out / "summary.html").write_text("mine")

    compile_model(None, out, options(parity=False, pipeline="dead-layer-elimination",
                                     report_html=tmp_path / "elsewhere.html"))
    assert output_names(out) == ["optimized.onnx", "report.json",
                                                     "summary.html"]
    assert (out / "summary.html").read_text() == "mine" and (tmp_path / "elsewhere.html").is_file()
    # A page of another name, then none: only what a report recorded is ever removed.
    # The user's summary.html is moved aside, never overwritten.
    compile_model(None, out, options(parity=False, pipeline="none",
                                     report_html=out / "summary.html"))
    assert "trtcompile report" in (out / "summary.html").read_text()
    assert (out / "summary.html.orig").read_text() == "mine"
    compile_model(None, out, options(parity=False, pipeline="none"))
    assert output_names(out) == ["optimized.onnx", "report.json", "summary.html.orig"]


def test_a_report_listing_files_outside_out_removes_nothing_there(tmp_path: Path) -> None:
    """A report.json whose files name paths outside OUT (edited by hand) or folders removes none
    of them: only plain file names in OUT count."""
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "keep.txt").write_text("mine")
    (out / "data").mkdir()
    (out / "report.json").write_text(json.dumps(
        {"files": {"a": "../keep.txt", "b": str(tmp_path / "keep.txt"), "c": "data"}}))
    compile_model(None, out, options(parity=False, pipeline="none"))
    assert (tmp_path / "keep.txt").read_text() == "mine" and (out / "data").is_dir()


def test_a_report_copy_may_not_take_an_output_name(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="would overwrite the compile's own optimized.onnx"):
        compile_model(None, tmp_path / "out", options(report_html=tmp_path / "out" / "optimized.onnx"))
    assert list(tmp_path.iterdir()) == []


def test_bad_input_creates_nothing(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "out"
    with pytest.raises(InputError, match="model not found"):
        compile_model(tmp_path / "missing.onnx", out, options())
    with pytest.raises(PipelineError, match="unknown pass 'nope'"):
        compile_model(None, out, options(pipeline="nope"))
    with pytest.raises(InputError, match="pass module not found"):
        compile_model(None, out, options(pass_modules=[tmp_path / "passes.py"]))
    assert list(tmp_path.iterdir()) == []


def test_output_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("a file")
    with pytest.raises(InputError, match="exists and is not a folder"):
        compile_model(None, tmp_path / "out", options())


def test_the_input_model_is_never_overwritten(tmp_path: Path) -> None:
    source = tmp_path / "optimized.onnx"
    ir.save(examples.googlenet_onnx(), source)
    before = source.read_bytes()
    with pytest.raises(InputError, match="would overwrite the input model"):
        compile_model(source, tmp_path, options())
    with pytest.raises(InputError, match="would overwrite the input model"):
        compile_model(source, tmp_path / "elsewhere", options(report_json=source))
    assert source.read_bytes() == before
    assert output_names(tmp_path) == ["optimized.onnx"]


def test_a_failing_pass_writes_nothing(tmp_path: Path) -> None:
    module = tmp_path / "user_passes.py"
    module.write_text(PASS_MODULE)
    out = tmp_path / "out"
    with pytest.raises(PassFailed, match="pass 'explode' failed: ValueError: deliberate "
                                         "\\(passes run before it: dead-layer-elimination\\)"):
        compile_model(None, out, options(pipeline="dead-layer-elimination,explode",
                                         pass_modules=[module]))
    assert output_names(tmp_path) == ["user_passes.py"]


# --------------------------------------------------------------------------------------------
# A lowered model with a reference runner (what the TensorFlow frontend returns)
# --------------------------------------------------------------------------------------------


def fake_lowered(perturb: float = 0.0) -> LoadedModel:
    """The example as if lowered from TensorFlow; the 'reference' runs it on ONNX Runtime
    (optionally perturbed, as a wrong lowering would be)."""
    model = examples.googlenet_onnx()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    def reference(feeds):
        (logits,) = session.run(None, dict(feeds))
        return {"logits": logits + perturb}

    lowering = LoweringRecord(tool="tf2onnx 1.17.0", mode="faithful", source_kind="keras",
                              source_ops=70, onnx_nodes=61, seconds=0.5)
    return LoadedModel(model=model, source_path=Path("net.keras"), kind="keras", lowering=lowering,
                       reference=reference, reference_name="tensorflow",
                       description="Keras model net.keras")


def test_reference_is_compared_with_the_lowered_and_optimized_models(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(flow_compilation, "load_source", lambda source, opts: fake_lowered())
    result = compile_model(None, tmp_path / "out", options())
    parity = result.report["parity"]
    assert [(c["reference"], c["candidate"]) for c in parity["comparisons"]] == [
        ("tensorflow", "lowered"), ("lowered", "optimized"), ("tensorflow", "optimized")]
    assert parity["passed"] and (parity["reference"], parity["candidate"]) == ("tensorflow", "optimized")
    assert all(c["outputs"]["logits"]["passed"] for c in parity["comparisons"])
    assert (tmp_path / "out" / "lowered.onnx").exists()
    assert result.report["files"]["lowered"] == "lowered.onnx"
    assert result.report["lowering"]["source_ops"] == 70


def test_a_reference_mismatch_fails_parity_and_names_the_comparisons(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(flow_compilation, "load_source", lambda source, opts: fake_lowered(perturb=0.5))
    result = compile_model(None, tmp_path / "out", options(engine=True))
    assert isinstance(result.error, CheckFailed) and result.exit_code == 1
    assert result.report["parity"]["failed"] == [
        {"reference": "tensorflow", "candidate": "lowered", "output": "logits"},
        {"reference": "tensorflow", "candidate": "optimized", "output": "logits"}]
    message = str(result.error)
    assert "lowered vs tensorflow: output 'logits' (max_abs=0.5" in message
    assert "optimized vs tensorflow: output 'logits'" in message
    # The outputs are still written for inspection; no engine is built for a model that fails parity.
    assert result.report["engine"] == {"built": False, "reason": "parity failed"}
    assert output_names(tmp_path / "out") == [
        "lowered.onnx", "optimized.onnx", "report.json"]
    assert json.loads((tmp_path / "out" / "report.json").read_text())["status"]["exit_code"] == 1


def test_a_backend_failure_writes_the_outputs_and_exits_3(tmp_path, monkeypatch) -> None:
    from trtcompile.errors import BackendError

    def refuse(optimized, loaded, opts, plan=None):
        raise BackendError("TensorRT could not parse node 'stem_conv': unsupported")

    monkeypatch.setattr(flow_engine, "build_engine", refuse)
    result = compile_model(None, tmp_path / "out", options(engine=True))
    assert isinstance(result.error, BackendError) and result.exit_code == 3
    assert result.report["engine"] == {
        "built": False, "reason": "build failed",
        "error": "TensorRT could not parse node 'stem_conv': unsupported"}
    assert result.report["status"]["exit_code"] == 3
    assert output_names(tmp_path / "out") == ["optimized.onnx", "report.json"]
    with pytest.raises(BackendError):
        result.check()


def test_engine_is_built_and_saved(tmp_path) -> None:
    result = compile_model(None, tmp_path / "out", options(engine=True, parity=False))
    assert result.error is None
    plan = (tmp_path / "out" / "model.engine").read_bytes()
    assert plan == result.engine.plan
    engine = result.report["engine"]
    assert engine["built"] is True and engine["path"] == "model.engine"
    assert engine["plan_bytes"] == len(plan)
    assert engine["compute_layers"] == result.engine.compute_layers > 0
