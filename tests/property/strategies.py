"""Hypothesis strategies that generate random, valid, CNN-like ONNX models.

:func:`cnn_models` draws a model layer by layer. Each layer picks its inputs among the tensors built
so far (the most recent one by default, so shrinking turns DAGs into chains) and records the shapes
of what it produces, so every generated model is valid by construction:

* chains and DAGs of Conv with varied kernels, strides, pads (explicit, ``SAME_UPPER``, ``VALID``),
  groups (depthwise included) and dilations, with or without a bias input, with weights given as
  initializers, ``Constant`` nodes or foldable constant expressions;
* bias Adds (per-channel and not), per-channel Mul/Div/Sub, BatchNormalization, PRelu;
* activations (Relu, LeakyRelu, Clip, Sigmoid, Tanh, HardSigmoid, HardSwish, Elu, Softplus, swish);
* Max/Average/Global pools, squeeze-and-excitation blocks;
* residual Adds, parallel branches of identical convolutions sharing one input;
* Concat and Split on varied axes, Concat followed by the Split that undoes it;
* Transposes: random permutations, inverse pairs, NHWC sandwiches around elementwise layers;
* Reshape round trips, Flatten/Reshape (constant or computed from ``Shape``) heads with Gemm or
  MatMul+Add and Softmax;
* Identity and inference Dropout;
* dead branches, several outputs, outputs that later layers also read, unused graph inputs;
* intermediate shapes (``value_info``) present or absent;
* attributes the passes read left out (at their ONNX default) or written out: activation
  ``alpha``/``beta``, BatchNormalization ``epsilon``, Conv defaults, AveragePool ``ceil_mode`` and
  ``count_include_pad``, the squeeze's ReduceMean ``keepdims``, Flatten and Softmax ``axis``,
  Gemm ``transA``/``transB``/``alpha``/``beta``.

Every choice is drawn so that hypothesis shrinks it towards the simplest variant (fewer layers, the
first op of each list, kernel 1, stride 1, no padding, group 1, the most recent tensor), which is
what turns a failing example into a small regression case.

Shapes stay small (spatial 4..12, channels 1..8) so one example runs in milliseconds.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

#: Opset and IR version of the generated models (what tf2onnx writes, what ONNX Runtime loads).
OPSET = 17
IR_VERSION = 10

#: Layer kinds, simplest first (hypothesis shrinks a ``sampled_from`` towards its first element).
LAYER_KINDS = (
    "activation", "conv", "bias_add", "batchnorm", "scale", "pool", "residual_add", "branches",
    "concat", "split", "transpose", "identity", "reshape", "squeeze_excitation", "head",
)

ACTIVATIONS = (
    "Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu", "Softplus",
    "Swish", "PRelu",
)

#: Upper bound on any channel-like dimension a Concat may create, to keep weights small.
MAX_CONCAT_DIM = 24


@dataclass(frozen=True)
class Value:
    """A float tensor of the model under construction: its name and static shape."""

    name: str
    shape: tuple[int, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)


class CnnBuilder:
    """Accumulates nodes, initializers and the tensors later layers may read."""

    def __init__(self, draw, seed: int):
        self.draw = draw
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[Value] = []
        self.values: list[Value] = []
        self._ids = itertools.count()

    # Naming and emission ---------------------------------------------------------------------

    def fresh(self, base: str) -> str:
        return f"{base}_{next(self._ids)}"

    def node(self, op: str, inputs: list[str], n_outputs: int = 1, **attrs) -> list[str]:
        """Append a named node; return its output names."""
        name = self.fresh(op.lower())
        outputs = [self.fresh("t") for _ in range(n_outputs)]
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, **attrs))
        return outputs

    def emit(self, op: str, inputs: list[str], shape: tuple[int, ...], **attrs) -> Value:
        """Append a single-output node producing a float tensor of ``shape`` and make it readable."""
        (output,) = self.node(op, inputs, **attrs)
        value = Value(output, tuple(shape))
        self.values.append(value)
        return value

    def initializer(self, array: np.ndarray, base: str = "w") -> str:
        name = self.fresh(base)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def weight(self, array: np.ndarray, base: str = "w", foldable: bool = True) -> str:
        """A float constant as an initializer, a Constant node, or a constant expression.

        The constant expressions (``Mul`` of two initializers, ``Transpose`` of an initializer)
        are what fold-constants is for; downstream passes must see through or wait for them.
        """
        array = array.astype(np.float32)
        source = self.draw(st.integers(0, 5)) if foldable else 0
        if source == 4:
            (out,) = self.node("Constant", [], value=numpy_helper.from_array(array, self.fresh("c")))
            return out
        if source == 5:
            half = (array / 2).astype(np.float32)
            (out,) = self.node("Mul", [self.initializer(half, base),
                                       self.initializer(np.array(2.0, np.float32), "two")])
            return out
        if source == 3 and array.ndim >= 2:
            perm = list(range(array.ndim))
            perm[0], perm[1] = perm[1], perm[0]
            stored = np.ascontiguousarray(array.transpose(perm))
            (out,) = self.node("Transpose", [self.initializer(stored, base)], perm=perm)
            return out
        return self.initializer(array, base)

    def ints(self, values, base: str = "shape") -> str:
        return self.initializer(np.asarray(values, dtype=np.int64), base)

    def uniform(self, shape, low: float = -1.0, high: float = 1.0) -> np.ndarray:
        return self.rng.uniform(low, high, size=shape).astype(np.float32)

    # Picking inputs --------------------------------------------------------------------------

    def pick(self, predicate=lambda value: True) -> Value | None:
        """A readable tensor satisfying ``predicate``; shrinks towards the most recent one."""
        candidates = [v for v in self.values if predicate(v)]
        if not candidates:
            return None
        back = self.draw(st.integers(0, len(candidates) - 1))
        return candidates[-1 - back]


def _conv_output(size: int, kernel: int, stride: int, dilation: int, pad_total: int) -> int:
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


# --------------------------------------------------------------------------------------------
# Layers. Each takes the builder and returns nothing; a layer that cannot apply to the current
# tensors falls back to an activation so every drawn layer adds something.
# --------------------------------------------------------------------------------------------


def _is_4d(value: Value) -> bool:
    return value.rank == 4


def _written(**attrs) -> dict:
    """The attributes given a value; None leaves one out (at its ONNX default), so every pass
    that reads it sees both forms."""
    return {name: value for name, value in attrs.items() if value is not None}


def layer_activation(b: CnnBuilder, x: Value | None = None, kind: str | None = None) -> Value:
    x = x or b.pick()
    kind = kind or b.draw(st.sampled_from(ACTIVATIONS))
    if kind == "LeakyRelu":  # alpha omitted (0.01), or written
        return b.emit("LeakyRelu", [x.name], x.shape,
                      **_written(alpha=b.draw(st.sampled_from([None, 0.1, 0.01, 0.3]))))
    if kind == "Clip":
        low, high = b.draw(st.sampled_from([(0.0, 6.0), (-1.0, 1.0), (0.0, None), (None, 0.5)]))
        inputs = [x.name,
                  b.initializer(np.array(low, np.float32), "min") if low is not None else "",
                  b.initializer(np.array(high, np.float32), "max") if high is not None else ""]
        while inputs[-1] == "":
            inputs.pop()
        return b.emit("Clip", inputs, x.shape)
    if kind == "HardSigmoid":  # the defaults (0.2, 0.5) omitted or written, or others
        alpha, beta = b.draw(st.sampled_from([(None, None), (0.2, 0.5), (0.3, 0.4)]))
        return b.emit("HardSigmoid", [x.name], x.shape, **_written(alpha=alpha, beta=beta))
    if kind == "Elu":  # alpha omitted (1.0), or written
        return b.emit("Elu", [x.name], x.shape,
                      **_written(alpha=b.draw(st.sampled_from([None, 1.0, 0.5]))))
    if kind == "Swish":
        gate = b.emit("Sigmoid", [x.name], x.shape)
        b.values.pop()  # the gate is internal to the swish
        return b.emit("Mul", [x.name, gate.name], x.shape)
    if kind == "PRelu":
        slope_shape = (x.shape[1], 1, 1) if x.rank == 4 else (x.shape[-1],)
        return b.emit("PRelu", [x.name, b.weight(b.uniform(slope_shape, 0.0, 0.5), "slope")], x.shape)
    return b.emit(kind, [x.name], x.shape)


def layer_conv(b: CnnBuilder, x: Value | None = None, spec: dict | None = None) -> Value:
    x = x or b.pick(_is_4d)
    if x is None:
        return layer_activation(b)
    n, c, h, w = x.shape
    spec = spec or draw_conv_spec(b, c, h, w)
    c_out, group = spec["c_out"], spec["group"]
    (kh, kw), (sh, sw), (dh, dw) = spec["kernel"], spec["strides"], spec["dilations"]
    fan_in = (c // group) * kh * kw
    weights = b.uniform((c_out, c // group, kh, kw)) * (1.5 / np.sqrt(fan_in))
    inputs = [x.name, b.weight(weights, "W")]
    if spec["bias"]:
        inputs.append(b.weight(b.uniform((c_out,)), "B"))
    attrs = {}
    if spec["spell_defaults"] or (kh, kw) != (1, 1):
        attrs["kernel_shape"] = [kh, kw]
    if spec["spell_defaults"] or (sh, sw) != (1, 1):
        attrs["strides"] = [sh, sw]
    if spec["spell_defaults"] or (dh, dw) != (1, 1):
        attrs["dilations"] = [dh, dw]
    if spec["spell_defaults"] or group != 1:
        attrs["group"] = group
    if spec["auto_pad"] == "NOTSET":
        if spec["spell_defaults"] or any(spec["pads"]):
            attrs["pads"] = list(spec["pads"])
    else:
        attrs["auto_pad"] = spec["auto_pad"]
    return b.emit("Conv", inputs, (n, c_out, *spec["out_hw"]), **attrs)


def draw_conv_spec(b: CnnBuilder, c: int, h: int, w: int, c_out: int | None = None) -> dict:
    """Draw valid Conv attributes for an input of ``c`` channels and ``h`` x ``w`` pixels."""
    draw = b.draw
    divisors = [d for d in range(1, c + 1) if c % d == 0]
    group = draw(st.sampled_from(divisors))
    if c_out is None:
        c_out = group * draw(st.integers(1, max(1, 8 // group)))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    strides = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    dilations = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    auto_pad = {6: "SAME_UPPER", 7: "VALID"}.get(draw(st.integers(0, 7)), "NOTSET")
    pads = [draw(st.integers(0, min(2, (kernel[i % 2] - 1) * dilations[i % 2]))) for i in range(4)]
    spec = {"c_out": c_out, "group": group, "kernel": kernel, "strides": strides,
            "dilations": dilations, "auto_pad": auto_pad, "pads": pads,
            "bias": draw(st.booleans()), "spell_defaults": draw(st.booleans())}
    if auto_pad == "SAME_UPPER" and dilations != (1, 1):
        # ONNX Runtime implements SAME padding only without dilation.
        spec["auto_pad"] = auto_pad = "NOTSET"
    out = []
    for axis, size in enumerate((h, w)):
        k, s, d = kernel[axis], strides[axis], dilations[axis]
        if auto_pad == "SAME_UPPER":
            out.append(-(-size // s))
        elif auto_pad == "VALID":
            out.append(_conv_output(size, k, s, d, 0))
        else:
            out.append(_conv_output(size, k, s, d, pads[axis] + pads[axis + 2]))
    if min(out) < 1:  # the kernel does not fit: fall back to a pointwise convolution
        spec.update(kernel=(1, 1), strides=(1, 1), dilations=(1, 1), auto_pad="NOTSET",
                    pads=[0, 0, 0, 0])
        out = [h, w]
    spec["out_hw"] = tuple(out)
    return spec


def layer_bias_add(b: CnnBuilder) -> Value:
    x = b.pick()
    if x.rank == 4:
        c = x.shape[1]
        shapes = [(1, c, 1, 1), (c, 1, 1), (1,), (1, 1, 1, x.shape[3]), tuple(x.shape)]
    else:
        shapes = [(x.shape[-1],), (1, x.shape[-1]), (1,)]
    bias = b.weight(b.uniform(b.draw(st.sampled_from(shapes))), "bias")
    inputs = [x.name, bias] if b.draw(st.booleans()) else [bias, x.name]
    return b.emit("Add", inputs, x.shape)


def layer_scale(b: CnnBuilder) -> Value:
    x = b.pick()
    shape = (x.shape[1], 1, 1) if x.rank == 4 else (x.shape[-1],)
    op = b.draw(st.sampled_from(["Mul", "Div", "Sub"]))
    operand = b.weight(b.uniform(shape, 0.5, 1.5), "scale")
    return b.emit(op, [x.name, operand], x.shape)


def layer_batchnorm(b: CnnBuilder) -> Value:
    x = b.pick(_is_4d)
    if x is None:
        return layer_activation(b)
    c = x.shape[1]
    params = [b.weight(b.uniform((c,), 0.5, 1.5), "gamma"), b.weight(b.uniform((c,)), "beta"),
              b.weight(b.uniform((c,), -0.5, 0.5), "mean"),
              b.weight(b.uniform((c,), 0.5, 1.5), "var")]
    epsilon = b.draw(st.sampled_from([None, 1e-5, 1e-3]))  # omitted: 1e-5
    return b.emit("BatchNormalization", [x.name, *params], x.shape, **_written(epsilon=epsilon))


def layer_pool(b: CnnBuilder) -> Value:
    x = b.pick(_is_4d)
    if x is None:
        return layer_activation(b)
    n, c, h, w = x.shape
    op = b.draw(st.sampled_from(["MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"]))
    if op.startswith("Global"):
        return b.emit(op, [x.name], (n, c, 1, 1))
    kernel = [min(b.draw(st.integers(1, 3)), h), min(b.draw(st.integers(1, 3)), w)]
    strides = [b.draw(st.integers(1, 2)), b.draw(st.integers(1, 2))]
    pads = [b.draw(st.integers(0, min(1, kernel[i % 2] - 1))) for i in range(4)]
    out = [_conv_output(size, kernel[i], strides[i], 1, pads[i] + pads[i + 2])
           for i, size in enumerate((h, w))]
    attrs = {"kernel_shape": kernel, "strides": strides, "pads": pads}
    if op == "AveragePool":
        attrs.update(_written(count_include_pad=b.draw(st.sampled_from([None, 0, 1])),
                              ceil_mode=b.draw(st.sampled_from([None, 0]))))
    return b.emit(op, [x.name], (n, c, *out), **attrs)


def layer_residual_add(b: CnnBuilder) -> Value:
    x = b.pick()
    y = b.pick(lambda v: v.shape == x.shape)
    op = b.draw(st.sampled_from(["Add", "Mul"]))
    return b.emit(op, [x.name, y.name], x.shape)


def layer_branches(b: CnnBuilder) -> Value:
    """Parallel convolutions with equal attributes reading one tensor (an Inception block)."""
    x = b.pick(_is_4d)
    if x is None:
        return layer_activation(b)
    n, c, h, w = x.shape
    spec = draw_conv_spec(b, c, h, w)
    activation = b.draw(st.sampled_from((None, "Relu", "Clip", "LeakyRelu", "Sigmoid")))
    alpha = 0.1
    branches = []
    for _ in range(b.draw(st.integers(2, 3))):
        c_out = spec["group"] * b.draw(st.integers(1, max(1, 8 // spec["group"])))
        branch = layer_conv(b, x, dict(spec, c_out=c_out))
        if activation == "LeakyRelu":
            branch = b.emit("LeakyRelu", [branch.name], branch.shape, alpha=alpha)
        elif activation == "Clip":
            branch = b.emit("Clip", [branch.name, b.initializer(np.array(0, np.float32), "min"),
                                     b.initializer(np.array(6, np.float32), "max")], branch.shape)
        elif activation is not None:
            branch = b.emit(activation, [branch.name], branch.shape)
        branches.append(branch)
    if b.draw(st.booleans()):
        total = sum(v.shape[1] for v in branches)
        return b.emit("Concat", [v.name for v in branches], (n, total, *spec["out_hw"]), axis=1)
    return branches[-1]


def layer_concat(b: CnnBuilder) -> Value:
    x = b.pick()
    axis = b.draw(st.integers(1, x.rank - 1))

    def same_except_axis(v: Value) -> bool:
        return v.rank == x.rank and all(v.shape[i] == x.shape[i] for i in range(x.rank) if i != axis)

    parts = [x]
    for _ in range(b.draw(st.integers(0, 2))):
        parts.append(b.pick(same_except_axis))
    size = sum(p.shape[axis] for p in parts)
    if size > MAX_CONCAT_DIM:
        parts, size = [x], x.shape[axis]
    shape = list(x.shape)
    shape[axis] = size
    attr_axis = axis - x.rank if b.draw(st.booleans()) else axis
    concat = b.emit("Concat", [p.name for p in parts], tuple(shape), axis=attr_axis)
    if len(parts) > 1 and b.draw(st.booleans()):
        # The Split that undoes the Concat: what concat elimination removes.
        sizes = [p.shape[axis] for p in parts]
        b.values.pop()
        outputs = b.node("Split", [concat.name, b.ints(sizes, "split")], len(parts), axis=axis)
        for name, part in zip(outputs, parts):
            b.values.append(Value(name, part.shape))
        return b.values[-1]
    return concat


def layer_split(b: CnnBuilder) -> Value:
    x = b.pick(lambda v: any(d >= 2 for d in v.shape[1:]))
    if x is None:
        return layer_activation(b)
    axes = [a for a in range(1, x.rank) if x.shape[a] >= 2]
    axis = b.draw(st.sampled_from(axes))
    dim = x.shape[axis]
    count = b.draw(st.integers(2, min(3, dim)))
    if dim % count == 0 and b.draw(st.booleans()):
        sizes = [dim // count] * count
        inputs = [x.name]
    else:
        cuts = sorted(b.draw(st.lists(st.integers(1, dim - 1), min_size=count - 1,
                                      max_size=count - 1, unique=True)))
        sizes = [hi - lo for lo, hi in zip([0, *cuts], [*cuts, dim])]
        inputs = [x.name, b.ints(sizes, "split")]
    outputs = b.node("Split", inputs, len(sizes), axis=axis)
    for name, size in zip(outputs, sizes):
        shape = list(x.shape)
        shape[axis] = size
        b.values.append(Value(name, tuple(shape)))
    return b.values[-1]


def _permuted(shape: tuple[int, ...], perm: list[int]) -> tuple[int, ...]:
    return tuple(shape[p] for p in perm)


def layer_transpose(b: CnnBuilder) -> Value:
    x = b.pick()
    kind = b.draw(st.sampled_from(["inverse_pair", "nhwc_sandwich", "random", "two_random"]))
    identity = list(range(x.rank))
    if kind == "nhwc_sandwich" and x.rank == 4:
        nhwc = b.emit("Transpose", [x.name], _permuted(x.shape, [0, 2, 3, 1]), perm=[0, 2, 3, 1])
        if b.draw(st.booleans()):
            inner = b.emit("Add", [nhwc.name, b.weight(b.uniform((x.shape[1],)), "bias")], nhwc.shape)
        else:
            inner = layer_activation(b, nhwc)
        return b.emit("Transpose", [inner.name], x.shape, perm=[0, 3, 1, 2])
    perm = b.draw(st.permutations(identity))
    first = b.emit("Transpose", [x.name], _permuted(x.shape, perm), perm=perm)
    if kind == "inverse_pair":
        inverse = [perm.index(i) for i in identity]
        return b.emit("Transpose", [first.name], x.shape, perm=inverse)
    if kind == "two_random":
        second = b.draw(st.permutations(identity))
        return b.emit("Transpose", [first.name], _permuted(first.shape, second), perm=second)
    return first


def layer_identity(b: CnnBuilder) -> Value:
    x = b.pick()
    kind = b.draw(st.sampled_from(["Identity", "Dropout", "DropoutMask"]))
    if kind == "Identity":
        return b.emit("Identity", [x.name], x.shape)
    if kind == "Dropout":
        return b.emit("Dropout", [x.name], x.shape)
    # Dropout with its (unused) mask output spelled out.
    output, _mask = b.node("Dropout", [x.name], 2)
    b.values.append(Value(output, x.shape))
    return b.values[-1]


def layer_reshape(b: CnnBuilder) -> Value:
    """A 4D -> 4D Reshape that is not a Transpose (swaps H and W by memory order)."""
    x = b.pick(_is_4d)
    if x is None:
        return layer_activation(b)
    n, c, h, w = x.shape
    target = b.draw(st.sampled_from([(n, c, w, h), (n, c, h * w, 1), (n, 1, c * h, w)]))
    spelled = list(target)
    if b.draw(st.booleans()):
        spelled[1] = -1
    if b.draw(st.booleans()):
        spelled[0] = 0
    return b.emit("Reshape", [x.name, b.ints(spelled)], target)


def layer_squeeze_excitation(b: CnnBuilder) -> Value:
    x = b.pick(_is_4d)
    if x is None:
        return layer_activation(b)
    n, c, _, _ = x.shape
    # The squeeze: a global pool, or a mean over the spatial axes with keepdims omitted (1) or 1.
    squeeze = b.draw(st.sampled_from(["GlobalAveragePool", "ReduceMean", "ReduceMean_keepdims"]))
    if squeeze == "GlobalAveragePool":
        pooled = b.emit("GlobalAveragePool", [x.name], (n, c, 1, 1))
    else:
        pooled = b.emit("ReduceMean", [x.name], (n, c, 1, 1), axes=[2, 3],
                        **({"keepdims": 1} if squeeze.endswith("keepdims") else {}))
    if b.draw(st.booleans()):
        spec = {"c_out": c, "group": 1, "kernel": (1, 1), "strides": (1, 1), "dilations": (1, 1),
                "auto_pad": "NOTSET", "pads": [0, 0, 0, 0], "bias": True, "spell_defaults": False,
                "out_hw": (1, 1)}
        pooled = layer_conv(b, pooled, spec)
    gate = b.emit("Sigmoid", [pooled.name], pooled.shape)
    return b.emit("Mul", [x.name, gate.name], x.shape)


def layer_head(b: CnnBuilder) -> Value:
    """Flatten (or Reshape) a feature map and apply a dense layer, as classifier heads do."""
    x = b.pick()
    if x.rank == 4:
        n = x.shape[0]
        features = int(np.prod(x.shape[1:]))
        style = b.draw(st.sampled_from(["flatten", "reshape", "reshape_zero", "shape_computed"]))
        if style == "flatten":  # axis omitted (1) or written
            flat = b.emit("Flatten", [x.name], (n, features),
                          **_written(axis=b.draw(st.sampled_from([None, 1]))))
        elif style in ("reshape", "reshape_zero"):
            spelled = [n, -1] if style == "reshape" else [0, -1]
            flat = b.emit("Reshape", [x.name, b.ints(spelled)], (n, features))
        else:
            # tf2onnx's dynamic-batch flatten: Shape -> Gather -> Unsqueeze -> Concat -> Reshape.
            (shape,) = b.node("Shape", [x.name])
            (batch,) = b.node("Gather", [shape, b.ints(0, "index")], axis=0)
            (batch_1d,) = b.node("Unsqueeze", [batch, b.ints([0], "axes")])
            (target,) = b.node("Concat", [batch_1d, b.ints([-1], "minus_one")], axis=0)
            flat = b.emit("Reshape", [x.name, target], (n, features))
        x = flat
    n, features = x.shape
    units = b.draw(st.integers(1, 8))
    scale = 1.5 / np.sqrt(features)
    if b.draw(st.booleans()):
        trans_b = b.draw(st.booleans())
        weights = b.uniform((units, features) if trans_b else (features, units)) * scale
        inputs = [x.name, b.weight(weights, "fc_W")]
        if b.draw(st.booleans()):
            inputs.append(b.weight(b.uniform((units,)), "fc_B"))
        # transB 1, or 0 omitted or written; alpha, beta and transA omitted, written at their
        # defaults, or alpha and beta scaling the product and C.
        attrs = {"transB": 1} if trans_b else _written(transB=b.draw(st.sampled_from([None, 0])))
        alpha, beta, trans_a = b.draw(st.sampled_from([(None, None, None), (1.0, 1.0, 0),
                                                       (0.5, 2.0, None)]))
        attrs.update(_written(alpha=alpha, beta=beta, transA=trans_a))
        dense = b.emit("Gemm", inputs, (n, units), **attrs)
    else:
        product = b.emit("MatMul", [x.name, b.weight(b.uniform((features, units)) * scale, "fc_W")],
                         (n, units))
        dense = b.emit("Add", [product.name, b.weight(b.uniform((units,)), "fc_B")], (n, units))
    if b.draw(st.booleans()):  # axis omitted (the last from opset 13) or written
        return b.emit("Softmax", [dense.name], dense.shape,
                      **_written(axis=b.draw(st.sampled_from([None, -1]))))
    return dense


LAYERS = {
    "activation": layer_activation, "conv": layer_conv, "bias_add": layer_bias_add,
    "batchnorm": layer_batchnorm, "scale": layer_scale, "pool": layer_pool,
    "residual_add": layer_residual_add, "branches": layer_branches, "concat": layer_concat,
    "split": layer_split, "transpose": layer_transpose, "identity": layer_identity,
    "reshape": layer_reshape, "squeeze_excitation": layer_squeeze_excitation, "head": layer_head,
}
assert tuple(LAYERS) == LAYER_KINDS


class CnnModel:
    """A generated model; its repr is the model's ONNX text, so falsifying examples read as graphs."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model

    def __repr__(self) -> str:
        import onnx.printer

        return "\n" + onnx.printer.to_text(self.model)


@st.composite
def cnn_models(draw, max_layers: int = 10, max_inputs: int = 2) -> CnnModel:
    """A random valid CNN-like ONNX model (opset 17, IR 10) with static shapes, float32 I/O."""
    builder = CnnBuilder(draw, seed=draw(st.integers(0, 2**16)))
    batch = draw(st.sampled_from([1, 2]))
    channels = draw(st.integers(1, 8))
    height, width = draw(st.integers(4, 12)), draw(st.integers(4, 12))
    for index in range(draw(st.integers(1, max_inputs))):
        shape = (batch, channels, height, width)
        if index and draw(st.booleans()):  # a second input with its own channel count
            shape = (batch, draw(st.integers(1, 8)), height, width)
        value = Value("input" if index == 0 else f"input_{index}", shape)
        builder.inputs.append(value)
        builder.values.append(value)

    for _ in range(draw(st.integers(1, max_layers))):
        LAYERS[draw(st.sampled_from(LAYER_KINDS))](builder)

    input_names = {v.name for v in builder.inputs}
    produced = [v for v in builder.values if v.name not in input_names]
    outputs = [produced[-1]]
    # Unread tensors are dead branches unless they become outputs: keep a few of each.
    read = {name for node in builder.nodes for name in node.input}
    for leaf in [v for v in reversed(produced[:-1]) if v.name not in read][:3]:
        if draw(st.integers(0, 3)):  # mostly outputs; shrinks towards a dead branch
            outputs.append(leaf)
    # Outputs that later layers also read.
    for _ in range(draw(st.integers(0, 1))):
        extra = produced[-1 - draw(st.integers(0, len(produced) - 1))]
        if extra not in outputs:
            outputs.append(extra)

    def info(value: Value) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(value.name, TensorProto.FLOAT, list(value.shape))

    graph = helper.make_graph(builder.nodes, "property_cnn", [info(v) for v in builder.inputs],
                              [info(v) for v in outputs], builder.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION, producer_name="trtcompile-property-tests")
    if draw(st.booleans()):
        # Shapes of intermediate tensors, as exporters write them: passes with shape-dependent
        # rules (SAME padding, negative axes, broadcast checks) take their other branch.
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    return CnnModel(model)
