"""Hypothesis strategies for differential testing: models built so the passes' rewrites fire.

:func:`rewrite_models` draws an opset (9 to 23), an element type (float32, float16; float64 for
graphs without convolutions or pools, which ONNX Runtime's CPU provider does not run in double),
a batch dimension that is static or symbolic (``N``, run at two sizes), and then a sequence of
*motifs* on a running NCHW tensor, each written the way its opset spells it:

* ``conv_chain``: Conv, then bias Add/Sub, scale Mul, BatchNormalization (the opset's inference
  form), an optional residual Add and an activation (Relu, LeakyRelu with default or explicit
  alpha, Clip with attribute bounds below opset 11 or inputs, Sigmoid, Tanh, HardSigmoid,
  HardSwish from opset 14, Elu); weights as initializers or ``Constant`` nodes;
* ``parallel_convs``: convolutions sharing an input, concatenated on the channels (and the 1x3/3x1
  pairs kernel padding merges);
* ``pool_conv``: AveragePool (with or without pads, ``count_include_pad`` 0 or 1) into a 1x1 Conv;
* ``split_concat``: Split (attribute sizes below opset 13, an input from 13, ``num_outputs`` from
  18, equal splits without sizes, negative axes), adjacent pieces concatenated again, nested and
  single-input Concats, Concat then the Split undoing it;
* ``slice_concat``: adjacent Slices (attribute form at opset 9, inputs after; negative starts and
  axes, ``INT64_MAX`` ends, steps of 2 that must not be joined) concatenated;
* ``layout``: NCHW->NHWC Transposes around unary ops, broadcast Adds of constants and of tensors
  in the same layout, Softmax, reductions, Pad, Slice, Split/Concat, Unsqueeze/Squeeze,
  identity, composed and constant Transposes, then back to NCHW;
* ``head``: Flatten or Reshape (constant, ``0``-batch or computed from ``Shape``) after a layout
  change, then parallel MatMuls or Gemms sharing the flattened input (``transB`` omitted, 0 or 1
  with the weights stored transposed, per Gemm; ``alpha``, ``beta``, ``transA`` omitted, written
  at their defaults or scaling, per head; ``C`` present or not);
* ``cleanup``: Identity, inference Dropout, dead branches, constant expressions;
* ``subgraph``: If with a constant condition, If on a computed condition, Loop with two iterations;
* ``duplicates``: equal subexpressions of the running tensor: two equal unary chains, a scale by
  two constants of equal bytes (initializers or ``Constant`` nodes), an ``Add`` with its operands
  commuted, and an equal pair whose later node writes a graph output;
* ``attention``: scaled dot-product attention with additive masks of every rank the scores
  broadcast with (a scalar, a rank-1 key padding mask, ``[1, key]``, ``[query, 1]``, ``[query,
  key]``, ``[1, 1, key]``, ``[heads, query, key]``, rank-4 ones) and the Softmax axis written or
  omitted; in the eager form or as torch's dynamo exporter writes ``scaled_dot_product_attention``
  (operands scaled by the root of the scale, the key swapped by Reshape-Transpose-Reshape, the mask
  a ``Where`` between 0 and the type's lowest value or -inf, a NaN guard after the Softmax); the
  projections each a MatMul (and bias Add) or a Gemm on the flattened tokens, or the query, key and
  value the pieces of one such projection split along its features (GPT-2's ``c_attn``);
* ``grouped_attention`` (drawn only when asked for, see ``EXTRA_MOTIFS``): grouped-query attention,
  the key and value heads repeated by ``Unsqueeze-Expand-Reshape``, with or without rotary
  embeddings, biases and a merged projection, in the eager or the dynamo form.

Every attribute a pass rule reads is drawn in both forms, left out (its ONNX default) and written
out (``Builder.defaults``; ReduceMean's ``keepdims``, Flatten's and Softmax's ``axis``, Gemm's
``transA``/``transB``/``alpha``/``beta``, BatchNormalization's ``epsilon``, Conv's ``strides``,
``dilations``, ``group`` and ``pads``, AveragePool's ``ceil_mode`` and ``auto_pad``, Reshape's
``allowzero``, the activations' ``alpha``), so a rule that misreads a default shows;
tests/property/test_generator_forms.py checks that every form is drawn.

Every model is valid by construction (the strategy's own test runs the full checker and ONNX
Runtime on each) and the test of the strategy counts the rewrites the passes apply, not the ops.

``KNOWN_DEFECT_FORMS`` lists forms a pass still gets wrong (each with a strict xfail reproducer
in tests/property/test_differential.py); they are drawn only when enabled. None are known today.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

OPSETS = (9, 10, 11, 12, 13, 14, 15, 17, 18, 19, 21, 23)
DTYPES = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16,
          "float64": TensorProto.DOUBLE}
MOTIFS = ("conv_chain", "parallel_convs", "pool_conv", "split_concat", "slice_concat", "layout",
          "head", "cleanup", "subgraph", "duplicates", "attention")
#: Motifs with Conv or pooling (not run in float64 on ONNX Runtime's CPU provider).
NEEDS_CONV = {"conv_chain", "parallel_convs", "pool_conv"}
INT64_MAX = 2**63 - 1

#: Forms a built-in pass is known to get wrong; the strategy draws them only when enabled.
KNOWN_DEFECT_FORMS: set[str] = set()


@dataclass(frozen=True)
class Value:
    """A tensor of the model under construction: name and shape (the batch may be ``"N"``)."""

    name: str
    shape: tuple


@dataclass
class Builder:
    draw: object
    opset: int
    dtype: int
    seed: int
    enabled_defects: frozenset = frozenset()
    nodes: list = field(default_factory=list)
    initializers: list = field(default_factory=list)
    outputs: list = field(default_factory=list)

    def __post_init__(self):
        self.rng = np.random.default_rng(self.seed)
        self.offset = self.draw(st.integers(0, 2**10))
        self.turns: dict[tuple, int] = {}
        self.ids = itertools.count()
        self.np_dtype = helper.tensor_dtype_to_np_dtype(self.dtype)

    def choose(self, options):
        """One of ``options``, in turn: successive calls with the same options take the next one,
        from an offset given by the model's draws so far. A short derandomized run then still sees every option
        (``sampled_from`` draws lean towards the first and last), and shrinking the offset
        towards 0 still leads to the first options."""
        options = tuple(options)
        turn = self.turns.get(options, 0)
        self.turns[options] = turn + 1
        # The node count so far and the weight seed spread the choice between models.
        mixed = self.seed * 7919 + self.offset * 104729 + len(self.nodes) * 31 + turn
        return options[mixed % len(options)]

    def fresh(self, base: str) -> str:
        return f"{base}_{next(self.ids)}"

    def defaults(self, **attrs) -> dict:
        """``attrs`` (each at its ONNX default) written out, or nothing, in turn: a pass that
        reads an attribute must read the same value from both forms."""
        return dict(attrs) if self.choose((False, True)) else {}

    def node(self, op: str, inputs: list[str], n_outputs: int = 1, **attrs) -> list[str]:
        outputs = [self.fresh("t") for _ in range(n_outputs)]
        self.nodes.append(helper.make_node(op, inputs, outputs, name=self.fresh(op.lower()),
                                           **attrs))
        return outputs

    def op(self, op: str, inputs: list[str], shape: tuple, **attrs) -> Value:
        return Value(self.node(op, inputs, **attrs)[0], tuple(shape))

    def const(self, array: np.ndarray, base: str = "w", as_node: bool | None = None) -> str:
        """A constant of the graph's float type: initializer or Constant node."""
        array = np.asarray(array).astype(self.np_dtype)
        if as_node is None:
            as_node = self.draw(st.integers(0, 3)) == 0
        if as_node:
            return self.node("Constant", [], value=numpy_helper.from_array(array, self.fresh("c")))[0]
        name = self.fresh(base)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def ints(self, values, base: str = "i") -> str:
        name = self.fresh(base)
        self.initializers.append(numpy_helper.from_array(np.asarray(values, np.int64), name))
        return name

    def uniform(self, shape, low=-1.0, high=1.0) -> np.ndarray:
        return self.rng.uniform(low, high, size=shape)

    # Opset-dependent spellings -------------------------------------------------------------

    def split(self, x: Value, axis: int, sizes: list[int], spell_axis: int | None = None
              ) -> list[Value]:
        attr_axis = axis if spell_axis is None else spell_axis
        equal = len(set(sizes)) == 1
        omit = equal and self.draw(st.booleans())
        attrs = {"axis": attr_axis}
        inputs = [x.name]
        if self.opset >= 18 and omit:
            attrs["num_outputs"] = len(sizes)
        elif not omit:
            if self.opset < 13:
                attrs["split"] = list(sizes)
            else:
                inputs.append(self.ints(sizes, "split"))
        names = self.node("Split", inputs, len(sizes), **attrs)
        out = []
        for name, size in zip(names, sizes):
            shape = list(x.shape)
            shape[axis] = size
            out.append(Value(name, tuple(shape)))
        return out

    def slice(self, x: Value, axis: int, start: int, end: int, step: int = 1,
              spell_axis: int | None = None) -> Value:
        attr_axis = axis if spell_axis is None else spell_axis
        dim = x.shape[axis]
        real_start = start + dim if start < 0 else start
        real_end = dim if end >= dim else (end + dim if end < 0 else end)
        size = len(range(real_start, real_end, step))
        shape = list(x.shape)
        shape[axis] = size
        if self.opset < 10:
            return self.op("Slice", [x.name], shape, starts=[start], ends=[end], axes=[attr_axis])
        inputs = [x.name, self.ints([start]), self.ints([end]), self.ints([attr_axis])]
        if step != 1 or self.draw(st.booleans()):
            inputs.append(self.ints([step]))
        return self.op("Slice", inputs, shape)

    def clip(self, x: Value, low: float | None, high: float | None) -> Value:
        if self.opset < 11:
            attrs = {k: v for k, v in (("min", low), ("max", high)) if v is not None}
            return self.op("Clip", [x.name], x.shape, **attrs)
        inputs = [x.name, self.const(np.array(low), "min", False) if low is not None else "",
                  self.const(np.array(high), "max", False) if high is not None else ""]
        while inputs[-1] == "":
            inputs.pop()
        return self.op("Clip", inputs, x.shape)

    def axes_op(self, op: str, x: Value, axes: list[int], shape: tuple, input_from: int,
                **attrs) -> Value:
        if self.opset >= input_from:
            return self.op(op, [x.name, self.ints(axes, "axes")], shape, **attrs)
        return self.op(op, [x.name], shape, axes=axes, **attrs)

    def batchnorm(self, x: Value) -> Value:
        c = x.shape[1]
        params = [self.const(self.uniform((c,), 0.5, 1.5), "gamma"),
                  self.const(self.uniform((c,)), "beta"),
                  self.const(self.uniform((c,), -0.5, 0.5), "mean"),
                  self.const(self.uniform((c,), 0.5, 1.5), "var")]
        # The default epsilon (1e-5) left out, written out, or another value, in turn: a draw of
        # the value would make the omitted form depend on hypothesis's choices (which also take
        # constants from the modules loaded, so they differ between a test run alone and the suite).
        epsilon = self.choose((None, 1e-5, 1e-3))
        attrs = {} if epsilon is None else {"epsilon": epsilon}
        if self.opset >= 14 and self.draw(st.booleans()):
            attrs["training_mode"] = 0
        if self.opset < 9 + 0:  # pragma: no cover - opsets start at 9
            attrs["spatial"] = 1
        return self.op("BatchNormalization", [x.name, *params], x.shape, **attrs)


# --------------------------------------------------------------------------------------------
# Motifs: each takes the builder and the running NCHW value and returns the next one.
# --------------------------------------------------------------------------------------------

ACTIVATIONS = ("Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu")
DOUBLE_ACTIVATIONS = ("Relu", "Sigmoid", "Tanh")


def activation(b: Builder, x: Value, kind: str | None = None) -> Value:
    kind = kind or b.choose(ACTIVATIONS)
    if b.dtype == TensorProto.DOUBLE and kind not in DOUBLE_ACTIVATIONS:
        kind = b.choose(DOUBLE_ACTIVATIONS)  # what ONNX Runtime's CPU provider runs in double
    if kind == "HardSwish" and b.opset < 14:
        kind = "Relu"
    if kind == "LeakyRelu":
        if b.draw(st.booleans()):
            return b.op("LeakyRelu", [x.name], x.shape)  # the default alpha, 0.01
        return b.op("LeakyRelu", [x.name], x.shape, alpha=b.draw(st.sampled_from([0.1, 0.3])))
    if kind == "Clip":
        low, high = b.draw(st.sampled_from([(0.0, 6.0), (-0.5, 0.5), (0.0, None)]))
        return b.clip(x, low, high)
    if kind == "Elu":
        return b.op("Elu", [x.name], x.shape, **({} if b.draw(st.booleans()) else {"alpha": 0.5}))
    if kind == "HardSigmoid":
        return b.op("HardSigmoid", [x.name], x.shape,
                    **({} if b.draw(st.booleans()) else {"alpha": 0.3, "beta": 0.4}))
    return b.op(kind, [x.name], x.shape)


def conv(b: Builder, x: Value, c_out: int, kernel=(1, 1), pads=(0, 0, 0, 0), bias: bool = True,
         group: int = 1) -> Value:
    c = x.shape[1]
    fan_in = (c // group) * kernel[0] * kernel[1]
    weights = b.uniform((c_out, c // group, *kernel)) * (1.5 / np.sqrt(fan_in))
    inputs = [x.name, b.const(weights, "W")]
    if bias:
        inputs.append(b.const(b.uniform((c_out,)), "B"))
    h = x.shape[2] + pads[0] + pads[2] - kernel[0] + 1
    w = x.shape[3] + pads[1] + pads[3] - kernel[1] + 1
    attrs = {"kernel_shape": list(kernel),
             **b.defaults(strides=[1, 1], dilations=[1, 1], group=1, pads=[0, 0, 0, 0])}
    if any(pads):
        attrs["pads"] = list(pads)
    if group != 1:
        attrs["group"] = group
    return b.op("Conv", inputs, (x.shape[0], c_out, h, w), **attrs)


def motif_conv_chain(b: Builder, x: Value) -> Value:
    """One or two Conv chains in a row, each ending with an activation, sometimes then a global
    mean (:func:`global_pool_block`)."""
    for _ in range(b.draw(st.integers(1, 3))):
        x = _conv_chain(b, x)
    return global_pool_block(b, x) if b.rng.random() < 0.3 else x


def _conv_chain(b: Builder, x: Value) -> Value:
    c = x.shape[1]
    residual = b.draw(st.booleans())
    kernel, pads = b.draw(st.sampled_from([((1, 1), (0, 0, 0, 0)), ((3, 3), (1, 1, 1, 1))]))
    c_out = c if residual else b.draw(st.integers(1, 6))
    y = conv(b, x, c_out, kernel, pads, bias=b.draw(st.booleans()))
    for step in [b.choose(("bias", "sub", "scale", "batchnorm"))
                 for _ in range(b.draw(st.integers(0, 3)))]:
        if step == "batchnorm":
            y = b.batchnorm(y)
            continue
        shape = b.draw(st.sampled_from([(1, c_out, 1, 1), (c_out, 1, 1), (1,)]))
        low, high = (0.5, 1.5) if step == "scale" else (-1.0, 1.0)
        operand = b.const(b.uniform(shape, low, high), step)
        op = {"bias": "Add", "sub": "Sub", "scale": "Mul"}[step]
        inputs = [y.name, operand] if op == "Sub" or b.draw(st.booleans()) else [operand, y.name]
        y = b.op(op, inputs, y.shape)
    if residual:
        y = b.op("Add", [y.name, x.name] if b.draw(st.booleans()) else [x.name, y.name], y.shape)
    return activation(b, y)


def motif_parallel_convs(b: Builder, x: Value) -> Value:
    n, c, h, w = x.shape
    if b.draw(st.booleans()) and h >= 3 and w >= 3:
        # 1x3 and 3x1 convolutions: merged only by zero-padding their kernels (pad-kernels).
        left = conv(b, x, b.draw(st.integers(1, 4)), (1, 3), (0, 1, 0, 1))
        right = conv(b, x, b.draw(st.integers(1, 4)), (3, 1), (1, 0, 1, 0))
        branches = [left, right]
    else:
        act = b.choose((None, *ACTIVATIONS))
        kernel, pads = b.draw(st.sampled_from([((1, 1), (0, 0, 0, 0)), ((3, 3), (1, 1, 1, 1))]))
        branches = [conv(b, x, b.draw(st.integers(1, 4)), kernel, pads)
                    for _ in range(b.draw(st.integers(2, 3)))]
        if act is not None:  # the same activation on every branch: fused, they merge again
            branches = [activation(b, v, act) for v in branches]
        if b.draw(st.booleans()) or b.rng.random() < 0.3:
            # One Conv read only by a Split along the channels (conv-split-fission), each
            # piece read by the Concat: the merge horizontal-fusion would make, undone. (The
            # weight generator's share adds these without changing the draws.)
            sizes = [b.draw(st.integers(1, 3)) for _ in range(b.draw(st.integers(2, 3)))]
            merged = conv(b, x, sum(sizes), kernel, pads)
            if act is not None:
                merged = activation(b, merged, act)
            branches = b.split(merged, 1, sizes, -3 if b.draw(st.booleans()) else 1)
    total = sum(v.shape[1] for v in branches)
    return b.op("Concat", [v.name for v in branches], (n, total, h, w), axis=1)


def motif_pool_conv(b: Builder, x: Value) -> Value:
    n, c, h, w = x.shape
    pad = b.draw(st.integers(0, 1))
    k = min(b.draw(st.integers(2, 3)), h + 2 * pad, w + 2 * pad)
    attrs = {"kernel_shape": [k, k], "strides": [1, 1], **b.defaults(auto_pad="NOTSET")}
    if b.opset >= 10:  # ceil_mode is an attribute from opset 10
        attrs.update(b.defaults(ceil_mode=0))
    if pad:
        attrs["pads"] = [pad] * 4
    if b.draw(st.booleans()):
        attrs["count_include_pad"] = int(b.draw(st.booleans()))
    pooled = b.op("AveragePool", [x.name], (n, c, h + 2 * pad - k + 1, w + 2 * pad - k + 1), **attrs)
    y = conv(b, pooled, b.draw(st.integers(1, 6)))
    return global_pool_block(b, y) if b.rng.random() < 0.75 else y


def global_pool_block(b: Builder, y: Value) -> Value:
    """A global mean of the conv ``y`` (GlobalAveragePool, or ReduceMean over the spatial axes as
    the opset spells it, with keepdims 0, 1 or omitted) feeding a Softmax over the channels, a
    squeeze-excitation gate that scales ``y``, or a classifier head (a graph output: Gemm/MatMul,
    ReLU, then MatMul or Softmax) on the mean or on ``y``'s whole map. Every choice comes from the weight generator, not from draws, so
    the models the other motifs build stay as they were."""
    n, c, h, w = y.shape
    rng = b.rng

    def weights(shape, base):
        return b.const(rng.uniform(-1, 1, size=shape) / np.sqrt(np.prod(shape[1:])), base, False)

    if rng.random() < 0.5:
        y = b.op(("Relu", "Sigmoid")[int(rng.integers(2))], [y.name], y.shape)
    form = ("global", "mean", "mean_keepdims", "mean_default_keepdims")[int(rng.integers(4))]
    keepdims = form != "mean"
    if form == "global":
        pooled = b.op("GlobalAveragePool", [y.name], (n, c, 1, 1))
    else:
        axes = [(2, 3), (-1, -2), (2, -1)][int(rng.integers(3))]
        shape = (n, c, 1, 1) if keepdims else (n, c)
        # keepdims written (0 or 1) or left at its default (1).
        attrs = {} if form == "mean_default_keepdims" else {"keepdims": int(keepdims)}
        if b.opset >= 18:
            pooled = b.op("ReduceMean", [y.name, b.ints(list(axes), "axes")], shape, **attrs)
        else:
            pooled = b.op("ReduceMean", [y.name], shape, axes=list(axes), **attrs)
    if keepdims and rng.random() < 0.25:
        # A Softmax over the channels of the [N, C, 1, 1] mean (the SqueezeNet head without its
        # Flatten): a pool that keeps its dims must not gain a Flatten.
        b.outputs.append(b.op("Softmax", [pooled.name], pooled.shape, axis=1))
        return y
    if keepdims and rng.random() < 0.5:  # squeeze-excitation
        squeezed = b.op("Relu", [b.op("Conv", [pooled.name, weights((2, c, 1, 1), "se_W")],
                                      (n, 2, 1, 1)).name], (n, 2, 1, 1))
        expanded = b.op("Conv", [squeezed.name, weights((c, 2, 1, 1), "se_W")], (n, c, 1, 1))
        gate = b.op("Sigmoid", [expanded.name], (n, c, 1, 1))
        return b.op("Mul", [y.name, gate.name], y.shape)
    flatten_axis = {} if rng.random() < 0.5 else {"axis": 1}  # Flatten's default axis is 1
    if keepdims and h * w > 1 and rng.random() < 0.5:  # flatten-gemm-conv
        features = c * h * w
        flat = b.op("Flatten", [y.name], (n, features), **flatten_axis)
    else:
        features = c
        flat = pooled if not keepdims else b.op("Flatten", [pooled.name], (n, c), **flatten_axis)
    units = int(rng.integers(1, 5))
    if b.opset >= 11 and rng.random() < 0.5:  # Gemm's C is optional from opset 11
        # transB omitted, written as 0, or 1 with the weights stored transposed; alpha, beta and
        # transA omitted, written at their defaults, or alpha scaling the product.
        trans_b = ({}, {"transB": 0}, {"transB": 1})[int(rng.integers(3))]
        scaling = ({}, {"alpha": 1.0, "beta": 1.0, "transA": 0}, {"alpha": 0.5})[int(rng.integers(3))]
        stored = (units, features) if trans_b.get("transB") else (features, units)
        dense = b.op("Gemm", [flat.name, weights(stored, "fc_W")], (n, units),
                     **trans_b, **scaling)
    else:
        dense = b.op("MatMul", [flat.name, weights((features, units), "fc_W")], (n, units))
    hidden = b.op("Relu", [dense.name], (n, units))
    if rng.random() < 0.5:
        b.outputs.append(b.op("Softmax", [hidden.name], hidden.shape, axis=1))
    else:
        b.outputs.append(b.op("MatMul", [hidden.name, weights((units, 2), "fc2_W")], (n, 2)))
    return y


def motif_split_concat(b: Builder, x: Value) -> Value:
    n, c, h, w = x.shape
    kind = b.choose(["adjacent", "all", "pair", "nested", "single"])
    if c < 3:  # room for three pieces (no Conv here: this motif may share a graph with an If)
        x = b.op("Concat", [x.name] * 3, (n, 3 * c, h, w), axis=1)
        n, c, h, w = x.shape
    spell = -3 if b.draw(st.booleans()) else 1
    if kind == "pair":
        other = b.op("Relu", [x.name], x.shape)
        joined = b.op("Concat", [x.name, other.name], (n, 2 * c, h, w), axis=spell)
        parts = b.split(joined, 1, [c, c], spell)
        return b.op("Add", [parts[0].name, parts[1].name], x.shape)
    if kind == "nested":
        inner = b.op("Concat", [x.name, x.name], (n, 2 * c, h, w), axis=1)
        relu = b.op("Relu", [x.name], x.shape)
        return b.op("Concat", [inner.name, relu.name], (n, 3 * c, h, w), axis=spell)
    if kind == "single":
        return b.op("Concat", [b.op("Relu", [x.name], x.shape).name], x.shape, axis=1)
    count = 3 if kind == "adjacent" or b.draw(st.booleans()) else 2
    if b.draw(st.booleans()) and c % count == 0:
        sizes = [c // count] * count
    else:
        cuts = sorted(b.draw(st.lists(st.integers(1, c - 1), min_size=count - 1,
                                      max_size=count - 1, unique=True)))
        sizes = [hi - lo for lo, hi in zip([0, *cuts], [*cuts, c])]
    if b.opset >= 13 and b.draw(st.booleans()):  # a zero-size piece (Split-13 takes sizes)
        sizes.insert(1, 0)
    pieces = b.split(x, 1, sizes, spell)
    if kind == "all":
        return b.op("Concat", [p.name for p in pieces], x.shape, axis=spell)
    # Adjacent pieces 0..k join; the rest go through a Relu and back in.
    k = 2 if kind == "adjacent" else len(pieces)
    joined = b.op("Concat", [p.name for p in pieces[:k]],
                  (n, sum(p.shape[1] for p in pieces[:k]), h, w), axis=spell)
    rest = [b.op("Relu", [p.name], p.shape) for p in pieces[k:]]
    return b.op("Concat", [joined.name, *(r.name for r in rest)], x.shape, axis=1)


def motif_slice_concat(b: Builder, x: Value) -> Value:
    n, c, h, w = x.shape
    axis = b.draw(st.sampled_from([1, 2, 3]))
    dim = x.shape[axis]
    if dim < 2:
        return b.op("Relu", [x.name], x.shape)
    cut = b.draw(st.integers(1, dim - 1))
    spell = axis - 4 if b.draw(st.booleans()) else axis
    negative = b.draw(st.booleans())
    start2 = cut - dim if negative else cut
    end2 = INT64_MAX if b.draw(st.booleans()) else dim
    step = 2 if b.draw(st.integers(0, 4)) == 0 and b.opset >= 10 else 1
    first = b.slice(x, axis, 0, cut, step, spell)
    second = b.slice(x, axis, start2, end2, 1, spell)
    shape = list(x.shape)
    shape[axis] = first.shape[axis] + second.shape[axis]
    return b.op("Concat", [first.name, second.name], tuple(shape), axis=spell)


def _t(shape: tuple, perm: list[int]) -> tuple:
    return tuple(shape[p] for p in perm)


def motif_layout(b: Builder, x: Value) -> Value:
    n, c, h, w = x.shape
    to_nhwc, to_nchw = [0, 2, 3, 1], [0, 3, 1, 2]
    if b.draw(st.integers(0, 2)) == 0:
        x = b.op("Transpose", [x.name], x.shape, perm=[0, 1, 2, 3])  # an identity Transpose
    if b.draw(st.integers(0, 2)) == 0:
        # A Transpose of a constant (stored NHWC), folded into a new constant.
        stored = b.uniform((1, h, w, c))
        folded = b.op("Transpose", [b.const(stored, "nhwc", False)], (1, c, h, w), perm=to_nchw)
        x = b.op("Add", [x.name, folded.name], x.shape)
    y = b.op("Transpose", [x.name], _t(x.shape, to_nhwc), perm=to_nhwc)
    kinds = ("unary", "const_add", "same_layout_add", "softmax", "reduce", "pad", "slice",
             "split_concat", "unsqueeze_squeeze", "identity_transpose", "transposed_constant")
    for step in [b.choose(kinds) for _ in range(b.draw(st.integers(1, 6)))]:
        s = y.shape
        if step == "unary":
            y = activation(b, y, b.choose(["Relu", "Sigmoid", "LeakyRelu", "Clip"]))
        elif step == "const_add":
            y = b.op("Add", [y.name, b.const(b.uniform((s[3],)), "bias")], s)
        elif step == "same_layout_add" and s == _t(x.shape, to_nhwc):
            other = b.op("Transpose", [b.op("Sigmoid", [x.name], x.shape).name], s, perm=to_nhwc)
            y = b.op("Add", [y.name, other.name], s)
        elif step == "softmax":
            # Below opset 13 it flattens: must stay. From 13 the omitted axis is the last one.
            y = b.op("Softmax", [y.name], s,
                     **({} if b.opset >= 13 and b.choose((True, False)) else {"axis": -1}))
        elif step == "reduce":
            y = b.axes_op("ReduceMean", y, [1], s[:1] + (1,) + s[2:], 18,
                          **({} if b.choose((True, False)) else {"keepdims": 1}))
        elif step == "pad":
            pads = [0, 1, 0, 0, 0, 1, 0, 0]
            shape = (s[0], s[1] + 2, s[2], s[3])
            if b.opset < 11:
                y = b.op("Pad", [y.name], shape, pads=pads)
            else:
                y = b.op("Pad", [y.name, b.ints(pads, "pads")], shape)
        elif step == "slice" and s[3] >= 2:
            y = b.slice(y, 3, 0, s[3] - 1)
        elif step == "split_concat" and s[3] >= 2:
            parts = b.split(y, 3, [1, s[3] - 1])
            y = b.op("Concat", [parts[1].name, parts[0].name], s, axis=3)
        elif step == "unsqueeze_squeeze":
            up = b.axes_op("Unsqueeze", y, [4], s + (1,), 13)
            y = b.axes_op("Squeeze", up, [4], s, 13)
        elif step == "identity_transpose":
            y = b.op("Transpose", [y.name], s, perm=[0, 1, 2, 3])
        elif step == "transposed_constant":
            stored = b.uniform((s[0] if isinstance(s[0], int) else 1, s[3], s[1], s[2]))
            folded = b.op("Transpose", [b.const(stored, "nchw", False)],
                          (stored.shape[0], s[1], s[2], s[3]), perm=to_nhwc)
            y = b.op("Mul", [y.name, folded.name], s)
    if b.draw(st.integers(0, 3)) == 0:
        # Two Transposes that compose to one: NHWC -> NWHC, then NWHC -> NCHW.
        nwhc = b.op("Transpose", [y.name], _t(y.shape, [0, 2, 1, 3]), perm=[0, 2, 1, 3])
        return b.op("Transpose", [nwhc.name], _t(nwhc.shape, [0, 3, 2, 1]), perm=[0, 3, 2, 1])
    return b.op("Transpose", [y.name], _t(y.shape, to_nchw), perm=to_nchw)


def motif_head(b: Builder, x: Value) -> Value:
    """A classifier head (ends the running tensor: its result is a graph output)."""
    n, c, h, w = x.shape
    source = x
    if b.draw(st.booleans()):
        source = b.op("Transpose", [x.name], _t(x.shape, [0, 2, 3, 1]), perm=[0, 2, 3, 1])
    features = c * h * w
    style = b.choose(["flatten", "reshape", "reshape_zero", "shape_computed"])
    # Reshape's allowzero (opset 14) left out or written at its default, 0 (a 0 copies the dim).
    allowzero = b.defaults(allowzero=0) if b.opset >= 14 else {}
    if style == "flatten":
        flat = b.op("Flatten", [source.name], (n, features), **b.defaults(axis=1))
    elif style == "reshape" and isinstance(n, int):
        flat = b.op("Reshape", [source.name, b.ints([n, -1])], (n, features), **allowzero)
    elif style == "shape_computed" and b.opset >= 13:
        (shape,) = b.node("Shape", [source.name])
        (batch,) = b.node("Gather", [shape, b.ints([0], "index")], axis=0)
        (target,) = b.node("Concat", [batch, b.ints([-1], "minus_one")], axis=0)
        flat = b.op("Reshape", [source.name, target], (n, features), **allowzero)
    else:
        flat = b.op("Reshape", [source.name, b.ints([0, -1])], (n, features), **allowzero)
    kind = b.choose(["MatMul", "Gemm"])
    scale = 1.5 / np.sqrt(features)
    # One scaling for every Gemm of the head (horizontal-fusion merges only equal alpha, beta and
    # transA): omitted, written at the defaults, or other values; transB differs per Gemm.
    scaling = {"omitted": {}, "defaults": {"alpha": 1.0, "beta": 1.0, "transA": 0},
               "scaled": {"alpha": 0.5, "beta": 2.0}}[b.choose(["omitted", "defaults", "scaled"])]
    branches = []
    for _ in range(b.draw(st.integers(1, 3))):
        units = b.draw(st.integers(1, 5))
        weights = b.uniform((features, units)) * scale
        if kind == "MatMul":
            branches.append(b.op("MatMul", [flat.name, b.const(weights, "fc_W")], (n, units)))
            continue
        trans_b = b.choose(["omitted", "written", "transposed"])
        attrs = dict(scaling)
        if trans_b != "omitted":
            attrs["transB"] = int(trans_b == "transposed")
        stored = weights.T if trans_b == "transposed" else weights
        inputs = [flat.name, b.const(stored, "fc_W")]
        if b.opset < 11 or b.choose([True, True, False]):  # C is optional from opset 11
            inputs.append(b.const(b.uniform((units,)), "fc_B"))
        branches.append(b.op("Gemm", inputs, (n, units), **attrs))
    if len(branches) >= 2 and b.draw(st.booleans()):
        # The heads side by side in one Concat on the last axis (spelled 1 or -1): the form
        # horizontal-fusion merges into one MatMul/Gemm whose Split concat-elimination removes.
        total = sum(v.shape[1] for v in branches)
        branches = [b.op("Concat", [v.name for v in branches], (n, total),
                         axis=b.choose([1, -1]))]
    for branch in branches:
        b.outputs.append(branch)
    return x


def motif_cleanup(b: Builder, x: Value) -> Value:
    kind = b.choose(["identity", "dropout", "dead", "constant_expression",
                                   "constant_kinds"])
    if kind == "identity":
        return b.op("Identity", [x.name], x.shape)
    if kind == "dropout":
        if b.opset >= 12 and b.draw(st.booleans()):
            mask = b.node("Dropout", [x.name], 2)
            return Value(mask[0], x.shape)
        return b.op("Dropout", [x.name], x.shape)
    if kind == "dead":
        b.op("Sigmoid", [x.name], x.shape)  # read by nothing
        return x
    if kind == "constant_expression":
        half = b.const(b.uniform((x.shape[1], 1, 1)) / 2, "half", False)
        doubled = b.op("Mul", [half, b.const(np.array(2.0), "two", False)], (x.shape[1], 1, 1))
        return b.op("Add", [x.name, doubled.name], x.shape)
    # Constant attribute kinds: value (a tensor) and value_int(s) (int64 reshape targets).
    target = (b.node("Constant", [], value_ints=[0, -1])[0] if b.opset >= 12
              else b.ints([0, -1]))
    n, c, h, w = x.shape
    flat = b.op("Reshape", [x.name, target], (n, c * h * w))
    if isinstance(n, int):  # back to 4-D by the Shape of the 4-D tensor (folds: all static)
        (shape,) = b.node("Shape", [x.name])
        back = b.op("Reshape", [flat.name, shape], x.shape)
    else:
        back = b.op("Reshape", [flat.name, b.ints([0, c, h, w])], x.shape)
    if b.opset >= 12 and b.dtype == TensorProto.FLOAT and b.draw(st.booleans()):  # value_float
        (scale,) = b.node("Constant", [], value_float=0.5)
        return b.op("Mul", [back.name, scale], x.shape)
    return back


def motif_subgraph(b: Builder, x: Value) -> Value:
    kind = b.choose(["if_constant", "if_computed", "loop"])
    elem = b.dtype
    shape = list(x.shape)

    def body(op: str, name: str) -> onnx.GraphProto:
        out = b.fresh(f"{name}_out")
        return helper.make_graph([helper.make_node(op, [x.name], [out], name=b.fresh(op.lower()))],
                                 b.fresh(name), [], [helper.make_tensor_value_info(out, elem, shape)])

    if kind in ("if_constant", "if_computed"):
        if kind == "if_constant":
            cond = b.fresh("cond")
            b.initializers.append(numpy_helper.from_array(np.array(bool(b.draw(st.booleans()))),
                                                          cond))
        else:
            total = b.node("ReduceSum", [x.name], keepdims=0)[0]
            cond = b.node("Greater", [total, b.const(np.array(0.0), "zero", False)])[0]
        (out,) = b.node("If", [cond], then_branch=body("Relu", "then"),
                        else_branch=body("Sigmoid", "else"))
        return Value(out, x.shape)
    # Loop: two iterations adding a constant to the carried tensor.
    carried_in, carried_out, cond_in, cond_out = (b.fresh(s) for s in ("v", "v_next", "c", "c_out"))
    step = b.fresh("step")
    iteration = b.fresh("iter")
    increment = numpy_helper.from_array(np.array(0.25, b.np_dtype), b.fresh("inc"))
    loop_body = helper.make_graph(
        [helper.make_node("Add", [carried_in, increment.name], [carried_out], name=b.fresh("add")),
         helper.make_node("Identity", [cond_in], [cond_out], name=b.fresh("identity"))],
        step, [helper.make_tensor_value_info(iteration, TensorProto.INT64, []),
               helper.make_tensor_value_info(cond_in, TensorProto.BOOL, []),
               helper.make_tensor_value_info(carried_in, elem, shape)],
        [helper.make_tensor_value_info(cond_out, TensorProto.BOOL, []),
         helper.make_tensor_value_info(carried_out, elem, shape)], [increment])
    (out,) = b.node("Loop", [b.ints(2, "trip"), "", x.name], body=loop_body)
    return Value(out, x.shape)


def motif_duplicates(b: Builder, x: Value) -> Value:
    """Equal subexpressions of ``x`` (common-subexpression-elimination), joined by an Add."""
    kind = b.choose(["chains", "equal_constants", "commuted", "graph_output"])
    if kind == "chains":  # merging the first ops makes the second ones equal
        op = b.choose(["Sigmoid", "Tanh", "Neg"])
        ends = [b.op("Abs", [b.op(op, [x.name], x.shape).name], x.shape) for _ in range(2)]
    elif kind == "equal_constants":
        values = b.uniform((x.shape[1], 1, 1), 0.5, 1.5)
        ends = [b.op("Mul", [x.name, b.const(values, "scale")], x.shape) for _ in range(2)]
    elif kind == "commuted":
        values = b.uniform((x.shape[1], 1, 1))
        ends = [b.op("Add", [x.name, b.const(values, "shift", False)], x.shape),
                b.op("Add", [b.const(values, "shift", False), x.name], x.shape)]
    else:  # the later of two equal nodes writes a graph output, which keeps its name
        ends = [b.op("Relu", [x.name], x.shape) for _ in range(2)]
        b.outputs.append(ends[1])
    return b.op("Add", [ends[0].name, ends[1].name], x.shape)


def motif_attention(b: Builder, x: Value) -> Value:
    """Scaled dot-product self-attention over the channels as tokens (features: the pixels), as
    transformers exports it: projected Q/K/V (each its own MatMul or flattened Gemm, or pieces of
    one merged projection) with or without biases split into heads, the key
    transposed in one or two steps, a scalar scale, an optional additive mask, float Casts of the
    probabilities, the heads merged and projected (with or without bias). Ends the running tensor:
    its result is a graph output."""
    n, c, h, w = x.shape
    features = h * w
    heads, size = b.draw(st.integers(1, 3)), b.draw(st.integers(2, 4))
    width = heads * size
    tokens = b.op("Reshape", [x.name, b.ints([0, c, features])], (n, c, features))
    spellings = [(0, 0, heads, size), (0, 0, -1, size)]
    if isinstance(n, int):
        spellings.append((n, c, -1, size))
    split = b.ints(list(b.choose(spellings)), "split")
    scale = 1.0 / np.sqrt(features)

    def linear(x: Value, inputs: int, outputs: int, bias: bool, base: str) -> Value:
        """``x W [+ b]`` over the last axis of ``x`` [n, c, inputs]: a MatMul (and an Add), or, in
        turn, the Gemm of a linear layer on the flattened tokens (GPT-2's Conv1D, the dynamo
        exporter's addmm)."""
        weights = b.uniform((inputs, outputs)) * (scale if base == "W" else 1.0)
        if b.choose(("matmul", "gemm")) == "matmul":
            y = b.op("MatMul", [x.name, b.const(weights, base)], (n, c, outputs))
            if bias:
                bias_name = b.const(b.uniform((outputs,)), "b")
                y = b.op("Add", [y.name, bias_name] if b.draw(st.booleans()) else [bias_name, y.name],
                         y.shape)
            return y
        flat = b.op("Reshape", [x.name, b.ints([-1, inputs])], ("NC", inputs))
        transposed = b.draw(st.booleans())
        operands = [flat.name, b.const(weights.T if transposed else weights, base)]
        if bias or b.opset < 11:  # (C is optional from Gemm-11)
            operands.append(b.const(b.uniform((outputs,)) if bias else np.zeros(outputs), "b"))
        y = b.op("Gemm", operands, ("NC", outputs), **({"transB": 1} if transposed else {}))
        return b.op("Reshape", [y.name, b.ints([-1, c, outputs])], (n, c, outputs))

    # The query, key and value each projected, or (in turn) one merged projection split along its
    # features, as GPT-2's c_attn writes them.
    pieces = []
    if b.choose((False, True)):
        qkv = linear(tokens, features, 3 * width, bool(b.draw(st.integers(0, 3))), "W")
        pieces = list(b.split(qkv, 2, [width] * 3))

    def head_split(perm_steps):
        if pieces:
            y = pieces.pop(0)
        else:
            y = linear(tokens, features, width, bool(b.draw(st.integers(0, 3))), "W")
        y = b.op("Reshape", [y.name, split], (n, c, heads, size))
        for perm in perm_steps:
            y = b.op("Transpose", [y.name], _t(y.shape, list(perm)), perm=list(perm))
        return y

    sdpa = b.choose([False, True])
    query = head_split([(0, 2, 1, 3)])
    if sdpa:
        key = head_split([(0, 2, 1, 3)])
        root = b.const(np.array(b.draw(st.sampled_from([0.5, 2.0]))), "root")
        query = b.op("Mul", [query.name, root], query.shape)
        if isinstance(n, int):  # transpose(-2, -1) as the exporter writes it
            folded = b.op("Reshape", [key.name, b.ints([-1, c, size])], (n * heads, c, size))
            folded = b.op("Transpose", [folded.name], (n * heads, size, c), perm=[0, 2, 1])
            key = b.op("Reshape", [folded.name, b.ints([n, heads, size, c])], (n, heads, size, c))
        else:
            key = b.op("Transpose", [key.name], (n, heads, size, c), perm=[0, 1, 3, 2])
        key = b.op("Mul", [key.name, root], key.shape)
    else:
        key = head_split(b.choose([((0, 2, 3, 1),), ((0, 2, 1, 3), (0, 1, 3, 2))]))
    value = head_split([(0, 2, 1, 3)])
    scores = b.op("MatMul", [query.name, key.name], (n, heads, c, c))
    if not sdpa:
        factor = b.const(np.array(b.draw(st.sampled_from([0.5, 2.0]))), "scale")
        scores = b.op(b.choose(["Mul", "Div"]), [scores.name, factor], scores.shape)
    # Additive masks of every rank the scores [N, heads, query, key] broadcast with: a scalar,
    # per key (rank 1, 3 or 4, the key padding mask), per query, per (query, key), per head.
    mask_shapes = {"none": None, "scalar": (), "keys": (c,), "full": (1, 1, c, c),
                   "rows": (1, 1, 1, c), "matrix": (c, c), "row": (1, c), "queries": (c, 1),
                   "keys3": (1, 1, c), "heads": (heads, c, c), "head_keys": (1, heads, 1, c)}
    shape = mask_shapes[b.choose(list(mask_shapes))]
    if shape is not None:
        masked, values = b.uniform(shape) < -0.6, b.uniform(shape)
        # -1e4 (a padded key) only where the mask varies along the keys, and never on the first
        # key: -1e4 added to a whole row of scores leaves them 3 digits in float32, and the
        # rounding of either layout then decides the result (an ill-conditioned model, not a
        # rewrite's error).
        if len(shape) and shape[-1] == c and c > 1:
            masked[..., 0] = False
            values = np.where(masked, -1e4, values)
        elif sdpa:
            masked = np.zeros(shape, bool)
        if sdpa:  # the boolean mask: 0 where kept, the lowest value (or -inf) where masked
            keep = b.fresh("keep")
            b.initializers.append(numpy_helper.from_array(~np.asarray(masked), keep))
            fill = b.choose([float(np.finfo(b.np_dtype).min), -np.inf])
            mask = b.op("Where", [keep, b.const(np.array(0.0), "zero"), b.const(np.array(fill), "fill")],
                        shape).name
        else:
            mask = b.const(values, "mask")
        scores = b.op("Add", [scores.name, mask], scores.shape)
    # The key axis as -1 or 3, or omitted: the last axis from opset 13, axis 1 (coerced to 2-D)
    # below, which is no attention over the keys and must be left alone.
    axis = b.choose([-1, 3, None])
    probabilities = b.op("Softmax", [scores.name], scores.shape,
                         **({} if axis is None else {"axis": axis}))
    if sdpa:  # Where(IsNaN(P), 0, P)
        isnan = b.node("IsNaN", [probabilities.name])[0]
        probabilities = b.op("Where", [isnan, b.const(np.array(0.0), "zero"), probabilities.name],
                             probabilities.shape)
    for _ in range(b.draw(st.integers(0, 2))):
        probabilities = b.op("Cast", [probabilities.name], probabilities.shape, to=b.dtype)
    context = b.op("MatMul", [probabilities.name, value.name], (n, heads, c, size))
    merged = b.op("Transpose", [context.name], (n, c, heads, size), perm=[0, 2, 1, 3])
    merged = b.op("Reshape", [merged.name, b.ints([0, 0, width])], (n, c, width))
    units = b.draw(st.integers(1, 5))
    out = linear(merged, width, units, b.draw(st.booleans()), "Wo")
    b.outputs.append(out)
    return x


def motif_grouped_attention(b: Builder, x: Value) -> Value:
    """Grouped-query self-attention over the channels as tokens (Llama's form): fewer key/value
    heads than query heads, each repeated by ``Unsqueeze-Expand-Reshape`` before the scores and
    context MatMuls; the projections each a MatMul (with or without bias) or the pieces (Slices or
    a Split) of one merged projection; rotary embeddings on the query and key or none; the eager
    form or the dynamo exporter's (the key's repeat Reshape merged into its axis swap, operands
    scaled by the root of the scale, a NaN guard); an optional additive mask. Needs a static
    batch. Ends the running tensor: its result is a graph output."""
    n, c, h, w = x.shape
    features = h * w
    groups, kv, size = b.choose([2, 3]), b.choose([1, 2]), b.choose([2, 4])
    heads = kv * groups
    widths = {"q": heads * size, "k": kv * size, "v": kv * size}
    tokens = b.op("Reshape", [x.name, b.ints([n, c, features])], (n, c, features))
    scale = 1.0 / np.sqrt(features)

    def linear(width: int, bias: bool) -> Value:
        y = b.op("MatMul", [tokens.name, b.const(b.uniform((features, width)) * scale, "W")],
                 (n, c, width))
        if bias:
            y = b.op("Add", [y.name, b.const(b.uniform((width,)), "b")], y.shape)
        return y

    bias = b.choose([False, True])
    merged = b.choose(["separate", "slices", "split"])
    if merged == "separate":
        projected = {role: linear(widths[role], bias) for role in "qkv"}
    else:
        qkv = linear(sum(widths.values()), bias)
        if merged == "split":
            projected = dict(zip("qkv", b.split(qkv, 2, list(widths.values()))))
        else:
            projected, start = {}, 0
            for role in "qkv":
                stop = start + widths[role]
                projected[role] = b.op("Slice", [qkv.name, b.ints([start]), b.ints([stop]),
                                                 b.ints([2])], (n, c, widths[role]))
                start = stop
    split_heads = {}
    # The head splits written three ways: the head count inferred (the query), the head size
    # inferred (the key: view(B, S, H, -1)), both given (the value).
    targets = {"q": [n, c, -1, size], "k": [n, c, kv, -1], "v": [n, c, kv, size]}
    for role in "qkv":
        y = b.op("Reshape", [projected[role].name, b.ints(targets[role])],
                 (n, c, widths[role] // size, size))
        split_heads[role] = b.op("Transpose", [y.name], _t(y.shape, [0, 2, 1, 3]), perm=[0, 2, 1, 3])
    if b.choose([False, True]):  # rotary embeddings: x cos + rotate_half(x) sin
        cos, sin = b.const(b.uniform((1, 1, c, size)), "cos"), b.const(b.uniform((1, 1, c, size)), "sin")
        half, end, axis = b.ints([size // 2]), b.ints([INT64_MAX]), b.ints([3])
        for role in "qk":
            t = split_heads[role]
            low = b.op("Slice", [t.name, b.ints([0]), half, axis], t.shape[:3] + (size // 2,))
            high = b.op("Slice", [t.name, half, end, axis], low.shape)
            high = b.op("Neg", [high.name], high.shape)
            rotated = b.op("Concat", [high.name, low.name], t.shape, axis=-1)
            rotated = b.op("Mul", [rotated.name, sin], t.shape)
            split_heads[role] = b.op("Add", [b.op("Mul", [t.name, cos], t.shape).name, rotated.name],
                                     t.shape)
    sdpa = b.choose([False, True])
    repeated = {}
    for role in "kv":
        t = split_heads[role]
        unsqueezed = b.op("Unsqueeze", [t.name, b.ints([2])], (n, kv, 1, c, size)) if b.opset >= 13 \
            else b.op("Unsqueeze", [t.name], (n, kv, 1, c, size), axes=[2])
        expanded = b.op("Expand", [unsqueezed.name, b.ints([n, kv, groups, c, size])],
                        (n, kv, groups, c, size))
        if sdpa and role == "k":  # the repeat's Reshape is the swap's first one
            folded = b.op("Reshape", [expanded.name, b.ints([n * heads, c, size])], (n * heads, c, size))
            folded = b.op("Transpose", [folded.name], (n * heads, size, c), perm=[0, 2, 1])
            repeated[role] = b.op("Reshape", [folded.name, b.ints([n, heads, size, c])],
                                  (n, heads, size, c))
        else:
            repeated[role] = b.op("Reshape", [expanded.name, b.ints([n, heads, c, size])],
                                  (n, heads, c, size))
    query = split_heads["q"]
    if sdpa:
        root = b.const(np.array(b.draw(st.sampled_from([0.5, 2.0]))), "root")
        query = b.op("Mul", [query.name, root], query.shape)
        key = b.op("Mul", [repeated["k"].name, root], repeated["k"].shape)
    else:
        key = b.op("Transpose", [repeated["k"].name], (n, heads, size, c), perm=[0, 1, 3, 2])
    scores = b.op("MatMul", [query.name, key.name], (n, heads, c, c))
    if not sdpa:
        scores = b.op("Mul", [scores.name, b.const(np.array(0.5), "scale")], scores.shape)
    if b.choose([False, True]):
        scores = b.op("Add", [scores.name, b.const(b.uniform((1, 1, c, c)), "mask")], scores.shape)
    probabilities = b.op("Softmax", [scores.name], scores.shape, axis=-1)
    if sdpa:
        isnan = b.node("IsNaN", [probabilities.name])[0]
        probabilities = b.op("Where", [isnan, b.const(np.array(0.0), "zero"), probabilities.name],
                             probabilities.shape)
    context = b.op("MatMul", [probabilities.name, repeated["v"].name], (n, heads, c, size))
    context = b.op("Transpose", [context.name], (n, c, heads, size), perm=[0, 2, 1, 3])
    context = b.op("Reshape", [context.name, b.ints([n, c, heads * size])], (n, c, heads * size))
    out = b.op("MatMul", [context.name, b.const(b.uniform((heads * size, 3)), "Wo")], (n, c, 3))
    b.outputs.append(out)
    return x


#: Motifs drawn only when a test asks for them (a test of one pass's pattern): not in MOTIFS, so the
#: models every other test draws stay the same.
EXTRA_MOTIFS = ("grouped_attention",)
MOTIF_FUNCTIONS = {name: globals()[f"motif_{name}"] for name in (*MOTIFS, *EXTRA_MOTIFS)}


class RewriteModel:
    """A generated model with what the test needs: its dynamic dims and repr as ONNX text."""

    def __init__(self, model: onnx.ModelProto, dynamic: bool, motifs: list[str]):
        self.model = model
        self.dynamic = dynamic
        self.motifs = motifs

    def __repr__(self) -> str:
        import onnx.printer

        return f"\n# motifs: {self.motifs}\n" + onnx.printer.to_text(self.model)


@st.composite
def rewrite_models(draw, max_motifs: int = 4, enabled_defects: frozenset = frozenset(),
                   motifs: tuple[str, ...] = MOTIFS, opsets: tuple[int, ...] = OPSETS,
                   dtypes: tuple[str, ...] = ("float32", "float16", "float32", "float64"),
                   batches: tuple[int, ...] = (1, 2), dynamic_batch: bool = True) -> RewriteModel:
    """A random valid model whose motifs give the passes' rewrite rules something to rewrite.

    ``motifs``, ``opsets``, ``dtypes`` and the batch (one of ``batches``, or half the time a
    dynamic ``N`` with ``dynamic_batch``) narrow the draw, for a test that needs one pass's
    pattern in every example rather than in a few of them."""
    # The model's outline: opset, dtype and distinct motifs in a drawn order (a permutation
    # spreads motifs evenly over a short derandomized run; lists of sampled_from lean towards the
    # first and last choices and leave most motifs unexercised).
    opset = draw(st.sampled_from(opsets))
    dtype_name = draw(st.sampled_from(dtypes))
    b = Builder(draw, opset, DTYPES[dtype_name], draw(st.integers(0, 2**16)),
                frozenset(enabled_defects))
    dynamic = draw(st.booleans()) if dynamic_batch else False
    batch = "N" if dynamic else draw(st.sampled_from(batches))
    channels = draw(st.integers(1, 6))
    height, width = draw(st.integers(3, 7)), draw(st.integers(3, 7))
    x = Value("input", (batch, channels, height, width))
    allowed = [m for m in motifs if dtype_name != "float64" or m not in NEEDS_CONV]
    count = draw(st.integers(min(2, max_motifs, len(allowed)), min(max_motifs, len(allowed))))
    chosen = draw(st.permutations(allowed))[:count]
    current = x
    for motif in chosen:
        current = MOTIF_FUNCTIONS[motif](b, current)
    if current.name != x.name or not b.outputs:
        b.outputs.append(current)

    def info(value: Value) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(value.name, b.dtype, list(value.shape))

    outputs = list({v.name: v for v in b.outputs}.values())
    graph = helper.make_graph(b.nodes, "differential", [info(x)], [info(v) for v in outputs],
                              b.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              ir_version=11 if opset >= 22 else 10,
                              producer_name="trtcompile-differential-tests")
    if draw(st.booleans()):
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    return RewriteModel(model, dynamic, chosen)
