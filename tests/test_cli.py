"""The trtcompile command end to end, in a subprocess, on the built-in example and on bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.helpers import BREAKING_PASS, REPO, output_names, run_trtcompile
from trtcompile import __version__, cli, examples, ir
from trtcompile.flow.registry import build_registry

COUNTING_PASS = '''
from dataclasses import dataclass
from typing import ClassVar

from trtcompile.pass_manager import Pass, PassResult


@dataclass(frozen=True)
class CountActivations(Pass):
    """Counts activations of one kind and changes nothing."""

    name: ClassVar[str] = "count-activations"
    op: str = "Relu"

    def run(self, graph, ctx):
        result = PassResult()
        for node in graph.nodes:
            if node.op == self.op:
                result.count("activations_seen")
        return result
'''


def table_lines(stdout: str) -> list[str]:
    """The lines of the per-pass table, from its header to its total row."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("pass "))
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("total"))
    return lines[start:end + 1]


def table_rows(stdout: str) -> list[tuple[str, list[str]]]:
    """Rows of the per-pass table in order: (pass label, the other columns split), total last."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("pass "))
    rows = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        if set(line) == {"-"}:
            continue
        if line.startswith(" "):  # counts wrapped onto a line of their own, under their column
            rows[-1][1].extend(line.split())
            continue
        # A label holds no double space; the columns are separated by at least two spaces.
        label, _, rest = line.partition("  ")
        rows.append((label.strip(), rest.split()))
        if label.strip() == "total":  # the table ends with its total row
            break
    return rows


def check_table_matches_report(stdout: str, report: dict) -> None:
    rows = table_rows(stdout)
    lowering = report["lowering"]
    if lowering:  # the lowering from TensorFlow is the table's first row
        label, columns = rows.pop(0)
        assert label == f"lowering ({lowering['tool']}, {lowering['mode']})"
        assert columns[:5] == [str(lowering["source_ops"]), "TF", "ops", str(lowering["onnx_nodes"]), "nodes"]
        assert columns[-2:] == [f"tensorflow_ops={lowering['source_ops']}",
                                f"onnx_nodes={lowering['onnx_nodes']}"]
    assert len(rows) == len(report["passes"]) + 1
    for (label, columns), record in zip(rows, report["passes"]):
        iteration = f" #{record['iteration']}" if record["iteration"] else ""
        # The label is the pass's pipeline text, abbreviated to fit the terminal.
        full = record["pipeline_text"] + iteration
        assert label == full or (label.endswith("\u2026" + iteration)
                                 and full.startswith(label[:-len("\u2026" + iteration)]))
        before, after, delta, *rest = columns
        assert (int(before), int(after)) == (record["layers_before"], record["layers_after"])
        assert int(delta) == record["delta"]
        assert [c for c in rest if "=" in c] == [f"{k}={v}" for k, v in record["counts"].items()]
    label, total = rows[-1]
    assert label == "total"
    assert (int(total[0]), int(total[1])) == (report["layers"]["input"], report["layers"]["optimized"])


@pytest.fixture(scope="module")
def example_compile(tmp_path_factory):
    """One run of `trtcompile compile` with no model: the default example, from TensorFlow to engine."""
    cwd = tmp_path_factory.mktemp("cli")
    result = run_trtcompile("compile", "--no-progress", cwd=cwd)
    return cwd, result


def test_compile_example_end_to_end(example_compile) -> None:
    cwd, result = example_compile
    assert result.returncode == 0, result.stderr
    assert "compiling the built-in example" in result.stderr
    assert examples.DEFAULT_EXAMPLE == "googlenet-keras"
    assert f"model: {examples.EXAMPLES['googlenet-keras'].description}" in result.stdout
    assert max(len(line) for line in table_lines(result.stdout)) <= 120
    out = cwd / "out"
    assert output_names(out) == ["lowered.onnx", "model.engine", "optimized.onnx", "report.json"]
    report = json.loads((out / "report.json").read_text())
    for key in ("passes", "layers", "parity", "engine", "histogram", "pipeline", "model", "tools",
                "lowering"):
        assert key in report
    assert report["files"]["lowered"] == "lowered.onnx"

    # The lowering from TensorFlow is recorded and is the table's first row.
    lowering = report["lowering"]
    assert lowering["tool"].startswith("tf2onnx ") and lowering["mode"] == "faithful"
    assert lowering["source_kind"] == "savedmodel" and lowering["source_ops"] > 0
    first_label, first_columns = table_rows(result.stdout)[0]
    assert first_label == f"lowering ({lowering['tool']}, faithful)"
    assert first_columns[:5] == [str(lowering["source_ops"]), "TF", "ops", str(lowering["onnx_nodes"]),
                                 "nodes"]
    check_table_matches_report(result.stdout, report)
    lowered = onnx.load(out / "lowered.onnx")
    assert len(lowered.graph.node) == lowering["onnx_nodes"] == report["layers"]["input"]
    assert [i.name for i in lowered.graph.input] == ["image"]
    # The passes have work to do on a lowered Keras model: NHWC transposes, conv+bias+relu.
    assert report["layers"]["optimized"] < report["layers"]["input"]
    assert report["histogram"]["input"].get("Transpose", 0) > report["histogram"]["optimized"].get(
        "Transpose", 0)

    # Parity: TensorFlow vs the lowered model, lowered vs optimized, and end to end.
    parity = report["parity"]
    assert parity["passed"] is True and parity["failed"] == []
    assert (parity["reference"], parity["candidate"]) == ("tensorflow", "optimized")
    # At the default profile's batch 1 and at batch 3 (a baked batch size shows there), on
    # signed standard-normal inputs.
    assert [(c["reference"], c["candidate"]) for c in parity["comparisons"]] == [
        ("tensorflow", "lowered"), ("lowered", "optimized"), ("tensorflow", "optimized")] * 2
    assert [s["image"][0] for s in parity["input_shapes"]] == [1, 3]
    assert parity["tolerances"]["inputs"]["floating_point"] == "standard normal"
    assert all(c["passed"] for c in parity["comparisons"])
    assert "parity: passed" in result.stdout
    assert "inputs: floating point standard normal" in result.stdout
    for comparison in ("lowered vs tensorflow", "optimized vs lowered", "optimized vs tensorflow"):
        assert comparison in result.stdout

    engine = report["engine"]
    assert engine["built"] is True and engine["path"] == "model.engine"
    assert engine["backend"] in ("tensorrt", "tensorrt_rtx") and engine["version"]
    assert engine["build_seconds"] > 0 and engine["compute_layers"] > 0
    assert (out / "model.engine").stat().st_size == engine["plan_bytes"]
    assert f"engine: {engine['backend']} {engine['version']}, out/model.engine" in result.stdout
    assert f"engine layers: {len(engine['layers'])} ({engine['compute_layers']} compute)" \
        in result.stdout
    assert engine["compute_layer_precisions"] == {"INT8": 0, "FP16": 0, "FP32": engine["compute_layers"]}
    assert f"compute layers by precision: INT8=0 FP16=0 FP32={engine['compute_layers']}" in result.stdout
    # Every node of the optimized model that TensorRT names is one the model has.
    optimized = {node.name for node in onnx.load(out / "optimized.onnx").graph.node}
    named = {name for layer in engine["layers"] for name in layer["onnx_nodes"]}
    assert named and named <= optimized
    assert result.stdout.rstrip().endswith(
        "wrote out/: optimized.onnx, lowered.onnx, model.engine, report.json")
    # The example was exported into the (test session's) cache folder, not next to the output.
    cache = Path(os.environ["TRTCOMPILE_CACHE_DIR"]) / "examples"
    assert report["model"]["source"].startswith(str(cache))


def test_bf16_compiles_the_example_and_builds_a_bf16_engine(tmp_path: Path) -> None:
    """--precision bf16 on the built-in ONNX example: bfloat16 in the graph, parity at BF16's
    tolerances through ONNX Runtime's float32 emulation, an engine whose layers run in BF16, and
    --why-not naming the nodes kept in float32 (opset 17 has no bfloat16 Conv or pooling)."""
    result = run_trtcompile("compile", "--example", "googlenet-onnx", "-o", "out", "--no-progress",
                            "--precision", "bf16", "--why-not", "precision-fp16", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [p["pipeline_text"] for p in report["passes"] if p["name"] == "precision-fp16"] == \
        ["precision-fp16{dtype=bfloat16}"]
    optimized = onnx.load(tmp_path / "out" / "optimized.onnx")
    assert any(init.data_type == onnx.TensorProto.BFLOAT16 for init in optimized.graph.initializer)
    parity = report["parity"]
    assert parity["passed"] is True
    assert (parity["tolerances"]["atol"], parity["tolerances"]["rtol"]) == (5e-2, 5e-2)
    assert "tolerances: bf16: elementwise" in result.stdout
    engine = report["engine"]
    assert engine["built"] is True and engine["compute_layer_precisions"]["BF16"] > 0
    assert f"BF16={engine['compute_layer_precisions']['BF16']}" in result.stdout
    assert "Conv has no bfloat16 form at opset 17" in result.stdout.split("why not precision-fp16")[1]


def test_no_engine_and_no_parity(tmp_path: Path) -> None:
    result = run_trtcompile("compile", "--example", "googlenet-onnx", "-o", "build", "--no-engine",
                        "--no-parity", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert output_names(tmp_path / "build") == ["optimized.onnx", "report.json"]
    report = json.loads((tmp_path / "build" / "report.json").read_text())
    assert report["parity"]["checked"] is False and report["parity"]["passed"] is None
    assert report["engine"] == {"built": False, "reason": "--no-engine"}


def test_quiet_silences_the_libraries(tmp_path: Path) -> None:
    """-q prints nothing on success, not even ONNX Runtime's or Polygraphy's own lines: this
    model (an initializer listed among the graph inputs, as IR < 4 exporters wrote them, and an
    initializer no node reads) makes every ONNX Runtime session warn on stderr, and the compile
    loads it in several (parity, fold-constants)."""
    weights = onnx.numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "W")
    unused = onnx.numpy_helper.from_array(np.ones(7, np.float32), "unused")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
         onnx.helper.make_node("Relu", ["c"], ["y"], name="relu")], "warns",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8]),
         onnx.helper.make_tensor_value_info("W", onnx.TensorProto.FLOAT, [4, 3, 3, 3])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4, 8, 8])],
        [weights, unused])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "warns.onnx")

    loud = run_trtcompile("compile", "warns.onnx", "-o", "loud", "--no-engine", cwd=tmp_path)
    assert loud.returncode == 0, loud.stderr
    assert "onnxruntime" in loud.stderr  # the model does make ONNX Runtime speak

    quiet = run_trtcompile("compile", "warns.onnx", "-o", "out", "-q", cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert (quiet.stdout, quiet.stderr) == ("", "")
    assert json.loads((tmp_path / "out" / "report.json").read_text())["engine"]["built"]


def _bad_models(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    """Case name -> (arguments, expected text of the error line)."""
    good = examples.googlenet_onnx()
    data = good.SerializeToString()
    (tmp_path / "folder").mkdir()
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "random.onnx").write_bytes(np.random.default_rng(0).bytes(2048))
    (tmp_path / "truncated.onnx").write_bytes(data[: len(data) // 2])
    undefined = onnx.ModelProto()
    undefined.CopyFrom(good)
    undefined.graph.node[3].input[0] = "ghost"
    ir.save(undefined, tmp_path / "undefined.onnx")
    small = onnx.parser.parse_model("""
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[1,4] x) => (float[1,4] y) <float[4] B = {1.0, 2.0, 3.0, 4.0}> {
            y = Add(x, B)
        }
    """)
    small.graph.initializer[0].data_location = onnx.TensorProto.EXTERNAL
    small.graph.initializer[0].ClearField("float_data")
    for key, value in (("location", "../secret.bin"), ("offset", "0"), ("length", "16")):
        entry = small.graph.initializer[0].external_data.add()
        entry.key, entry.value = key, value
    (tmp_path / "secret.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    (tmp_path / "external").mkdir()
    (tmp_path / "external" / "model.onnx").write_bytes(small.SerializeToString())
    ir.save(good, tmp_path / "good.onnx")
    return {
        "missing": (["missing.onnx"], "model not found: missing.onnx"),
        "folder": (["folder"], "folder is a folder but not a TensorFlow SavedModel"),
        "empty": (["empty.onnx"], "empty.onnx is empty (0 bytes)"),
        "random": (["random.onnx"], "random.onnx is not an ONNX model"),
        "truncated": (["truncated.onnx"], "truncated.onnx is not an ONNX model"),
        "undefined": (["undefined.onnx"], "reads tensor 'ghost', which no node"),
        "external-outside": (["external/model.onnx"], "'../secret.bin', outside the model's folder"),
        "pipeline": (["good.onnx", "--pipeline", "nope"], "unknown pass 'nope' in pipeline"),
        "option": (["good.onnx", "--pipeline", "dead-layer-elimination{x=1}"],
                   "pass 'dead-layer-elimination' has no option 'x'"),
        "pass-module": (["good.onnx", "--pass-module", "nowhere.py"], "pass module not found"),
        "input-shape": (["good.onnx", "--input-shape", "input=1x3"], "expected NAME:DIMS"),
        "overwrite": (["good.onnx", "--report-json", "good.onnx"], "would overwrite the input model"),
        "data-range-text": (["good.onnx", "--data-range", "low,high"],
                            "--data-range 'low,high': expected LO,HI"),
        "data-range-count": (["good.onnx", "--data-range", "0,1,2"],
                             "--data-range '0,1,2': expected LO,HI"),
        "data-range-order": (["good.onnx", "--data-range", "1,-1"], "needs LO < HI, got 1,-1"),
        "data-range-infinite": (["good.onnx", "--data-range", "0,inf"], "must be finite"),
        "data-range-nan": (["good.onnx", "--data-range", "nan,1"], "must be finite"),
    }


BAD_CASES = ["missing", "folder", "empty", "random", "truncated", "undefined", "external-outside",
             "pipeline", "option", "pass-module", "input-shape", "overwrite", "data-range-text",
             "data-range-count", "data-range-order", "data-range-infinite", "data-range-nan"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path: Path, case: str) -> None:
    args, expected = _bad_models(tmp_path)[case]
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    result = run_trtcompile("compile", *args, "-o", "out", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("trtcompile: error: ")
    assert expected in lines[0]
    assert result.stdout == ""
    assert not (tmp_path / "out").exists()
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


def test_parity_failure_exits_1_and_reports_the_output(tmp_path: Path) -> None:
    (tmp_path / "breaking.py").write_text(BREAKING_PASS)
    result = run_trtcompile("compile", "--example", "googlenet-onnx", "--pass-module", "breaking.py",
                        "--pipeline",
                        "dead-layer-elimination,scale-first-weight", "--no-progress", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    error_line = result.stderr.splitlines()[-1]
    assert error_line.startswith("trtcompile: error: parity failed")
    assert "optimized vs input: output 'logits'" in error_line
    assert "written to out for inspection" in error_line
    assert "parity: FAILED" in result.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["parity"]["passed"] is False
    assert report["parity"]["failed"] == [
        {"reference": "input", "candidate": "optimized", "output": "logits"}]
    assert report["parity"]["outputs"]["logits"]["passed"] is False
    assert report["status"]["exit_code"] == 1
    assert report["engine"] == {"built": False, "reason": "parity failed"}
    assert output_names(tmp_path / "out") == ["optimized.onnx", "report.json"]


RELU_TO_ABS_PASS = """
from dataclasses import dataclass
from typing import ClassVar

from trtcompile.pass_manager import Pass, PassResult


@dataclass(frozen=True)
class ReluToAbs(Pass):
    \"\"\"Wrong for negative inputs only: the first Relu becomes Abs.\"\"\"

    name: ClassVar[str] = "relu-to-abs"

    def run(self, graph, ctx):
        result = PassResult()
        relu = next(node for node in graph.nodes if node.op == "Relu")
        relu.op = "Abs"
        result.count("abs")
        return result
"""


def test_parity_inputs_are_signed_and_data_range_draws_from_the_range(tmp_path: Path) -> None:
    """A Relu on the input made Abs is wrong only for negative inputs: the default standard
    normal inputs see it; inputs declared to lie in [0, 1) do not (and the report says which)."""
    model = onnx.parser.parse_model("""
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[N,8] x) => (float[N,8] y) {
            r = Relu(x)
            y = Tanh(r)
        }
    """)
    ir.save(model, tmp_path / "relu.onnx")
    (tmp_path / "abs.py").write_text(RELU_TO_ABS_PASS)
    args = ["compile", "relu.onnx", "--pass-module", "abs.py", "--pipeline", "relu-to-abs",
            "--no-engine", "--no-progress"]
    signed = run_trtcompile(*args, "-o", "signed", cwd=tmp_path)
    assert signed.returncode == 1, signed.stderr
    assert "parity failed" in signed.stderr.splitlines()[-1]
    assert "inputs: floating point standard normal" in signed.stdout
    ranged = run_trtcompile(*args, "-o", "ranged", "--data-range", "0,1", cwd=tmp_path)
    assert ranged.returncode == 0, ranged.stderr
    assert "inputs: floating point uniform [0, 1)" in ranged.stdout
    report = json.loads((tmp_path / "ranged" / "report.json").read_text())
    assert report["parity"]["tolerances"]["inputs"] == {
        "floating_point": "uniform [0, 1)", "integer": "Polygraphy default (0 or 1)",
        "range": [0.0, 1.0], "seed": 0}
    # Both sizes of the dynamic dimension were checked.
    assert [s["x"] for s in report["parity"]["input_shapes"]] == [[1, 8], [3, 8]]


BAKE_BATCH_PASS = """
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from trtcompile.pass_manager import Pass, PassResult


@dataclass(frozen=True)
class BakeBatch(Pass):
    \"\"\"Wrong beyond batch 1: the graph output is reshaped to [1, -1].\"\"\"

    name: ClassVar[str] = "bake-batch"

    def run(self, graph, ctx):
        output = graph.outputs[0]
        inner = gs.Variable("unbaked", output.dtype)
        output.inputs[0].outputs[0] = inner
        target = gs.Constant("baked_target", np.array([1, -1], np.int64))
        graph.nodes.append(gs.Node("Reshape", "bake", inputs=[inner, target], outputs=[output]))
        return PassResult({"baked": 1})
"""


def test_verify_after_each_words_a_shape_change_as_one(tmp_path: Path) -> None:
    model = onnx.parser.parse_model("""
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[N,8] x) => (float[N,8] y) {
            y = Relu(x)
        }
    """)
    ir.save(model, tmp_path / "relu.onnx")
    (tmp_path / "bake.py").write_text(BAKE_BATCH_PASS)
    result = run_trtcompile("compile", "relu.onnx", "--pass-module", "bake.py", "--pipeline",
                            "dead-layer-elimination,bake-batch", "--verify-after-each",
                            "--no-engine", "--no-progress", cwd=tmp_path)
    assert result.returncode == 4, result.stderr
    line = result.stderr.splitlines()[-1]
    assert line.startswith("trtcompile: error: pass 'bake-batch' failed: output 'y' changed shape: "
                           "[3, 8] in the pass input model, [1, 24] in the pass output model "
                           "(inputs at x:3x8)")
    assert line.endswith("(passes run before it: dead-layer-elimination)")
    # Without verify-after-each, the end-to-end parity says the same in its words.
    result = run_trtcompile("compile", "relu.onnx", "--pass-module", "bake.py", "--pipeline",
                            "bake-batch", "--no-engine", "--no-progress", "-o", "plain",
                            cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert ("optimized vs input at x:3x8: output 'y' changed shape: [3, 8] in the input model, "
            "[1, 24] in the optimized model") in result.stderr.splitlines()[-1]


def test_user_pass_module_runs_and_shows_in_the_table(tmp_path: Path) -> None:
    (tmp_path / "counting.py").write_text(COUNTING_PASS)
    result = run_trtcompile("compile", "--example", "googlenet-onnx", "--pass-module", "counting.py",
                        "--pipeline",
                        "count-activations,dead-layer-elimination,count-activations{op=Gemm}",
                        "--no-engine", "--dump-after-each", "--verify-after-each", "--no-progress",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["pipeline"] == "count-activations,dead-layer-elimination,count-activations{op=Gemm}"
    assert [p["counts"].get("activations_seen") for p in report["passes"]] == [17, None, 1]
    rows = table_rows(result.stdout)
    assert [label for label, _ in rows] == [
        "count-activations", "dead-layer-elimination", "count-activations{op=Gemm}", "total"]
    assert rows[0][1][-1] == "activations_seen=17" and rows[2][1][-1] == "activations_seen=1"
    check_table_matches_report(result.stdout, report)
    assert sorted(p.name for p in (tmp_path / "out" / "passes").iterdir()) == [
        "000_input.onnx", "001_count-activations.onnx", "002_dead-layer-elimination.onnx",
        "003_count-activations.onnx"]


def test_version() -> None:
    result = run_trtcompile("--version", cwd=REPO)
    assert result.returncode == 0
    assert result.stdout.strip() == f"trtcompile {__version__}"


def test_passes_lists_every_pass_with_options_and_rules(capsys) -> None:
    assert cli.main(["passes"]) == 0
    text = capsys.readouterr().out
    for cls in build_registry([]):
        assert f"{cls.name}: {cls.summary()}" in text
        for option, type_, default in cli.pass_options(cls):
            assert f"    {option}: {type_} = {default}" in text
    assert "    identity: bool = true" in text
    assert "Rules:" in text


def test_docs_passes_md_is_the_generated_reference(capsys) -> None:
    """docs/passes.md is `trtcompile passes --markdown`; regenerate it when a pass changes."""
    assert cli.main(["passes", "--markdown"]) == 0
    generated = capsys.readouterr().out
    committed = (REPO / "docs" / "passes.md").read_text()
    assert committed == generated, "docs/passes.md is stale: run trtcompile passes --markdown > docs/passes.md"


@pytest.mark.parametrize("values, expected", [
    (["input:1x3x224x224"], {"input": [1, 3, 224, 224]}),
    (["a:1x2,b:3x4", "serving_default_input_1:0:1X8"],
     {"a": [1, 2], "b": [3, 4], "serving_default_input_1:0": [1, 8]}),
])
def test_input_shape_values(values, expected) -> None:
    assert cli.parse_input_shapes(values) == expected


@pytest.mark.parametrize("value, message", [
    ("input", "expected NAME:DIMS"),
    ("input:1xa", "dimensions must be integers"),
    ("input:1x0", "dimensions must be positive"),
    ("a:1,a:2", "gives 'a' twice"),
])
def test_bad_input_shape_values(value, message) -> None:
    with pytest.raises(cli.InputError, match=message):
        cli.parse_input_shapes([value])


def test_the_readme_pass_example_runs_as_a_pass_module(tmp_path: Path) -> None:
    from tests.docs_blocks import document_blocks

    block = next(block for block in document_blocks("README.md") if block.argument("save-as") == "my_passes.py")
    assert "class RemoveIdentity" in block.text
    (tmp_path / "my_passes.py").write_text(block.text)
    good = examples.googlenet_onnx()
    graph = ir.import_model(good)
    # Give the example an Identity to remove, so the pass has work.
    import onnx_graphsurgeon as gs

    first = graph.nodes[0]
    copied = gs.Variable("stem_input_copy", first.inputs[0].dtype, first.inputs[0].shape)
    graph.nodes.insert(0, gs.Node("Identity", "copy_input", inputs=[first.inputs[0]], outputs=[copied]))
    first.inputs[0] = copied
    ir.save(graph, tmp_path / "model.onnx")
    result = run_trtcompile("compile", "model.onnx", "--pass-module", "my_passes.py", "--pipeline",
                        "remove-identity,default", "--no-engine", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    first_record = report["passes"][0]
    assert (first_record["name"], first_record["counts"]) == ("remove-identity", {"removed_identity": 1})
    assert (first_record["layers_before"], first_record["layers_after"]) == (62, 61)
    assert report["parity"]["passed"] is True


def test_the_readme_quick_test_command_names_markers_pyproject_declares() -> None:
    """The README's quick part deselects by markers; a renamed marker would select everything
    again without a word, so its names must be pyproject's."""
    import re
    import tomllib

    readme = (REPO / "README.md").read_text()
    pytest_options = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"][
        "ini_options"]
    declared = {marker.split(":")[0] for marker in pytest_options["markers"]}
    expressions = re.findall(r'python -m pytest -m "([^"]+)"', readme)
    assert expressions and "not long" in pytest_options["addopts"]
    for expression in expressions:
        named = set(re.findall(r"\b(?!not\b|and\b|or\b)\w+", expression))
        assert named == {"slow", "long"} and named <= declared, expression
