"""attention-head-layout beyond its pass cases: the engine TensorRT builds from an attention block
(fewer compute layers, the measured reason for the pass), the precision the compile asks for (FP16
and INT8 engines keep TensorRT's fused attention) and ``--why-not``."""

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


def attention_block(seq: int = 64, width: int = 256, heads: int = 4, mask: bool = True,
                    biases: str = "qkv", seed: int = 0) -> onnx.ModelProto:
    """One BERT-style self-attention block with random weights, as transformers exports it; the
    projections named in ``biases`` (of q, k, v) have a bias."""
    rng = np.random.default_rng(seed)
    size = width // heads
    inits, nodes = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op, inputs, output, **attrs):
        nodes.append(helper.make_node(op, inputs, [output], **attrs))
        return output

    const("split", np.array([1, seq, heads, size], np.int64))
    const("merge", np.array([1, seq, width], np.int64))
    const("scale", np.array(1 / np.sqrt(size), np.float32))
    heads_of = {}
    for role, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
        w = const(f"W{role}", (rng.standard_normal((width, width)) * 0.05).astype(np.float32))
        t = node("MatMul", ["x", w], f"{role}m")
        if role in biases:
            b = const(f"b{role}", (rng.standard_normal(width) * 0.1).astype(np.float32))
            t = node("Add", [b, t], f"{role}a")
        heads_of[role] = node("Transpose", [node("Reshape", [t, "split"], f"{role}r")], f"{role}t",
                              perm=perm)
    s = node("Mul", [node("MatMul", [heads_of["q"], heads_of["k"]], "s"), "scale"], "ss")
    if mask:
        s = node("Add", [s, "mask"], "sm")
    p = node("Softmax", [s], "p", axis=-1)
    c = node("Transpose", [node("MatMul", [p, heads_of["v"]], "c")], "ct", perm=[0, 2, 1, 3])
    wo = const("Wo", (rng.standard_normal((width, width)) * 0.05).astype(np.float32))
    bo = const("bo", (rng.standard_normal(width) * 0.1).astype(np.float32))
    node("Add", [bo, node("MatMul", [node("Reshape", [c, "merge"], "cr"), wo], "om")], "y")
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, seq, width])]
    if mask:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, seq, seq]))
    graph = helper.make_graph(nodes, "attention", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, seq, width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = ir.IR_VERSION
    return model


def sdpa_attention_block(seq: int = 64, width: int = 256, heads: int = 4,
                         seed: int = 0) -> onnx.ModelProto:
    """One BERT-style self-attention block with random weights as torch's dynamo exporter writes
    ``scaled_dot_product_attention``: the query and the transposed key scaled by the root of the
    scale, the key swapped by Reshape, Transpose, Reshape, the boolean mask as
    ``Where(mask, 0, float min)`` and the NaN guard ``Where(IsNaN(P), 0, P)``."""
    rng = np.random.default_rng(seed)
    size = width // heads
    inits, nodes = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op, inputs, output, **attrs):
        nodes.append(helper.make_node(op, inputs, [output], **attrs))
        return output

    const("split", np.array([1, seq, -1, size], np.int64))
    const("fold", np.array([-1, seq, size], np.int64))
    const("unfold", np.array([1, heads, size, seq], np.int64))
    const("merge", np.array([1, seq, width], np.int64))
    const("root", np.array(size ** -0.25, np.float32))
    const("zero", np.array(0.0, np.float32))
    const("fill", np.array(np.finfo(np.float32).min, np.float32))
    heads_of = {}
    for role in "qkv":
        w = const(f"W{role}", (rng.standard_normal((width, width)) * 0.05).astype(np.float32))
        b = const(f"b{role}", (rng.standard_normal(width) * 0.1).astype(np.float32))
        t = node("Add", [node("MatMul", ["x", w], f"{role}m"), b], f"{role}a")
        t = node("Transpose", [node("Reshape", [t, "split"], f"{role}r", allowzero=1)], f"{role}t",
                 perm=[0, 2, 1, 3])
        heads_of[role] = t
    heads_of["q"] = node("Mul", [heads_of["q"], "root"], "qs")
    k = node("Transpose", [node("Reshape", [heads_of["k"], "fold"], "kf")], "kft", perm=[0, 2, 1])
    heads_of["k"] = node("Mul", [node("Reshape", [k, "unfold"], "ku"), "root"], "ks")
    mask = node("Where", [node("Greater", ["mask", "zero"], "keep"), "zero", "fill"], "additive")
    s = node("Add", [node("MatMul", [heads_of["q"], heads_of["k"]], "s"), mask], "sm")
    p = node("Softmax", [s], "p", axis=-1)
    p = node("Where", [node("IsNaN", [p], "nan"), "zero", p], "pg")
    c = node("Transpose", [node("MatMul", [p, heads_of["v"]], "c")], "ct", perm=[0, 2, 1, 3])
    wo = const("Wo", (rng.standard_normal((width, width)) * 0.05).astype(np.float32))
    bo = const("bo", (rng.standard_normal(width) * 0.1).astype(np.float32))
    node("Add", [node("MatMul", [node("Reshape", [c, "merge"], "cr", allowzero=1), wo], "om"), bo], "y")
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, seq, width]),
              helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, seq, seq])]
    graph = helper.make_graph(nodes, "attention", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, seq, width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = ir.IR_VERSION
    return model


def optimized(model: onnx.ModelProto, ctx: PassContext | None = None):
    graph = ir.import_model(model)
    report = PassManager("attention-head-layout", ctx=ctx).run(graph)
    return ir.export_model(graph), report.records[0]


@pytest.mark.parametrize("mask", [True, False], ids=["mask", "no-mask"])
def test_engine_has_two_fewer_layers_per_block(mask: bool) -> None:
    """TensorRT-RTX 1.7, FP32: 9 compute layers as exported, 7 after the pass (the key and value
    heads are read from the merged projection GEMM, the query's bias kernel writes Q^T)."""
    model = attention_block(mask=mask)
    rewritten, record = optimized(model)
    assert record.counts["attention_blocks"] == 1
    before = build_engine(model, progress=False).compute_layers
    after = build_engine(rewritten, progress=False)
    # A mask given as an input is read transposed by the softmax kernel (a mask computed in the
    # graph, as BERT's, is one more layer shared by every block).
    assert (before, after.compute_layers) == (9, 7)
    copies = [layer for layer in after.layers if layer.compute and layer.type == "kgen"
              and any(n.endswith(("_query_transpose", "_heads_bias_add")) for n in layer.onnx_nodes)]
    assert len(copies) == 1  # one layer carries the query bias and writes Q^T
    assert verify.compare_models(model, rewritten, seed=0).passed


def test_dynamo_sdpa_engine_has_the_eager_forms_layers() -> None:
    """The dynamo exporter's scaled_dot_product_attention: rules 5 and 6 bring it to the form the
    eager export gets, and TensorRT builds it with as many layers (7); with the NaN guard kept
    between the transposed probabilities and the context GEMM it builds one more."""
    model = sdpa_attention_block()
    rewritten, record = optimized(model)
    assert record.counts == {"attention_blocks": 1, "key_biases_dropped": 1, "masks_transposed": 1,
                             "nan_guards_dropped": 1, "scales_folded": 2, "value_biases_folded": 1}
    assert {"IsNaN", "Mul"}.isdisjoint(n.op_type for n in rewritten.graph.node)
    assert verify.compare_models(model, rewritten, seed=0).passed
    # The same rewrite with the guard put back in front of the transposed probabilities.
    guarded = onnx.ModelProto.FromString(rewritten.SerializeToString())
    nodes = list(guarded.graph.node)
    at, transpose = next((i, n) for i, n in enumerate(nodes)
                         if n.op_type == "Transpose" and list(n.input) == ["p"])
    nodes[at:at] = [helper.make_node("IsNaN", ["p"], ["p_nan"]),
                    helper.make_node("Where", ["p_nan", "zero", "p"], ["p_guarded"])]
    transpose.input[0] = "p_guarded"
    guarded.graph.ClearField("node")
    guarded.graph.node.extend(nodes)
    layers = [build_engine(m, progress=False).compute_layers for m in (model, rewritten, guarded)]
    assert layers == [9, 7, 8]


@pytest.mark.parametrize("biases, stats, layers", [
    ("kv", {"unbiased_blocks": 1, "key_biases_dropped": 1, "value_biases_folded": 1}, (9, 6)),
    ("", {}, (6, 6)),
], ids=["query-without-bias", "no-biases"])
def test_blocks_without_query_bias_keep_their_layout(biases: str, stats: dict, layers: tuple) -> None:
    """Without any bias TensorRT reads the heads in place as exported (6 layers; the transposed
    form would build 7): a query without bias only loses the key and value biases."""
    model = attention_block(biases=biases)
    rewritten, record = optimized(model)
    assert record.counts == stats
    ops = [n.op_type for n in rewritten.graph.node]
    assert "Unsqueeze" not in ops and ops.count("Transpose") == 4
    built = (build_engine(model, progress=False).compute_layers,
             build_engine(rewritten, progress=False).compute_layers)
    assert built == layers
    assert verify.compare_models(model, rewritten, seed=0).passed


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_reduced_precision_engines_keep_the_standard_attention(precision: str) -> None:
    """FP16 TensorRT fuses Q K^T, Softmax and . V into one kernel; transposed scores would stop it
    (DistilBERT, default pipeline + FP16: 62 engine layers, 74 with this pass)."""
    ctx = PassContext(resources={"attention-head-layout": {"precision": precision}})
    rewritten, record = optimized(attention_block(seq=8, width=16, heads=2), ctx)
    assert record.counts == {}
    assert [r.reason for r in record.rejections] == [
        f"the engine is built in {precision.upper()}: TensorRT fuses standard attention into one "
        "kernel there, which transposed scores prevent"]
    assert [n.op_type for n in rewritten.graph.node].count("Reshape") == 4


def test_fp16_graph_is_left_alone() -> None:
    """A graph whose projections are already float16 keeps its attention as it is."""
    model = attention_block(seq=8, width=16, heads=2)
    for tensor in model.graph.initializer:
        if tensor.data_type == TensorProto.FLOAT:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16),
                                                    tensor.name))
    _, record = optimized(model)
    assert record.counts == {}
    assert record.rejections[0].reason == ("the projections are not float32: TensorRT fuses FP16 "
                                           "attention into one kernel")


def test_compile_passes_the_precision_to_the_pass(tmp_path: Path) -> None:
    path = tmp_path / "attention.onnx"
    onnx.save(attention_block(seq=8, width=16, heads=2), path)
    fp32 = compile_model(path, tmp_path / "fp32", CompileOptions(engine=False, progress=False))
    fp16 = compile_model(path, tmp_path / "fp16", CompileOptions(engine=False, progress=False,
                                                                 precision="fp16"))
    assert not fp32.why_not("attention-head-layout")
    assert [r.reason for r in fp16.why_not("attention-head-layout")] == [
        "the engine is built in FP16: TensorRT fuses standard attention into one kernel there, "
        "which transposed scores prevent"]


def test_why_not_names_the_blocking_op(tmp_path: Path, capsys) -> None:
    case = pass_cases.load_case(CASES / "neg_multiplicative_mask.onnxtxt")
    path = tmp_path / "model.onnx"
    onnx.save(case.model(), path)
    code = cli.main(["compile", str(path), "-o", str(tmp_path / "out"), "--no-engine",
                     "--no-progress", "--why-not", "attention-head-layout"])
    out = capsys.readouterr().out
    assert code == 0
    section = out[out.index("why not attention-head-layout"):].splitlines()
    assert section[0].startswith("why not attention-head-layout: 1 candidate left alone, 1 reason")
    assert section[2].strip().endswith("the scores' Mul is not by a scalar constant")


@pytest.mark.parametrize("case", ["sdpa_self_attention", "sdpa_cross_attention_keeps_guard",
                                  "dynamo_eager_self_attention"])
def test_default_pipeline_is_a_fixed_point_on_the_dynamo_forms(case: str) -> None:
    """The default pipeline run on its own output of a dynamo export's attention changes nothing
    (rules 5 and 6 leave no scale, swap or guard a second run would find)."""
    from tests.property.test_idempotence import assert_idempotent

    assert_idempotent(pass_cases.load_case(CASES / f"{case}.onnxtxt").model())
