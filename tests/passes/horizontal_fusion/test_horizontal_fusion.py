"""horizontal-fusion beyond its pass cases: what the merged layer is called, the shape it declares,
and the rewrite it asks for (what ``bisect`` and ``--why-not`` show)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from passes.horizontal_fusion import OP_FAMILIES, HorizontalFusion
from tests import pass_cases
from trtcompile import ir
from trtcompile.ir import cost
from trtcompile.errors import InputError
from trtcompile.pass_manager import PassManager
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
    assert [t.name for t in merged.inputs] == ["x", "Gemm_0+Gemm_0_1+Gemm_0_2_W",
                                               "Gemm_0+Gemm_0_1+Gemm_0_2_B"]
    # The merged output's shape and dtype are declared: the members' widths summed on the merge
    # axis, their dtype.
    assert merged.outputs[0].shape == [3, 15]
    assert merged.outputs[0].dtype == np.float32
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


def test_merged_fused_conv_call_is_named_after_its_members() -> None:
    graph = _graph("fused_convs_leaky_relu")
    PassManager("conv-bias-activation-fusion,horizontal-fusion").run(graph)
    merged, _split, _concat = graph.nodes
    assert merged.name == "Conv_0+Conv_0_1"
    assert merged.op == "ConvBiasLeakyRelu_k1x1_s1x1_p0x0x0x0_d1x1_g1_a0p2"


def test_a_padded_merge_is_booked_in_the_mac_ledger_under_the_pass() -> None:
    graph = _graph("padded_kernels_after_a_misaligned_pair")
    ctx = PassContext()
    HorizontalFusion(pad_kernels=True, max_extra_macs=3).run(graph, ctx)
    assert list(cost.ledger_entries(ctx.resources)) == [
        ("horizontal-fusion", "pad kernels to 3x3: Conv_0_2+Conv_0_3", 13608)]
