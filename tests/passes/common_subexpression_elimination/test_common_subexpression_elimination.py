"""common-subexpression-elimination beyond its pass cases: constants compared by bytes (hash
collisions, NaN payloads, signed zeros), ops of unknown domains, local functions, fixed point on
chains, and the default pipeline on sibling convolutions with equal weights."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import onnx_graphsurgeon as gs
import pytest

import passes.common_subexpression_elimination as cse
from passes.common_subexpression_elimination import CommonSubexpressionElimination
from trtcompile import ir, verify
from trtcompile.pass_manager import PassContext, PassManager
from trtcompile.pm import REWRITE_LIMIT_REASON

PASS = "common-subexpression-elimination"


def _run(model: onnx.ModelProto, pipeline: str = PASS):
    graph = ir.import_model(model)
    report = PassManager(pipeline).run(graph)
    return graph, report


def _two_adds(first: np.ndarray, second: np.ndarray) -> onnx.ModelProto:
    """y = Add(x, c1) * Add(x, c2) with the given constants."""
    x = gs.Variable("x", np.float32, list(first.shape))
    p, q, y = (gs.Variable(n, np.float32, list(first.shape)) for n in ("p", "q", "y"))
    nodes = [gs.Node("Add", "add_1", inputs=[x, gs.Constant("c1", first)], outputs=[p]),
             gs.Node("Add", "add_2", inputs=[x, gs.Constant("c2", second)], outputs=[q]),
             gs.Node("Mul", "mul", inputs=[p, q], outputs=[y])]
    return ir.export_model(gs.Graph(nodes=nodes, inputs=[x], outputs=[y], opset=17))


def test_equal_bytes_merge_and_parity() -> None:
    values = np.array([1.5, -2.0, 0.25], np.float32)
    model = _two_adds(values, values.copy())
    graph, report = _run(model)
    assert [n.op for n in graph.nodes] == ["Add", "Mul"]
    assert report.records[0].counts == {"merged_nodes": 1}
    assert verify.compare_models(model, ir.export_model(graph), seed=0).passed


@pytest.mark.parametrize("first, second", [
    (np.array([0.0, 1.0], np.float32), np.array([-0.0, 1.0], np.float32)),  # equal as numbers
    (np.array([1.0, 2.0], np.float32), np.array([1.0, 2.0], np.float16)),  # another dtype
])
def test_constants_equal_as_numbers_but_not_in_bytes_stay(first, second) -> None:
    if first.dtype != second.dtype:
        # An Add of float32 and float16 is not valid ONNX; compare the constants directly.
        table = cse._Constants()
        assert table.token(gs.Constant("a", first)) != table.token(gs.Constant("b", second))
        return
    graph, report = _run(_two_adds(first, second))
    assert [n.op for n in graph.nodes] == ["Add", "Add", "Mul"]
    assert report.rejections(PASS)[0].reason == "constant input 1 differs ('c1' and 'c2')"


def test_nan_with_one_payload_is_one_value() -> None:
    values = np.array([np.nan, 1.0], np.float32)
    graph, _ = _run(_two_adds(values, values.copy()))
    assert [n.op for n in graph.nodes] == ["Add", "Mul"]


def test_hash_collision_compares_bytes(monkeypatch) -> None:
    """With every digest equal, constants that differ past their first bytes still get other
    tokens."""
    monkeypatch.setattr(cse, "_digest", lambda values: b"same")
    first = np.linspace(-1, 1, 100).astype(np.float32)
    other = first.copy()
    other[-1] = 5.0  # past the 64 bytes compared first
    graph, _ = _run(_two_adds(first, other))
    assert [n.op for n in graph.nodes] == ["Add", "Add", "Mul"]
    graph, _ = _run(_two_adds(first, first.copy()))
    assert [n.op for n in graph.nodes] == ["Add", "Mul"]


def test_constants_differing_in_their_first_bytes_are_not_hashed(monkeypatch) -> None:
    hashed: list[tuple] = []
    digest = cse._digest
    monkeypatch.setattr(cse, "_digest", lambda values: hashed.append(values.shape) or digest(values))
    table = cse._Constants()
    rng = np.random.default_rng(0)
    tokens = {table.token(gs.Constant(f"w{i}", rng.standard_normal((32, 32)).astype(np.float32)))
              for i in range(5)}
    assert len(tokens) == 5 and hashed == []


def test_constants_hashed_only_when_a_second_one_has_their_shape(monkeypatch) -> None:
    hashed: list[tuple] = []
    digest = cse._digest
    monkeypatch.setattr(cse, "_digest", lambda values: hashed.append(values.shape) or digest(values))
    table = cse._Constants()
    table.token(gs.Constant("big", np.zeros((64, 64), np.float32)))
    table.token(gs.Constant("other", np.zeros((3,), np.float32)))
    assert hashed == []
    table.token(gs.Constant("big_twin", np.zeros((64, 64), np.float32)))
    assert hashed == [(64, 64), (64, 64)]


def test_unknown_domain_op_is_never_merged() -> None:
    model = onnx.parser.parse_model("""
        <ir_version: 10, opset_import: ["" : 17, "com.microsoft" : 1]>
        g (float[2,3] x) => (float[2,3] y) {
          a = com.microsoft.Gelu(x)
          b = com.microsoft.Gelu(x)
          y = Add(a, b)
        }""")
    graph, report = _run(model)
    assert len(graph.nodes) == 3
    assert report.rejections(PASS)[0].reason == (
        "op 'com.microsoft.Gelu' has unknown semantics (it may not be deterministic)")


def _function_model(body_op: str) -> onnx.ModelProto:
    return onnx.parser.parse_model(f"""
        <ir_version: 10, opset_import: ["" : 17, "local" : 1]>
        g (float[2,3] x) => (float[2,3] y) {{
          a = local.F(x)
          b = local.F(x)
          y = Add(a, b)
        }}
        <domain: "local", opset_import: ["" : 17]>
        F (v) => (w) {{
          w = {body_op}
        }}""")


def test_local_function_calls_merge_when_their_body_is_deterministic() -> None:
    model = _function_model("Sigmoid(v)")
    graph, report = _run(model)
    assert [n.op for n in graph.nodes] == ["F", "Add"]
    assert verify.compare_models(model, ir.export_model(graph), seed=0).passed


def test_local_function_drawing_random_values_is_never_merged() -> None:
    graph, report = _run(_function_model("RandomUniformLike<seed = 2.0>(v)"))
    assert [n.op for n in graph.nodes] == ["F", "F", "Add"]
    assert report.rejections(PASS)[0].reason == "local function 'local.F' draws random values"


def test_inference_dropout_merges() -> None:
    model = onnx.parser.parse_model("""
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[2,3] x) => (float[2,3] y) <float ratio = {0.5}, bool training = {0}> {
          a = Dropout(x, ratio, training)
          b = Dropout(x, ratio, training)
          y = Add(a, b)
        }""")
    graph, _ = _run(model)
    assert [n.op for n in graph.nodes] == ["Dropout", "Add"]


def test_long_chains_merge_in_one_run() -> None:
    """Two equal chains of 30 nodes become one: each merge makes the next nodes equal."""
    x = gs.Variable("x", np.float32, [4])
    nodes, ends = [], []
    for chain in range(2):
        current = x
        for step in range(30):
            out = gs.Variable(f"t{chain}_{step}", np.float32, [4])
            op = ("Sin", "Cos", "Tanh")[step % 3]
            nodes.append(gs.Node(op, f"n{chain}_{step}", inputs=[current], outputs=[out]))
            current = out
        ends.append(current)
    y = gs.Variable("y", np.float32, [4])
    nodes.append(gs.Node("Sub", "sub", inputs=ends, outputs=[y]))
    model = ir.export_model(gs.Graph(nodes=nodes, inputs=[x], outputs=[y], opset=17))
    graph, report = _run(model)
    assert len(graph.nodes) == 31
    assert report.records[0].counts == {"merged_nodes": 30}
    assert verify.compare_models(model, ir.export_model(graph), seed=0).passed


def test_default_pipeline_merges_fused_convs_with_equal_weights_and_bias() -> None:
    """After vertical fusion, two fused convolutions with equal weights and bias on one input are
    one layer; a third with its own BatchNorm keeps its fusion and stays."""
    weights = onnx.numpy_helper.from_array(np.full((4, 3, 1, 1), 0.25, np.float32), "W")
    twin = onnx.numpy_helper.from_array(np.full((4, 3, 1, 1), 0.25, np.float32), "W_twin")
    third = onnx.numpy_helper.from_array(np.full((4, 3, 1, 1), 0.25, np.float32), "W_third")
    bias = onnx.numpy_helper.from_array(np.linspace(-1, 1, 4).astype(np.float32), "B")
    rng = np.random.default_rng(0)
    bn = [onnx.numpy_helper.from_array(rng.uniform(0.5, 1.5, 4).astype(np.float32), f"bn_{k}")
          for k in ("scale", "bias", "mean", "var")]
    h = onnx.helper
    nodes = [h.make_node("Conv", ["x", "W", "B"], ["c1"], name="conv_1"),
             h.make_node("Relu", ["c1"], ["r1"], name="relu_1"),
             h.make_node("Conv", ["x", "W_twin", "B"], ["c2"], name="conv_2"),
             h.make_node("Relu", ["c2"], ["r2"], name="relu_2"),
             h.make_node("Conv", ["x", "W_third", "B"], ["c3"], name="conv_3"),
             h.make_node("BatchNormalization", ["c3", *[t.name for t in bn]], ["b3"], name="bn_3"),
             h.make_node("Relu", ["b3"], ["r3"], name="relu_3"),
             h.make_node("Mul", ["r1", "r2"], ["m"], name="mul"),
             h.make_node("Concat", ["m", "r3"], ["y"], name="concat", axis=1)]
    graph_proto = h.make_graph(
        nodes, "g", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 4, 4])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 8, 4, 4])],
        [weights, twin, third, bias, *bn])
    model = h.make_model(graph_proto, opset_imports=[h.make_opsetid("", 17)], ir_version=10)
    graph, report = _run(model, "default")
    merged = sum(r.counts.get("merged_nodes", 0) for r in report.records if r.name == PASS)
    assert merged == 1
    assert [ir.op_key(n).split("_")[0] for n in graph.nodes] == [
        "trtcompile.ConvBiasRelu", "trtcompile.ConvBiasRelu", "Mul", "Concat"]
    assert verify.compare_models(model, ir.export_model(graph), seed=0).passed


def _nested_function_model(innermost_op: str) -> onnx.ModelProto:
    """Two calls of F, where F calls G and G calls H, whose body is ``innermost_op``."""
    return onnx.parser.parse_model(f"""
        <ir_version: 10, opset_import: ["" : 17, "local" : 1]>
        g (float[2,3] x) => (float[2,3] y) {{
          a = local.F(x)
          b = local.F(x)
          y = Add(a, b)
        }}
        <domain: "local", opset_import: ["" : 17, "local" : 1]>
        F (v) => (w) {{
          w = local.G(v)
        }}
        <domain: "local", opset_import: ["" : 17, "local" : 1]>
        G (v) => (w) {{
          w = local.H(v)
        }}
        <domain: "local", opset_import: ["" : 17]>
        H (v) => (w) {{
          w = {innermost_op}
        }}""")


def test_calls_of_functions_calling_deterministic_functions_merge() -> None:
    model = _nested_function_model("Sigmoid(v)")
    graph, report = _run(model)
    assert [n.op for n in graph.nodes] == ["F", "Add"]
    assert report.records[0].counts == {"merged_nodes": 1}
    assert verify.compare_models(model, ir.export_model(graph), seed=0).passed


def test_a_random_op_two_calls_deep_keeps_the_calls_apart() -> None:
    graph, report = _run(_nested_function_model("RandomUniformLike<seed = 2.0>(v)"))
    assert [n.op for n in graph.nodes] == ["F", "F", "Add"]
    assert report.rejections(PASS)[0].reason == "local function 'local.F' draws random values"


def test_a_recursive_function_is_not_taken_as_deterministic() -> None:
    """ONNX forbids recursion; a function calling itself is never taken for a deterministic one."""
    model = onnx.parser.parse_model("""
        <ir_version: 10, opset_import: ["" : 17, "local" : 1]>
        g (float[2,3] x) => (float[2,3] y) {
          a = local.F(x)
          b = local.F(x)
          y = Add(a, b)
        }
        <domain: "local", opset_import: ["" : 17, "local" : 1]>
        F (v) => (w) {
          w = local.F(v)
        }""")
    graph, report = _run(model)
    assert [n.op for n in graph.nodes] == ["F", "F", "Add"]
    assert report.rejections(PASS)[0].reason == "local function 'local.F' draws random values"


def _string_model(first: list[str], second: list[str]) -> onnx.ModelProto:
    """e = Equal(s, c1) and Equal(s, c2) with string constants c1, c2."""
    h = onnx.helper
    constants = [h.make_tensor(name, onnx.TensorProto.STRING, [len(values)],
                               [v.encode() for v in values])
                 for name, values in (("c1", first), ("c2", second))]
    nodes = [h.make_node("Equal", ["s", "c1"], ["e1"], name="equal_1"),
             h.make_node("Equal", ["s", "c2"], ["e2"], name="equal_2"),
             h.make_node("And", ["e1", "e2"], ["y"], name="both")]
    graph_proto = h.make_graph(
        nodes, "g", [h.make_tensor_value_info("s", onnx.TensorProto.STRING, [2])],
        [h.make_tensor_value_info("y", onnx.TensorProto.BOOL, [2])], constants)
    return h.make_model(graph_proto, opset_imports=[h.make_opsetid("", 19)], ir_version=10)


def test_string_constants_compare_by_value() -> None:
    graph, report = _run(_string_model(["a", "b"], ["a", "b"]))
    assert [n.name for n in graph.nodes] == ["equal_1", "both"]
    assert report.records[0].counts == {"merged_nodes": 1}
    graph, report = _run(_string_model(["a", "b"], ["a", "c"]))
    assert [n.name for n in graph.nodes] == ["equal_1", "equal_2", "both"]
    assert report.rejections(PASS)[0].reason == "constant input 1 differs ('c1' and 'c2')"


def test_constant_values_are_read_only_beside_a_constant_of_their_dtype_and_shape(
        monkeypatch) -> None:
    """An initializer kept in external data stays on disk unless another constant has its dtype
    and shape, however often its token is asked for."""
    read: list[str] = []
    prefix = cse._prefix
    monkeypatch.setattr(cse, "_prefix", lambda values: read.append(values.dtype.str)
                        or prefix(values))
    table = cse._Constants()
    constants = [gs.Constant("f32", np.zeros(3, np.float32)),
                 gs.Constant("f16", np.zeros(3, np.float16)),
                 gs.Constant("f32_long", np.zeros(4, np.float32))]
    tokens = [table.token(c) for c in constants + constants]
    assert tokens[:3] == tokens[3:] and len(set(tokens)) == 3
    assert read == []


def test_dropout_with_is_test_0_is_never_merged() -> None:
    """Dropout before opset 7 draws its mask when is_test is 0."""
    model = onnx.parser.parse_model("""
        <ir_version: 3, opset_import: ["" : 6]>
        g (float[2,3] x) => (float[2,3] y) {
          a = Dropout<is_test = 0>(x)
          b = Dropout<is_test = 0>(x)
          y = Add(a, b)
        }""")
    graph, report = _run(model)
    assert [n.op for n in graph.nodes] == ["Dropout", "Dropout", "Add"]
    assert report.rejections(PASS)[0].reason == (
        "Dropout in training mode (is_test=0) draws a random mask")


def _reductions(first_attrs: dict, second_attrs: dict) -> gs.Graph:
    """A graph built with onnx-graphsurgeon: two ReduceMax of x with the given attributes."""
    x = gs.Variable("x", np.float32, [2, 3])
    a, b, y = (gs.Variable(n, np.float32, [2, 1]) for n in ("a", "b", "y"))
    nodes = [gs.Node("ReduceMax", "max_1", first_attrs, inputs=[x], outputs=[a]),
             gs.Node("ReduceMax", "max_2", second_attrs, inputs=[x], outputs=[b]),
             gs.Node("Add", "add", inputs=[a, b], outputs=[y])]
    return gs.Graph(nodes=nodes, inputs=[x], outputs=[y], opset=17)


def test_a_bool_attribute_equals_the_int_it_exports_as() -> None:
    graph = _reductions({"keepdims": True, "axes": [1]}, {"keepdims": 1, "axes": [1]})
    report = PassManager(PASS).run(graph)
    assert [n.name for n in graph.nodes] == ["max_1", "add"]
    assert report.records[0].counts == {"merged_nodes": 1}


@pytest.mark.parametrize("first, second", [
    (onnx.helper.make_tensor_type_proto(onnx.TensorProto.FLOAT, [2]),
     onnx.helper.make_tensor_type_proto(onnx.TensorProto.FLOAT, [3])),
    (np.array(["a", "b"], dtype=object), np.array(["a", "c"], dtype=object)),
])
def test_attributes_set_as_protos_or_arrays_compare_by_value(first, second) -> None:
    """Attribute values onnx-graphsurgeon's importer never makes but a graph built with it may
    hold: equal ones merge, unequal ones are a near miss."""
    graph = _reductions({"note": first}, {"note": first})
    assert PassManager(PASS).run(graph).records[0].counts == {"merged_nodes": 1}
    graph = _reductions({"note": first}, {"note": second})
    report = PassManager(PASS).run(graph)
    assert [n.name for n in graph.nodes] == ["max_1", "max_2", "add"]
    assert report.rejections(PASS)[0].reason == "attribute 'note' differs"


def test_each_merge_is_asked_for_by_its_rule_and_a_limit_stops_it() -> None:
    values = np.array([1.5, -2.0, 0.25], np.float32)
    model = _two_adds(values, values.copy())
    ctx = PassContext()
    CommonSubexpressionElimination().run(ir.import_model(model), ctx)
    assert [(r.rule, r.nodes) for r in ctx.rewrites] == [("merge-equal-nodes", ("add_1", "add_2"))]
    ctx = PassContext(rewrite_limit=0)
    graph = ir.import_model(model)
    result = CommonSubexpressionElimination().run(graph, ctx)
    assert [n.name for n in graph.nodes] == ["add_1", "add_2", "mul"] and result.counts == {}
    assert [(r.nodes, r.reason) for r in result.rejections] == [
        (("add_1", "add_2"), REWRITE_LIMIT_REASON)]


def test_object_string_constants_compare_by_value() -> None:
    """String constants built in Python hold numpy object arrays: compared by their text, not by
    which string objects they hold (each string below is a new object)."""
    def strings(*words: str) -> np.ndarray:
        return np.array(["".join(["label_", word]) for word in words], dtype=object)
    table = cse._Constants()
    tokens = [table.token(gs.Constant(name, values)) for name, values in (
        ("ab", strings("a", "b")), ("ab_twin", strings("a", "b")), ("ac", strings("a", "c")))]
    assert tokens[0] == tokens[1] != tokens[2]


def test_a_node_whose_attribute_cannot_be_keyed_is_skipped_and_the_walk_goes_on() -> None:
    """An attribute value the pass cannot compare exactly leaves its node alone; the nodes after
    it are still compared (two equal Relus merge)."""
    x = gs.Variable("x", np.float32, [2, 3])
    odd, a, b, y = (gs.Variable(n, np.float32, [2, 3]) for n in ("odd", "a", "b", "y"))
    nodes = [gs.Node("Identity", "odd_node", {"opaque": object()}, inputs=[x], outputs=[odd]),
             gs.Node("Relu", "relu_a", inputs=[odd], outputs=[a]),
             gs.Node("Relu", "relu_b", inputs=[odd], outputs=[b]),
             gs.Node("Add", "add", inputs=[a, b], outputs=[y])]
    graph = gs.Graph(nodes=nodes, inputs=[x], outputs=[y], opset=17)
    result = cse.CommonSubexpressionElimination().run(graph, PassContext())
    assert result.counts == {"merged_nodes": 1}
    assert [n.name for n in graph.nodes] == ["odd_node", "relu_a", "add"]
