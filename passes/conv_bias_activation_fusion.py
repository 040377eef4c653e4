"""conv-bias-activation-fusion: a Conv, its affine epilogue and its activation become one fused layer.

The fused layer is the form :mod:`trtcompile.ir.fused_layer` defines (a call of the model-local
function ``trtcompile.ConvBias<Act>_<key>``); the other passes read and rebuild it from there.
"""

from __future__ import annotations

import contextlib
import gc
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from trtcompile import ir
from trtcompile.errors import InputError
from trtcompile.ir.fused_layer import (
    ACTIVATION_BY_OPTION,
    ACTIVATION_NAMES,
    ACTIVATIONS,
    RESIDUAL_PARAMETERS,
    SILU,
    Activation,
    conv_function,
    explicit_conv_attrs,
)
from trtcompile.ir.rewrite import Match, Reject, RewriteRule, Scope, apply_rule
from trtcompile.pm import Pass, PassContext, PassResult


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
    activation: Activation | None = None
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


@dataclass
class _Fusion(Match):
    """A chain that fuses, as the rewrite driver's candidate."""

    chain: _Chain | None = None


@dataclass(frozen=True)
class ConvBiasActivationFusion(Pass, RewriteRule):
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
    anchor_ops: ClassVar[frozenset[str]] = frozenset({"Conv"})
    needs_ops: ClassVar[frozenset[str]] = anchor_ops
    # Every chain is matched on the untouched graph first: a residual decision looks at the chain
    # on the Add's other side, and shape inference reads the whole graph.
    match_all_first: ClassVar[bool] = True

    activations: tuple[str, ...] = ACTIVATION_NAMES
    fold_batchnorm: bool = True
    residual: bool = True

    def __post_init__(self) -> None:
        unknown = [a for a in self.activations if a not in ACTIVATION_BY_OPTION]
        if unknown:
            raise InputError(f"{self.name}: unknown activation(s) {', '.join(unknown)}; "
                             f"choose from {', '.join(ACTIVATION_NAMES)}")

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        with _collector_paused():
            return apply_rule(self, graph, ctx, PassResult(), who=self.name)

    def match(self, node: gs.Node, scope: Scope) -> list[_Fusion | Reject]:
        chain, stop = self._match(node, scope)
        found: list[_Fusion | Reject] = [stop] if stop is not None else []
        if chain is not None:
            # The call's inputs are available where the Conv was, except a residual Z, which is
            # available before the Add; only the chain's own nodes (then gone) read the
            # intermediates, so either place keeps the order topological.
            anchor = chain.nodes[-1] if chain.residual is not None else chain.conv
            found.append(_Fusion(chain.nodes, anchor, chain.rule, chain))
        return found

    def check(self, match: _Fusion, scope: Scope) -> str | None:
        return self._conv_problem(match.chain.conv)

    # Matching ---------------------------------------------------------------------------------

    def _match(self, conv: gs.Node, scope: Scope, *,
               probe: bool = False) -> tuple[_Chain | None, Reject | None]:
        """The chain that fuses from ``conv`` (None if nothing does) and why it ends where it does
        (None if nothing follows that could fuse). A probe only follows the chain to the first
        Add of a computed tensor and records it in ``reaches``."""
        chain = _Chain(conv)
        current = conv.outputs[0]
        if len(conv.inputs) < 2 or ir.constant_value(conv.inputs[1]) is None:
            candidates = [n for n in current.outputs if self._is_candidate(n, scope)]
            if candidates:
                return None, Reject([conv, candidates[0]], "weights are not constant")
            return None, None
        stopped: Reject | None = None
        try:
            while True:
                readers = current.outputs
                candidates = [n for n in readers if self._is_candidate(n, scope)]
                if not candidates:
                    break
                what = "conv output" if current is conv.outputs[0] else f"intermediate '{current.name}'"
                if current.name in scope.outputs:
                    raise _Stop(f"intermediate '{current.name}' is a graph output", candidates[0])
                silu = _silu_nodes(current, scope.outputs)
                if silu is not None:
                    if SILU.option not in self.activations:
                        raise _Stop("activation 'silu' not enabled", silu[1])
                    chain.activation, chain.activation_params = SILU, {}
                    chain.gate_node, chain.activation_node = silu
                    break
                if len(readers) != 1:
                    raise _Stop(f"{what} has {len(readers)} consumers", candidates[0])
                follower = readers[0]
                if follower.op in ACTIVATIONS:
                    self._match_activation(chain, follower)
                    break
                if chain.residual_node is not None:
                    raise _Stop("only an activation fuses after the residual Add", follower)
                residual = self._residual_operand(follower, current)
                if residual is not None:
                    if probe:
                        chain.reaches = follower
                        break
                    self._match_residual(chain, follower, current, residual, scope)
                elif follower.op == "BatchNormalization":
                    chain.steps.append(("batchnorm", follower,
                                        self._batchnorm(follower, scope, conv)))
                else:
                    chain.steps.append(self._match_affine(follower, current, conv))
                current = follower.outputs[0]
        except _Stop as stop:
            if stop.reason:
                stopped = Reject([*chain.nodes, *([stop.node] if stop.node is not None else [])],
                                 stop.reason)
        if probe:
            return chain, stopped
        if not chain.steps and chain.residual is None and chain.activation is None:
            return None, stopped
        return chain, stopped

    def _is_candidate(self, node: gs.Node, scope: Scope) -> bool:
        # A node of an If/Loop/Scan body reading the chain's tensor belongs to another scope.
        if not ir.is_onnx_op(node) or not scope.contains(node):
            return False
        return node.op in ACTIVATIONS or node.op in ("Add", "Sub", "Mul", "BatchNormalization")

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
                        scope: Scope) -> None:
        conv_shape, residual_shape = scope.shapes.known(current), scope.shapes.known(residual)
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
        rival = self._rival_conv(node, current, residual, scope)
        if rival is not None:
            raise _Stop(f"the Add's other operand '{residual.name}' (conv '{rival.name}') is computed "
                        "later: its chain takes the Add", node)
        chain.residual_node, chain.residual = node, residual

    def _rival_conv(self, add: gs.Node, current: gs.Tensor, residual: gs.Tensor,
                    scope: Scope) -> gs.Node | None:
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
        probe, _ = self._match(conv, scope, probe=True)
        if probe is None or probe.reaches is not add:
            return None
        return conv if scope.position(source) > scope.position(ir.producer(current)) else None

    def _match_activation(self, chain: _Chain, node: gs.Node) -> None:
        spec = ACTIVATIONS[node.op]
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

    def _batchnorm(self, node: gs.Node, scope: Scope, conv: gs.Node) -> dict[str, Any]:
        graph_outputs = scope.outputs
        if not self.fold_batchnorm:
            raise _Stop(None)
        opset = ir.opset(scope.graph)
        training = _batchnorm_training_form(node, opset)
        if training:
            raise _Stop(f"BatchNormalization in training mode ({training}): it normalizes with "
                        "the batch's statistics, not the running ones", node)
        if opset < 9 and not int(node.attrs.get("spatial", 1)):
            raise _Stop(f"BatchNormalization with spatial=0 (opset {opset}) normalizes each "
                        "element with statistics of its own, not per channel", node)
        if any(t.outputs or t.name in graph_outputs for t in node.outputs[1:] if not t.is_empty()):
            raise _Stop("BatchNormalization running-statistics outputs are requested", node)
        values = {}
        for key, tensor in zip(("scale", "bias", "mean", "var"), node.inputs[1:5]):
            value = ir.constant_value(tensor)
            if value is None:
                raise _Stop(f"BatchNormalization {key} '{tensor.name}' is not a constant", node)
            values[key] = value
        channels = ir.constant_value(conv.inputs[1]).shape[0]
        for key, value in values.items():
            if value.shape != (channels,):
                raise _Stop(f"BatchNormalization {key} has shape {list(value.shape)}, not one "
                            f"value per channel ([{channels}])", node)
        values["epsilon"] = float(node.attrs.get("epsilon", 1e-5))
        denominator = values["var"].astype(np.float64) + values["epsilon"]
        if not np.all(denominator > 0):
            # A zero or negative var + epsilon divides by zero (or takes the root of a negative):
            # folded, the weights would be inf or NaN; computed, the BN yields the same per element.
            raise _Stop("BatchNormalization var + epsilon is not positive in every channel "
                        "(the folded weights would be infinite or NaN)", node)
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
        attrs, reason = explicit_conv_attrs(conv, weights)
        return reason if attrs is None else None

    def rewrite(self, match: _Fusion, scope: Scope) -> list[gs.Node]:
        chain, result = match.chain, scope.result
        names = scope.names  # collected before this rewrite detaches the chain's tensors
        conv = chain.conv
        weights_tensor = conv.inputs[1]
        weights = ir.constant_value(weights_tensor)
        has_bias = len(conv.inputs) > 2 and not conv.inputs[2].is_empty()
        conv_bias = ir.constant_value(conv.inputs[2]) if has_bias else None
        attrs, _ = explicit_conv_attrs(conv, weights)

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
            new_weights = gs.Constant(names.fresh(f"{prefix}_weights"),
                                      scaled.astype(weights.dtype))
        elif isinstance(weights_tensor, gs.Constant):
            new_weights = weights_tensor  # unchanged: the call may share it with other readers
        else:  # a Constant node's output: the call reads an initializer
            new_weights = gs.Constant(names.fresh(f"{prefix}_weights"), weights)
        if has_bias and not chain.steps and isinstance(conv.inputs[2], gs.Constant):
            new_bias = conv.inputs[2]
        else:
            new_bias = gs.Constant(names.fresh(f"{prefix}_bias"),
                                   affine.shift.astype(weights.dtype))

        activation = chain.activation.option if chain.activation else None
        residual = chain.residual is not None
        function = conv_function(scope.graph, attrs, activation, chain.activation_params,
                                 weights.dtype, residual=residual,
                                 known=scope.once("conv_functions", dict))
        inputs = [conv.inputs[0], new_weights, new_bias, *([chain.residual] if residual else [])]
        call = ir.call(function, conv.name, inputs, [chain.output])
        for fused in chain.nodes:
            fused.inputs.clear()
            fused.outputs.clear()
        if residual:
            result.count("fused_conv_residual")
        if chain.activation:
            result.count(f"fused_conv_{chain.activation.option.replace('-', '_')}")
        result.count("fused_convs")
        return [call]


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


__all__ = ["ACTIVATION_NAMES", "ConvBiasActivationFusion"]
