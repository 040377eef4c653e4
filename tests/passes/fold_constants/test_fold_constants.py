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
