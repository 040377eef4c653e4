"""transpose-cancellation beyond its golden cases: the permutation algebra against numpy, random
Transpose-heavy graphs (parity, never more Transposes), options, and a Keras model lowered by
tf2onnx without its optimizers, whose internal Transposes must all disappear."""

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
    assert "stopped_early" not in report.records[0].stats
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
    assert report.records[0].stats == {"cancelled_pairs": 99, "pushed_through_unary": 100}
    assert verify.compare_models(model, ir.export_model(graph)).passed


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
    stats = report.records[2].stats
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
