"""conv-bias-activation-fusion: a Conv, its affine epilogue and its activation become one fused layer.

Besides the pass, this module owns the fused-convolution convention the other passes build on
(horizontal fusion merges calls of the same function, int8 quantization rewrites their weights):

* :func:`conv_function` builds (or reuses) the model-local function ``trtcompile.ConvBias<Act>_<key>``
  whose body is ``Conv(x, w, b)`` with every attribute explicit, followed by the activation; with a
  residual input it is ``trtcompile.ConvBiasAdd<Act>_<key>``: ``Conv(x, w, b) -> Add(conv, z) ->
  activation``, called with (X, W, B, Z);
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
#: SiLU (Swish with beta 1): ``Mul(x, Sigmoid(x))``, two ONNX nodes reading the same tensor (opset
#: 17 has no single op for it). Exported PyTorch and YOLO models write every SiLU this way.
_SILU = _Activation("Mul", "silu", "Silu")
_ACTIVATION_BY_OPTION = {a.option: a for a in (*_ACTIVATIONS.values(), _SILU)}

#: Option names of every activation the pass can fuse (the default of ``activations``).
ACTIVATION_NAMES: tuple[str, ...] = tuple(_ACTIVATION_BY_OPTION)

#: The attributes every fused conv body states explicitly, in name order.
CONV_ATTRS = ("kernel_shape", "strides", "pads", "dilations", "group")

#: Parameter names (X, W, B, Z) of the functions that add a residual. TensorRT's ONNX parser binds
#: a call's arguments to the parameters one after the other, by name, in one namespace: an
#: argument named like an earlier parameter (a residual Z named ``x`` where ``x`` is X's
#: parameter) reads that parameter's tensor instead (measured on TensorRT-RTX 1.7 with residuals
#: named ``x``, ``w`` and ``b``: the parse fails on the residual Add's shapes). Residuals are
#: arbitrary model tensors, so these functions use parameter names in the project's namespace, and
#: a residual named like one is not fused.
RESIDUAL_PARAMETERS = ("trtcompile.x", "trtcompile.w", "trtcompile.b", "trtcompile.z")


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
    ``weights`` and ``bias`` are the call's W and B initializers; ``residual`` is the call's fourth
    input Z, a run-time tensor of the conv output's shape added before the activation, or None.
    A pass that rebuilds the call from this description must carry Z over or leave the call alone.
    """

    node: gs.Node
    function: gs.Function
    attrs: dict[str, Any]
    activation: str | None
    activation_params: dict[str, float]
    weights: gs.Constant
    bias: gs.Constant
    residual: gs.Tensor | None = None

    @property
    def input(self) -> gs.Tensor:
        """The activation tensor the conv reads (X)."""
        return self.node.inputs[0]

    @property
    def output(self) -> gs.Tensor:
        return self.node.outputs[0]


def function_name(attrs: dict[str, Any], activation: str | None = None,
                  activation_params: dict[str, float] | None = None, dtype: Any = np.float32,
                  residual: bool = False) -> str:
    """The specialization key of a fused conv: ``ConvBiasRelu_k3x3_s1x1_p1x1x1x1_d1x1_g1``.

    Two fused convs have the same name if and only if they have the same body. Activation
    parameters are part of the name (``ConvBiasLeakyRelu_..._a0p1``); a body holding typed
    constants (Clip bounds) adds the element type when it is not float32; a body that adds a
    residual input is ``ConvBiasAdd<Act>_...``.
    """
    spec = _ACTIVATION_BY_OPTION[activation] if activation else None
    params = activation_params or {}
    join = "x".join
    parts = [
        "ConvBias" + ("Add" if residual else "") + (spec.title if spec else ""),
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
                  dtype: Any = np.float32, residual: bool = False) -> gs.Function:
    """The fused conv function for ``attrs`` and ``activation``, created in ``graph`` if missing.

    ``attrs`` must hold every entry of :data:`CONV_ATTRS` (no ``auto_pad``). The body is
    ``Conv(x, w, b)`` with those attributes, then with ``residual`` ``Add(conv_out, z)`` of a fourth
    input ``z``, then the activation node; ``dtype`` types the Clip bound constants. Returns the
    function the graph holds under the specialization name.
    """
    missing = [key for key in CONV_ATTRS if key not in attrs]
    if missing:
        raise ValueError(f"conv attributes missing: {missing}")
    name = function_name(attrs, activation, activation_params, dtype, residual)
    existing = ir.find_function(graph, name)
    if existing is not None:
        return existing

    params = activation_params or {}
    x, w, b = (gs.Variable(n) for n in (RESIDUAL_PARAMETERS[:3] if residual else ("x", "w", "b")))
    inputs_of_body = [x, w, b]
    conv_out = gs.Variable("conv_out" if activation or residual else "y")
    body = [gs.Node("Conv", name="conv", inputs=[x, w, b], outputs=[conv_out], attrs={
        "kernel_shape": [int(v) for v in attrs["kernel_shape"]],
        "strides": [int(v) for v in attrs["strides"]],
        "pads": [int(v) for v in attrs["pads"]],
        "dilations": [int(v) for v in attrs["dilations"]],
        "group": int(attrs["group"]),
    })]
    output = conv_out
    if residual:
        z = gs.Variable(RESIDUAL_PARAMETERS[3])
        inputs_of_body.append(z)
        output = gs.Variable("sum" if activation else "y")
        body.append(gs.Node("Add", name="residual", inputs=[conv_out, z], outputs=[output]))
    if activation:
        spec = _ACTIVATION_BY_OPTION[activation]
        inputs: list[gs.Tensor] = [output]
        output = gs.Variable("y")
        node_attrs: dict[str, Any] = {}
        if spec is _SILU:
            gate = gs.Variable("gate")
            body.append(gs.Node("Sigmoid", name="gate", inputs=[inputs[0]], outputs=[gate]))
            inputs.append(gate)
        elif spec.op == "Clip":
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
    function = gs.Function(name, domain=ir.TRTCOMPILE_DOMAIN, nodes=body, inputs=inputs_of_body,
                           outputs=[output], opset=ir.opset(graph))
    return ir.add_local_function(graph, function)


def _ints(value: Any) -> list[int]:
    return [int(v) for v in value]


def conv_call_info(graph: gs.Graph, node: gs.Node) -> ConvCallInfo | None:
    """The :class:`ConvCallInfo` of ``node`` if it calls a fused conv function with constant W and B
    (and, for ``ConvBiasAdd...`` functions, a residual input Z), else None. Reads the function body,
    not its name."""
    if not ir.is_fused_layer(node) or len(node.inputs) not in (3, 4) or len(node.outputs) != 1:
        return None
    function = ir.function_of(graph, node)
    if function is None or not function.nodes or len(function.inputs) != len(node.inputs):
        return None
    weights, bias = node.inputs[1], node.inputs[2]
    if not isinstance(weights, gs.Constant) or not isinstance(bias, gs.Constant):
        return None
    conv = function.nodes[0]
    if conv.op != "Conv" or list(conv.inputs) != list(function.inputs[:3]):
        return None
    if any(key not in conv.attrs for key in CONV_ATTRS) or "auto_pad" in conv.attrs:
        return None
    attrs = {key: _ints(conv.attrs[key]) if key != "group" else int(conv.attrs[key])
             for key in CONV_ATTRS}
    rest = [n for n in function.nodes[1:] if n.op != "Constant"]
    residual = None
    if len(function.inputs) == 4:
        # The residual Add reads the conv's result and the fourth input, in either order.
        add = rest.pop(0) if rest else None
        if (add is None or add.op != "Add" or len(add.inputs) != 2
                or {id(t) for t in add.inputs} != {id(conv.outputs[0]), id(function.inputs[3])}):
            return None
        residual = node.inputs[3]
    if not rest:
        return ConvCallInfo(node, function, attrs, None, {}, weights, bias, residual)
    if (len(rest) == 2 and rest[0].op == "Sigmoid" and rest[1].op == "Mul"
            and len(rest[1].inputs) == 2 and len(rest[0].inputs) == 1
            and {id(t) for t in rest[1].inputs} == {id(rest[0].inputs[0]), id(rest[0].outputs[0])}):
        return ConvCallInfo(node, function, attrs, _SILU.option, {}, weights, bias, residual)
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
    return ConvCallInfo(node, function, attrs, spec.option, params, weights, bias, residual)


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
    """A conv and what follows it that will fuse: affine steps, at most one residual Add, then at
    most one activation."""

    conv: gs.Node
    steps: list[tuple[str, gs.Node, Any]] = field(default_factory=list)  # (kind, node, payload)
    residual_node: gs.Node | None = None  # the Add of a run-time tensor Z
    residual: gs.Tensor | None = None  # Z
    activation: _Activation | None = None
    activation_node: gs.Node | None = None
    gate_node: gs.Node | None = None  # SiLU's Sigmoid, read by the activation Mul
    activation_params: dict[str, float] = field(default_factory=dict)
    reaches: gs.Node | None = None  # probing only: the Add of a computed tensor the chain reached

    @property
    def nodes(self) -> list[gs.Node]:
        tail = [n for n in (self.residual_node, self.gate_node, self.activation_node)
                if n is not None]
        return [self.conv, *(node for _, node, _ in self.steps), *tail]

    @property
    def output(self) -> gs.Tensor:
        return self.nodes[-1].outputs[0]

    @property
    def rule(self) -> str:
        """The rules the fusion applies, in chain order (``conv+bias+batchnorm+relu``)."""
        tail = [*(["residual"] if self.residual is not None else []),
                *([self.activation.option] if self.activation else [])]
        return "+".join(["conv", *(kind for kind, _, _ in self.steps), *tail])


class _Stop(Exception):
    """The chain ends here; ``reason`` (if any) is why the next node did not fuse."""

    def __init__(self, reason: str | None = None, node: gs.Node | None = None):
        super().__init__(reason)
        self.reason = reason
        self.node = node


class _GraphFacts:
    """What matching asks of the whole graph, each computed at most once per run, on first need:
    node positions (which residual operand is computed later) and tensor shapes (whether a
    residual Add broadcasts)."""

    def __init__(self, graph: gs.Graph):
        self.graph = graph
        self.outputs = ir.output_names(graph)
        self._positions: dict[int, int] | None = None
        self._inferred: dict[str, tuple[int | str, ...]] | None = None

    def position(self, node: gs.Node) -> int:
        if self._positions is None:
            self._positions = {id(n): i for i, n in enumerate(self.graph.nodes)}
        return self._positions[id(node)]

    def shape(self, tensor: gs.Tensor) -> tuple[int | str, ...] | None:
        """The tensor's dimensions, each an int or a symbol, if every one is known."""
        known = _known_dims(tensor.shape)
        if known is not None:
            return known
        if self._inferred is None:
            self._inferred = _inferred_shapes(self.graph)
        return self._inferred.get(tensor.name)


def _known_dims(shape: Any) -> tuple[int | str, ...] | None:
    if shape is None:
        return None
    dims: list[int | str] = []
    for dim in shape:
        if isinstance(dim, (int, np.integer)) and dim >= 0:
            dims.append(int(dim))
        elif isinstance(dim, str) and dim:
            dims.append(dim)  # a symbol: equal symbols are equal sizes
        else:
            return None
    return tuple(dims)


def _inferred_shapes(graph: gs.Graph) -> dict[str, tuple[int | str, ...]]:
    """Fully known shapes (ints or symbols) ONNX shape inference gives the main graph's tensors;
    empty when inference fails (then no residual shape can be proven)."""
    try:
        inferred = ir.inferred_dims(graph)
    except ValueError:
        return {}
    shapes: dict[str, tuple[int | str, ...]] = {}
    for name, dims in inferred.items():
        known = _known_dims(dims)
        if known is not None:
            shapes[name] = known
    return shapes


@dataclass(frozen=True)
class ConvBiasActivationFusion(Pass):
    """Fuse a Conv with its per-channel affine epilogue, a residual Add and an activation into one
    fused layer.

    A chain ``Conv -> [Add | Sub | Mul | BatchNormalization]* -> [Add(., Z)] -> [activation]``
    becomes one node that calls the model-local function
    ``trtcompile.ConvBias<Act>_k.._s.._p.._d.._g..`` with inputs (X, W', B'), or
    ``trtcompile.ConvBiasAdd<Act>_...`` with inputs (X, W', B', Z) when it adds a residual; the node
    takes the Conv's name, the function body is ``Conv`` with every attribute explicit, then
    ``Add(conv, z)``, then the activation.

    Rules:
      1. Bias: ``Add(conv, c)`` (either operand order) or ``Sub(conv, c)`` with a constant ``c`` that
         varies at most along the channel axis (``[1,C,1,1]``, ``[C,1,1]``, ``[1]``, a scalar) folds
         into B. A ``[C]`` constant broadcasts along the last axis, not the channels, and stays.
      2. Scale: ``Mul(conv, s)`` with such a per-channel constant folds into W and B.
      3. BatchNormalization in inference mode with constant scale, B, mean and var folds into W and
         B (``s = scale / sqrt(var + eps)``, ``W' = W * s``, ``B' = (B - mean) * s + B_bn``); with
         ``fold_batchnorm`` off the chain stops before it. The form is read from the op's
         signature in the model's opset: ``training_mode`` from opset 14; in opsets 7-13 a BN
         declaring more outputs than ``Y`` (the 5-output training form, read or not) is in
         training mode; before 7, ``is_test=0``. A BN in training mode normalizes with the batch's
         statistics and stays.
      4. Residual (``residual``, on by default): after the affine steps, ``Add(conv, Z)`` (either
         operand order) of a run-time tensor ``Z`` (a node's result or a graph input) joins the
         layer as its fourth input, the elementwise sum TensorRT fuses into the convolution's
         epilogue (ResNet's ``relu(bn(conv(x)) + shortcut)``, MobileNetV2's linear bottleneck
         ``bn(conv(x)) + x``). ``Z`` must have exactly the shape of the conv chain's result: both
         shapes known (from the graph or ONNX shape inference) and equal dimension by dimension
         (equal numbers or the same symbol); a broadcasting Add stays. Only an activation may
         follow the residual Add. When ``Z`` is itself the result of another conv chain that
         reaches the same Add (a projection shortcut: both operands are convolutions), the chain
         whose last node comes later in node order is taken as the main path and takes the Add
         (when it runs, the other operand is ready); the other chain fuses up to the Add and
         becomes its own layer, read as ``Z``. One Add, one owner, decided by node order alone,
         whatever order the convs are visited in. (tf2onnx places ResNet50's projection shortcut
         after the main path, so there the shortcut conv takes the Add; TensorRT's builder picks
         the same conv when it fuses the Add itself.)
      5. The chain may end with one activation among ``activations``: relu, clip (constant bounds,
         e.g. ReLU6), leaky-relu, sigmoid, tanh, hard-sigmoid, hard-swish, elu, and silu: the
         pair ``g = Sigmoid(t)``, ``Mul(t, g)`` (either operand order) where those two nodes are
         ``t``'s only readers and ``g`` feeds only the Mul (the body then ends with the same
         Sigmoid and Mul). Without this rule the conv output's two readers stop the chain
         ("conv output has 2 consumers") and every SiLU network (EfficientNet, YOLOv8) keeps
         its BatchNorms and biases as separate ONNX layers.
      6. Every intermediate tensor must have exactly one consumer and must not be a graph output; the
         chain stops before a node that breaks this, fusing what came before. (So ``Z`` can never
         depend on the conv's result: the conv's only reader leads to the Add.)
      7. Conv weights (and the conv's own bias) must be constants; ``auto_pad`` SAME_UPPER,
         SAME_LOWER and VALID become explicit pads (for strides > 1 SAME needs the input's spatial
         shape).
      8. A Conv with nothing to fuse after it stays a plain Conv.

    Folded weights are computed in float64 and stored in the weights' dtype, in new initializers
    (weights shared with other convs are never modified). A call without a residual sits where
    the Conv was; a call with one sits where the chain's last node was (``Z`` may be computed
    after the Conv). Requires: topologically sorted nodes. Preserves: topological order, graph
    inputs and outputs, every output within FP32 rounding.
    Options: ``activations`` (which activations to fuse), ``fold_batchnorm``, ``residual``.
    Counts: ``fused_convs`` (calls made), ``fused_conv_bias``, ``fused_conv_scale``,
    ``folded_batchnorm``, ``fused_conv_residual``, ``fused_conv_<activation>``
    (``fused_conv_relu``, ``fused_conv_clip``, ...).
    """

    name: ClassVar[str] = "conv-bias-activation-fusion"

    activations: tuple[str, ...] = ACTIVATION_NAMES
    fold_batchnorm: bool = True
    residual: bool = True

    def __post_init__(self) -> None:
        unknown = [a for a in self.activations if a not in _ACTIVATION_BY_OPTION]
        if unknown:
            raise InputError(f"{self.name}: unknown activation(s) {', '.join(unknown)}; "
                             f"choose from {', '.join(ACTIVATION_NAMES)}")

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        with _collector_paused():
            return self._run(graph, ctx)

    def _run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = PassResult()
        facts = _GraphFacts(graph)
        # Match every chain on the untouched graph first: a residual decision looks at the chain
        # on the Add's other side, and shape inference reads the whole graph.
        chains = [chain for node in graph.nodes
                  if node.op == "Conv" and ir.is_onnx_op(node)
                  and (chain := self._match(node, facts, result)) is not None]
        replaced: dict[int, gs.Node] = {}  # id(node the call replaces) -> call node
        removed: set[int] = set()
        scope: ir.NameScope | None = None  # built on the first fusion: O(graph) once
        for chain in chains:
            if not ctx.may_rewrite(chain.rule, chain.nodes, result):
                continue
            if scope is None:
                scope = ir.NameScope(graph)
            call = self._rewrite(graph, chain, scope, facts.outputs, removed, result)
            if call is None:
                continue
            # The call's inputs are available where the Conv was, except a residual Z, which is
            # available before the Add; only the chain's own nodes (now gone) read the
            # intermediates, so either place keeps the order topological.
            anchor = chain.nodes[-1] if chain.residual is not None else chain.conv
            replaced[id(anchor)] = call
            removed.update(id(n) for n in chain.nodes)

        if replaced:
            graph.nodes = [replaced.get(id(n), n) for n in graph.nodes
                           if id(n) not in removed or id(n) in replaced]
        return result

    # Matching ---------------------------------------------------------------------------------

    def _match(self, conv: gs.Node, facts: _GraphFacts, result: PassResult, *,
               probe: bool = False) -> _Chain | None:
        """The chain that fuses from ``conv``, or None if nothing does. A probe only follows the
        chain to the first Add of a computed tensor and records it in ``reaches``."""
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
                if current.name in facts.outputs:
                    raise _Stop(f"intermediate '{current.name}' is a graph output", candidates[0])
                silu = _silu_nodes(current, facts.outputs)
                if silu is not None:
                    if _SILU.option not in self.activations:
                        raise _Stop("activation 'silu' not enabled", silu[1])
                    chain.activation, chain.activation_params = _SILU, {}
                    chain.gate_node, chain.activation_node = silu
                    break
                if len(readers) != 1:
                    raise _Stop(f"{what} has {len(readers)} consumers", candidates[0])
                follower = readers[0]
                if follower.op in _ACTIVATIONS:
                    self._match_activation(chain, follower)
                    break
                if chain.residual_node is not None:
                    raise _Stop("only an activation fuses after the residual Add", follower)
                residual = self._residual_operand(follower, current)
                if residual is not None:
                    if probe:
                        chain.reaches = follower
                        break
                    self._match_residual(chain, follower, current, residual, facts)
                elif follower.op == "BatchNormalization":
                    chain.steps.append(("batchnorm", follower, self._batchnorm(follower, facts)))
                else:
                    chain.steps.append(self._match_affine(follower, current, conv))
                current = follower.outputs[0]
        except _Stop as stop:
            if stop.reason:
                result.reject([*chain.nodes, *([stop.node] if stop.node is not None else [])],
                              stop.reason)
        if probe:
            return chain
        if not chain.steps and chain.residual is None and chain.activation is None:
            return None
        return chain

    def _is_candidate(self, node: gs.Node) -> bool:
        if not ir.is_onnx_op(node):
            return False
        return node.op in _ACTIVATIONS or node.op in ("Add", "Sub", "Mul", "BatchNormalization")

    def _residual_operand(self, node: gs.Node, current: gs.Tensor) -> gs.Tensor | None:
        """``Z`` if ``node`` is ``Add(current, Z)`` (either order) of a run-time tensor ``Z`` and
        residual fusion is on; None otherwise (the affine rules then judge the node)."""
        if not self.residual or node.op != "Add" or len(node.inputs) != 2:
            return None
        if node.inputs[0] is node.inputs[1]:
            return None
        other = node.inputs[1] if node.inputs[0] is current else node.inputs[0]
        return other if ir.constant_value(other) is None else None

    def _match_residual(self, chain: _Chain, node: gs.Node, current: gs.Tensor, residual: gs.Tensor,
                        facts: _GraphFacts) -> None:
        conv_shape, residual_shape = facts.shape(current), facts.shape(residual)
        if conv_shape is None or residual_shape is None:
            unknown = current if conv_shape is None else residual
            raise _Stop(f"residual Add: the shape of '{unknown.name}' is unknown, so the Add may "
                        "broadcast", node)
        if conv_shape != residual_shape:
            if len(conv_shape) == len(residual_shape) and all(
                    a == b or isinstance(a, str) or isinstance(b, str)
                    for a, b in zip(conv_shape, residual_shape)):
                raise _Stop(f"residual Add: '{residual.name}' (shape {list(residual_shape)}) is not "
                            f"provably the conv result's shape {list(conv_shape)}, so the Add may "
                            "broadcast", node)
            raise _Stop(f"Add of '{residual.name}' broadcasts (shape {list(residual_shape)}, the "
                        f"conv result {list(conv_shape)}): not a residual, and not a constant bias",
                        node)
        if residual.name in RESIDUAL_PARAMETERS[:3]:
            raise _Stop(f"residual '{residual.name}' is named like a parameter of the fused "
                        "function, which TensorRT's parser would bind to the wrong tensor", node)
        rival = self._rival_conv(node, current, residual, facts)
        if rival is not None:
            raise _Stop(f"the Add's other operand '{residual.name}' (conv '{rival.name}') is computed "
                        "later: its chain takes the Add", node)
        chain.residual_node, chain.residual = node, residual

    def _rival_conv(self, add: gs.Node, current: gs.Tensor, residual: gs.Tensor,
                    facts: _GraphFacts) -> gs.Node | None:
        """The Conv whose chain also reaches ``add`` (through ``residual``) and takes it, being
        computed later (rule 4); None if ``residual`` is not such a chain's result."""
        source = ir.producer(residual)
        conv = source
        while conv is not None and ir.is_onnx_op(conv) and conv.op in ("Add", "Sub", "Mul",
                                                                         "BatchNormalization"):
            operands = conv.inputs[:1] if conv.op == "BatchNormalization" else conv.inputs
            computed = [t for t in operands if ir.constant_value(t) is None]
            if len(computed) != 1:
                return None
            conv = ir.producer(computed[0])
        if conv is None or conv.op != "Conv" or not ir.is_onnx_op(conv):
            return None
        if self._conv_problem(conv) is not None:
            return None  # it cannot fuse, so it cannot take the Add
        probe = self._match(conv, facts, PassResult(), probe=True)
        if probe is None or probe.reaches is not add:
            return None
        return conv if facts.position(source) > facts.position(ir.producer(current)) else None

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

    def _batchnorm(self, node: gs.Node, facts: _GraphFacts) -> dict[str, Any]:
        graph_outputs = facts.outputs
        if not self.fold_batchnorm:
            raise _Stop(None)
        training = _batchnorm_training_form(node, ir.opset(facts.graph))
        if training:
            raise _Stop(f"BatchNormalization in training mode ({training}): it normalizes with "
                        "the batch's statistics, not the running ones", node)
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
                off = " (residual fusion is off)" if node.op == "Add" and not self.residual else ""
                raise _Stop(f"{node.op} of two computed tensors is not a "
                            f"{'bias' if node.op != 'Mul' else 'scale'}{off}", node)
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

    @staticmethod
    def _conv_problem(conv: gs.Node) -> str | None:
        """Why the conv cannot become a call, or None. Any Conv may be asked (rule 4 asks about
        the conv on the residual Add's other side, which matching never saw)."""
        weights = ir.constant_value(conv.inputs[1]) if len(conv.inputs) > 1 else None
        if weights is None:
            return "weights are not constant"
        if weights.dtype.kind != "f":
            return f"weights are {weights.dtype}, not floating point"
        if (len(conv.inputs) > 2 and not conv.inputs[2].is_empty()
                and ir.constant_value(conv.inputs[2]) is None):
            return "conv bias is not constant"
        attrs, reason = _explicit_attrs(conv, weights)
        return reason if attrs is None else None

    def _rewrite(self, graph: gs.Graph, chain: _Chain, scope: ir.NameScope, graph_outputs: set[str],
                 dead: set[int], result: PassResult) -> gs.Node | None:
        conv = chain.conv
        problem = self._conv_problem(conv)
        if problem is not None:
            result.reject(chain.nodes, problem)
            return None
        weights_tensor = conv.inputs[1]
        weights = ir.constant_value(weights_tensor)
        has_bias = len(conv.inputs) > 2 and not conv.inputs[2].is_empty()
        conv_bias = ir.constant_value(conv.inputs[2]) if has_bias else None
        attrs, _ = _explicit_attrs(conv, weights)

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
        residual = chain.residual is not None
        function = conv_function(graph, attrs, activation, chain.activation_params, weights.dtype,
                                 residual=residual)
        output = chain.output
        inputs = [conv.inputs[0], new_weights, new_bias, *([chain.residual] if residual else [])]
        call = ir.call(function, conv.name, inputs, [output])
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
        if residual:
            result.count("fused_conv_residual")
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


def _batchnorm_training_form(node: gs.Node, opset: int) -> str:
    """Why ``node`` (a BatchNormalization) computes with batch statistics in ``opset``, or "".

    The form is decided by the op's signature in that opset: from 14 by ``training_mode``; in 7-13
    by its outputs (the mean, var, saved-mean and saved-var outputs exist only in training mode,
    and ONNX Runtime normalizes with the batch's statistics whenever they are declared, read or
    not); before 7 by ``is_test`` (0, the default, is training).
    """
    extra = [t for t in node.outputs[1:] if not t.is_empty()]
    if opset >= 14:
        return "training_mode=1" if int(node.attrs.get("training_mode", 0)) else ""
    if opset < 7 and not int(node.attrs.get("is_test", 0)):
        return f"opset {opset}, is_test=0"
    if extra:
        return f"opset {opset}, {len(node.outputs)} outputs"
    return ""


def _silu_nodes(tensor: gs.Tensor, graph_outputs: set[str]) -> tuple[gs.Node, gs.Node] | None:
    """(Sigmoid, Mul) if ``tensor``'s only readers are ``g = Sigmoid(tensor)`` and
    ``Mul(tensor, g)`` (either operand order) and ``g`` feeds nothing else: a SiLU of ``tensor``."""
    readers = tensor.outputs
    if len(readers) != 2 or not all(ir.is_onnx_op(n) for n in readers):
        return None
    gate = next((n for n in readers if n.op == "Sigmoid"), None)
    mul = next((n for n in readers if n.op == "Mul"), None)
    if gate is None or mul is None or len(gate.outputs) != 1 or len(mul.inputs) != 2:
        return None
    gated = gate.outputs[0]
    if len(gated.outputs) != 1 or gated.outputs[0] is not mul or gated.name in graph_outputs:
        return None
    if {id(t) for t in mul.inputs} != {id(tensor), id(gated)}:
        return None
    return gate, mul


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
    auto_pad = ir.text_attr(conv, "auto_pad", "NOTSET")
    if auto_pad == "NOTSET":
        pads = _ints(conv.attrs.get("pads", [0] * (2 * spatial)))
    elif auto_pad == "VALID":
        pads = [0] * (2 * spatial)
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        input_shape = conv.inputs[0].shape
        sizes = (list(input_shape[2:]) if input_shape and len(input_shape) == spatial + 2
                 else [None] * spatial)
        pads = ir.same_pads(auto_pad, kernel, strides, dilations, sizes)
        if pads is None:
            return None, (f"auto_pad {auto_pad} with strides {strides} needs a static input "
                          "spatial shape")
    else:
        return None, f"unknown auto_pad '{auto_pad}'"
    return {"kernel_shape": kernel, "strides": strides, "pads": pads, "dilations": dilations,
            "group": group}, ""


__all__ = ["ACTIVATION_NAMES", "CONV_ATTRS", "RESIDUAL_PARAMETERS", "ConvBiasActivationFusion",
           "ConvCallInfo", "conv_call_info", "conv_function", "function_name"]
