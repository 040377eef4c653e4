"""What the pass manager knows of the graph between passes: one summary (fingerprint, layers,
op histogram) per pass run, the next pass's "before"; ``changed`` from fingerprints, never from
the pass, in-place weight writes included; a restored checkpoint brings its summary back; a pass
that left a graph unchanged is not run again on a graph of the same fingerprint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import onnx_graphsurgeon as gs
import pytest

from tests.test_pass_manager import REGISTRY, conv_model, identity_chain_model
from trtcompile import ir
from trtcompile.pass_manager import (
    Combinator,
    Instrument,
    Pass,
    PassContext,
    PassManager,
    PassResult,
    PipelineRun,
)


@dataclass(frozen=True)
class NegateWeightsInPlace(Pass):
    """Writes into the Conv weights' existing array (what passes should not do) and reports
    nothing: the manager must still see the change."""

    name: ClassVar[str] = "negate-weights-in-place"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        for node in graph.nodes:
            if node.op == "Conv":
                node.inputs[1].values *= -1
        return PassResult()


@dataclass(frozen=True)
class TryAndUndo(Combinator):
    """Runs its nested pipeline, then restores the graph as it was (a rejecting judge)."""

    name: ClassVar[str] = "try-and-undo"

    def run(self, graph: gs.Graph, run: PipelineRun, iteration: int | None) -> bool:
        checkpoint = run.checkpoint(graph)
        run.run_elements(self.elements, graph, iteration)
        run.restore(graph, checkpoint)
        return False


def _registry():
    registry = REGISTRY.copy()
    registry.register(NegateWeightsInPlace)
    registry.register_combinator(TryAndUndo)
    return registry


@pytest.fixture
def summaries(monkeypatch) -> list[int]:
    """Counts the manager's walks of the graph (each :func:`ir.summarize` call)."""
    calls: list[int] = []
    real = ir.summarize

    def counting(graph):
        calls.append(len(graph.nodes))
        return real(graph)

    monkeypatch.setattr(ir, "summarize", counting)
    return calls


def test_one_walk_per_pass_run_and_one_before_the_first(summaries: list[int]) -> None:
    graph = ir.import_model(identity_chain_model())
    report = PassManager("count-relus,remove-one-identity,count-relus",
                         registry=_registry()).run(graph)
    assert summaries == [5, 5, 4, 4]  # the input, then after each pass
    assert [(r.layers_before, r.layers_after, r.changed, r.histogram_delta)
            for r in report.records] == [(5, 5, False, {}), (5, 4, True, {"Identity": -1}),
                                         (4, 4, False, {})]
    assert (report.layers_after, report.histogram_after) == (4, ir.op_histogram(graph))


def test_instruments_get_a_walk_of_their_own_before_the_first_pass(summaries: list[int]) -> None:
    """The report's "before" is taken before the instruments start; the run's first state after,
    as when the manager walked the graph for each separately."""
    graph = ir.import_model(identity_chain_model())
    PassManager("count-relus", registry=_registry(), instruments=[Instrument()]).run(graph)
    assert len(summaries) == 3


def test_a_pass_that_writes_weights_in_place_changed_the_graph() -> None:
    graph = ir.import_model(conv_model())
    report = PassManager("count-relus,negate-weights-in-place,count-relus",
                         registry=_registry()).run(graph)
    assert [r.changed for r in report.records] == [False, True, False]


def test_a_fixed_point_keeps_iterating_while_weights_change_in_place() -> None:
    """Negating twice gives the first bytes back: the second iteration changed the graph from the
    first's result, so the fixed point does not stop there."""
    graph = ir.import_model(conv_model())
    report = PassManager("fixed-point{max-iterations=3}(negate-weights-in-place)",
                         registry=_registry()).run(graph)
    assert [r.changed for r in report.records] == [True, True, True]
    assert report.fixed_points == [{"pipeline": "fixed-point{max-iterations=3}"
                                                "(negate-weights-in-place)",
                                    "iterations": 3, "converged": False}]


def test_a_restored_checkpoint_brings_its_summary_back() -> None:
    """After the undo, the next pass starts from the checkpoint's layers and histogram and its
    fingerprint: it changed nothing, and the report ends where the graph is."""
    graph = ir.import_model(identity_chain_model())
    report = PassManager("try-and-undo(remove-one-identity,remove-one-identity),count-relus",
                         registry=_registry()).run(graph)
    assert [(r.name, r.layers_before, r.layers_after, r.changed) for r in report.records] == [
        ("count-relus", 5, 5, False)]
    assert report.records[0].histogram_delta == {}
    assert (report.layers_after, report.histogram_after) == (5, ir.op_histogram(graph))


def test_a_pass_that_reads_only_is_unchanged_however_often_it_runs() -> None:
    graph = ir.import_model(identity_chain_model())
    report = PassManager("fixed-point(count-relus),count-relus,remove-one-identity",
                         registry=_registry()).run(graph)
    assert [(r.name, r.changed) for r in report.records] == [
        ("count-relus", False), ("count-relus", False), ("remove-one-identity", True)]
    assert report.fixed_points[0]["iterations"] == 1


@dataclass(frozen=True)
class CountedLookup(Pass):
    """Reads the graph, logs a line, asks for one rewrite it does not apply, rejects a node and
    counts its own runs (in ``RUNS``): what a repeated result must give back."""

    name: ClassVar[str] = "counted-lookup"
    RUNS: ClassVar[list[int]] = []

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        self.RUNS.append(len(graph.nodes))
        result = PassResult({"nodes_seen": len(graph.nodes)})
        ctx.log(f"counted-lookup saw {len(graph.nodes)} nodes")
        ctx.may_rewrite("look", graph.nodes[0], result)
        result.reject(graph.nodes[-1], "only looking")
        return result


def _lookup_registry():
    registry = _registry()
    registry.register(CountedLookup)
    return registry


def test_a_pass_that_left_a_graph_unchanged_is_not_run_again_on_the_same_graph(
        summaries: list[int]) -> None:
    """The second and fourth runs meet a graph of a fingerprint the pass already left unchanged:
    their records, log lines and granted rewrites repeat the earlier run's, without running the
    pass or walking the graph after it."""
    CountedLookup.RUNS.clear()
    lines: list[str] = []
    graph = ir.import_model(identity_chain_model())
    ctx = PassContext(log=lines.append)
    report = PassManager("counted-lookup,counted-lookup,remove-one-identity,counted-lookup,"
                         "fixed-point(counted-lookup)", registry=_lookup_registry(),
                         ctx=ctx).run(graph)
    assert CountedLookup.RUNS == [5, 4]
    assert summaries == [5, 5, 4, 4]  # the input, then after each pass that ran
    assert [(r.name, r.changed, r.counts, [x.reason for x in r.rejections])
            for r in report.records] == [
        ("counted-lookup", False, {"nodes_seen": 5}, ["only looking"]),
        ("counted-lookup", False, {"nodes_seen": 5}, ["only looking"]),
        ("remove-one-identity", True, {"removed_identity": 1}, []),
        ("counted-lookup", False, {"nodes_seen": 4}, ["only looking"]),
        ("counted-lookup", False, {"nodes_seen": 4}, ["only looking"])]
    assert lines == ["counted-lookup saw 5 nodes"] * 2 + ["counted-lookup saw 4 nodes"] * 2
    assert [(r.index, r.pass_name, r.rule) for r in report.rewrites] == [
        (1, "counted-lookup", "look"), (2, "counted-lookup", "look"),
        (3, "counted-lookup", "look"), (4, "counted-lookup", "look")]


def test_under_a_rewrite_limit_a_pass_that_asked_for_rewrites_runs_every_time() -> None:
    """The limit may answer the next run differently: here it refuses the second run's rewrite."""
    CountedLookup.RUNS.clear()
    graph = ir.import_model(identity_chain_model())
    report = PassManager("counted-lookup,counted-lookup", registry=_lookup_registry(),
                         ctx=PassContext(rewrite_limit=1)).run(graph)
    assert CountedLookup.RUNS == [5, 5]
    assert [len(r.rejections) for r in report.records] == [1, 2]


def test_a_restored_checkpoint_forgets_the_results_of_earlier_runs() -> None:
    """The undone runs may have spent what the pass reads besides the graph (a MAC budget): on
    the restored graph the pass runs again."""
    CountedLookup.RUNS.clear()
    graph = ir.import_model(identity_chain_model())
    report = PassManager("counted-lookup,try-and-undo(remove-one-identity),counted-lookup",
                         registry=_lookup_registry()).run(graph)
    assert CountedLookup.RUNS == [5, 5]
    assert [r.name for r in report.records] == ["counted-lookup", "counted-lookup"]
