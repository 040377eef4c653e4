"""conv-bias-activation-fusion: a Conv, its affine epilogue and its activation become one fused layer.

Besides the pass, this module owns the fused-convolution convention the other passes build on
(horizontal fusion merges calls of the same function, int8 quantization rewrites their weights):

* :func:`conv_function` builds (or reuses) the model-local function ``trtcompile.ConvBias<Act>_<key>``
  whose body is ``Conv(x, w, b)`` with every attribute explicit, followed by the activation;
* :func:`conv_call_info` reads a call of such a function back into a :class:`ConvCallInfo`.
"""

from __future__ import annotations

import contextlib
import gc
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from trtcompile import ir
from trtcompile.errors import InputError
from trtcompile.pass_manager import Pass, PassContext, PassResult

# --------------------------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Activation:
    """An activation the fused layer can end with: its ONNX op, option name and parameters."""

    op: str  # ONNX op type
    option: str  # kebab-case name in the ``activations`` option
    title: str  # CamelCase word in the function name
    params: tuple[tuple[str, str, float | None], ...] = ()  # (param, name tag, ONNX default)


_ACTIVATIONS: dict[str, _Activation] = {a.op: a for a in (
    _Activation("Relu", "relu", "Relu"),
    _Activation("Clip", "clip", "Clip", (("min", "lo", None), ("max", "hi", None))),
    _Activation("LeakyRelu", "leaky-relu", "LeakyRelu", (("alpha", "a", 0.01),)),
    _Activation("Sigmoid", "sigmoid", "Sigmoid"),
    _Activation("Tanh", "tanh", "Tanh"),
    _Activation("HardSigmoid", "hard-sigmoid", "HardSigmoid", (("alpha", "a", 0.2), ("beta", "b", 0.5))),
    _Activation("HardSwish", "hard-swish", "HardSwish"),
    _Activation("Elu", "elu", "Elu", (("alpha", "a", 1.0),)),
)}
_ACTIVATION_BY_OPTION = {a.option: a for a in _ACTIVATIONS.values()}

#: Option names of every activation the pass can fuse (the default of ``activations``).
ACTIVATION_NAMES: tuple[str, ...] = tuple(_ACTIVATION_BY_OPTION)

#: The attributes every fused conv body states explicitly, in name order.
CONV_ATTRS = ("kernel_shape", "strides", "pads", "dilations", "group")


def _number_tag(value: float) -> str:
    """A float as it may appear in a function name: ``0.1`` -> ``0p1``, ``-1.5`` -> ``m1p5``."""
    if math.isinf(value):
        return "minf" if value < 0 else "inf"
    text = np.format_float_positional(np.float32(value), trim="-")
    return text.replace("-", "m").replace(".", "p")


# --------------------------------------------------------------------------------------------
# Fused conv functions: build and read back
# --------------------------------------------------------------------------------------------


@dataclass
class ConvCallInfo:
    """What a call of a fused conv function computes.

    ``attrs`` holds the explicit conv attributes (:data:`CONV_ATTRS`, lists of ints and ``group``);
    ``activation`` is the option name of the activation (``relu``, ``clip``, ...) or None;
    ``activation_params`` its parameters (``{"alpha": 0.1}``, ``{"min": 0.0, "max": 6.0}``);
    ``weights`` and ``bias`` are the call's W and B initializers.
    """

    node: gs.Node
    function: gs.Function
    attrs: dict[str, Any]
    activation: str | None
    activation_params: dict[str, float]
    weights: gs.Constant
    bias: gs.Constant

    @property
    def input(self) -> gs.Tensor:
        """The activation tensor the conv reads (X)."""
        return self.node.inputs[0]

    @property
    def output(self) -> gs.Tensor:
        return self.node.outputs[0]


def function_name(attrs: dict[str, Any], activation: str | None = None,
                  activation_params: dict[str, float] | None = None, dtype: Any = np.float32) -> str:
    """The specialization key of a fused conv: ``ConvBiasRelu_k3x3_s1x1_p1x1x1x1_d1x1_g1``.

    Two fused convs have the same name if and only if they have the same body. Activation
    parameters are part of the name (``ConvBiasLeakyRelu_..._a0p1``); a body holding typed
    constants (Clip bounds) adds the element type when it is not float32.
    """
    spec = _ACTIVATION_BY_OPTION[activation] if activation else None
    params = activation_params or {}
    join = "x".join
    parts = [
        "ConvBias" + (spec.title if spec else ""),
        "k" + join(str(int(v)) for v in attrs["kernel_shape"]),
        "s" + join(str(int(v)) for v in attrs["strides"]),
        "p" + join(str(int(v)) for v in attrs["pads"]),
        "d" + join(str(int(v)) for v in attrs["dilations"]),
        f"g{int(attrs['group'])}",
    ]
    if spec:
        for param, tag, _ in spec.params:
            value = params.get(param)
            if value is not None:
                parts.append(tag + _number_tag(value))
        if spec.op == "Clip" and np.dtype(dtype) != np.float32:
            parts.append(np.dtype(dtype).name)
    return "_".join(parts)


def conv_function(graph: gs.Graph, attrs: dict[str, Any], activation: str | None = None,
                  activation_params: dict[str, float] | None = None,
                  dtype: Any = np.float32) -> gs.Function:
    """The fused conv function for ``attrs`` and ``activation``, created in ``graph`` if missing.

    ``attrs`` must hold every entry of :data:`CONV_ATTRS` (no ``auto_pad``). The body is
    ``Conv(x, w, b)`` with those attributes followed by the activation node; ``dtype`` types the
    Clip bound constants. Returns the function the graph holds under the specialization name.
    """
    missing = [key for key in CONV_ATTRS if key not in attrs]
    if missing:
        raise ValueError(f"conv attributes missing: {missing}")
    name = function_name(attrs, activation, activation_params, dtype)
    existing = ir.find_function(graph, name)
    if existing is not None:
        return existing

    params = activation_params or {}
    x, w, b = (gs.Variable(n) for n in ("x", "w", "b"))
    conv_out = gs.Variable("conv_out" if activation else "y")
    body = [gs.Node("Conv", name="conv", inputs=[x, w, b], outputs=[conv_out], attrs={
        "kernel_shape": [int(v) for v in attrs["kernel_shape"]],
        "strides": [int(v) for v in attrs["strides"]],
        "pads": [int(v) for v in attrs["pads"]],
        "dilations": [int(v) for v in attrs["dilations"]],
        "group": int(attrs["group"]),
    })]
    output = conv_out
    if activation:
        spec = _ACTIVATION_BY_OPTION[activation]
        output = gs.Variable("y")
        inputs: list[gs.Tensor] = [conv_out]
        node_attrs: dict[str, Any] = {}
        if spec.op == "Clip":
            # Clip (opset >= 11) takes its bounds as inputs: constants of the body, typed like x.
            for bound in ("min", "max"):
                if params.get(bound) is None:
                    inputs.append(gs.Variable.empty())
                    continue
                bound_tensor = gs.Variable(bound)
                body.append(gs.Node("Constant", name=f"{bound}_value", outputs=[bound_tensor],
                                    attrs={"value": gs.Constant(f"{bound}_const", np.array(
                                        params[bound], dtype=np.dtype(dtype)))}))
                inputs.append(bound_tensor)
            while inputs and inputs[-1].is_empty():
                inputs.pop()
        else:
            node_attrs = {param: float(params[param]) for param, _, _ in spec.params
                          if params.get(param) is not None}
        body.append(gs.Node(spec.op, name="activation", inputs=inputs, outputs=[output],
                            attrs=node_attrs))
    function = gs.Function(name, domain=ir.TRTCOMPILE_DOMAIN, nodes=body, inputs=[x, w, b],
                           outputs=[output], opset=ir.opset(graph))
    return ir.add_local_function(graph, function)


def _ints(value: Any) -> list[int]:
    return [int(v) for v in value]


def conv_call_info(graph: gs.Graph, node: gs.Node) -> ConvCallInfo | None:
    """The :class:`ConvCallInfo` of ``node`` if it calls a fused conv function with constant W and B,
    else None. Reads the function body, not its name."""
    if (node.domain or "") != ir.TRTCOMPILE_DOMAIN or len(node.inputs) != 3 or len(node.outputs) != 1:
        return None
    function = ir.function_of(graph, node)
    if function is None or not function.nodes:
        return None
    weights, bias = node.inputs[1], node.inputs[2]
    if not isinstance(weights, gs.Constant) or not isinstance(bias, gs.Constant):
        return None
    conv = function.nodes[0]
    if conv.op != "Conv" or list(conv.inputs) != list(function.inputs):
        return None
    if any(key not in conv.attrs for key in CONV_ATTRS) or "auto_pad" in conv.attrs:
        return None
    attrs = {key: _ints(conv.attrs[key]) if key != "group" else int(conv.attrs[key])
             for key in CONV_ATTRS}
    rest = [n for n in function.nodes[1:] if n.op != "Constant"]
    if not rest:
        return ConvCallInfo(node, function, attrs, None, {}, weights, bias)
    if len(rest) != 1 or rest[0].op not in _ACTIVATIONS:
        return None
    activation_node = rest[0]
    spec = _ACTIVATIONS[activation_node.op]
    params: dict[str, float] = {}
    if spec.op == "Clip":
        for bound, tensor in zip(("min", "max"), activation_node.inputs[1:]):
            value = ir.constant_value(tensor) if not tensor.is_empty() else None
            if value is not None:
                params[bound] = float(np.asarray(value).reshape(-1)[0])
    else:
        for param, _, default in spec.params:
            params[param] = float(activation_node.attrs.get(param, default))
    return ConvCallInfo(node, function, attrs, spec.option, params, weights, bias)


# --------------------------------------------------------------------------------------------
# The pass
# --------------------------------------------------------------------------------------------


@dataclass
class _Affine:
    """The per-output-channel map ``y = scale * conv(x; W, 0) + shift`` built up along the chain."""

    scale: np.ndarray
    shift: np.ndarray


@dataclass
class _Chain:
    """A conv and what follows it that will fuse: affine steps, then at most one activation."""

    conv: gs.Node
    steps: list[tuple[str, gs.Node, Any]] = field(default_factory=list)  # (kind, node, payload)
    activation: _Activation | None = None
    activation_node: gs.Node | None = None
    activation_params: dict[str, float] = field(default_factory=dict)

    @property
    def nodes(self) -> list[gs.Node]:
        tail = [self.activation_node] if self.activation_node is not None else []
        return [self.conv, *(node for _, node, _ in self.steps), *tail]

    @property
    def output(self) -> gs.Tensor:
        return self.nodes[-1].outputs[0]


class _Stop(Exception):
    """The chain ends here; ``reason`` (if any) is why the next node did not fuse."""

    def __init__(self, reason: str | None = None, node: gs.Node | None = None):
        super().__init__(reason)
        self.reason = reason
        self.node = node


@dataclass(frozen=True)
class ConvBiasActivationFusion(Pass):
    """Fuse a Conv with its per-channel affine epilogue and activation into one fused layer.

    A chain ``Conv -> [Add | Sub | Mul | BatchNormalization]* -> [activation]`` becomes one node
    that calls the model-local function ``trtcompile.ConvBias<Act>_k.._s.._p.._d.._g..`` with inputs
    (X, W', B'); the node takes the Conv's name, the function body is ``Conv`` with every attribute
    explicit followed by the activation.

    Rules:
      1. Bias: ``Add(conv, c)`` (either operand order) or ``Sub(conv, c)`` with a constant ``c`` that
         varies at most along the channel axis (``[1,C,1,1]``, ``[C,1,1]``, ``[1]``, a scalar) folds
         into B. A ``[C]`` constant broadcasts along the last axis, not the channels, and stays.
      2. Scale: ``Mul(conv, s)`` with such a per-channel constant folds into W and B.
      3. BatchNormalization in inference mode with constant scale, B, mean and var folds into W and
         B (``s = scale / sqrt(var + eps)``, ``W' = W * s``, ``B' = (B - mean) * s + B_bn``); with
         ``fold_batchnorm`` off the chain stops before it.
      4. The chain may end with one activation among ``activations``: relu, clip (constant bounds,
         e.g. ReLU6), leaky-relu, sigmoid, tanh, hard-sigmoid, hard-swish, elu.
      5. Every intermediate tensor must have exactly one consumer and must not be a graph output; the
         chain stops before a node that breaks this, fusing what came before.
      6. Conv weights (and the conv's own bias) must be constants; ``auto_pad`` SAME_UPPER,
         SAME_LOWER and VALID become explicit pads (for strides > 1 SAME needs the input's spatial
         shape).
      7. A Conv with nothing to fuse after it stays a plain Conv.

    Folded weights are computed in float64 and stored in the weights' dtype, in new initializers
    (weights shared with other convs are never modified). Requires: topologically sorted nodes.
    Preserves: topological order, graph inputs and outputs, every output within FP32 rounding.
    Options: ``activations`` (which activations to fuse), ``fold_batchnorm``.
    Counts: ``fused_convs`` (calls made), ``fused_conv_bias``, ``fused_conv_scale``,
    ``folded_batchnorm``, ``fused_conv_<activation>`` (``fused_conv_relu``, ``fused_conv_clip``, ...).
    """

    name: ClassVar[str] = "conv-bias-activation-fusion"

    activations: tuple[str, ...] = ACTIVATION_NAMES
    fold_batchnorm: bool = True

    def __post_init__(self) -> None:
        unknown = [a for a in self.activations if a not in _ACTIVATION_BY_OPTION]
        if unknown:
            raise InputError(f"{self.name}: unknown activation(s) {', '.join(unknown)}; "
                             f"choose from {', '.join(ACTIVATION_NAMES)}")

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        with _collector_paused():
            return self._run(graph)

    def _run(self, graph: gs.Graph) -> PassResult:
        result = PassResult()
        graph_outputs = ir.output_names(graph)
        replaced: dict[int, gs.Node] = {}  # id(conv) -> call node
        removed: set[int] = set()
        scope: ir.NameScope | None = None  # built on the first fusion: O(graph) once

        for node in graph.nodes:
            if node.op != "Conv" or (node.domain or "") not in ("", "ai.onnx") or id(node) in removed:
                continue
            chain = self._match(node, graph_outputs, result)
            if chain is None:
                continue
            if scope is None:
                scope = ir.NameScope(graph)
            call = self._rewrite(graph, chain, scope, graph_outputs, removed, result)
            if call is None:
                continue
            replaced[id(node)] = call
            removed.update(id(n) for n in chain.nodes)

        if replaced:
            # The call sits where the conv was: its inputs are available there and only the chain's
            # own nodes (now gone) read the intermediates, so the order stays topological.
            graph.nodes = [replaced.get(id(n), n) for n in graph.nodes
                           if id(n) not in removed or id(n) in replaced]
        return result

    # Matching ---------------------------------------------------------------------------------

    def _match(self, conv: gs.Node, graph_outputs: set[str], result: PassResult) -> _Chain | None:
        chain = _Chain(conv)
        current = conv.outputs[0]
        if len(conv.inputs) < 2 or ir.constant_value(conv.inputs[1]) is None:
            candidates = [n for n in current.outputs if self._is_candidate(n)]
            if candidates:
                result.reject([conv, candidates[0]], "weights are not constant")
            return None
        try:
            while True:
                readers = current.outputs
                candidates = [n for n in readers if self._is_candidate(n)]
                if not candidates:
                    break
                what = "conv output" if current is conv.outputs[0] else f"intermediate '{current.name}'"
                if current.name in graph_outputs:
                    raise _Stop(f"intermediate '{current.name}' is a graph output", candidates[0])
                if len(readers) != 1:
                    raise _Stop(f"{what} has {len(readers)} consumers", candidates[0])
                follower = readers[0]
                if follower.op in _ACTIVATIONS:
                    self._match_activation(chain, follower)
                    break
                if follower.op == "BatchNormalization":
                    chain.steps.append(("batchnorm", follower, self._batchnorm(follower, graph_outputs)))
                else:
                    chain.steps.append(self._match_affine(follower, current, conv))
                current = follower.outputs[0]
        except _Stop as stop:
            if stop.reason:
                result.reject([*chain.nodes, *([stop.node] if stop.node is not None else [])],
                              stop.reason)
        if not chain.steps and chain.activation is None:
            return None
        return chain

    def _is_candidate(self, node: gs.Node) -> bool:
        if (node.domain or "") not in ("", "ai.onnx"):
            return False
        return node.op in _ACTIVATIONS or node.op in ("Add", "Sub", "Mul", "BatchNormalization")

    def _match_activation(self, chain: _Chain, node: gs.Node) -> None:
        spec = _ACTIVATIONS[node.op]
        if spec.option not in self.activations:
            raise _Stop(f"activation '{node.op}' not enabled", node)
        params: dict[str, float] = {}
        if spec.op == "Clip":
            if "min" in node.attrs or "max" in node.attrs:
                raise _Stop("Clip with attribute bounds (opset < 11) is not fused", node)
            for bound, tensor in zip(("min", "max"), node.inputs[1:]):
                if tensor.is_empty():
                    continue
                value = ir.constant_value(tensor)
                if value is None or value.size != 1:
                    raise _Stop(f"Clip {bound} '{tensor.name}' is not a constant scalar", node)
                params[bound] = float(value.reshape(-1)[0])
        else:
            for param, _, default in spec.params:
                params[param] = float(node.attrs.get(param, default))
        chain.activation, chain.activation_node, chain.activation_params = spec, node, params

    def _batchnorm(self, node: gs.Node, graph_outputs: set[str]) -> dict[str, Any]:
        if not self.fold_batchnorm:
            raise _Stop(None)
        if int(node.attrs.get("training_mode", 0)):
            raise _Stop("BatchNormalization in training mode", node)
        if any(t.outputs or t.name in graph_outputs for t in node.outputs[1:] if not t.is_empty()):
            raise _Stop("BatchNormalization running-statistics outputs are requested", node)
        values = {}
        for key, tensor in zip(("scale", "bias", "mean", "var"), node.inputs[1:5]):
            value = ir.constant_value(tensor)
            if value is None:
                raise _Stop(f"BatchNormalization {key} '{tensor.name}' is not a constant", node)
            values[key] = value
        values["epsilon"] = float(node.attrs.get("epsilon", 1e-5))
        return values

    def _match_affine(self, node: gs.Node, current: gs.Tensor, conv: gs.Node) -> tuple[str, gs.Node, Any]:
        if len(node.inputs) != 2:
            raise _Stop(None)
        other = node.inputs[1] if node.inputs[0] is current else node.inputs[0]
        if node.inputs[0] is node.inputs[1]:
            raise _Stop(f"{node.op} reads the conv chain twice", node)
        if node.op == "Sub" and node.inputs[0] is not current:
            raise _Stop("Sub subtracts the conv output from a constant", node)
        value = ir.constant_value(other)
        if value is None:
            if ir.producer(other) is not None:
                raise _Stop(f"{node.op} of two computed tensors is not a "
                            f"{'bias' if node.op != 'Mul' else 'scale'}", node)
            word = "scale" if node.op == "Mul" else "bias"
            raise _Stop(f"{word} '{other.name}' is not a constant", node)
        weights = ir.constant_value(conv.inputs[1])
        per_channel = _per_channel(value, weights.ndim, weights.shape[0])
        if per_channel is None:
            word = "scale" if node.op == "Mul" else "bias"
            raise _Stop(f"{word} is not per-channel (shape {list(value.shape)})", node)
        if value.dtype != weights.dtype:
            raise _Stop(f"{node.op} constant is {value.dtype}, the conv is {weights.dtype}", node)
        return ({"Add": "bias", "Sub": "negative_bias", "Mul": "scale"}[node.op], node, per_channel)

    # Rewriting --------------------------------------------------------------------------------

    def _rewrite(self, graph: gs.Graph, chain: _Chain, scope: ir.NameScope, graph_outputs: set[str],
                 dead: set[int], result: PassResult) -> gs.Node | None:
        conv = chain.conv
        weights_tensor = conv.inputs[1]
        weights = ir.constant_value(weights_tensor)  # constant: checked by _match
        if weights.dtype.kind != "f":
            result.reject(chain.nodes, f"weights are {weights.dtype}, not floating point")
            return None
        has_bias = len(conv.inputs) > 2 and not conv.inputs[2].is_empty()
        conv_bias = ir.constant_value(conv.inputs[2]) if has_bias else None
        if has_bias and conv_bias is None:
            result.reject(chain.nodes, "conv bias is not constant")
            return None
        attrs, reason = _explicit_attrs(conv, weights)
        if attrs is None:
            result.reject(chain.nodes, reason)
            return None

        channels = weights.shape[0]
        affine = _Affine(np.ones(channels, np.float64),
                         conv_bias.astype(np.float64).reshape(channels) if has_bias
                         else np.zeros(channels, np.float64))
        for kind, _, payload in chain.steps:
            if kind == "bias":
                affine.shift = affine.shift + payload
                result.count("fused_conv_bias")
            elif kind == "negative_bias":
                affine.shift = affine.shift - payload
                result.count("fused_conv_bias")
            elif kind == "scale":
                affine.scale, affine.shift = affine.scale * payload, affine.shift * payload
                result.count("fused_conv_scale")
            else:
                factor = (payload["scale"].astype(np.float64)
                          / np.sqrt(payload["var"].astype(np.float64) + payload["epsilon"]))
                affine.scale = affine.scale * factor
                affine.shift = ((affine.shift - payload["mean"].astype(np.float64)) * factor
                                + payload["bias"].astype(np.float64))
                result.count("folded_batchnorm")

        prefix = conv.name or "conv"
        if any(kind in ("scale", "batchnorm") for kind, _, _ in chain.steps):
            scaled = weights.astype(np.float64) * affine.scale.reshape((-1,) + (1,) * (weights.ndim - 1))
            new_weights = gs.Constant(scope.fresh(f"{prefix}_weights"), scaled.astype(weights.dtype))
        elif isinstance(weights_tensor, gs.Constant):
            new_weights = weights_tensor  # unchanged: the call may share it with other readers
        else:  # a Constant node's output: the call reads an initializer
            new_weights = gs.Constant(scope.fresh(f"{prefix}_weights"), weights)
        if has_bias and not chain.steps and isinstance(conv.inputs[2], gs.Constant):
            new_bias = conv.inputs[2]
        else:
            new_bias = gs.Constant(scope.fresh(f"{prefix}_bias"), affine.shift.astype(weights.dtype))

        activation = chain.activation.option if chain.activation else None
        function = conv_function(graph, attrs, activation, chain.activation_params, weights.dtype)
        output = chain.output
        call = ir.call(function, conv.name, [conv.inputs[0], new_weights, new_bias], [output])
        read = [tensor for fused in chain.nodes for tensor in fused.inputs]
        for fused in chain.nodes:
            fused.inputs.clear()
            fused.outputs.clear()
        # Constant nodes that only fed the chain (Clip bounds, BN parameters) go with it.
        for tensor in read:
            source = ir.producer(tensor)
            if (source is not None and source.op == "Constant" and id(source) not in dead
                    and not any(t.outputs or t.name in graph_outputs for t in source.outputs)):
                dead.add(id(source))
                source.outputs.clear()
        if chain.activation:
            result.count(f"fused_conv_{chain.activation.option.replace('-', '_')}")
        result.count("fused_convs")
        return call


@contextlib.contextmanager
def _collector_paused():
    """Pause Python's cyclic garbage collector while the pass creates nodes and tensors.

    A large graph is millions of live objects; every few thousand allocations the collector would
    traverse all of them, which made the rewrite of a 100k-node graph five times slower. The pass
    creates no garbage cycles worth collecting early; the collector resumes afterwards.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _per_channel(value: np.ndarray, rank: int, channels: int) -> np.ndarray | None:
    """``value`` as a vector over the conv's output channels if, broadcast against the conv output
    (rank ``rank``), it varies at most along axis 1 and leaves the output shape unchanged."""
    if value.ndim > rank:
        return None
    shape = (1,) * (rank - value.ndim) + tuple(value.shape)
    if any(d != 1 for i, d in enumerate(shape) if i != 1) or shape[1] not in (1, channels):
        return None
    return np.broadcast_to(value.astype(np.float64).reshape(-1), (channels,)).copy()


def _explicit_attrs(conv: gs.Node, weights: np.ndarray) -> tuple[dict[str, Any] | None, str]:
    """Every conv attribute made explicit (``auto_pad`` resolved into pads), or None and why not."""
    spatial = weights.ndim - 2
    if spatial < 1:
        return None, f"weights have rank {weights.ndim}"
    kernel = _ints(conv.attrs.get("kernel_shape", weights.shape[2:]))
    if kernel != list(weights.shape[2:]):
        return None, f"kernel_shape {kernel} differs from the weights' shape {list(weights.shape[2:])}"
    strides = _ints(conv.attrs.get("strides", [1] * spatial))
    dilations = _ints(conv.attrs.get("dilations", [1] * spatial))
    group = int(conv.attrs.get("group", 1))
    auto_pad = conv.attrs.get("auto_pad", "NOTSET")
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    if auto_pad == "NOTSET":
        pads = _ints(conv.attrs.get("pads", [0] * (2 * spatial)))
    elif auto_pad == "VALID":
        pads = [0] * (2 * spatial)
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        input_shape = conv.inputs[0].shape
        begin, end = [], []
        for axis in range(spatial):
            effective = (kernel[axis] - 1) * dilations[axis] + 1
            if strides[axis] == 1:  # the total padding does not depend on the input size
                total = effective - 1
            else:
                size = input_shape[2 + axis] if input_shape and len(input_shape) == spatial + 2 else None
                if not isinstance(size, (int, np.integer)) or size < 0:
                    return None, (f"auto_pad {auto_pad} with strides {strides} needs a static input "
                                  "spatial shape")
                total = max((-(-size // strides[axis]) - 1) * strides[axis] + effective - size, 0)
            small, large = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else large)
            end.append(large if auto_pad == "SAME_UPPER" else small)
        pads = begin + end
    else:
        return None, f"unknown auto_pad '{auto_pad}'"
    return {"kernel_shape": kernel, "strides": strides, "pads": pads, "dilations": dilations,
            "group": group}, ""


__all__ = ["ACTIVATION_NAMES", "CONV_ATTRS", "ConvBiasActivationFusion", "ConvCallInfo",
           "conv_call_info", "conv_function", "function_name"]
