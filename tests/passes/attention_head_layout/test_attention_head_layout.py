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


class _Graph:
    """Nodes and initializers of a test graph, added one call at a time."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.inits: list[onnx.TensorProto] = []
        self.nodes: list[onnx.NodeProto] = []

    def const(self, name: str, value) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weights(self, name: str, *shape: int, scale: float = 0.05) -> str:
        return self.const(name, (self.rng.standard_normal(shape) * scale).astype(np.float32))

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], **attrs))
        return output

    def model(self, inputs: dict[str, list[int]], output: list[int], opset: int) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, "attention",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, dims) for n, dims in inputs.items()],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, output)], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = ir.IR_VERSION
        return model


def attention_block(seq: int = 64, width: int = 256, heads: int = 4, mask: bool = True,
                    biases: str = "qkv", seed: int = 0, batch: int = 1) -> onnx.ModelProto:
    """One BERT-style self-attention block with random weights, as transformers exports it; the
    projections named in ``biases`` (of q, k, v) have a bias."""
    g, size = _Graph(seed), width // heads
    g.const("split", np.array([batch, seq, heads, size], np.int64))
    g.const("merge", np.array([batch, seq, width], np.int64))
    g.const("scale", np.array(1 / np.sqrt(size), np.float32))
    heads_of = {}
    for role, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
        t = g.node("MatMul", ["x", g.weights(f"W{role}", width, width)], f"{role}m")
        if role in biases:
            t = g.node("Add", [g.weights(f"b{role}", width, scale=0.1), t], f"{role}a")
        heads_of[role] = g.node("Transpose", [g.node("Reshape", [t, "split"], f"{role}r")], f"{role}t",
                                perm=perm)
    s = g.node("Mul", [g.node("MatMul", [heads_of["q"], heads_of["k"]], "s"), "scale"], "ss")
    if mask:
        s = g.node("Add", [s, "mask"], "sm")
    p = g.node("Softmax", [s], "p", axis=-1)
    c = g.node("Transpose", [g.node("MatMul", [p, heads_of["v"]], "c")], "ct", perm=[0, 2, 1, 3])
    merged = g.node("Reshape", [c, "merge"], "cr")
    g.node("Add", [g.weights("bo", width, scale=0.1),
                   g.node("MatMul", [merged, g.weights("Wo", width, width)], "om")], "y")
    inputs = {"x": [batch, seq, width], **({"mask": [batch, 1, seq, seq]} if mask else {})}
    return g.model(inputs, [batch, seq, width], 17)


def sdpa_attention_block(seq: int = 64, width: int = 256, heads: int = 4,
                         seed: int = 0) -> onnx.ModelProto:
    """One BERT-style self-attention block with random weights as torch's dynamo exporter writes
    ``scaled_dot_product_attention``: the query and the transposed key scaled by the root of the
    scale, the key swapped by Reshape, Transpose, Reshape, the boolean mask as
    ``Where(mask, 0, float min)`` and the NaN guard ``Where(IsNaN(P), 0, P)``."""
    g, size = _Graph(seed), width // heads
    g.const("split", np.array([1, seq, -1, size], np.int64))
    g.const("merge", np.array([1, seq, width], np.int64))
    heads_of = {}
    for role in "qkv":
        t = g.node("MatMul", ["x", g.weights(f"W{role}", width, width)], f"{role}m")
        t = g.node("Add", [t, g.weights(f"b{role}", width, scale=0.1)], f"{role}a")
        heads_of[role] = g.node("Transpose", [g.node("Reshape", [t, "split"], f"{role}r", allowzero=1)],
                                f"{role}t", perm=[0, 2, 1, 3])
    c = _sdpa(g, heads_of, seq, heads, size)
    merged = g.node("Reshape", [c, "merge"], "cr", allowzero=1)
    g.node("Add", [g.node("MatMul", [merged, g.weights("Wo", width, width)], "om"),
                   g.weights("bo", width, scale=0.1)], "y")
    return g.model({"x": [1, seq, width], "mask": [1, 1, seq, seq]}, [1, seq, width], 18)


def _sdpa(g: _Graph, heads_of: dict[str, str], seq: int, heads: int, size: int) -> str:
    """torch's dynamo export of ``scaled_dot_product_attention`` over the ``[B, H, S, D]`` heads;
    returns the transposed context ``[B, S, H, D]``."""
    g.const("fold", np.array([-1, seq, size], np.int64))
    g.const("unfold", np.array([1, heads, size, seq], np.int64))
    g.const("root", np.array(size ** -0.25, np.float32))
    g.const("zero", np.array(0.0, np.float32))
    g.const("fill", np.array(np.finfo(np.float32).min, np.float32))
    q = g.node("Mul", [heads_of["q"], "root"], "qs")
    k = g.node("Transpose", [g.node("Reshape", [heads_of["k"], "fold"], "kf")], "kft", perm=[0, 2, 1])
    k = g.node("Mul", [g.node("Reshape", [k, "unfold"], "ku"), "root"], "ks")
    mask = g.node("Where", [g.node("Greater", ["mask", "zero"], "keep"), "zero", "fill"], "additive")
    s = g.node("Add", [g.node("MatMul", [q, k], "s"), mask], "sm")
    p = g.node("Softmax", [s], "p", axis=-1)
    p = g.node("Where", [g.node("IsNaN", [p], "nan"), "zero", p], "pg")
    return g.node("Transpose", [g.node("MatMul", [p, heads_of["v"]], "c")], "ct", perm=[0, 2, 1, 3])


def gpt2_attention_block(seq: int = 64, width: int = 256, heads: int = 4, dynamo: bool = False,
                         seed: int = 0) -> onnx.ModelProto:
    """One GPT-2 self-attention block with random weights: the query, key and value projected by
    one Conv1D written ``Reshape [B*S, E] -> Gemm -> Reshape [B, S, 3E]`` and split, the output
    projection a Gemm on the flattened heads; as the TorchScript exporter writes it (mask added
    after the scale) or, ``dynamo``, as torch's dynamo exporter writes
    ``scaled_dot_product_attention``."""
    g, size = _Graph(seed), width // heads
    g.const("flat", np.array([seq, width], np.int64))
    g.const("unflat", np.array([1, seq, 3 * width], np.int64))
    g.const("split", np.array([1, seq, heads, size], np.int64))
    g.const("merge", np.array([1, seq, width], np.int64))
    qkv = g.node("Gemm", [g.node("Reshape", ["x", "flat"], "xf"), g.weights("Wqkv", width, 3 * width),
                          g.weights("bqkv", 3 * width, scale=0.1)], "qkv")
    pieces = ["q", "k", "v"]
    g.nodes.append(helper.make_node("Split", [g.node("Reshape", [qkv, "unflat"], "qkvr")], pieces,
                                    axis=2, num_outputs=3))
    heads_of = {role: g.node("Transpose", [g.node("Reshape", [role, "split"], f"{role}r")], f"{role}t",
                             perm=[0, 2, 3, 1] if role == "k" and not dynamo else [0, 2, 1, 3])
                for role in pieces}
    if dynamo:
        c = _sdpa(g, heads_of, seq, heads, size)
    else:
        g.const("scale", np.array(1 / np.sqrt(size), np.float32))
        s = g.node("Mul", [g.node("MatMul", [heads_of["q"], heads_of["k"]], "s"), "scale"], "ss")
        p = g.node("Softmax", [g.node("Add", [s, "mask"], "sm")], "p", axis=-1)
        c = g.node("Transpose", [g.node("MatMul", [p, heads_of["v"]], "c")], "ct", perm=[0, 2, 1, 3])
    flat = g.node("Reshape", [c, "flat"], "cf")
    out = g.node("Gemm", [flat, g.weights("Wo", width, width), g.weights("bo", width, scale=0.1)], "o")
    g.node("Reshape", [out, "merge"], "y")
    return g.model({"x": [1, seq, width], "mask": [1, 1, seq, seq]}, [1, seq, width], 18)


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


@pytest.mark.parametrize("biases, layers", [("qkv", 10), ("kv", 8)], ids=["query-bias", "no-query-bias"])
def test_batch_above_one_keeps_the_per_head_layout_out(biases: str, layers: int) -> None:
    """At batch 2 a per-head GEMM would broadcast the projected input over the heads (TensorRT
    copies it out per head: 10 -> 14 layers, measured when the pass still did it), so a block
    whose query has a bias is left alone with that reason; dropping the key and value biases of a
    query without bias still pays (10 -> 8)."""
    model = attention_block(batch=2, biases=biases)
    rewritten, record = optimized(model)
    if biases == "qkv":
        assert record.counts == {}
        assert record.rejections[0].reason.startswith("the batch is 2, not 1: ")
    else:
        assert record.counts == {"unbiased_blocks": 1, "key_biases_dropped": 1, "value_biases_folded": 1}
    assert verify.compare_models(model, rewritten, seed=0).passed
    assert (build_engine(model, progress=False).compute_layers,
            build_engine(rewritten, progress=False).compute_layers) == (10, layers)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_gpt2_merged_projection(dynamo: bool) -> None:
    """GPT-2's merged Conv1D projection: each Split piece's columns become per-head weights and the
    value bias joins the output Gemm: 10 -> 8 engine layers for the block (the merged GEMM's three
    bias-and-transpose copies become the query's one); GPT-2 (4 layers) 53 -> 45 from either
    exporter (docs/benchmarks.md)."""
    model = gpt2_attention_block(dynamo=dynamo)
    rewritten, record = optimized(model)
    expected = {"attention_blocks": 1, "key_biases_dropped": 1, "masks_transposed": 1,
                "value_biases_folded": 1}
    if dynamo:
        expected |= {"nan_guards_dropped": 1, "scales_folded": 2}
    assert record.counts == expected
    ops = [n.op_type for n in rewritten.graph.node]
    assert "Split" not in ops and ops.count("Gemm") == 1 and ops.count("MatMul") == 5
    assert verify.compare_models(model, rewritten, seed=0).passed
    assert (build_engine(model, progress=False).compute_layers,
            build_engine(rewritten, progress=False).compute_layers) == (10, 8)


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
