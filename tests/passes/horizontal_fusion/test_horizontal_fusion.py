"""horizontal-fusion beyond its pass cases: what the merged layer is called, the shape it declares,
and the rewrite it asks for (what ``bisect`` and ``--why-not`` show)."""

from __future__ import annotations

from pathlib import Path

import pytest

from passes.horizontal_fusion import OP_FAMILIES, HorizontalFusion
from tests import pass_cases
from trtcompile import ir
from trtcompile.errors import InputError
from trtcompile.pm import REWRITE_LIMIT_REASON, PassContext

CASES = Path(__file__).parent / "cases"


def _graph(case_name: str):
    return ir.import_model(pass_cases.load_case(CASES / f"{case_name}.onnxtxt").model())


def test_merged_gemm_is_named_after_its_members_and_declares_its_shape() -> None:
    """The case's pipeline: horizontal-fusion{free-split-only=false}."""
    graph = _graph("gemm_heads")
    ctx = PassContext()
    result = HorizontalFusion(free_split_only=False).run(graph, ctx)
    graph.cleanup()  # the manager's cleanup: the members are left unread
    merged, split = graph.nodes
    assert (merged.op, merged.name) == ("Gemm", "Gemm_0+Gemm_0_1+Gemm_0_2")
    # The merged output's shape is declared: the members' widths summed on the merge axis.
    assert merged.outputs[0].shape == [3, 15]
    assert [t.shape for t in split.outputs] == [[3, 4], [3, 6], [3, 5]]
    assert [(r.rule, r.nodes) for r in ctx.rewrites] == [
        ("merge-gemm", ("Gemm_0", "Gemm_0_1", "Gemm_0_2"))]
    assert result.counts["gemm_merges"] == 1


def test_a_rewrite_limit_of_zero_merges_nothing() -> None:
    graph = _graph("gemm_heads")
    ops_before = [n.op for n in graph.nodes]
    result = HorizontalFusion(free_split_only=False).run(graph, PassContext(rewrite_limit=0))
    assert [n.op for n in graph.nodes] == ops_before
    assert [r.nodes for r in result.rejections if r.reason == REWRITE_LIMIT_REASON] == [
        ("Gemm_0", "Gemm_0_1", "Gemm_0_2")]
    assert "gemm_merges" not in result.counts


def test_an_unknown_op_family_is_refused_naming_the_choices() -> None:
    with pytest.raises(InputError) as raised:
        HorizontalFusion(ops=("conv", "pool"))
    assert str(raised.value) == (f"horizontal-fusion: unknown op family pool; choose from "
                                 f"{', '.join(OP_FAMILIES)}")
