"""The arithmetic cost model: MACs per op, per fused call, per graph, and the shared MAC budget."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import pytest

from trtcompile import ir
from trtcompile.ir import cost
from trtcompile.pass_manager import PassManager


def _graph(text: str, seed: int = 0):
    model = onnx.parser.parse_model(text)
    rng = np.random.default_rng(seed)
    for value in list(model.graph.input):
        if value.name.startswith(("W", "B")):
            shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
            model.graph.initializer.append(onnx.numpy_helper.from_array(
                rng.uniform(-1, 1, size=shape).astype(np.float32), value.name))
    kept = [v for v in model.graph.input if not v.name.startswith(("W", "B"))]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    model.ir_version = ir.IR_VERSION
    return ir.import_model(model)


def test_conv_macs_count_output_elements_times_window() -> None:
    # 3x3 conv, 8 -> 16 channels, stride 2, pads 1: output 16x16 from 32x32.
    attrs = {"strides": [2, 2], "pads": [1, 1, 1, 1]}
    assert cost.conv_macs((1, 8, 32, 32), (16, 8, 3, 3), attrs) == 16 * 16 * 16 * 8 * 9
    # Grouped: each output channel reads C/group inputs (the weight's second dimension).
    assert cost.conv_macs((2, 8, 10, 10), (8, 2, 3, 3), {"group": 4}) == 2 * 8 * 8 * 8 * 2 * 9
    # SAME_UPPER: output is ceil(in / stride) whatever the kernel.
    assert cost.conv_macs((1, 3, 7, 7), (4, 3, 5, 5), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}) \
        == 4 * 4 * 4 * 3 * 25
    # A known output shape wins over the attributes.
    assert cost.conv_macs((1, 3, 7, 7), (4, 3, 1, 1), {}, (1, 4, 5, 5)) == 4 * 25 * 3


def test_matmul_and_gemm_macs() -> None:
    assert cost.matmul_macs((1, 2048), (2048, 1000)) == 2048 * 1000
    assert cost.matmul_macs((4, 1, 16, 32), (3, 32, 8)) == 4 * 3 * 16 * 32 * 8  # broadcast batch
    assert cost.matmul_macs((32,), (32, 8)) == 32 * 8  # 1-D operand promoted
    assert cost.gemm_macs((64, 10), (20, 64), {"transA": 1, "transB": 1}) == 10 * 64 * 20
    assert cost.op_macs("Relu", {}, [(1, 3)]) == 0
    assert cost.op_macs("Conv", {}, [None, (4, 3, 1, 1)]) is None


def test_graph_macs_price_fused_calls_like_the_plain_layers() -> None:
    graph = _graph("""
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[1,3,8,8] x, float[4,3,3,3] W1, float[4] B1, float[10,256] W2) => (float[1,10] y) {
          c = Conv<pads=[1,1,1,1]>(x, W1, B1)
          r = Relu(c)
          f = Flatten(r)
          W2T = Transpose(W2)
          y = MatMul(f, W2T)
        }""")
    plain = cost.graph_macs(graph)
    conv = 4 * 64 * 3 * 9
    assert plain.macs == conv + 256 * 10
    assert plain.by_op == {"Conv": conv, "MatMul": 256 * 10}
    assert plain.unknown == []
    PassManager("fold-constants,conv-bias-activation-fusion").run(graph)
    fused = cost.graph_macs(graph)
    assert fused.macs == plain.macs
    assert set(fused.by_op) == {"trtcompile.ConvBiasRelu_k3x3_s1x1_p1x1x1x1_d1x1_g1", "MatMul"}


def test_unknown_shapes_are_listed_not_guessed() -> None:
    graph = _graph("""
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[1,3,N,N] x, float[4,3,3,3] W1) => (float[1,4,M,M] y) {
          y = Conv(x, W1)
        }""")
    summary = cost.graph_macs(graph)
    assert summary.macs == 0 and summary.unknown == [graph.nodes[0].name]


def test_unknown_batch_is_priced_per_sample() -> None:
    # A dynamic batch (TensorFlow SavedModels export one) is priced at batch 1: MACs per sample.
    dynamic = _graph("""
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[N,3,8,8] x, float[4,3,3,3] W1, float[10,256] W2) => (float[N,10] y) {
          c = Conv<pads=[1,1,1,1]>(x, W1)
          f = Flatten(c)
          W2T = Transpose(W2)
          y = MatMul(f, W2T)
        }""")
    summary = cost.graph_macs(dynamic)
    assert summary.unknown == []
    assert summary.macs == 4 * 64 * 3 * 9 + 256 * 10
    assert dynamic.inputs[0].shape[0] == "N"  # the graph itself keeps its dynamic batch
    # Only the first dimension is bound: an unknown spatial size stays unknown.
    spatial = _graph("""
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[N,3,H,8] x, float[4,3,3,3] W1) => (float[N,4,H,8] y) {
          y = Conv<pads=[1,1,1,1]>(x, W1)
        }""")
    assert cost.graph_macs(spatial).unknown == [spatial.nodes[0].name]


def test_ledger_budget_is_shared_and_not_spent_twice() -> None:
    graph = _graph("""
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[1,2,4,4] x, float[3,2,1,1] W1) => (float[1,3,4,4] y) {
          y = Conv(x, W1)
        }""")
    resources: dict = {}
    ledger = cost.mac_ledger(graph, resources)
    assert ledger.baseline == 3 * 16 * 2
    assert ledger.allows(48, 0.5) and not ledger.allows(49, 0.5)
    ledger.spend("a-pass", "first rewrite", 40)
    assert cost.mac_ledger(graph, resources) is ledger  # same graph: same ledger, same baseline
    assert not ledger.allows(10, 0.5) and ledger.remaining(0.5) == 8
    other = _graph("""
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[1,2,4,4] x, float[3,2,1,1] W1) => (float[1,3,4,4] y) {
          y = Conv(x, W1)
        }""")
    assert cost.mac_ledger(other, resources) is not ledger
    assert list(cost.ledger_entries(resources)) == [("a-pass", "first rewrite", 40)]


INCEPTION_TAIL = """
    <ir_version: 10, opset_import: ["" : 17]>
    g (float[1,8,6,6] x, float[4,8,1,1] W0, float[4] B0, float[3,4,1,3] W1, float[3] B1,
       float[3,4,3,1] W2, float[3] B2, float[2,8,1,1] W3, float[2] B3) => (float[1,8,6,6] y) {
      t0 = Conv(x, W0, B0)
      t = Relu(t0)
      a0 = Conv<pads=[0,1,0,1]>(t, W1, B1)
      a = Relu(a0)
      b0 = Conv<pads=[1,0,1,0]>(t, W2, B2)
      b = Relu(b0)
      p = AveragePool<kernel_shape=[3,3], pads=[1,1,1,1]>(x)
      c0 = Conv(p, W3, B3)
      c = Relu(c0)
      y = Concat<axis=1>(a, b, c)
    }"""


@pytest.mark.parametrize("budget, padded, pooled",
                         [(10.0, 1, 1), (1.3, 1, 0), (1.15, 0, 1), (0.1, 0, 0)])
def test_arithmetic_increasing_passes_share_one_budget(budget: float, padded: int,
                                                       pooled: int) -> None:
    # Baseline 4320 MACs; padding the 1x3/3x1 pair to 3x3 adds 5184 (120%), folding the pool into
    # its 1x1 conv 4608 (107%). horizontal-fusion runs first, so with 130% only the padding fits
    # and with 115% only the pool does.
    graph = _graph(INCEPTION_TAIL)
    baseline = cost.graph_macs(graph).macs
    report = PassManager(
        f"conv-bias-activation-fusion,fixed-point(horizontal-fusion{{pad-kernels=true "
        f"max-extra-macs={budget}}},average-pool-conv-fusion{{max-extra-macs={budget}}},"
        "concat-elimination)").run(graph)
    stats: dict[str, int] = {}
    for record in report.records:
        for key, n in record.counts.items():
            stats[key] = stats.get(key, 0) + n
    assert stats.get("padded_kernel_merges", 0) == padded
    assert stats.get("fused_pools", 0) == pooled
    added = cost.graph_macs(graph).macs - baseline
    assert added == stats.get("added_macs", 0)
    assert added <= budget * baseline


@pytest.mark.parametrize("pipeline", ["horizontal-fusion{max-extra-macs=-0.1}",
                                      "average-pool-conv-fusion{max-extra-macs=-1}"])
def test_negative_budget_is_refused(pipeline: str) -> None:
    from trtcompile.errors import InputError, PipelineError

    with pytest.raises((InputError, PipelineError), match="max-extra-macs must be a fraction >= 0"):
        PassManager(pipeline)
