"""``trtcompile bisect`` and the rewrite limit it searches over (``PassContext.may_rewrite``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import passes
from tests import pass_cases
from tests.helpers import run_main
from trtcompile import ir, verify
from trtcompile.errors import EXIT_BAD_INPUT, EXIT_NOTHING_FAILS
from trtcompile.pass_manager import REWRITE_LIMIT_REASON, PassContext, PassManager, PassResult

#: A user pass that swaps the operands of every Add, Mul and Sub, asking the rewrite limit first:
#: right for Add and Mul, wrong for Sub. Bisect must name the Sub's rewrite, not the others.
SWAP_PASS = '''
from dataclasses import dataclass
from typing import ClassVar

from trtcompile.pass_manager import Pass, PassResult


@dataclass(frozen=True)
class SwapOperands(Pass):
    """Swaps the operands of binary arithmetic: right for Add and Mul, wrong for Sub."""

    name: ClassVar[str] = "swap-operands"

    def run(self, graph, ctx):
        result = PassResult()
        for node in graph.nodes:
            if node.op in ("Add", "Mul", "Sub") and len(node.inputs) == 2:
                if not ctx.may_rewrite(f"swap-{node.op.lower()}-operands", node, result):
                    continue
                node.inputs[0], node.inputs[1] = node.inputs[1], node.inputs[0]
                result.count("swapped")
        return result
'''


def _constant(name: str, value: float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array([value], np.float32), name)


def _save(nodes, inputs, outputs, initializers, path: Path) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    return ir.save(model, path)


def arithmetic_chain(path: Path) -> Path:
    """Identity (which dead-layer-elimination removes first), Relu, then Add, Mul, Sub, Add."""
    nodes = [helper.make_node("Identity", ["x"], ["i"], name="identity"),
             helper.make_node("Relu", ["i"], ["r"], name="relu"),
             helper.make_node("Add", ["r", "c1"], ["a"], name="add_1"),
             helper.make_node("Mul", ["a", "c2"], ["m"], name="mul_1"),
             helper.make_node("Sub", ["m", "c3"], ["s"], name="sub_1"),
             helper.make_node("Add", ["s", "c4"], ["y"], name="add_2")]
    return _save(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
                 [_constant("c1", 0.5), _constant("c2", 2.0), _constant("c3", 0.25),
                  _constant("c4", 1.0)], path)


def unique_model(path: Path) -> Path:
    """Abs, Relu, Unique (which TensorRT's parser rejects) and a Sigmoid on another branch."""
    nodes = [helper.make_node("Abs", ["x"], ["a"], name="abs"),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Unique", ["r"], ["u"], name="unique", sorted=1),
             helper.make_node("Sigmoid", ["x"], ["s"], name="sigmoid")]
    return _save(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8])],
                 [helper.make_tensor_value_info("u", TensorProto.FLOAT, ["n"]),
                  helper.make_tensor_value_info("s", TensorProto.FLOAT, [8])], [], path)


# --------------------------------------------------------------------------------------------
# The rewrite limit
# --------------------------------------------------------------------------------------------


def test_may_rewrite_grants_up_to_the_limit_and_records_refusals() -> None:
    ctx = PassContext(rewrite_limit=2, current_pass="p")
    result = PassResult()
    granted = [ctx.may_rewrite("rule-a", f"n{i}", result) for i in range(4)]
    assert granted == [True, True, False, False]
    assert [(r.index, r.pass_name, r.rule, r.nodes) for r in ctx.rewrites] == [
        (1, "p", "rule-a", ("n0",)), (2, "p", "rule-a", ("n1",))]
    assert ctx.refused == 2
    assert [(r.nodes, r.reason) for r in result.rejections] == [
        (("n2",), REWRITE_LIMIT_REASON), (("n3",), REWRITE_LIMIT_REASON)]


def _structure(graph) -> list[tuple]:
    return sorted((n.name, n.op, tuple(t.name for t in n.inputs), tuple(t.name for t in n.outputs))
                  for n in graph.nodes)


CASES = pass_cases.all_cases()

#: The built-in pass classes by pipeline name.
BUILTIN_BY_NAME = {cls.name: cls for cls in passes.BUILTIN_PASSES}


def _rewrite_stats(report) -> list[dict[str, int]]:
    """Each pass run's counts less those that classify rather than rewrite (a pass's
    ``classification_counts``, reported whether or not it was allowed to rewrite)."""
    return [{key: value for key, value in record.counts.items()
             if key not in getattr(BUILTIN_BY_NAME.get(record.name), "classification_counts", ())}
            for record in report.records]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_builtin_rewrite_asks_the_limit(case: pass_cases.PassCase) -> None:
    """With a limit of 0 no built-in pass rewrites anything (it may still annotate shapes or
    reorder nodes); with no limit, a case whose pipeline rewrites records its rewrites (a granted
    rewrite may still find nothing to do, as when a graph output cannot be renamed)."""
    model = case.model()
    graph = ir.import_model(model)
    before = _structure(graph)
    ctx = case.context(model, rewrite_limit=0)
    report = PassManager(case.pipeline, ctx=ctx).run(graph)
    assert _structure(graph) == before
    assert not any(_rewrite_stats(report)), _rewrite_stats(report)
    full = PassManager(case.pipeline, ctx=case.context(model)).run(ir.import_model(model))
    if any(_rewrite_stats(full)):
        assert full.rewrites and ctx.refused


# --------------------------------------------------------------------------------------------
# trtcompile bisect
# --------------------------------------------------------------------------------------------


def test_bisect_names_the_faulty_pass_and_rewrite(tmp_path: Path, capsys) -> None:
    model = arithmetic_chain(tmp_path / "chain.onnx")
    module = tmp_path / "swap.py"
    module.write_text(SWAP_PASS)
    out = tmp_path / "bisect"
    code, stdout, _ = run_main(["bisect", str(model), "--pipeline", "default,swap-operands",
                                "--pass-module", str(module), "-o", str(out), "--no-engine"],
                               capsys)
    assert code == 0, stdout
    assert "first failing pass: #" in stdout and "swap-operands" in stdout
    assert "rule swap-sub-operands of swap-operands" in stdout
    assert "  nodes: sub_1\n" in stdout
    before, after = onnx.load(str(out / "before.onnx")), onnx.load(str(out / "after.onnx"))
    original = onnx.load(str(model))
    # The pair: before still computes the original, after does not, and they differ in sub_1 only.
    assert verify.compare_models(original, before, seed=0).passed
    assert not verify.compare_models(original, after, seed=0).passed
    changed = [(b.name, list(b.input), list(a.input))
               for b, a in zip(before.graph.node, after.graph.node) if b != a]
    assert changed == [("sub_1", ["m", "c3"], ["c3", "m"])]


def test_bisect_finds_a_pass_that_ignores_the_limit(tmp_path: Path, capsys) -> None:
    """A pass that never asks is still named (as a pass); the pair is its input and output."""
    from tests.helpers import BREAKING_PASS

    model = arithmetic_chain(tmp_path / "chain.onnx")
    conv_free = BREAKING_PASS.replace(
        'conv = next(node for node in graph.nodes if node.op == "Conv")\n'
        '        conv.inputs[1] = gs.Constant(conv.inputs[1].name + "_x2", conv.inputs[1].values * 2)',
        'conv = next(node for node in graph.nodes if node.op == "Mul")\n'
        '        conv.inputs[1] = gs.Constant("c2_x2", conv.inputs[1].values * 2)')
    assert conv_free != BREAKING_PASS
    module = tmp_path / "breaking.py"
    module.write_text(conv_free)
    out = tmp_path / "bisect"
    code, stdout, _ = run_main(["bisect", str(model), "--pipeline", "scale-first-weight,default",
                                "--pass-module", str(module), "-o", str(out), "--no-engine"],
                               capsys)
    assert code == 0, stdout
    assert "first failing pass: #1 scale-first-weight" in stdout
    assert "does not consult the rewrite limit" in stdout
    assert (out / "before.onnx").exists() and (out / "after.onnx").exists()


#: A user pass that is granted a rewrite of the Sub and raises applying it: nothing of its own is
#: rewritten, and the run's report is lost with the exception.
CRASH_ON_REWRITE_PASS = '''
from dataclasses import dataclass
from typing import ClassVar

from trtcompile.pass_manager import Pass, PassResult


@dataclass(frozen=True)
class CrashOnSub(Pass):
    """Asks to rewrite the Sub, then raises before rewriting anything."""

    name: ClassVar[str] = "crash-on-sub"

    def run(self, graph, ctx):
        result = PassResult()
        for node in graph.nodes:
            if node.op == "Sub" and ctx.may_rewrite("crash-sub", node, result):
                raise RuntimeError("the rewrite of the Sub crashed")
        return result
'''


def test_bisect_names_a_pass_that_raises_before_any_rewrite(tmp_path: Path, capsys) -> None:
    model = arithmetic_chain(tmp_path / "chain.onnx")
    module = tmp_path / "crash.py"
    module.write_text(CRASH_ON_REWRITE_PASS)
    out = tmp_path / "bisect"
    code, stdout, stderr = run_main(["bisect", str(model), "--pipeline",
                                     "dead-layer-elimination,crash-on-sub", "--pass-module",
                                     str(module), "-o", str(out), "--no-engine", "-q"], capsys)
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert lines[0].startswith("pipeline output fails: pass 'crash-on-sub' failed: RuntimeError: "
                               "the rewrite of the Sub crashed")
    assert lines[1] == "first failing pass: #2 crash-on-sub"
    assert lines[2].startswith("first failing rewrite: #")
    assert lines[2].endswith(" rule crash-sub of crash-on-sub")
    assert lines[3] == "  nodes: sub_1"
    # The pair: the graph before the crashing rewrite, twice (the pass left no output of its own).
    before, after = onnx.load(str(out / "before.onnx")), onnx.load(str(out / "after.onnx"))
    assert [n.op_type for n in before.graph.node] == [n.op_type for n in after.graph.node] == \
        ["Relu", "Add", "Mul", "Sub", "Add"]


def test_bisect_exits_5_when_nothing_fails(tmp_path: Path, capsys) -> None:
    model = arithmetic_chain(tmp_path / "chain.onnx")
    out = tmp_path / "bisect"
    code, stdout, _ = run_main(["bisect", str(model), "-o", str(out), "--no-engine"], capsys)
    assert code == EXIT_NOTHING_FAILS
    assert "nothing to find" in stdout
    assert not out.exists()


def test_bisect_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bisect"
    code, _, stderr = run_main(["bisect", str(tmp_path / "missing.onnx"), "-o", str(out)], capsys)
    assert code == EXIT_BAD_INPUT
    assert stderr.strip().count("\n") == 0 and "missing.onnx" in stderr
    model = arithmetic_chain(tmp_path / "chain.onnx")
    code, _, stderr = run_main(["bisect", str(model), "--pipeline", "no-such-pass", "-o",
                                str(out)], capsys)
    assert code == EXIT_BAD_INPUT and "no-such-pass" in stderr
    assert not out.exists()


def test_bisect_engine_names_the_node_tensorrt_rejects(tmp_path: Path, capsys) -> None:
    model = unique_model(tmp_path / "unique.onnx")
    out = tmp_path / "bisect"
    code, stdout, _ = run_main(["bisect", str(model), "--engine", "-o", str(out)], capsys)
    assert code == 0, stdout
    assert "TensorRT rejects nodes 2..2 in topological order: unique (Unique)" in stdout
    segment = onnx.load(str(out / "segment.onnx"))
    assert [node.op_type for node in segment.graph.node] == ["Unique"]


def test_bisect_engine_exits_5_when_the_model_builds(tmp_path: Path, capsys) -> None:
    model = arithmetic_chain(tmp_path / "chain.onnx")
    code, stdout, _ = run_main(["bisect", str(model), "--engine", "-o", str(tmp_path / "b")],
                               capsys)
    assert code == EXIT_NOTHING_FAILS and "TensorRT builds" in stdout


def test_bisect_runs_the_precision_pass_once(tmp_path: Path, monkeypatch) -> None:
    """bisect compiles through the flow: a pipeline that already runs quantize-int8 gets the
    precision flags filled in, not a second quantize-int8 after it."""
    from tests.helpers import CONV_BRANCHES
    from trtcompile import bisect
    from trtcompile.flow import Compilation, CompileOptions

    calib = tmp_path / "calib.npz"
    np.savez(calib, input=np.random.default_rng(0).standard_normal((16, 4, 8, 8)).astype(np.float32))
    options = CompileOptions(pipeline="fold-constants,quantize-int8", precision="int8",
                             calib_data=calib, calib_method="minmax", engine=False,
                             progress=False)
    seen = []
    real_optimize = Compilation.optimize

    def recording_optimize(self, **kwargs):
        seen.append([p.to_text() for p in passes_of(self.pipeline)])
        return real_optimize(self, **kwargs)

    def passes_of(pipeline):
        from trtcompile.pm import iter_passes

        return list(iter_passes(pipeline))

    monkeypatch.setattr(Compilation, "optimize", recording_optimize)
    assert bisect.bisect_rewrites(CONV_BRANCHES, options) is None  # nothing fails
    assert seen and all(texts == ["fold-constants", "quantize-int8{method=minmax}"]
                        for texts in seen), seen
