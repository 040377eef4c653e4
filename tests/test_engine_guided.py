"""engine-guided(...): groups kept or undone by the engine's compute layers, the budget, the cache."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from tests.helpers import registry_with
from tests.test_pass_manager import REGISTRY as TEST_PASSES
from tests.test_pass_manager import (
    CountRelus,
    RemoveOneIdentity,
    conv_model,
    identity_chain_model,
)
from trtcompile import ir
from trtcompile.errors import BackendError, PipelineError
from trtcompile.flow.engine_guided import EngineGuided
from trtcompile.pass_manager import (
    Pass,
    PassContext,
    PassManager,
    PassResult,
    parse_pipeline,
)

#: The test passes with engine-guided, registered as the compile flow registers it.
REGISTRY = TEST_PASSES.copy()
REGISTRY.register_combinator(EngineGuided)


class CountingJudge:
    """A stand-in for TensorRT: the "engine" has one layer per node, plus ``relu_cost`` per Relu
    (so removing a Relu is what pays); records every graph it was asked about."""

    def __init__(self, relu_cost: int = 0):
        self.relu_cost = relu_cost
        self.calls = 0

    def __call__(self, graph) -> int:
        self.calls += 1
        return len(graph.nodes) + self.relu_cost * sum(1 for n in graph.nodes if n.op == "Relu")


def run(text: str, judge, model=None):
    graph = ir.import_model(model or identity_chain_model())
    manager = PassManager(text, registry=REGISTRY,
                          ctx=PassContext(resources={"engine-guided": judge}))
    return graph, manager.run(graph)


@pytest.mark.parametrize("text", [
    "engine-guided(remove-one-identity,dead-layer-elimination)",
    "engine-guided{max-builds=3 max-seconds=2.5 max-extra-macs=0.1}(fixed-point(remove-one-identity))",
])
def test_engine_guided_text_round_trips(text: str) -> None:
    (element,) = parse_pipeline(text, REGISTRY)
    assert isinstance(element, EngineGuided)
    assert element.to_text() == text


@pytest.mark.parametrize("text, message", [
    ("engine-guided{budget=3}(count-relus)", "engine-guided has options"),
    ("engine-guided{max-builds=0}(count-relus)", "engine-guided: max-builds must be >= 1"),
    ("engine-guided(count-relus", "expected ','"),
    ("engine-guided()", "at least one pass"),
    ("engine-guided", "nested pipeline"),
])
def test_engine_guided_text_errors(text: str, message: str) -> None:
    with pytest.raises(PipelineError, match=message):
        parse_pipeline(text, REGISTRY)


def test_groups_that_lower_the_engine_are_kept_and_the_others_undone() -> None:
    # Each remove-one-identity lowers the "engine": kept; count-relus changes nothing: no build.
    judge = CountingJudge()
    graph, report = run("engine-guided(remove-one-identity,count-relus,remove-one-identity)", judge)
    assert [n.op for n in graph.nodes].count("Identity") == 1
    record = report.records[-1]
    assert record.name == "engine-guided"
    assert record.counts["groups_kept"] == 2
    assert record.counts["groups_unchanged"] == 1
    assert record.counts["engine_layers_before"] == 5 and record.counts["engine_layers_after"] == 3
    assert judge.calls == record.counts["engine_builds"] == 3
    assert [e["kept"] for e in report.section("engine_guided")] == [True, True]


def test_a_group_that_raises_the_engine_count_is_undone_with_the_reason() -> None:
    # An inverted judge: fewer nodes, more engine layers.
    judge = lambda graph: 10 - len(graph.nodes)
    graph, report = run("engine-guided(remove-one-identity)", judge)
    assert [n.op for n in graph.nodes] == ["Identity", "Relu", "Identity", "Identity", "Relu"]
    record = report.records[-1]
    assert record.counts["groups_rejected"] == 1
    assert [r.reason for r in record.rejections] == ["engine 5 -> 6 compute layers"]
    # The undone group's own record is gone: the report lists what shaped the graph.
    assert [r.name for r in report.records] == ["engine-guided"]
    assert report.section("engine_guided")[0]["kept"] is False


@dataclass(frozen=True)
class AddZeroConv(Pass):
    """Adds arithmetic: ``conv(x) + conv(x; 0)`` in place of the first Conv's output."""

    name: ClassVar[str] = "add-zero-conv"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = PassResult()
        conv = next(n for n in graph.nodes if n.op == "Conv")
        weights = conv.inputs[1]
        zero = gs.Constant(weights.name + "_zero", np.zeros_like(weights.values))
        extra, total = gs.Variable("extra", np.float32), gs.Variable("total", np.float32)
        output = conv.outputs[0]
        for reader in list(output.outputs):
            reader.inputs[reader.inputs.index(output)] = total
        graph.nodes += [gs.Node("Conv", "zero_conv", dict(conv.attrs), [conv.inputs[0], zero],
                                [extra]),
                        gs.Node("Add", "sum", inputs=[output, extra], outputs=[total])]
        ir.toposort(graph)
        result.count("added_convs")
        return result


@pytest.mark.parametrize("budget, kept", [(0.0, False), (1.5, True)])
def test_macs_beyond_the_budget_are_refused(budget: float, kept: bool) -> None:
    # A judge that finds the second Conv saves a layer: only the MAC budget decides.
    judge = lambda graph: 10 - sum(1 for n in graph.nodes if n.op == "Conv")
    graph = ir.import_model(conv_model())
    registry = registry_with([AddZeroConv])
    report = PassManager(f"engine-guided{{max-extra-macs={budget}}}(add-zero-conv)",
                         registry=registry,
                         ctx=PassContext(resources={"engine-guided": judge})).run(graph)
    assert (sum(1 for n in graph.nodes if n.op == "Conv") == 2) is kept
    (entry,) = report.section("engine_guided")
    assert entry["kept"] is kept
    assert entry["macs_after"] == 2 * entry["macs_before"]
    if not kept:
        assert "exceed max-extra-macs=0" in report.records[-1].rejections[0].reason


def test_the_build_budget_stops_trying_groups() -> None:
    judge = CountingJudge()
    graph, report = run("engine-guided{max-builds=2}(remove-one-identity,remove-one-identity,"
                        "remove-one-identity)", judge)
    record = report.records[-1]
    assert judge.calls == 2  # the input and the first group
    assert record.counts["groups_skipped"] == 2
    assert [n.op for n in graph.nodes].count("Identity") == 2
    assert all("budget" in r.reason for r in record.rejections)


def test_builds_are_cached_by_fingerprint_across_runs_of_one_manager() -> None:
    judge = CountingJudge()
    manager = PassManager("engine-guided(remove-one-identity)", registry=REGISTRY,
                          ctx=PassContext(resources={"engine-guided": judge}))
    manager.run(ir.import_model(identity_chain_model()))
    assert judge.calls == 2
    report = manager.run(ir.import_model(identity_chain_model()))
    assert judge.calls == 2  # fingerprints of equal graphs in one process are equal
    assert report.records[-1].counts["engine_cache_hits"] == 2


def test_a_candidate_trt_cannot_build_is_undone() -> None:
    def judge(graph) -> int:
        if sum(1 for n in graph.nodes if n.op == "Identity") < 3:
            raise BackendError("parser rejects this")
        return len(graph.nodes)

    graph, report = run("engine-guided(remove-one-identity)", judge)
    assert [n.op for n in graph.nodes].count("Identity") == 3
    assert report.records[-1].rejections[0].reason == \
        "TensorRT cannot build the result: parser rejects this"


def test_an_unbuildable_input_runs_every_group_unjudged() -> None:
    """No engine of the input, no verdict: the groups run as the plain pipeline runs them."""
    calls = []

    def never(graph) -> int:
        calls.append(len(graph.nodes))
        raise BackendError("no TensorRT")

    text = "remove-one-identity,count-relus,remove-one-identity"
    guided, report = run(f"engine-guided({text})", never)
    plain, _ = run(text, never)
    assert [n.op for n in guided.nodes] == [n.op for n in plain.nodes]
    assert [n.op for n in guided.nodes] == ["Relu", "Identity", "Relu"]  # two Identity removed
    assert calls == [5]  # the input alone was tried
    record = report.records[-1]
    assert record.counts["groups_unjudged"] == 3 and record.counts["engine_builds"] == 1
    assert [(e["group"], e["kept"], e["engine_before"], e["error"])
            for e in report.sections["engine_guided"]] == [
        ("remove-one-identity", True, None, "no TensorRT"),
        ("count-relus", True, None, "no TensorRT"),
        ("remove-one-identity", True, None, "no TensorRT")]
    assert report.sections["engine_guided"][0]["reason"] == \
        "not judged: TensorRT cannot build the input; kept as the plain pipeline runs it"


def test_tuned_on_a_model_tensorrt_rejects_partitions_it(tmp_path) -> None:
    """--pipeline tuned on a model TensorRT's parser rejects: no pass failure (exit 4); the groups
    run unjudged and the compile partitions the model as the default pipeline would."""
    import json

    from tests.backend import models
    from tests.helpers import run_trtcompile

    model = ir.save(models.rejected_op_model("BitShift"), tmp_path / "bitshift.onnx")
    out = tmp_path / "out"
    result = run_trtcompile("compile", str(model), "-o", str(out), "--pipeline", "tuned",
                            "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "engine-guided: TensorRT cannot build the input (" in result.stderr
    report = json.loads((out / "report.json").read_text())
    tried = report["engine_guided"]
    assert tried and all(e["kept"] and e["reason"].startswith("not judged") for e in tried)
    assert [s["name"] for s in report["partition"]["segments"]] == ["TensorRTSegment_0",
                                                                    "TensorRTSegment_1"]
    assert "engine-guided: dead-layer-elimination: not judged: TensorRT cannot build the input" \
        in result.stdout


def test_engine_guided_default_on_the_example_with_tensorrt() -> None:
    os.environ.setdefault("POLYGRAPHY_USE_TENSORRT_RTX", "1")
    from trtcompile.examples import load_example

    model = load_example("googlenet-onnx").model
    graph = ir.import_model(model)
    report = PassManager("engine-guided(default)").run(graph)
    record = report.records[-1]
    assert record.counts["engine_layers_after"] <= record.counts["engine_layers_before"]
    assert record.counts["groups_kept"] >= 1
    assert ir.layer_count(graph) < ir.layer_count(ir.import_model(model))


def test_tune_with_engine_wraps_the_pipeline_and_reports_the_groups(tmp_path, capsys) -> None:
    import json

    from tests.helpers import run_main

    out = tmp_path / "out"
    code, stdout, _ = run_main(["compile", "--example", "googlenet-onnx", "-o", str(out),
                                "--tune-with-engine", "--no-parity", "--no-progress"], capsys)
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["pipeline"].startswith("engine-guided(dead-layer-elimination,")
    kept = [entry for entry in report["engine_guided"] if entry["kept"]]
    assert kept and kept[-1]["engine_after"] == report["engine"]["compute_layers"]
    assert "engine-guided: fixed-point(" in stdout


def test_a_judge_given_to_the_element_wins_over_the_contexts() -> None:
    own, contexts = CountingJudge(), CountingJudge()
    element = EngineGuided((RemoveOneIdentity(),), max_builds=4, judge=own)
    assert element.to_text() == "engine-guided{max-builds=4}(remove-one-identity)"
    assert element == EngineGuided((RemoveOneIdentity(),), max_builds=4)  # the judge is no option
    assert element.replace_elements((CountRelus(),)).judge is own
    graph = ir.import_model(identity_chain_model())
    report = PassManager([element], registry=REGISTRY,
                         ctx=PassContext(resources={"engine-guided": contexts})).run(graph)
    assert (own.calls, contexts.calls) == (2, 0)
    assert report.records[-1].counts["groups_kept"] == 1
    assert report.records[-1].options == {"max-builds": 4, "max-seconds": 600.0,
                                          "max-extra-macs": 0.0}


@dataclass(frozen=True)
class SpendingZeroConv(AddZeroConv):
    """:class:`AddZeroConv` that spends the MACs it adds from the compile's MAC budget."""

    name: ClassVar[str] = "spending-zero-conv"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        from trtcompile.ir import cost

        ledger = cost.mac_ledger(graph, ctx.resources)
        before = cost.graph_macs(graph).macs
        result = super().run(graph, ctx)
        ledger.spend(self.name, "zero conv", cost.graph_macs(graph).macs - before)
        return result


@pytest.mark.parametrize("pays", [False, True])
def test_an_undone_group_gives_back_the_macs_it_spent(pays: bool) -> None:
    from trtcompile.ir import cost

    # Only the judge decides (the MAC budget allows doubling).
    judge = (lambda graph: 10 - len(graph.nodes)) if pays else (lambda graph: len(graph.nodes))
    resources = {"engine-guided": judge}
    graph = ir.import_model(conv_model())
    registry = registry_with([SpendingZeroConv])
    report = PassManager("engine-guided{max-extra-macs=1.5}(spending-zero-conv)",
                         registry=registry, ctx=PassContext(resources=resources)).run(graph)
    (entry,) = report.section("engine_guided")
    assert entry["kept"] is pays
    spent = [(name, extra) for name, _, extra in cost.ledger_entries(resources)]
    assert spent == ([("spending-zero-conv", entry["macs_after"] - entry["macs_before"])]
                     if pays else [])
    assert cost.mac_ledger(graph, resources).spent == (spent[0][1] if pays else 0)


def test_map_passes_fills_a_pass_inside_engine_guided_and_fixed_point() -> None:
    from trtcompile.pass_manager import map_passes, print_pipeline

    pipeline = parse_pipeline("count-relus,engine-guided{max-builds=3}(scale-weights,"
                              "fixed-point{max-iterations=2}(count-relus,scale-weights))", REGISTRY)

    def fill(pass_: Pass) -> Pass:
        return type(pass_)(factor=0.5) if pass_.name == "scale-weights" else pass_

    mapped = map_passes(pipeline, fill)
    assert print_pipeline(mapped) == (
        "count-relus,engine-guided{max-builds=3}(scale-weights{factor=0.5},"
        "fixed-point{max-iterations=2}(count-relus,scale-weights{factor=0.5}))")
    assert isinstance(mapped[1], EngineGuided) and mapped[1].max_builds == 3
