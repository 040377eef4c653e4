"""fold-constants beyond its pass cases: dynamic batches stay dynamic, subgraph bodies fold in
place, the cheap path when nothing folds, and options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest

from passes.fold_constants import FoldConstants
from tests import pass_cases
from trtcompile import ir
from trtcompile.pass_manager import PassContext, PassManager, parse_pipeline
from trtcompile.pm import REWRITE_LIMIT_REASON, PassResult

CASES = Path(__file__).parent / "cases"


def folded(case_name: str, pipeline: str | None = None) -> tuple[onnx.ModelProto, gs.Graph]:
    case = pass_cases.load_case(CASES / f"{case_name}.onnxtxt")
    model = case.model()
    graph = ir.import_model(model)
    PassManager(pipeline or case.pipeline).run(graph)
    return model, graph


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


@pytest.mark.parametrize("batch", [1, 3, 5])
def test_dynamic_batch_reshape_stays_dynamic(batch: int) -> None:
    model, graph = folded("shape_arithmetic_dynamic_batch")
    optimized = ir.export_model(graph)
    reshape = graph.nodes[-1]
    assert reshape.op == "Reshape" and not isinstance(reshape.inputs[1], gs.Constant)
    x = np.random.default_rng(batch).standard_normal((batch, 3, 4, 4)).astype(np.float32)
    (y,) = run(optimized, {"x": x})
    assert y.shape == (batch, 48)
    np.testing.assert_array_equal(y, run(model, {"x": x})[0])


def test_shape_range_folds_to_its_range() -> None:
    _, graph = folded("shape_range_dynamic_batch")
    (reshape,) = graph.nodes
    assert list(reshape.inputs[1].values) == [0, 3, 16]


def test_shape_end_alone_folds_to_its_range() -> None:
    _, graph = folded("shape_end_only_static_range")
    (reshape,) = graph.nodes
    assert list(reshape.inputs[1].values) == [2, 3, -1]


def test_if_branch_folds_inside_the_branch() -> None:
    model, graph = folded("if_branch_constant")
    (if_node,) = graph.nodes
    then_body = if_node.attrs["then_branch"]
    (add,) = then_body.nodes
    assert add.op == "Add"
    np.testing.assert_array_equal(add.inputs[1].values, [2.0, 4.0, 6.0, 8.0])
    optimized = ir.export_model(graph)
    onnx.checker.check_model(optimized, full_check=True)
    x = np.arange(4, dtype=np.float32)
    for cond in (True, False):
        feeds = {"cond": np.array(cond), "x": x}
        np.testing.assert_array_equal(run(optimized, feeds)[0], run(model, feeds)[0])


def test_loop_body_folds_and_runs() -> None:
    model, graph = folded("loop_body_constant")
    (loop,) = graph.nodes
    assert [n.op for n in loop.attrs["body"].nodes] == ["Identity", "Add"]
    x = np.ones(4, np.float32)
    np.testing.assert_array_equal(run(ir.export_model(graph), {"x": x})[0], x + 1.5 * np.arange(1, 5))


CHAIN = """<ir_version: 10, opset_import: ["" : 17]>
g (float[1,4,8,8] x) => (float[1,4,8,8] y) {{
{body}
}}"""


def conv_relu_chain(layers: int, with_constant_node: bool = False) -> gs.Graph:
    lines, current = [], "x"
    for i in range(layers):
        lines.append(f"  c{i} = Conv<pads=[1,1,1,1]>({current}, W)")
        current = f"r{i}" if i < layers - 1 else "y"
        lines.append(f"  {current} = Relu(c{i})")
    graph = ir.import_model(onnx.parser.parse_model(CHAIN.format(body="\n".join(lines))))
    weights = gs.Constant("W", np.full((4, 4, 3, 3), 0.01, np.float32))
    for node in graph.nodes[::2]:
        node.inputs[1] = weights
    if with_constant_node:
        tensor = gs.Variable("W_node", dtype=np.float32, shape=[4, 4, 3, 3])
        graph.nodes.insert(0, gs.Node("Constant", name="weights", outputs=[tensor],
                                      attrs={"value": gs.Constant("w", weights.values.copy())}))
        graph.nodes[1].inputs[1] = tensor
    return graph


def test_nothing_foldable_does_not_call_graphsurgeon(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("Graph.fold_constants called with nothing to fold")

    monkeypatch.setattr(gs.Graph, "fold_constants", forbidden)
    graph = conv_relu_chain(20)
    assert FoldConstants().run(graph, PassContext()).counts == {}
    assert len(graph.nodes) == 40

    # Constant nodes alone are lowered without onnx-graphsurgeon's whole-graph copy.
    graph = conv_relu_chain(20, with_constant_node=True)
    result = FoldConstants().run(graph, PassContext())
    assert result.counts == {"constant_nodes_to_initializers": 1}
    assert [n.op for n in graph.nodes[:2]] == ["Conv", "Relu"]
    assert isinstance(graph.nodes[0].inputs[1], gs.Constant)


def test_fold_shapes_off_keeps_shape_arithmetic() -> None:
    _, graph = folded("shape_arithmetic_static", "fold-constants{fold-shapes=false}")
    assert [n.op for n in graph.nodes] == ["Shape", "Gather", "Concat", "Reshape"]


def test_options_round_trip() -> None:
    (pass_,) = parse_pipeline("fold-constants{size-threshold=1024 flatten-conditionals=false}")
    assert pass_ == FoldConstants(size_threshold=1024, flatten_conditionals=False)
    assert parse_pipeline(pass_.to_text()) == (pass_,)
    assert FoldConstants().size_threshold == 64 << 20


def test_graph_output_computed_from_constants_folds() -> None:
    graph = ir.import_model(onnx.parser.parse_model("""<ir_version: 10, opset_import: ["" : 17]>
    g (float[4] x) => (float[4] y, float[4] k) {
      c = Constant<value = float[4] {1.0, 2.0, 3.0, 4.0}>()
      k = Mul(c, c)
      y = Add(x, k)
    }"""))
    result = FoldConstants().run(graph, PassContext())
    assert result.counts == {"constant_nodes_to_initializers": 1, "folded_nodes": 1}
    optimized = ir.export_model(graph)
    assert [o.name for o in optimized.graph.output] == ["y", "k"]
    y, k = run(optimized, {"x": np.ones(4, np.float32)})
    np.testing.assert_array_equal(k, [1, 4, 9, 16])
    np.testing.assert_array_equal(y, [2, 5, 10, 17])


def test_only_the_foldable_island_is_handed_to_graphsurgeon(monkeypatch: pytest.MonkeyPatch) -> None:
    """Folding a few nodes of a large graph evaluates those nodes, not a copy of the whole graph."""
    sizes: list[int] = []
    original = gs.Graph.fold_constants

    def recording(self, *args, **kwargs):
        sizes.append(len(self.nodes))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(gs.Graph, "fold_constants", recording)
    graph = conv_relu_chain(50)
    flat = gs.Variable("flat", dtype=np.float32)
    reshaped = gs.Variable("reshaped", dtype=np.float32)
    graph.nodes[:0] = [
        gs.Node("Constant", name="flat_weights", outputs=[flat],
                attrs={"value": gs.Constant("v", np.full(144, 0.01, np.float32))}),
        gs.Node("Reshape", name="weights_shape", outputs=[reshaped],
                inputs=[flat, gs.Constant("s", np.array([4, 4, 3, 3], np.int64))]),
    ]
    graph.nodes[2].inputs[1] = reshaped
    result = FoldConstants().run(graph, PassContext())
    assert sizes == [2]
    assert result.counts == {"constant_nodes_to_initializers": 1, "folded_nodes": 1}
    assert len(graph.nodes) == 100 and isinstance(graph.nodes[0].inputs[1], gs.Constant)
    np.testing.assert_array_equal(graph.nodes[0].inputs[1].values, np.full((4, 4, 3, 3), 0.01, np.float32))


@pytest.mark.parametrize("attribute, expected", [
    ("value_float = 0.5", np.array(0.5, np.float32)),
    ("value_floats = [0.5, -1.0]", np.array([0.5, -1.0], np.float32)),
    ("value_int = 7", np.array(7, np.int64)),
    ("value_ints = [2, -3]", np.array([2, -3], np.int64)),
    ('value_string = "ab"', np.array("ab")),
    ('value_strings = ["ab", "c"]', np.array(["ab", "c"])),
])
@pytest.mark.parametrize("opset", [13, 21])
def test_constant_attribute_kinds_keep_their_onnx_type(attribute: str, expected: np.ndarray,
                                                       opset: int) -> None:
    model = onnx.parser.parse_model(f"""<ir_version: 10, opset_import: ["" : {opset}]>
    g (float[1] x) => (float[1] y, c) {{
      c = Constant<{attribute}>()
      y = Identity(x)
    }}""")
    graph = ir.import_model(model)
    result = FoldConstants().run(graph, PassContext())
    assert result.counts == {"constant_nodes_to_initializers": 1}
    constant = graph.outputs[1]
    assert isinstance(constant, gs.Constant)
    assert constant.values.dtype.kind == expected.dtype.kind
    assert constant.values.dtype.itemsize == expected.dtype.itemsize or expected.dtype.kind == "U"
    assert constant.values.tolist() == expected.tolist()


ISLAND = ("Constant_0", "ConstantOfShape_0", "Constant_0_1", "Reshape_0", "Constant_0_2",
          "ConstantOfShape_0_1")


def _large_weight_run(rewrite_limit: int | None) -> tuple[PassContext, PassResult, gs.Graph]:
    case = pass_cases.load_case(CASES / "large_weight_above_threshold.onnxtxt")
    (pass_,) = parse_pipeline(case.pipeline)
    graph = ir.import_model(case.model())
    ctx = PassContext(rewrite_limit=rewrite_limit)
    return ctx, pass_.run(graph, ctx), graph


def test_each_fold_is_asked_for_by_its_rule() -> None:
    ctx, _, _ = _large_weight_run(None)
    assert [(r.rule, r.nodes) for r in ctx.rewrites] == [
        ("fold-island", ISLAND), ("fold-large-weights", ("ConstantOfShape_0", "Reshape_0"))]


def test_a_rewrite_limit_stops_each_fold_and_says_why() -> None:
    ctx, result, graph = _large_weight_run(0)
    assert ctx.rewrites == [] and result.counts == {}
    assert [(r.nodes, r.reason) for r in result.rejections] == [(ISLAND, REWRITE_LIMIT_REASON)]
    assert "ConstantOfShape" in [n.op for n in graph.nodes]
    # With one rewrite granted the island folds and the large weights, refused, stay computed.
    ctx, result, _ = _large_weight_run(1)
    assert [r.rule for r in ctx.rewrites] == ["fold-island"]
    assert (("ConstantOfShape_0", "Reshape_0"), REWRITE_LIMIT_REASON) in [
        (r.nodes, r.reason) for r in result.rejections]


def _fold(text: str, pipeline: str = "fold-constants", rewrite_limit: int | None = None
          ) -> tuple[gs.Graph, PassResult, PassContext]:
    (pass_,) = parse_pipeline(pipeline)
    graph = ir.import_model(onnx.parser.parse_model(text))
    ctx = PassContext(rewrite_limit=rewrite_limit)
    return graph, pass_.run(graph, ctx), ctx


def _reasons(result: PassResult) -> list[tuple[tuple[str, ...], str]]:
    return [(r.nodes, r.reason) for r in result.rejections]


#: A constant Add in the main graph and a constant Mul in an If branch: two islands.
TWO_ISLANDS = """
<ir_version: 10, opset_import: ["" : 17]>
g (bool cond, float[4] x) => (float[4] y) <float[4] a = {1, 2, 3, 4}, float b = {2.0}> {
  s = Add(a, b)
  y = If(cond) <then_branch = then_body () => (float[4] t) {
      scaled = Mul(s, b)
      t = Add(x, scaled)
    }, else_branch = else_body () => (float[4] e) {
      e = Neg(x)
    }>
}
"""


def test_a_rewrite_limit_refuses_every_island_and_says_so() -> None:
    graph, result, ctx = _fold(TWO_ISLANDS, rewrite_limit=0)
    assert [nodes for nodes, reason in _reasons(result) if reason == REWRITE_LIMIT_REASON] == [
        ("Add_0",), ("Mul_0",)]
    # The If's condition is an input: the islands fold one by one, not the whole graph.
    graph, result, ctx = _fold(TWO_ISLANDS)
    assert [r.rule for r in ctx.rewrites] == ["fold-island", "fold-island"]
    assert result.counts == {"folded_nodes": 2}


def test_an_island_of_constants_only_does_not_stop_the_next_island() -> None:
    graph, result, _ = _fold("""
        <ir_version: 10, opset_import: ["" : 17]>
        g (bool cond, float[4] x) => (float[4] y) <float[4] a = {1, 2, 3, 4}, float b = {2.0}> {
          k = Constant<value = float {3.0}>()
          y = If(cond) <then_branch = then_body () => (float[4] t) {
              scaled = Mul(a, b)
              u = Add(x, scaled)
              t = Mul(u, k)
            }, else_branch = else_body () => (float[4] e) {
              e = Neg(x)
            }>
        }""")
    (if_node,) = graph.nodes
    then_body = if_node.attrs["then_branch"]
    assert [n.op for n in then_body.nodes] == ["Add", "Mul"]
    assert result.counts == {"constant_nodes_to_initializers": 1, "folded_nodes": 1}


def test_castlikes_after_one_of_a_runtime_value_still_become_casts() -> None:
    graph, result, ctx = _fold("""
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[3] x, int32[3] k) => (float[3] y) <int64[3] c = {1, 2, 3}, int64[3] d = {4, 5, 6}> {
          kf = CastLike(k, x)
          cf = CastLike(c, x)
          df = CastLike(d, x)
          s = Add(kf, cf)
          y = Mul(s, df)
        }""", rewrite_limit=0)
    assert ctx.rewrites == []
    assert [nodes for nodes, reason in _reasons(result) if reason == REWRITE_LIMIT_REASON][:2] == [
        ("CastLike_0_1",), ("CastLike_0_2",)]
    graph, result, _ = _fold("""
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[3] x, int32[3] k) => (float[3] y) <int64[3] c = {1, 2, 3}> {
          kf = CastLike(k, x)
          cf = CastLike(c, x)
          y = Add(kf, cf)
        }""")
    assert [n.op for n in graph.nodes] == ["CastLike", "Add"]
    assert result.counts == {"castlike_of_constant": 1, "folded_nodes": 1}


def test_shape_with_a_zero_dimension_is_static() -> None:
    graph, result, _ = _fold("""
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[2,0] x) => (int64[2] y, float[2,0] z) {
          s = Shape(x)
          y = Identity(s)
          z = Relu(x)
        }""")
    assert [n.op for n in graph.nodes] == ["Relu"]
    assert graph.outputs[0].values.tolist() == [2, 0]
    assert result.counts == {"folded_shape_ops": 1, "folded_nodes": 1}


def test_shape_of_a_fully_dynamic_tensor_is_rejected_without_folding() -> None:
    graph, result, ctx = _fold("""
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[N] x) => (int64[1] s) {
          s = Shape(x)
        }""")
    assert [n.op for n in graph.nodes] == ["Shape"] and ctx.rewrites == []
    assert _reasons(result) == [(("Shape_0",), "shape of 'x' has dynamic dimension(s) N")]


def test_shape_of_a_tensor_of_unknown_shape_is_rejected() -> None:
    graph, result, _ = _fold("""
        <ir_version: 10, opset_import: ["" : 17, "custom" : 1]>
        g (float[4] x) => (float[4] y) {
          a = custom.Op(x)
          s = Shape(a)
          y = Reshape(x, s)
        }""")
    assert [n.op for n in graph.nodes] == ["Op", "Shape", "Reshape"]
    assert _reasons(result) == [(("Shape_0",), "shape of 'a' is unknown")]


def test_unevaluable_and_sparse_constants_are_rejected_with_their_reason() -> None:
    graph, result, _ = _fold("""
        <ir_version: 10, opset_import: ["" : 17, "custom" : 1]>
        g (float[4] x) => (float[4] y) <float[4] c = {1, 2, 3, 4}> {
          k = custom.Op(c)
          sparse = Constant<sparse_value = float[4] {0, 0, 5, 0}>()
          y = Add(x, k)
        }""")
    assert [n.op for n in graph.nodes] == ["Op", "Constant", "Add"]
    assert sorted(_reasons(result)) == [
        (("Constant_0",), "Constant with attribute 'sparse_value' cannot become an initializer"),
        (("Op_0",), "ONNX Runtime could not evaluate it")]


def test_onnx_runtime_contrib_ops_of_constants_fold() -> None:
    graph, result, _ = _fold("""
        <ir_version: 10, opset_import: ["" : 17, "com.microsoft" : 1]>
        g (float[4] x) => (float[4] y) <float[4] c = {-1, 0, 1, 2}> {
          k = com.microsoft.Gelu(c)
          y = Add(x, k)
        }""")
    assert [n.op for n in graph.nodes] == ["Add"]
    assert result.counts == {"folded_nodes": 1}


def test_nodes_without_inputs_and_sequences_are_neither_folded_nor_rejected() -> None:
    """A RandomNormal (no inputs) stays, however large; a SequenceConstruct of constants stays
    and does not stop the nodes after it from folding."""
    graph, result, _ = _fold("""
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[1,4,4,4] x) => (float[1,4,4,4] y, float[4] z) <float[4] a = {1, 2, 3, 4}, int64 i = {0}> {
          w = RandomNormal<shape = [4, 4, 1, 1], seed = 1.0>()
          y = Conv(x, w)
          seq = SequenceConstruct(a, a)
          first = SequenceAt(seq, i)
          doubled = Add(a, a)
          z = Mul(first, doubled)
        }""", pipeline="fold-constants{size-threshold=16}")
    assert [n.op for n in graph.nodes] == ["RandomNormal", "Conv", "SequenceConstruct",
                                           "SequenceAt", "Mul"]
    assert result.counts == {"folded_nodes": 1} and _reasons(result) == []


def test_whole_graph_folding_keeps_errors_thresholds_and_function_bodies() -> None:
    """With an If whose condition folds, onnx-graphsurgeon folds the whole graph: a broadcast
    above the threshold and a local function's body stay; an unread node is removed."""
    graph, result, ctx = _fold("""
        <ir_version: 10, opset_import: ["" : 17, "local" : 1]>
        g (float[4,64] x) => (float[4,64] y) <float[64] k = {1.0}, int64[2] dims = {4, 64}> {
          one = Constant<value = int64 {1}>()
          cond = Equal(one, one)
          broadcast = ConstantOfShape<value = float[1] {0.5}>(dims)
          unread = Relu(x)
          f = local.F(x)
          picked = If(cond) <then_branch = then_body () => (float[4,64] t) {
              t = Add(f, k)
            }, else_branch = else_body () => (float[4,64] e) {
              e = Neg(f)
            }>
          y = Add(picked, broadcast)
        }
        <domain: "local", opset_import: ["" : 17]>
        F (v) => (w) {
          two = Constant<value = float {2.0}>()
          three = Constant<value = float {3.0}>()
          six = Mul(two, three)
          dead = Sigmoid(v)
          w = Mul(v, six)
        }""", pipeline="fold-constants{size-threshold=512}")
    assert [r.rule for r in ctx.rewrites] == ["fold-whole-graph"]
    assert [n.op for n in graph.nodes] == ["ConstantOfShape", "F", "Add", "Add"]
    body = graph.functions[0]
    assert [n.op for n in body.nodes] == ["Constant", "Constant", "Mul", "Sigmoid", "Mul"]
    assert [type(t).__name__ for n in body.nodes for t in n.inputs + n.outputs] == [
        "Variable"] * 10  # nothing in the body was lowered or folded
    assert result.counts["removed_dead"] == 1 and result.counts["flattened_if"] == 1
    assert _reasons(result) == [
        (("ConstantOfShape_0",), "result 'broadcast' is 1024 bytes, above size-threshold 512")]


def test_whole_graph_folding_rejects_what_onnx_runtime_cannot_evaluate() -> None:
    graph, result, ctx = _fold("""
        <ir_version: 10, opset_import: ["" : 17, "custom" : 1]>
        g (float[4] x) => (float[4] y) <float[4] c = {1, 2, 3, 4}> {
          one = Constant<value = int64 {1}>()
          cond = Equal(one, one)
          k = custom.Op(c)
          y = If(cond) <then_branch = then_body () => (float[4] t) {
              t = Add(x, k)
            }, else_branch = else_body () => (float[4] e) {
              e = Neg(x)
            }>
        }""")
    assert [r.rule for r in ctx.rewrites] == ["fold-whole-graph"]
    assert (("Op_0",), "ONNX Runtime could not evaluate it") in _reasons(result)


def test_a_shape_range_over_a_zero_dimension_folds() -> None:
    graph, result, _ = _fold("""
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[2,0,3] x) => (int64[2] y) {
          y = Shape<start = 1>(x)
        }""")
    assert graph.nodes == [] and graph.outputs[0].values.tolist() == [0, 3]
    assert result.counts == {"folded_shape_ops": 1}


def test_an_ai_onnx_ml_op_folds_at_the_models_ml_opset() -> None:
    """LabelEncoder's float keys exist from ai.onnx.ml opset 2: evaluated at opset 1 it fails."""
    graph, result, _ = _fold("""
        <ir_version: 10, opset_import: ["" : 17, "ai.onnx.ml" : 2]>
        g (float[3] x) => (float[3] y) <float[3] c = {1.0, 2.0, 3.0}> {
          k = ai.onnx.ml.LabelEncoder<keys_floats = [1.0, 2.0, 3.0],
                                      values_floats = [10.0, 20.0, 30.0]>(c)
          y = Add(x, k)
        }""")
    (add,) = graph.nodes
    assert add.inputs[1].values.tolist() == [10.0, 20.0, 30.0]
    assert result.counts == {"folded_nodes": 1}


def test_a_sequence_map_body_folds() -> None:
    graph, result, _ = _fold("""
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[3] x) => (float[3] y) <float[3] a = {1, 2, 3}, float b = {2.0}> {
          seq = SequenceConstruct(x, x)
          mapped = SequenceMap(seq) <body = map_body (float[3] v) => (float[3] w) {
              scaled = Mul(a, b)
              w = Add(v, scaled)
            }>
          i = Constant<value = int64 {0}>()
          y = SequenceAt(mapped, i)
        }""")
    (add,) = graph.nodes[1].attrs["body"].nodes
    assert add.inputs[1].values.tolist() == [2.0, 4.0, 6.0]
    assert result.counts == {"constant_nodes_to_initializers": 1, "folded_nodes": 1}


def test_large_weights_in_a_branch_fold_when_the_main_graph_has_none() -> None:
    graph, result, ctx = _fold("""
        <ir_version: 10, opset_import: ["" : 17]>
        g (bool cond, float[4,128] x) => (float[4,128] y) {
          y = If(cond) <then_branch = then_body () => (float[4,128] t) {
              dims = Constant<value = int64[2] {128, 128}>()
              w = ConstantOfShape<value = float[1] {0.01}>(dims)
              t = MatMul(x, w)
            }, else_branch = else_body () => (float[4,128] e) {
              e = Neg(x)
            }>
        }""", pipeline="fold-constants{size-threshold=1024}")
    (matmul,) = graph.nodes[0].attrs["then_branch"].nodes
    assert matmul.inputs[1].values.shape == (128, 128)
    assert [r.rule for r in ctx.rewrites] == ["fold-island", "fold-large-weights"]
    assert result.counts == {"constant_nodes_to_initializers": 1, "folded_large_weights": 1,
                             "folded_nodes": 1}
