"""grouped-query-attention: engine layers, reduced precision, the compile's resources, --why-not.

The pass's golden cases (structure, counts, parity) are in ``cases/``; this module builds
full-size blocks (sequence 128, 8 query heads of 64) and measures what TensorRT makes of them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests import pass_cases
from trtcompile import cli, ir, verify
from trtcompile.backend import build_engine
from trtcompile.flow import CompileOptions, compile_model
from trtcompile.pass_manager import PassContext, PassManager

CASES = Path(__file__).parent / "cases"
#: The default pipeline's passes up to attention, without and with this pass.
BEFORE = "dead-layer-elimination,fold-constants,transpose-cancellation,dead-layer-elimination"
AFTER = BEFORE.replace("fold-constants,", "fold-constants,grouped-query-attention,")


class _Graph:
    """Nodes, inputs and random initializers of a test graph."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def weights(self, name: str, *shape: int) -> str:
        values = (self.rng.standard_normal(shape) * 0.05).astype(np.float32)
        self.inits.append(numpy_helper.from_array(values, name))
        return name

    def const(self, value) -> str:
        self.count += 1
        name = f"c{self.count}"
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        self.count += 1
        output = f"t{self.count}"
        self.nodes.append(helper.make_node(op, inputs, [output], **attrs))
        return output


def llama_block(dynamo: bool = False, heads: int = 8, kv: int = 2, seq: int = 128, size: int = 64,
                batch: int = 1, biases: bool = False, seed: int = 0) -> onnx.ModelProto:
    """One Llama self-attention block (rotary embeddings, ``kv`` key/value heads repeated by
    Unsqueeze-Expand-Reshape) as the TorchScript exporter writes it, or as torch's dynamo exporter
    writes scaled_dot_product_attention (the key's repeat merged into the swap of its last two
    axes, the query and key scaled by the root of the scale, a NaN guard)."""
    g = _Graph(seed)
    width = heads * size
    x = "x"
    split = g.const(np.array([batch, seq, -1, size], np.int64))
    heads_of = {}
    for role, n in (("q", heads), ("k", kv), ("v", kv)):
        t = g.node("MatMul", [x, g.weights(f"W{role}", width, n * size)])
        if biases:
            t = g.node("Add", [t, g.weights(f"b{role}", n * size)])
        heads_of[role] = g.node("Transpose", [g.node("Reshape", [t, split])], perm=[0, 2, 1, 3])
    cos, sin = g.weights("cos", 1, 1, seq, size), g.weights("sin", 1, 1, seq, size)
    half, axis, step = g.const(np.array([size // 2])), g.const(np.array([3])), g.const(np.array([1]))
    for role in "qk":
        t = heads_of[role]
        low = g.node("Slice", [t, g.const(np.array([0])), half, axis, step])
        high = g.node("Neg", [g.node("Slice", [t, half, g.const(np.array([size])), axis, step])])
        rotated = g.node("Mul", [g.node("Concat", [high, low], axis=-1), sin])
        heads_of[role] = g.node("Add", [g.node("Mul", [t, cos]), rotated])
    grouped = g.const(np.array([batch, kv, heads // kv, seq, size], np.int64))
    repeated = {}
    for role in "kv":
        expanded = g.node("Expand", [g.node("Unsqueeze", [heads_of[role], g.const(np.array([2]))]),
                                     grouped])
        shape = [batch * heads, seq, size] if dynamo and role == "k" else [batch, heads, seq, size]
        repeated[role] = g.node("Reshape", [expanded, g.const(np.array(shape, np.int64))])
    if dynamo:
        root = g.const(np.array(size ** -0.25, np.float32))
        key = g.node("Transpose", [repeated["k"]], perm=[0, 2, 1])
        key = g.node("Mul", [g.node("Reshape", [key, g.const(np.array([batch, heads, size, seq]))]), root])
        scores = g.node("MatMul", [g.node("Mul", [heads_of["q"], root]), key])
        p = g.node("Softmax", [g.node("Add", [scores, "mask"])], axis=-1)
        zero = g.const(np.array(0.0, np.float32))
        p = g.node("Where", [g.node("IsNaN", [p]), zero, p])
    else:
        scores = g.node("MatMul", [heads_of["q"], g.node("Transpose", [repeated["k"]], perm=[0, 1, 3, 2])])
        scores = g.node("Mul", [scores, g.const(np.array(size ** -0.5, np.float32))])
        p = g.node("Softmax", [g.node("Add", [scores, "mask"])], axis=-1)
    context = g.node("Transpose", [g.node("MatMul", [p, repeated["v"]])], perm=[0, 2, 1, 3])
    merged = g.node("Reshape", [context, g.const(np.array([batch, seq, width], np.int64))])
    g.nodes.append(helper.make_node("MatMul", [merged, g.weights("Wo", width, width)], ["y"]))
    graph = helper.make_graph(
        g.nodes, "llama_attention",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, seq, width]),
         helper.make_tensor_value_info("mask", TensorProto.FLOAT, [batch, 1, seq, seq])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, seq, width])], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18 if dynamo else 17)])
    model.ir_version = ir.IR_VERSION
    return model


def run(model: onnx.ModelProto, pipeline: str, ctx: PassContext | None = None):
    graph = ir.import_model(model)
    report = PassManager(pipeline, ctx=ctx).run(graph)
    return ir.export_model(graph), report


def record_of(report):
    return next(r for r in report.records if r.name == "grouped-query-attention")


@pytest.mark.parametrize("dynamo, biases, layers", [
    (False, False, (9, 8)), (True, False, (9, 8)), (False, True, (9, 7)),
], ids=["torchscript", "dynamo", "biased-projections"])
def test_engine_has_fewer_layers(dynamo: bool, biases: bool, layers: tuple) -> None:
    """TensorRT-RTX 1.7, FP32: the block builds 9 compute layers as exported (among them a copy
    kernel for the value's head split and repeat) and 8 after the pass: the per-head GEMM writes
    the value where the context GEMM reads it. Qwen2's biased projections: 7 (the three bias
    copies become the per-head GEMM's one bias)."""
    model = llama_block(dynamo=dynamo, biases=biases)
    before, _ = run(model, BEFORE)
    after, report = run(model, AFTER)
    assert record_of(report).counts == {"per_head_projections": 1, "projections_merged": 3,
                                        "repeats_broadcast": 2, "broadcast_matmuls": 2}
    assert "Expand" not in [n.op_type for n in after.graph.node]
    engines = [build_engine(m, progress=False) for m in (before, after)]
    assert tuple(e.compute_layers for e in engines) == layers
    repeat_copies = [layer for layer in engines[1].layers if layer.compute and "Repl" in layer.name]
    assert repeat_copies == []
    assert verify.compare_models(model, after, seed=0).passed


def test_multi_head_attention_is_left_alone() -> None:
    """As many key/value heads as query heads: Expand to groups of 1 is no repeat (and TensorRT
    reads the value heads in place already: 8 layers either way)."""
    model = llama_block(kv=8)
    after, report = run(model, AFTER)
    assert record_of(report).counts == {} and record_of(report).rejections == []
    assert ir.model_digest(after) == ir.model_digest(run(model, BEFORE)[0])


def test_batch_2_keeps_the_block() -> None:
    """At batch 2 the per-head GEMM would read the input once per head (TensorRT copies it out),
    and a broadcast alone gains nothing (9 layers either way): nothing changes, with the reason."""
    model = llama_block(batch=2)
    after, report = run(model, AFTER)
    record = record_of(report)
    assert record.counts == {}
    assert [r.reason for r in record.rejections] == [
        "the batch is 2, not 1: a per-head GEMM of a batch reads the projected input once per "
        "head, which TensorRT copies out",
        "the repeated heads are not computed from a head split of a block whose projections "
        "became one per-head GEMM"]
    assert ir.model_digest(after) == ir.model_digest(run(model, BEFORE)[0])


@pytest.mark.parametrize("precision", ["fp16", "bf16", "int8"])
def test_reduced_precision_engines_keep_the_repeat(precision: str) -> None:
    """FP16 TensorRT fuses the attention into one kernel, which the broadcast form prevents
    (Llama, default pipeline + FP16: 46 engine layers, 53 with this pass)."""
    ctx = PassContext(resources={"grouped-query-attention": {"precision": precision}})
    _, report = run(llama_block(seq=16, heads=4, size=8), "grouped-query-attention", ctx)
    record = record_of(report)
    assert record.counts == {}
    assert {r.reason for r in record.rejections} == {
        f"the engine is built in {precision.upper()}: TensorRT fuses the attention into one kernel "
        "there, which the broadcast form prevents (Llama FP16: 46 -> 53 layers)"}


def test_compile_passes_the_precision_and_rewrites_in_fp32(tmp_path: Path) -> None:
    path = tmp_path / "llama.onnx"
    onnx.save(llama_block(seq=16, heads=4, size=8), path)
    fp32 = compile_model(path, tmp_path / "fp32", CompileOptions(engine=False, progress=False))
    fp16 = compile_model(path, tmp_path / "fp16", CompileOptions(engine=False, progress=False,
                                                                 precision="fp16"))
    assert not fp32.why_not("grouped-query-attention")
    record = next(r for r in fp32.report["passes"] if r["name"] == "grouped-query-attention")
    assert record["counts"]["repeats_broadcast"] == 2
    assert {r.reason for r in fp16.why_not("grouped-query-attention")} == {
        "the engine is built in FP16: TensorRT fuses the attention into one kernel there, which "
        "the broadcast form prevents (Llama FP16: 46 -> 53 layers)"}


def test_why_not_names_the_reader_that_needs_the_copy(tmp_path: Path, capsys) -> None:
    case = pass_cases.load_case(CASES / "neg_value_read_by_reduction.onnxtxt")
    path = tmp_path / "model.onnx"
    onnx.save(case.model(), path)
    code = cli.main(["compile", str(path), "-o", str(tmp_path / "out"), "--no-engine",
                     "--no-progress", "--why-not", "grouped-query-attention"])
    out = capsys.readouterr().out
    assert code == 0
    section = out[out.index("why not grouped-query-attention"):]
    assert "the repeated heads are read by ReduceMean 'ReduceMean_0', which needs them copied" in section


@pytest.mark.parametrize("case", ["llama_torchscript", "llama_dynamo", "phi3_merged_qkv"])
def test_default_pipeline_is_a_fixed_point(case: str) -> None:
    """The default pipeline run on its own output changes nothing (no repeat is left, and the
    per-head GEMM is no head split a second run would merge)."""
    from tests.property.test_idempotence import assert_idempotent

    assert_idempotent(pass_cases.load_case(CASES / f"{case}.onnxtxt").model())
