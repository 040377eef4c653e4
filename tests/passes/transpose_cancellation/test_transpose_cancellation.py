"""transpose-cancellation beyond its pass cases: the permutation algebra against numpy, random
Transpose-heavy graphs (parity, never more Transposes), the Flatten-into-weights rule on random
layouts, options, and Keras models lowered by tf2onnx without its optimizers, whose internal
Transposes must all disappear."""

from __future__ import annotations

import itertools
import os

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from passes.transpose_cancellation import (
    PUSH_KINDS, TransposeCancellation, compose, inverse, is_identity, surviving_axes_perm,
    unsqueezed_perm,
)
from tests import pass_cases
import passes
from trtcompile import ir, verify
from trtcompile.errors import InputError
from trtcompile.pass_manager import PassContext, PassManager, parse_pipeline, print_pipeline

SHAPE = (2, 3, 4, 5)  # distinct sizes, so a wrong axis changes a shape or a value


# --------------------------------------------------------------------------------------------
# Permutation algebra
# --------------------------------------------------------------------------------------------


@st.composite
def permutations(draw, rank: int | None = None):
    rank = rank if rank is not None else draw(st.integers(1, 5))
    return tuple(draw(st.permutations(range(rank))))


@given(st.data())
def test_compose_and_inverse_match_numpy(data) -> None:
    first = data.draw(permutations())
    second = data.draw(permutations(len(first)))
    shape = tuple(range(2, 2 + len(first)))
    x = np.arange(np.prod(shape)).reshape(shape)
    assert np.array_equal(np.transpose(np.transpose(x, first), second),
                          np.transpose(x, compose(first, second)))
    assert is_identity(compose(first, inverse(first)))
    assert is_identity(compose(inverse(first), first))


@given(st.data())
def test_surviving_axes_perm_matches_numpy(data) -> None:
    perm = data.draw(permutations())
    shape = tuple(range(2, 2 + len(perm)))
    removed = set(data.draw(st.lists(st.sampled_from(range(len(perm))), unique=True)))
    x = np.random.default_rng(0).standard_normal(shape)
    # Reducing axes `removed` of Transpose(perm)(x) == transposing the reduction of x.
    expected = np.transpose(x, perm).sum(axis=tuple(removed))
    reduced = x.sum(axis=tuple(perm[i] for i in removed))
    np.testing.assert_allclose(np.transpose(reduced, surviving_axes_perm(perm, removed)), expected)


@given(st.data())
def test_unsqueezed_perm_matches_numpy(data) -> None:
    perm = data.draw(permutations())
    rank = len(perm) + data.draw(st.integers(1, 2))
    inserted = set(data.draw(st.lists(st.sampled_from(range(rank)), min_size=rank - len(perm),
                                      max_size=rank - len(perm), unique=True)))
    x = np.random.default_rng(0).standard_normal(tuple(range(2, 2 + len(perm))))
    expected = np.expand_dims(np.transpose(x, perm), sorted(inserted))
    actual = np.transpose(np.expand_dims(x, sorted(inserted)), unsqueezed_perm(perm, inserted))
    np.testing.assert_array_equal(actual, expected)


# --------------------------------------------------------------------------------------------
# Random Transpose-heavy graphs
# --------------------------------------------------------------------------------------------


class _Chain:
    """Builds a graph step by step from one rank-4 input, tracking the current tensor's shape."""

    def __init__(self):
        self.x = gs.Variable("x", np.float32, SHAPE)
        self.current, self.shape = self.x, SHAPE
        self.nodes: list[gs.Node] = []
        self.count = 0
        self.values: list[tuple[gs.Variable, tuple[int, ...]]] = [(self.x, SHAPE)]
        self.extra_outputs: list[gs.Variable] = []

    def const(self, values) -> gs.Constant:
        self.count += 1
        return gs.Constant(f"c{self.count}", np.asarray(values))

    def add(self, op: str, inputs: list, shape: tuple[int, ...], outputs: int = 1,
            **attrs) -> list[gs.Variable]:
        self.count += 1
        outs = [gs.Variable(f"t{self.count}_{i}", np.float32) for i in range(outputs)]
        self.nodes.append(gs.Node(op, f"n{self.count}", attrs, inputs, outs))
        self.current, self.shape = outs[0], shape
        self.values.append((outs[0], shape))
        return outs

    def mark_output(self) -> None:
        """Make the current tensor a graph output too (it keeps its readers)."""
        if self.current is not self.x and self.current not in self.extra_outputs:
            self.current.dtype, self.current.shape = np.float32, self.shape
            self.extra_outputs.append(self.current)

    def model(self) -> onnx.ModelProto:
        self.current.dtype, self.current.shape = np.float32, self.shape
        outputs = [t for t in self.extra_outputs if t is not self.current] + [self.current]
        graph = gs.Graph(nodes=self.nodes, inputs=[self.x], outputs=outputs, opset=17)
        model = gs.export_onnx(graph)
        model.ir_version = ir.IR_VERSION
        return model


STEPS = ("transpose", "transpose", "transpose", "unary", "add_const", "add_self_transposed",
         "concat", "reduce", "softmax", "pad", "slice", "unsqueeze_squeeze", "split_concat",
         "merge_earlier", "merge_earlier", "mid_output")


@st.composite
def transpose_chains(draw) -> onnx.ModelProto:
    chain = _Chain()
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    for step in draw(st.lists(st.sampled_from(STEPS), min_size=3, max_size=12)):
        rank, shape, cur = len(chain.shape), chain.shape, chain.current
        if step == "transpose":
            perm = draw(permutations(rank))
            chain.add("Transpose", [cur], tuple(shape[a] for a in perm), perm=list(perm))
        elif step == "unary":
            chain.add(draw(st.sampled_from(["Relu", "Sigmoid", "Neg", "Tanh"])), [cur], shape)
        elif step == "add_const":
            kept = draw(st.integers(0, rank))  # broadcast a constant of the trailing `kept` axes
            const_shape = tuple(d if draw(st.booleans()) else 1 for d in shape[rank - kept:])
            op = draw(st.sampled_from(["Add", "Mul", "Sub", "Div"]))
            values = rng.uniform(0.5, 1.5, const_shape).astype(np.float32)
            chain.add(op, [cur, chain.const(values)], shape)
        elif step == "add_self_transposed":
            perm = draw(permutations(rank))
            (other,) = chain.add("Transpose", [cur], tuple(shape[a] for a in perm),
                                 perm=list(perm))
            (back,) = chain.add("Transpose", [other], shape, perm=list(inverse(perm)))
            chain.add("Add", [cur, back], shape)
        elif step == "concat":
            axis = draw(st.integers(-rank, rank - 1))
            new = list(shape)
            new[axis] *= 2
            chain.add("Concat", [cur, cur], tuple(new), axis=axis)
        elif step == "reduce":
            axes = sorted(set(draw(st.lists(st.integers(0, rank - 1), min_size=1, max_size=2))))
            keepdims = draw(st.booleans()) or rank - len(axes) < 2
            new = tuple(1 if i in axes else d for i, d in enumerate(shape)) if keepdims else tuple(
                d for i, d in enumerate(shape) if i not in axes)
            if draw(st.booleans()):
                chain.add("ReduceMean", [cur], new, axes=axes, keepdims=int(keepdims))
            else:
                chain.add("ReduceSum", [cur, chain.const(np.array(axes, np.int64))], new,
                          keepdims=int(keepdims))
        elif step == "softmax":
            chain.add("Softmax", [cur], shape, axis=draw(st.integers(-rank, rank - 1)))
        elif step == "pad":
            pads = [draw(st.integers(0, 1)) for _ in range(2 * rank)]
            new = tuple(d + pads[i] + pads[rank + i] for i, d in enumerate(shape))
            chain.add("Pad", [cur, chain.const(np.array(pads, np.int64))], new)
        elif step == "slice":
            axis = draw(st.integers(0, rank - 1))
            if shape[axis] < 2:
                continue
            new = list(shape)
            new[axis] = shape[axis] - 1
            chain.add("Slice", [cur, chain.const(np.array([1], np.int64)),
                                chain.const(np.array([shape[axis]], np.int64)),
                                chain.const(np.array([axis], np.int64))], tuple(new))
        elif step == "unsqueeze_squeeze":
            axis = draw(st.integers(0, rank))
            axes = chain.const(np.array([axis], np.int64))
            (up,) = chain.add("Unsqueeze", [cur, axes], shape[:axis] + (1,) + shape[axis:])
            chain.add("Squeeze", [up, axes], shape)
        elif step == "merge_earlier":
            # Join with an earlier tensor of the same shape, possibly through a Transpose of one
            # of a different shape: DAGs with shared, multi-reader Transposes.
            same = [v for v, s in chain.values if s == shape and v is not cur]
            permutable = [(v, s) for v, s in chain.values
                          if len(s) == rank and sorted(s) == sorted(shape) and s != shape]
            if permutable and draw(st.booleans()):
                earlier, earlier_shape = draw(st.sampled_from(permutable))
                perm = next(p for p in itertools.permutations(range(rank))
                            if tuple(earlier_shape[a] for a in p) == shape)
                (other,) = chain.add("Transpose", [earlier], shape, perm=list(perm))
            elif same:
                other = draw(st.sampled_from(same))
            else:
                continue
            op = draw(st.sampled_from(["Add", "Mul", "Max"]))
            chain.add(op, [cur, other] if draw(st.booleans()) else [other, cur], shape)
        elif step == "mid_output":
            chain.mark_output()
        elif step == "split_concat":
            axis = draw(st.integers(0, rank - 1))
            if shape[axis] % 2:
                continue
            half = tuple(d // 2 if i == axis else d for i, d in enumerate(shape))
            halves = chain.add("Split", [cur], half, outputs=2, axis=axis)
            chain.add("Concat", [halves[1], halves[0]], shape, axis=axis)
    return chain.model()


def _transposes(model: onnx.ModelProto) -> int:
    return sum(node.op_type == "Transpose" for node in model.graph.node)


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(transpose_chains())
def test_random_chains_keep_values_and_never_add_transposes(model: onnx.ModelProto) -> None:
    onnx.checker.check_model(model, full_check=True)
    graph = ir.import_model(model)
    report = PassManager("transpose-cancellation").run(graph)
    assert "stopped_early" not in report.records[0].counts
    optimized = ir.export_model(graph)
    onnx.checker.check_model(optimized, full_check=True)
    assert _transposes(optimized) <= _transposes(model)
    graph_outputs = ir.output_names(graph)
    for node in graph.nodes:  # rules 1 and 4 leave no pair and no identity behind
        if node.op == "Transpose":
            assert list(node.attrs["perm"]) != sorted(node.attrs["perm"])
            producer = ir.producer(node.inputs[0])
            assert producer is None or producer.op != "Transpose" or \
                node.inputs[0].name in graph_outputs
    assert [(o.name, o.type) for o in optimized.graph.output] == \
        [(o.name, o.type) for o in model.graph.output]
    parity = verify.compare_models(model, optimized, atol=1e-5, rtol=1e-4)
    assert parity.passed, parity.summary()


def test_chain_of_transposes_around_fixed_layout_ops_collapses() -> None:
    """A 100-block NHWC chain keeps exactly its input and output Transposes."""
    chain = _Chain()
    chain.x.shape, chain.shape = (1, 4, 4, 3), (1, 4, 4, 3)
    weight = gs.Constant("w", np.full((3, 3, 1, 1), 0.1, np.float32))
    for _ in range(100):
        (nchw,) = chain.add("Transpose", [chain.current], (1, 3, 4, 4), perm=[0, 3, 1, 2])
        (conv,) = chain.add("Conv", [nchw, weight], (1, 3, 4, 4))
        (nhwc,) = chain.add("Transpose", [conv], (1, 4, 4, 3), perm=[0, 2, 3, 1])
        chain.add("Relu", [nhwc], (1, 4, 4, 3))
    model = chain.model()
    graph = ir.import_model(model)
    report = PassManager("transpose-cancellation").run(graph)
    ops = [node.op for node in graph.nodes]
    assert ops == ["Transpose"] + ["Conv", "Relu"] * 100 + ["Transpose"]
    assert report.records[0].counts == {"cancelled_pairs": 99, "pushed_through_unary": 100}
    assert verify.compare_models(model, ir.export_model(graph)).passed


# --------------------------------------------------------------------------------------------
# Rule 6: a flatten folded into MatMul/Gemm weights
# --------------------------------------------------------------------------------------------


@st.composite
def flatten_into_weights(draw) -> tuple[onnx.ModelProto, tuple[int, ...]]:
    """Transpose (batch kept) -> Flatten or Reshape [N, -1] -> MatMul or Gemm, random sizes."""
    rank = draw(st.integers(3, 5))
    dims = tuple(draw(st.lists(st.integers(1, 4), min_size=rank - 1, max_size=rank - 1)))
    perm = (0, *draw(st.permutations(range(1, rank))))
    dynamic = draw(st.booleans())
    shape = ("N" if dynamic else 2, *dims)
    transposed = [shape[a] for a in perm]
    features, outputs = int(np.prod(dims)), draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = gs.Variable("x", np.float32, shape)
    t = gs.Variable("t", np.float32, transposed)
    flat = gs.Variable("flat", np.float32, [shape[0], features])
    y = gs.Variable("y", np.float32, [shape[0], outputs])
    nodes = [gs.Node("Transpose", "transpose", {"perm": list(perm)}, [x], [t])]
    if draw(st.booleans()):
        nodes.append(gs.Node("Flatten", "flatten", {"axis": 1}, [t], [flat]))
    else:
        target = draw(st.sampled_from([[0, -1], [-1, features]]))
        nodes.append(gs.Node("Reshape", "flatten", {},
                             [t, gs.Constant("target", np.array(target, np.int64))], [flat]))
    weight = rng.uniform(-1, 1, (features, outputs)).astype(np.float32)
    if draw(st.booleans()):
        nodes.append(gs.Node("MatMul", "dense", {}, [flat, gs.Constant("w", weight)], [y]))
    else:
        nodes.append(gs.Node("Gemm", "dense", {"transB": 1},
                             [flat, gs.Constant("w", np.ascontiguousarray(weight.T))], [y]))
    model = gs.export_onnx(gs.Graph(nodes=nodes, inputs=[x], outputs=[y], opset=17))
    model.ir_version = ir.IR_VERSION
    return model, perm


@settings(max_examples=60, deadline=None, derandomize=True)
@given(flatten_into_weights())
def test_flatten_into_weights_matches_numpy_layouts(case) -> None:
    model, perm = case
    graph = ir.import_model(model)
    report = PassManager("transpose-cancellation").run(graph)
    optimized = ir.export_model(graph)
    stats = report.records[0].counts
    dims = [d for d in pass_cases.interface_dims(model)["x"]]
    moved = [axis for axis in perm if dims[axis] != 1]
    if is_identity(perm):
        assert stats == {"removed_identity": 1}
    elif moved != sorted(moved):
        assert stats == {"folded_into_matmul_weights": 1}
    else:  # only size-1 axes move: the element order is kept, the reshape rule may apply instead
        assert stats in ({"folded_into_matmul_weights": 1}, {"pushed_through_reshape": 1})
    assert _transposes(optimized) == 0
    shapes = {"x": [3 if isinstance(d, str) else d
                    for d in pass_cases.interface_dims(model)["x"]]}
    for input_shapes in (None, shapes):
        parity = verify.compare_models(model, optimized, atol=1e-5, rtol=1e-4, seed=0,
                                       input_shapes=input_shapes)
        assert parity.passed, parity.summary()


def test_shared_weight_is_permuted_once_and_the_original_kept_for_other_readers() -> None:
    """Two flattens of the same NHWC tensor read one weight; a third MatMul reads it unflattened.
    The folded readers share one permuted copy; the third keeps the original."""
    x = gs.Variable("x", np.float32, (2, 3, 2, 4))
    other = gs.Variable("other", np.float32, (2, 24))
    weight = gs.Constant("w", np.random.default_rng(0).uniform(-1, 1, (24, 5)).astype(np.float32))
    t = gs.Variable("t", np.float32, (2, 2, 4, 3))
    flats = [gs.Variable(f"flat{i}", np.float32, (2, 24)) for i in range(2)]
    outs = [gs.Variable(f"y{i}", np.float32, (2, 5)) for i in range(3)]
    nodes = [gs.Node("Transpose", "transpose", {"perm": [0, 2, 3, 1]}, [x], [t]),
             gs.Node("Flatten", "flatten0", {"axis": 1}, [t], [flats[0]]),
             gs.Node("Flatten", "flatten1", {"axis": 1}, [t], [flats[1]]),
             gs.Node("MatMul", "dense0", {}, [flats[0], weight], [outs[0]]),
             gs.Node("MatMul", "dense1", {}, [flats[1], weight], [outs[1]]),
             gs.Node("MatMul", "dense2", {}, [other, weight], [outs[2]])]
    model = gs.export_onnx(gs.Graph(nodes=nodes, inputs=[x, other], outputs=outs, opset=17))
    model.ir_version = ir.IR_VERSION
    graph = ir.import_model(model)
    report = PassManager("transpose-cancellation").run(graph)
    assert report.records[0].counts == {"folded_into_matmul_weights": 2}
    weights = {node.name: node.inputs[1] for node in graph.nodes if node.op == "MatMul"}
    assert weights["dense0"] is weights["dense1"] and weights["dense0"].name == "w_permuted"
    assert weights["dense2"].name == "w"
    order = np.transpose(np.arange(24).reshape(1, 2, 4, 3), (0, 3, 1, 2)).reshape(-1)
    np.testing.assert_array_equal(weights["dense0"].values, weight.values[order])
    assert verify.compare_models(model, ir.export_model(graph), seed=0).passed


def test_shape_inference_runs_only_for_a_flatten_into_constant_weights(monkeypatch) -> None:
    """Rule 6 infers missing shapes once per run, and only when a 2-D flatten of an unknown-shape
    tensor feeds constant weights (a Reshape to 3-D before a MatMul, as in attention, does not)."""
    calls = []
    real = ir.analysis.inferred_dims
    monkeypatch.setattr(ir.analysis, "inferred_dims",
                        lambda graph: calls.append(1) or real(graph))
    case = pass_cases.load_case(pass_cases.PASSES_DIR / "transpose_cancellation" / "cases"
                            / "fold_dynamic_batch_reshape_matmul.onnxtxt")
    result = TransposeCancellation().run(ir.import_model(case.model()), PassContext())
    assert calls == [1] and result.counts["folded_into_matmul_weights"] == 1

    calls.clear()
    x = gs.Variable("x", np.float32, ("N", 4, 6))
    t = gs.Variable("t", np.float32)
    heads = gs.Variable("heads", np.float32)
    y = gs.Variable("y", np.float32, ("N", 6, 2, 5))
    weight = gs.Constant("w", np.ones((2, 5), np.float32))
    nodes = [gs.Node("Transpose", "transpose", {"perm": [0, 2, 1]}, [x], [t]),
             gs.Node("Reshape", "split_heads", {},
                     [t, gs.Constant("target", np.array([0, 6, 2, 2], np.int64))], [heads]),
             gs.Node("MatMul", "project", {}, [heads, weight], [y])]
    graph = gs.Graph(nodes=nodes, inputs=[x], outputs=[y], opset=17)
    TransposeCancellation().run(graph, PassContext())
    assert calls == []


def test_fold_matmul_weights_option_keeps_the_transpose() -> None:
    (pass_,) = parse_pipeline("transpose-cancellation{fold-matmul-weights=false}")
    assert pass_ == TransposeCancellation(fold_matmul_weights=False)
    assert print_pipeline([pass_]) == "transpose-cancellation{fold-matmul-weights=false}"
    case = pass_cases.load_case(pass_cases.PASSES_DIR / "transpose_cancellation" / "cases"
                            / "fold_flatten_gemm.onnxtxt")
    graph = ir.import_model(case.model())
    result = pass_.run(graph, PassContext())
    assert [n.op for n in graph.nodes] == ["Relu", "Transpose", "Flatten", "Gemm", "Gemm"]
    assert [r.reason for r in result.rejections] == [
        "transpose feeds Flatten: layout change not provably equivalent"]


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------


def test_push_through_option_round_trips_and_limits_the_kinds() -> None:
    (pass_,) = parse_pipeline("transpose-cancellation{push-through=unary,pad fold-constants=false}")
    assert pass_ == TransposeCancellation(push_through=("unary", "pad"), fold_constants=False)
    assert print_pipeline([pass_]) == (
        "transpose-cancellation{push-through=unary,pad fold-constants=false}")

    chain = _Chain()
    (t,) = chain.add("Transpose", [chain.x], (2, 4, 5, 3), perm=[0, 2, 3, 1])
    (c,) = chain.add("Concat", [t, t], (2, 4, 5, 6), axis=3)
    chain.add("Transpose", [c], (2, 6, 4, 5), perm=[0, 3, 1, 2])
    graph = ir.import_model(chain.model())
    result = pass_.run(graph, PassContext())
    assert [n.op for n in graph.nodes] == ["Transpose", "Concat", "Transpose"]
    assert [r.reason for r in result.rejections][0] == (
        "transpose feeds Concat: pushing through concat ops is disabled")


def test_unknown_push_through_kind_is_an_input_error() -> None:
    with pytest.raises(InputError, match="unknown push-through kind.*relu"):
        TransposeCancellation(push_through=("relu",)).run(gs.Graph(), PassContext())
    assert set(TransposeCancellation().push_through) == set(PUSH_KINDS)


def test_unchanged_graph_is_left_alone() -> None:
    chain = _Chain()
    chain.add("Relu", [chain.x], SHAPE)
    graph = ir.import_model(chain.model())
    before = ir.fingerprint(graph)
    result = TransposeCancellation().run(graph, PassContext())
    assert ir.fingerprint(graph) == before and not result.counts and not result.rejections


# --------------------------------------------------------------------------------------------
# A Keras model lowered faithfully by tf2onnx
# --------------------------------------------------------------------------------------------


def _keras_block_model():
    import keras

    rng = np.random.default_rng(0)
    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    stem = keras.layers.ReLU()(x)
    branch1 = keras.layers.Conv2D(4, 1, activation="relu")(stem)
    branch2 = keras.layers.MaxPooling2D(3, strides=1, padding="same")(stem)
    branch2 = keras.layers.Conv2D(4, 3, padding="same", activation="sigmoid")(branch2)
    merged = keras.layers.Concatenate()([branch1, branch2])
    merged = keras.layers.Add()([merged, keras.layers.Conv2D(8, 1)(stem)])
    merged = keras.layers.ReLU(max_value=6.0)(merged)
    padded = keras.layers.ZeroPadding2D(((1, 0), (0, 1)))(merged)
    x = keras.layers.Conv2D(8, 3, strides=2)(padded)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    model = keras.Model(inputs, outputs)
    weights = []
    for variable in model.weights:
        low, high = (0.5, 1.5) if "variance" in variable.path else (-0.5, 0.5)
        weights.append(rng.uniform(low, high, variable.shape).astype(np.float32))
    model.set_weights(weights)
    return model


def test_keras_model_lowered_by_tf2onnx_keeps_only_boundary_transposes() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf = pytest.importorskip("tensorflow")
    tf2onnx = pytest.importorskip("tf2onnx")

    keras_model = _keras_block_model()
    lowered, _ = tf2onnx.convert.from_keras(
        keras_model, input_signature=[tf.TensorSpec((1, 16, 16, 3), tf.float32, name="input")],
        opset=17, optimizers={})
    lowered.ir_version = ir.IR_VERSION
    assert _transposes(lowered) >= 10  # the faithful lowering wraps every Conv and pool

    graph = ir.import_model(lowered)
    report = PassManager("fold-constants,dead-layer-elimination,transpose-cancellation,"
                         "dead-layer-elimination").run(graph)
    optimized = ir.export_model(graph)

    graph_inputs = {t.name for t in graph.inputs}
    remaining = [n for n in graph.nodes if n.op == "Transpose"]
    assert remaining and all(n.inputs[0].name in graph_inputs for n in remaining), \
        [(n.name, n.inputs[0].name) for n in remaining]
    stats = report.records[2].counts
    assert stats["cancelled_pairs"] >= 5 and stats["pushed_through_concat"] == 1
    assert stats["pushed_through_broadcast"] >= 2  # the BatchNorm shift and the residual Add

    for before, after in ((lowered.graph.input, optimized.graph.input),
                          (lowered.graph.output, optimized.graph.output)):
        assert [(v.name, v.type) for v in before] == [(v.name, v.type) for v in after]
    parity = verify.compare_models(lowered, optimized, atol=1e-4, rtol=1e-3, seed=0)
    assert parity.passed, parity.summary()

    image = np.random.default_rng(1).standard_normal((1, 16, 16, 3)).astype(np.float32)
    session = ort.InferenceSession(optimized.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": image})
    np.testing.assert_allclose(logits, keras_model(image).numpy(), atol=1e-4, rtol=1e-3)


def _keras_flatten_dense_model():
    """Conv2D -> MaxPooling2D -> Flatten -> Dense -> Dense on a non-square image, so the NHWC and
    NCHW flattening orders differ; random weights and biases (Keras's zero biases would vanish)."""
    import keras

    rng = np.random.default_rng(0)
    inputs = keras.Input((6, 5, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(7, activation="relu")(x)
    outputs = keras.layers.Dense(2, name="scores")(x)
    model = keras.Model(inputs, outputs)
    model.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype(np.float32)
                       for w in model.weights])
    return model


def test_keras_flatten_dense_exported_with_dynamic_batch_keeps_only_the_input_transpose(
        tmp_path) -> None:
    """model.export keeps the batch dynamic, so tf2onnx computes the Flatten's target from Shape of
    the NHWC tensor: the Shape reads NCHW, the Dense weight rows are permuted, and TensorFlow still
    agrees at batch 1 and 3."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf2onnx")
    from trtcompile.frontend import tensorflow as tensorflow_frontend

    keras_model = _keras_flatten_dense_model()
    keras_model.export(str(tmp_path / "saved"), verbose=False)
    loaded = tensorflow_frontend.load(tmp_path / "saved", isolate=False)
    lowered = loaded.model
    assert {n.op_type for n in lowered.graph.node} >= {"Shape", "Reshape", "MatMul"}

    graph = ir.import_model(lowered)
    # The default pipeline leaves this fold off (see passes.DEFAULT_PIPELINE); the fusion passes
    # that follow are what the default adds, so run the fold with them.
    pipeline = passes.DEFAULT_PIPELINE.replace("transpose-cancellation{fold-matmul-weights=false}",
                                               "transpose-cancellation")
    report = PassManager(pipeline).run(graph)
    optimized = ir.export_model(graph)
    stats = next(r.counts for r in report.records if r.name == "transpose-cancellation")
    assert stats["folded_into_matmul_weights"] == 1 and stats["pushed_through_shape"] == 1

    graph_inputs = {t.name for t in graph.inputs}
    remaining = [n for n in graph.nodes if n.op == "Transpose"]
    assert len(remaining) == 1 and remaining[0].inputs[0].name in graph_inputs, \
        [(n.name, n.inputs[0].name) for n in remaining]
    (image,) = [v.name for v in optimized.graph.input]
    assert isinstance(pass_cases.interface_dims(optimized)[image][0], str)  # the batch stays dynamic

    session = ort.InferenceSession(optimized.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        feeds = {image: np.random.default_rng(batch).standard_normal(
            (batch, 6, 5, 3)).astype(np.float32)}
        expected = loaded.reference(feeds)
        actual = dict(zip([o.name for o in optimized.graph.output], session.run(None, feeds)))
        assert expected.keys() == actual.keys()
        for name, value in expected.items():
            assert actual[name].shape == (batch, 2)
            np.testing.assert_allclose(actual[name], value, atol=1e-4, rtol=1e-3)
