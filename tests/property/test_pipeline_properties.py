"""Idempotence and determinism of the default pipeline on random CNNs.

* Idempotence: the default pipeline run on its own output changes nothing: the layer count, the
  op sequence and the serialized model stay the same, and no pass reports a change.
* Determinism: the same model and options give a byte-identical optimized model and the same report
  apart from timings, within one process, across processes with different hash seeds (set and
  dict iteration orders differ between them), and through ``trtcompile compile --no-engine``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import onnx
import pytest
from hypothesis import given, settings

from tests.helpers import REPO, run_trtcompile
from tests.property import oracle, profiles
from tests.property.strategies import cnn_models
from trtcompile import ir

MODELS = cnn_models(max_layers=profiles.max_layers())


def without_timings(value):
    """``value`` (a report as JSON data) with every timing field removed."""
    if isinstance(value, dict):
        return {key: without_timings(item) for key, item in value.items()
                if not (key == "seconds" or key.endswith("_seconds") or key.endswith("_ms"))}
    if isinstance(value, list):
        return [without_timings(item) for item in value]
    return value


def _structure(model: onnx.ModelProto) -> list[tuple]:
    return [(node.domain, node.op_type, tuple(node.input), tuple(node.output))
            for node in model.graph.node]


@profiles.examples()
@given(MODELS)
def test_default_pipeline_is_idempotent(case) -> None:
    pipeline = oracle.default_pipeline()
    once, _ = oracle.optimize(case.model, pipeline)
    twice, _ = oracle.optimize(once, pipeline)
    assert len(twice.graph.node) == len(once.graph.node)
    assert _structure(twice) == _structure(once)
    assert twice.SerializeToString() == once.SerializeToString(), (
        "second run changed the serialized model:\n" + onnx.printer.to_text(once) + "\n---\n"
        + onnx.printer.to_text(twice))


@profiles.examples()
@given(MODELS)
def test_default_pipeline_reports_no_change_on_its_own_output(case) -> None:
    pipeline = oracle.default_pipeline()
    once, _ = oracle.optimize(case.model, pipeline)
    _, report = oracle.optimize(once, pipeline)
    changed = [f"{r.text} (iteration {r.iteration}): {r.counts}" for r in report.records if r.changed]
    assert not changed, f"passes reported changing an already optimized graph: {changed}"


@profiles.examples()
@given(MODELS)
def test_default_pipeline_is_deterministic_in_process(case) -> None:
    pipeline = oracle.default_pipeline()
    first, first_report = oracle.optimize(case.model, pipeline)
    second, second_report = oracle.optimize(case.model, pipeline)
    assert first.SerializeToString() == second.SerializeToString()
    assert without_timings(first_report.to_dict()) == without_timings(second_report.to_dict())


def _sample_models(count: int) -> list[onnx.ModelProto]:
    """``count`` generated models, the same on every run (derandomized)."""
    models: list[onnx.ModelProto] = []

    @settings(max_examples=count, derandomize=True, database=None)
    @given(cnn_models(max_layers=profiles.max_layers()))
    def collect(case) -> None:
        models.append(case.model)

    collect()
    return models[:count]


_OPTIMIZE_ALL = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import onnx
    from trtcompile import ir
    from trtcompile.pass_manager import PassManager
    folder = Path(sys.argv[1])
    for path in sorted(folder.glob("model_*.onnx")):
        graph = ir.import_model(onnx.load(str(path)))
        report = PassManager(sys.argv[2]).run(graph)
        stem = path.stem.replace("model_", "")
        (folder / f"optimized_{stem}_{sys.argv[3]}.onnx").write_bytes(
            ir.export_model(graph).SerializeToString())
        (folder / f"report_{stem}_{sys.argv[3]}.json").write_text(json.dumps(report.to_dict()))
""")


def test_default_pipeline_is_deterministic_across_processes(tmp_path: Path) -> None:
    models = _sample_models(max(4, profiles.PROFILES[profiles.active()]["max_examples"] // 4))
    for index, model in enumerate(models):
        ir.save(model, tmp_path / f"model_{index:03d}.onnx")
    for hash_seed in ("0", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        subprocess.run([sys.executable, "-c", _OPTIMIZE_ALL, str(tmp_path),
                        oracle.default_pipeline(), hash_seed],
                       check=True, env=env, cwd=REPO, timeout=300)
    for index in range(len(models)):
        stem = f"{index:03d}"
        first = (tmp_path / f"optimized_{stem}_0.onnx").read_bytes()
        second = (tmp_path / f"optimized_{stem}_12345.onnx").read_bytes()
        assert first == second, f"model {stem}: optimized models differ between processes"
        reports = [without_timings(json.loads((tmp_path / f"report_{stem}_{seed}.json").read_text()))
                   for seed in ("0", "12345")]
        assert reports[0] == reports[1], f"model {stem}: reports differ between processes"


@pytest.mark.slow
def test_cli_compile_is_deterministic(tmp_path: Path) -> None:
    """``trtcompile compile --no-engine`` twice: byte-identical optimized.onnx, same report."""
    if not (REPO / "trtcompile" / "cli" / "__init__.py").exists():
        pytest.skip("the trtcompile command is not available")
    models = _sample_models(2)
    for index, model in enumerate(models):
        source = ir.save(model, tmp_path / f"model_{index}.onnx")
        outputs = []
        for hash_seed in ("0", "12345"):
            out = tmp_path / f"out_{index}_{hash_seed}"
            completed = run_trtcompile("compile", str(source), "-o", str(out), "--no-engine",
                                       "--no-progress", "-q", env={"PYTHONHASHSEED": hash_seed},
                                       timeout=300)
            assert completed.returncode == 0, completed.stderr[-2000:]
            outputs.append(out)
        first, second = outputs
        assert (first / "optimized.onnx").read_bytes() == (second / "optimized.onnx").read_bytes()
        reports = [json.loads((out / "report.json").read_text()) for out in outputs]
        texts = [json.dumps(without_timings(r), sort_keys=True).replace(str(out), "<OUT>")
                 for r, out in zip(reports, outputs)]
        assert texts[0] == texts[1]
