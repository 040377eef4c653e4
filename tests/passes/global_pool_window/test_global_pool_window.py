"""global-pool-window beyond its pass cases: the names of what a windowed mean adds."""

from __future__ import annotations

from pathlib import Path

from tests import pass_cases
from trtcompile import ir
from trtcompile.pass_manager import PassManager

CASES = Path(__file__).parent / "cases"


def test_a_mean_without_keepdims_becomes_a_named_pool_and_flatten() -> None:
    """The pool keeps the mean's name (engine layers trace back to it); what it adds is named
    after it."""
    case = pass_cases.load_case(CASES / "reduce_mean_keepdims0.onnxtxt")
    graph = ir.import_model(case.model())
    PassManager(case.pipeline).run(graph)
    _, pool, flatten, _ = graph.nodes
    assert (pool.op, pool.name, pool.outputs[0].name) == ("AveragePool", "ReduceMean_0", "m_window")
    assert (flatten.op, flatten.name, flatten.attrs["axis"]) == ("Flatten", "ReduceMean_0_flatten", 1)
    assert flatten.inputs == pool.outputs and flatten.outputs[0].name == "m"
