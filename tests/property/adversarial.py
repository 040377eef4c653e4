"""Models built to break the passes' assumptions about a graph's scopes and interface.

Where :mod:`tests.property.rewrite_strategies` draws graphs that make the rewrites fire, this module
draws the graphs a rewrite must notice before it fires:

* ``scope``: an If whose branch reads a value of the main graph (a convolution chain's result, a
  transposed tensor, a single-input Concat, an Identity, a subexpression the main graph computes
  too, a constant expression) and is that value's only reader, or one of several; the condition is
  a graph input, so both branches run;
* ``overridable``: graph inputs that are also initializers (defaults the caller may override):
  convolution weights, BatchNorm statistics, a scale equal to a plain constant, an If condition;
* ``dynamic_shape``: Shape chains of a tensor with a symbolic dimension (``Reshape(x, Shape(x))``,
  a Shape as a graph output, a Gather of the static dimension);
* ``strings_bools``: string and bool tensors (Concat, Identity, Not, And, Where, Cast of a bool);
* ``batchnorm``: BatchNormalization forms that must not fold: opset 7's ``spatial=0``
  (statistics per element) and a channel whose ``var + epsilon`` is zero;
* ``half``: what float16 must not touch: a 1e-9 scale, a ScatterND with a reduction, int64 ids
  cast to float and back.

:func:`adversarial_models` draws models of one to four motifs, in an opset the motifs allow
(7 when the opset-7 BatchNorm is drawn). Each model has one graph input ``cond`` (bool) when it
holds an If, and its overridable initializers listed; :func:`feeds` gives seeded inputs for
both branches and non-default values for the overridable initializers, :func:`interface`
the graph's interface with them, :func:`compare` output parity for any element type.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from trtcompile import ir
from trtcompile.flow.inputs import overridable_feeds

MOTIFS = ("scope", "overridable", "dynamic_shape", "strings_bools", "batchnorm", "half")

#: What a branch of an If reads from the main graph (``scope`` motif).
SCOPE_SOURCES = ("conv_chain", "conv_only", "transpose", "concat", "identity", "duplicate",
                 "constant", "read_twice", "sibling_conv", "pool", "split", "global_mean")


@dataclass
class AdversarialModel:
    """A drawn model, the motifs it holds and the names of its overridable initializers."""

    model: onnx.ModelProto
    motifs: tuple[str, ...]
    overridable: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"AdversarialModel({'+'.join(self.motifs)}, opset {_opset(self.model)})"


@dataclass
class _Builder:
    draw: st.DrawFn
    opset: int
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    inputs: list[onnx.ValueInfoProto] = field(default_factory=list)
    outputs: list[onnx.ValueInfoProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    overridable: list[str] = field(default_factory=list)
    count: int = 0
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    condition: str | None = None

    turns: dict = field(default_factory=dict)

    def choose(self, options):
        """One of ``options``, in turn from an offset the model's weight seed gives: every option
        comes up at the same rate over many models. (A hypothesis draw would lean towards some,
        and by a margin that changes with the modules loaded, which hypothesis mines for
        constants: a coverage check would pass alone and fail in the suite.)"""
        options = tuple(options)
        if not self.turns:
            self.turns[None] = int(self.rng.integers(0, 1 << 16))
        turn = self.turns.get(options, 0)
        self.turns[options] = turn + 1
        return options[(self.turns[None] + turn) % len(options)]

    def fresh(self, base: str) -> str:
        self.count += 1
        return f"{base}_{self.count}"

    def node(self, op: str, inputs: list[str], outputs: int | list[str] = 1, **attrs) -> list[str]:
        names = ([self.fresh(op.lower()) for _ in range(outputs)] if isinstance(outputs, int)
                 else outputs)
        self.nodes.append(helper.make_node(op, inputs, names, name=self.fresh(op), **attrs))
        return names

    def const(self, array: np.ndarray, base: str = "c", overridable: bool = False) -> str:
        name = self.fresh(base)
        self.initializers.append(numpy_helper.from_array(array, name))
        if overridable:
            self.overridable.append(name)
            self.inputs.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(array.dtype), list(array.shape)))
        return name

    def weights(self, *shape: int) -> np.ndarray:
        return self.rng.uniform(-1, 1, shape).astype(np.float32)

    def input(self, base: str, elem: int, shape: list) -> str:
        name = self.fresh(base)
        self.inputs.append(helper.make_tensor_value_info(name, elem, shape))
        return name

    def output(self, name: str, elem: int, shape: list | None) -> None:
        self.outputs.append(helper.make_tensor_value_info(name, elem, shape))

    def cond(self) -> str:
        """The bool graph input every If of the model branches on."""
        if self.condition is None:
            self.condition = "cond"
            self.inputs.append(helper.make_tensor_value_info("cond", TensorProto.BOOL, []))
        return self.condition

    def unsqueeze(self, name: str, axis: int) -> str:
        if self.opset >= 13:
            return self.node("Unsqueeze", [name, self.const(np.array([axis], np.int64))])[0]
        return self.node("Unsqueeze", [name], axes=[axis])[0]


def _branch(b: _Builder, name: str, op: str, source: str, shape: list,
            attrs: dict | None = None) -> onnx.GraphProto:
    """A branch of one node ``op`` reading the main graph's ``source``."""
    out = b.fresh(f"{name}_out")
    node = helper.make_node(op, [source], [out], name=b.fresh(f"{name}_{op.lower()}"),
                            **(attrs or {}))
    return helper.make_graph([node], b.fresh(name), [],
                             [helper.make_tensor_value_info(out, TensorProto.FLOAT, shape)])


def motif_scope(b: _Builder) -> None:
    """An If whose branch reads a main-graph value; the If's result is a graph output."""
    c, h, w = 3, 5, 5
    x = b.input("x", TensorProto.FLOAT, [1, c, h, w])
    shape = [1, c, h, w]
    kind = b.choose(SCOPE_SOURCES)
    then_op, then_attrs = "Relu", None
    if kind in ("conv_chain", "conv_only", "read_twice"):
        conv = b.node("Conv", [x, b.const(b.weights(c, c, 3, 3), "w")], pads=[1, 1, 1, 1])[0]
        source = conv
        if kind == "conv_chain":  # the bias folds; the Relu in the branch must not
            source = b.node("Add", [conv, b.const(b.weights(1, c, 1, 1), "bias")])[0]
        if kind == "read_twice":  # the main graph reads it too
            b.output(b.node("Sigmoid", [conv])[0], TensorProto.FLOAT, shape)
    elif kind == "transpose":  # Transpose out here, Transpose back in the branch: no pair
        source = b.node("Transpose", [x], perm=[0, 2, 3, 1])[0]
        then_op, then_attrs, shape = "Transpose", {"perm": [0, 3, 1, 2]}, [1, c, h, w]
    elif kind == "concat":  # a single-input Concat only the branch reads
        source = b.node("Concat", [b.node("Relu", [x])[0]], axis=1)[0]
    elif kind == "identity":
        source = b.node("Identity", [b.node("Neg", [x])[0]])[0]
    elif kind == "duplicate":  # Sigmoid(x) here and in the branch
        b.output(b.node("Sigmoid", [x])[0], TensorProto.FLOAT, shape)
        source, then_op = x, "Sigmoid"
    elif kind == "sibling_conv":  # a Conv here and one in the branch read x: no sibling merge
        b.output(b.node("Conv", [x, b.const(b.weights(c, c, 1, 1), "w")])[0], TensorProto.FLOAT,
                 shape)
        source, then_op, then_attrs = x, "Conv", {"kernel_shape": [1, 1]}
    elif kind == "pool":  # an AveragePool here, the Conv reading it in the branch
        source = b.node("AveragePool", [x], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                        count_include_pad=1)[0]
        then_op, then_attrs = "Conv", {"kernel_shape": [1, 1]}
    elif kind == "split":  # a Conv split along the channels, one piece read in the branch
        conv = b.node("Conv", [x, b.const(b.weights(2 * c, c, 1, 1), "w")])[0]
        first, second = b.node("Split", [conv], 2, axis=1,
                               **({"split": [c, c]} if b.opset < 13 else {}))
        b.output(b.node("Relu", [second])[0], TensorProto.FLOAT, shape)
        source = first
    elif kind == "global_mean":  # a global mean here, flattened in the branch
        source = b.node("ReduceMean", [b.node("Relu", [x])[0]], axes=[2, 3], keepdims=1)[0]
        then_op, then_attrs, shape = "Flatten", {"axis": 1}, [1, c]
    else:  # a constant expression only the branch reads
        source = b.node("Add", [b.const(b.weights(*shape), "a"), b.const(b.weights(*shape), "b")])[0]
    if then_op == "Conv":  # the branch's Conv weights are the branch's own initializer
        weights = numpy_helper.from_array(b.weights(c, c, 1, 1), b.fresh("branch_w"))
        out = b.fresh("then_out")
        then_branch = helper.make_graph(
            [helper.make_node("Conv", [source, weights.name], [out], name=b.fresh("then_conv"),
                              **then_attrs)],
            b.fresh("then"), [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, shape)],
            [weights])
    else:
        then_branch = _branch(b, "then", then_op, source, shape, then_attrs)
    if kind == "global_mean":
        else_branch = _branch(b, "else", "Flatten", source, shape, {"axis": 1})
    else:
        else_branch = _branch(b, "else", "Neg", x, shape)
    (out,) = b.node("If", [b.cond()], then_branch=then_branch, else_branch=else_branch)
    b.output(out, TensorProto.FLOAT, shape)


def motif_overridable(b: _Builder) -> None:
    """Defaults the caller may override, where a pass would fold, fuse or merge a constant."""
    c, h, w = 2, 4, 4
    x = b.input("x", TensorProto.FLOAT, [1, c, h, w])
    kind = b.choose(["conv_weights", "batchnorm", "scale", "condition"])
    if kind == "conv_weights":  # weights the caller replaces; the BN after them must not fold in
        conv = b.node("Conv", [x, b.const(b.weights(c, c, 1, 1), "w", overridable=True)])[0]
        stats = [b.const(b.rng.uniform(0.5, 1.5, c).astype(np.float32), n) for n in "sbmv"]
        out = b.node("BatchNormalization", [conv, *stats])[0]
    elif kind == "batchnorm":  # a BN scale the caller replaces
        conv = b.node("Conv", [x, b.const(b.weights(c, c, 1, 1), "w")])[0]
        scale = b.const(b.rng.uniform(0.5, 1.5, c).astype(np.float32), "scale", overridable=True)
        stats = [b.const(b.rng.uniform(0.5, 1.5, c).astype(np.float32), n) for n in "bmv"]
        out = b.node("Relu", [b.node("BatchNormalization", [conv, scale, *stats])[0]])[0]
    elif kind == "scale":  # equal to a plain constant: merging the two bakes the default in
        value = b.weights(1, c, 1, 1)
        first = b.node("Mul", [x, b.const(value.copy(), "s", overridable=True)])[0]
        second = b.node("Mul", [x, b.const(value.copy(), "t")])[0]
        out = b.node("Add", [first, second])[0]
    else:  # an If on a condition with a default: never flattened
        flag = b.const(np.array(bool(b.draw(st.booleans()))), "flag", overridable=True)
        shape = [1, c, h, w]
        (out,) = b.node("If", [flag], then_branch=_branch(b, "then", "Relu", x, shape),
                        else_branch=_branch(b, "else", "Sigmoid", x, shape))
    b.output(out, TensorProto.FLOAT, [1, c, h, w])


def motif_dynamic_shape(b: _Builder) -> None:
    """Shape chains of a tensor whose first dimension is symbolic."""
    x = b.input("xd", TensorProto.FLOAT, ["N", 4])
    kind = b.choose(["reshape_to_own_shape", "shape_output", "gather_static"])
    if kind == "reshape_to_own_shape":
        (shape,) = b.node("Shape", [x])
        b.output(b.node("Relu", [b.node("Reshape", [x, shape])[0]])[0], TensorProto.FLOAT, ["N", 4])
    elif kind == "shape_output":
        b.output(b.node("Shape", [x])[0], TensorProto.INT64, [2])
        b.output(b.node("Relu", [x])[0], TensorProto.FLOAT, ["N", 4])
    else:  # the static dimension (4) folds, the symbolic one stays
        (shape,) = b.node("Shape", [x])
        (columns,) = b.node("Gather", [shape, b.const(np.array(1, np.int64), "axis1")], axis=0)
        target = b.node("Concat", [b.const(np.array([-1], np.int64), "rows"),
                                   b.unsqueeze(columns, 0)], axis=0)[0]
        b.output(b.node("Reshape", [x, target])[0], TensorProto.FLOAT, ["N", 4])


def motif_strings_bools(b: _Builder) -> None:
    """String and bool tensors, which no pass may treat as float."""
    words = b.input("words", TensorProto.STRING, [2])
    suffix = b.const(np.array(["a", "b"], dtype=object), "suffix")
    b.output(b.node("Concat", [words, suffix], axis=0)[0], TensorProto.STRING, [4])
    b.output(b.node("Identity", [words])[0], TensorProto.STRING, [2])
    flags = b.input("flags", TensorProto.BOOL, [3])
    mask = b.const(np.array([True, False, True]), "mask")
    both = b.node("And", [b.node("Not", [flags])[0], mask])[0]
    b.output(both, TensorProto.BOOL, [3])
    values = b.node("Cast", [flags], to=TensorProto.FLOAT)[0]
    b.output(b.node("Mul", [values, b.const(np.array([2.0, 3.0, 4.0], np.float32), "k")])[0],
             TensorProto.FLOAT, [3])
    if b.opset >= 9:
        picked = b.node("Where", [flags, b.const(np.array([1.0, 2.0, 3.0], np.float32), "on"),
                                  b.const(np.zeros(3, np.float32), "off")])[0]
        b.output(picked, TensorProto.FLOAT, [3])


def motif_batchnorm(b: _Builder) -> None:
    """A BatchNorm after a convolution that must stay: statistics per element (opset 7's
    ``spatial=0``) or a channel with ``var + epsilon`` zero."""
    c, h, w = 2, 3, 3
    x = b.input("x", TensorProto.FLOAT, [1, c, h, w])
    conv = b.node("Conv", [x, b.const(b.weights(c, c, 1, 1), "w")])[0]
    kinds = ["zero_variance"] + (["per_element"] if b.opset < 9 else [])
    if b.choose(kinds) == "per_element":
        stats = [b.const(b.rng.uniform(0.5, 1.5, (c, h, w)).astype(np.float32), n) for n in "sbmv"]
        out = b.node("BatchNormalization", [conv, *stats], spatial=0)[0]
    else:
        variance = np.array([0.0, 1.0], np.float32)
        stats = [b.const(b.rng.uniform(0.5, 1.5, c).astype(np.float32), n) for n in "sbm"]
        out = b.node("BatchNormalization", [conv, *stats, b.const(variance, "v")], epsilon=0.0)[0]
    b.output(out, TensorProto.FLOAT, [1, c, h, w])


def motif_half(b: _Builder) -> None:
    """What float16 must leave alone: a 1e-9 scale, a ScatterND with a reduction (no float16
    kernel on ONNX Runtime's CPU provider), int64 ids through float and back."""
    x = b.input("xh", TensorProto.FLOAT, [4, 3])
    kinds = ["tiny_scale", "ids"] + (["scatter_add"] if b.opset >= 16 else [])
    kind = b.choose(kinds)
    if kind == "tiny_scale":
        scaled = b.node("Mul", [x, b.const(np.full((1, 3), 1e-9, np.float32), "tiny")])[0]
        b.output(b.node("Mul", [scaled, b.const(np.full((1, 3), 1e9, np.float32), "huge_inv")])[0],
                 TensorProto.FLOAT, [4, 3])
    elif kind == "scatter_add":
        relu = b.node("Relu", [x])[0]
        indices = b.const(np.array([[0], [2]], np.int64), "rows")
        updates = b.const(b.weights(2, 3), "updates")
        b.output(b.node("ScatterND", [relu, indices, updates], reduction="add")[0],
                 TensorProto.FLOAT, [4, 3])
    else:
        ids = b.input("ids", TensorProto.INT64, [4])
        as_float = b.node("Cast", [ids], to=TensorProto.FLOAT)[0]
        shifted = b.node("Add", [as_float, b.const(np.array(1.0, np.float32), "one")])[0]
        b.output(b.node("Cast", [shifted], to=TensorProto.INT64)[0], TensorProto.INT64, [4])
        b.output(b.node("Relu", [x])[0], TensorProto.FLOAT, [4, 3])


_MOTIFS = {"scope": motif_scope, "overridable": motif_overridable,
           "dynamic_shape": motif_dynamic_shape, "strings_bools": motif_strings_bools,
           "batchnorm": motif_batchnorm, "half": motif_half}


@st.composite
def adversarial_models(draw: st.DrawFn, max_motifs: int = 4,
                       motifs: tuple[str, ...] = MOTIFS) -> AdversarialModel:
    """One to ``max_motifs`` motifs of ``motifs`` side by side in one model (independent inputs
    and outputs), in opset 7, 11, 13 or 17."""
    chosen = tuple(draw(st.lists(st.sampled_from(motifs), min_size=1, max_size=max_motifs)))
    opset = draw(st.sampled_from([7, 11, 13, 17]))
    builder = _Builder(draw, opset, rng=np.random.default_rng(draw(st.integers(0, 2**16))))
    for motif in chosen:
        _MOTIFS[motif](builder)
    graph = helper.make_graph(builder.nodes, "adversarial", builder.inputs, builder.outputs,
                              builder.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7 if opset < 13 else ir.IR_VERSION
    return AdversarialModel(model, chosen, tuple(builder.overridable))


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def feeds(model: onnx.ModelProto, seed: int = 0, *, condition: bool = True,
          defaults: bool = False) -> dict[str, np.ndarray]:
    """Seeded inputs: standard normal floats (symbolic dimensions at 3), ids in [0, 5000) (above
    float16's exact 2048), words, flags; ``cond`` as given; the overridable initializers at
    values other than their defaults (their defaults with ``defaults``)."""
    rng = np.random.default_rng(seed)
    overridable = set(ir.overridable_initializer_names(model))
    result: dict[str, np.ndarray] = {}
    for value in model.graph.input:
        if value.name in overridable:
            continue
        tensor_type = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else 3 for d in tensor_type.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        if value.name == "cond":
            result[value.name] = np.array(condition)
        elif dtype == np.bool_:
            result[value.name] = rng.random(dims) < 0.5
        elif dtype.kind in "iu":
            result[value.name] = rng.integers(0, 5000, dims).astype(dtype)
        elif dtype.kind == "f":
            result[value.name] = rng.standard_normal(dims).astype(dtype)
        else:
            result[value.name] = np.array([f"w{i}" for i in range(int(np.prod(dims)))],
                                          dtype=object).reshape(dims)
    result.update(overridable_feeds(model, seed, defaults=defaults))
    return result


def interface(model: onnx.ModelProto) -> dict[str, list[tuple]]:
    """Graph inputs (overridable initializers included, marked) and outputs as (name, elem type,
    dims); plain initializers are not part of it."""
    overridable = set(ir.overridable_initializer_names(model))
    initializers = {init.name for init in model.graph.initializer}

    def describe(value: onnx.ValueInfoProto) -> tuple:
        tensor_type = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param
                     for d in tensor_type.shape.dim)
        return value.name, tensor_type.elem_type, dims, value.name in overridable

    return {"inputs": [describe(v) for v in model.graph.input
                       if v.name not in initializers or v.name in overridable],
            "outputs": [describe(v) for v in model.graph.output]}


def compare(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], atol: float,
            rtol: float) -> list[str]:
    """Problems comparing two runs: floats within ``atol + rtol * |reference|`` with NaN where the
    reference has NaN, every other element type equal."""
    problems = []
    for name, expected in reference.items():
        got = candidate.get(name)
        if got is None:
            problems.append(f"output '{name}' missing")
        elif got.shape != expected.shape or got.dtype != expected.dtype:
            problems.append(f"output '{name}': {got.dtype}{list(got.shape)} instead of "
                            f"{expected.dtype}{list(expected.shape)}")
        elif expected.dtype.kind != "f":
            if not np.array_equal(got, expected):
                problems.append(f"output '{name}' differs")
        else:
            expected64, got64 = expected.astype(np.float64), got.astype(np.float64)
            same_nan = np.array_equal(np.isnan(expected64), np.isnan(got64))
            finite = np.isfinite(expected64) & np.isfinite(got64)
            same_inf = np.array_equal(expected64[~finite & ~np.isnan(expected64)],
                                      got64[~finite & ~np.isnan(expected64)])
            close = np.all(np.abs(got64 - expected64)[finite]
                           <= atol + rtol * np.abs(expected64)[finite])
            if not (same_nan and same_inf and close):
                problems.append(f"output '{name}' differs beyond atol={atol:g} rtol={rtol:g}")
    return problems
