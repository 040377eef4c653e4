"""The fused-layer form of a convolution: a call of a model-local function whose body is ``Conv`` with
every attribute explicit, an optional residual ``Add`` and an optional activation.

``conv-bias-activation-fusion`` writes these layers; horizontal fusion merges calls of the same
function, average-pool folding and conv-split fission rebuild them, global-pool-window and int8
quantization read them. They share this module:

* :func:`conv_function` builds (or reuses) the model-local function ``trtcompile.ConvBias<Act>_<key>``
  whose body is ``Conv(x, w, b)`` with every attribute explicit, followed by the activation; with a
  residual input it is ``trtcompile.ConvBiasAdd<Act>_<key>``: ``Conv(x, w, b) -> Add(conv, z) ->
  activation``, called with (X, W, B, Z);
* :func:`conv_call_info` reads a call of such a function back into a :class:`ConvCallInfo`;
* :func:`is_fused_conv` tells any fused layer whose body starts with a convolution of its input.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from trtcompile.ir.graph import (
    TRTCOMPILE_DOMAIN,
    add_local_function,
    constant_value,
    find_function,
    function_body_key,
    function_of,
    is_fused_layer,
    opset,
    same_pads,
    text_attr,
)

#: Prefix of the parameter names of the functions the passes outline (residual convolutions,
#: TensorRT segments). TensorRT's ONNX parser binds a call's arguments to the parameters one after
#: the other, by name, in one namespace: an argument named like an earlier parameter reads that
#: parameter's tensor instead. Parameters in the project's namespace cannot meet a model tensor's
#: name unless the model uses the namespace itself.
PARAMETER_PREFIX = "trtcompile."

# --------------------------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Activation:
    """An activation the fused layer can end with: its ONNX op, option name and parameters."""

    op: str  # ONNX op type
    option: str  # kebab-case name in the ``activations`` option
    title: str  # CamelCase word in the function name
    params: tuple[tuple[str, str, float | None], ...] = ()  # (param, name tag, ONNX default)


ACTIVATIONS: dict[str, Activation] = {a.op: a for a in (
    Activation("Relu", "relu", "Relu"),
    Activation("Clip", "clip", "Clip", (("min", "lo", None), ("max", "hi", None))),
    Activation("LeakyRelu", "leaky-relu", "LeakyRelu", (("alpha", "a", 0.01),)),
    Activation("Sigmoid", "sigmoid", "Sigmoid"),
    Activation("Tanh", "tanh", "Tanh"),
    Activation("HardSigmoid", "hard-sigmoid", "HardSigmoid", (("alpha", "a", 0.2), ("beta", "b", 0.5))),
    Activation("HardSwish", "hard-swish", "HardSwish"),
    Activation("Elu", "elu", "Elu", (("alpha", "a", 1.0),)),
)}
#: SiLU (Swish with beta 1): ``Mul(x, Sigmoid(x))``, two ONNX nodes reading the same tensor (opset
#: 17 has no single op for it). Exported PyTorch and YOLO models write every SiLU this way.
SILU = Activation("Mul", "silu", "Silu")
ACTIVATION_BY_OPTION = {a.option: a for a in (*ACTIVATIONS.values(), SILU)}

#: Option names of every activation the pass can fuse (the default of ``activations``).
ACTIVATION_NAMES: tuple[str, ...] = tuple(ACTIVATION_BY_OPTION)

#: The attributes every fused conv body states explicitly, in name order.
CONV_ATTRS = ("kernel_shape", "strides", "pads", "dilations", "group")

#: Parameter names (X, W, B, Z) of the functions that add a residual. TensorRT's ONNX parser binds
#: a call's arguments to the parameters one after the other, by name, in one namespace: an
#: argument named like an earlier parameter (a residual Z named ``x`` where ``x`` is X's
#: parameter) reads that parameter's tensor instead (measured on TensorRT-RTX 1.7 with residuals
#: named ``x``, ``w`` and ``b``: the parse fails on the residual Add's shapes). Residuals are
#: arbitrary model tensors, so these functions use parameter names in the project's namespace, and
#: a residual named like one is not fused.
RESIDUAL_PARAMETERS = tuple(PARAMETER_PREFIX + name for name in ("x", "w", "b", "z"))


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
    spec = ACTIVATION_BY_OPTION[activation] if activation else None
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
                  dtype: Any = np.float32, residual: bool = False,
                  known: dict[str, gs.Function] | None = None) -> gs.Function:
    """The fused conv function for ``attrs`` and ``activation``, created in ``graph`` if missing.

    ``attrs`` must hold every entry of :data:`CONV_ATTRS` (no ``auto_pad``). The body is
    ``Conv(x, w, b)`` with those attributes, then with ``residual`` ``Add(conv_out, z)`` of a fourth
    input ``z``, then the activation node; ``dtype`` types the Clip bound constants. Returns the
    function the graph holds for that body: under the specialization name, or a suffixed one when
    the model holds another body under that name (:func:`~trtcompile.ir.graph.add_local_function`).

    ``known`` is for a caller fusing many layers in one run: the functions it returned for
    ``graph`` in that run, by specialization name (it fills it). One found there is returned
    without comparing bodies again; the caller must not have edited a body since.
    """
    missing = [key for key in CONV_ATTRS if key not in attrs]
    if missing:
        raise ValueError(f"conv attributes missing: {missing}")
    name = function_name(attrs, activation, activation_params, dtype, residual)
    if known is not None:
        if name not in known:
            known[name] = conv_function(graph, attrs, activation, activation_params, dtype,
                                        residual)
        return known[name]
    existing = find_function(graph, name, TRTCOMPILE_DOMAIN)
    spec = (tuple(tuple(int(v) for v in attrs[key]) for key in CONV_ATTRS if key != "group"),
            int(attrs["group"]), activation, tuple(sorted((activation_params or {}).items())),
            np.dtype(dtype), residual)
    # A function of that name is reused only if its body is this one: a model may bring its own
    # function under a name like ours. Comparing with the body's key (the same for every call of
    # one specialization) spares building the body for every layer fused.
    if existing is not None and function_body_key(existing) == _conv_body_key(spec):
        return existing
    nodes, inputs, outputs = _conv_body(attrs, activation, activation_params, dtype, residual)
    function = gs.Function(name, domain=TRTCOMPILE_DOMAIN, nodes=nodes, inputs=inputs,
                           outputs=outputs, opset=opset(graph))
    return add_local_function(graph, function)


@functools.lru_cache(maxsize=256)
def _conv_body_key(spec: tuple) -> tuple:
    """:func:`~trtcompile.ir.graph.function_body_key` of the body :func:`conv_function` builds for
    ``spec`` (its arguments in hashable form); a pure function of them, so it is kept."""
    conv_attrs, group, activation, activation_params, dtype, residual = spec
    attrs = {key: list(value) for key, value in
             zip([key for key in CONV_ATTRS if key != "group"], conv_attrs)}
    attrs["group"] = group
    nodes, inputs, outputs = _conv_body(attrs, activation, dict(activation_params), dtype,
                                        residual)
    return function_body_key(gs.Function("body", domain=TRTCOMPILE_DOMAIN, nodes=nodes,
                                         inputs=inputs, outputs=outputs))


def _conv_body(attrs: dict[str, Any], activation: str | None,
               activation_params: dict[str, float] | None, dtype: Any,
               residual: bool) -> tuple[list[gs.Node], list[gs.Tensor], list[gs.Tensor]]:
    """The nodes, parameters and result of the fused conv body (see :func:`conv_function`)."""
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
        spec = ACTIVATION_BY_OPTION[activation]
        inputs: list[gs.Tensor] = [output]
        output = gs.Variable("y")
        node_attrs: dict[str, Any] = {}
        if spec is SILU:
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
    return body, inputs_of_body, [output]


def _ints(value: Any) -> list[int]:
    return [int(v) for v in value]


def explicit_conv_attrs(conv: gs.Node, weights: np.ndarray) -> tuple[dict[str, Any] | None, str]:
    """The attributes of ``conv`` (a Conv with ``weights``) as a fused conv body states them: every
    entry of :data:`CONV_ATTRS`, ``auto_pad`` resolved into pads; or None and why not."""
    spatial = weights.ndim - 2
    if spatial < 1:
        return None, f"weights have rank {weights.ndim}"
    kernel = _ints(conv.attrs.get("kernel_shape", weights.shape[2:]))
    if kernel != list(weights.shape[2:]):
        return None, f"kernel_shape {kernel} differs from the weights' shape {list(weights.shape[2:])}"
    strides = _ints(conv.attrs.get("strides", [1] * spatial))
    dilations = _ints(conv.attrs.get("dilations", [1] * spatial))
    group = int(conv.attrs.get("group", 1))
    auto_pad = text_attr(conv, "auto_pad", "NOTSET")
    if auto_pad == "NOTSET":
        pads = _ints(conv.attrs.get("pads", [0] * (2 * spatial)))
    elif auto_pad == "VALID":
        pads = [0] * (2 * spatial)
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        input_shape = conv.inputs[0].shape
        sizes = (list(input_shape[2:]) if input_shape and len(input_shape) == spatial + 2
                 else [None] * spatial)
        pads = same_pads(auto_pad, kernel, strides, dilations, sizes)
        if pads is None:
            return None, (f"auto_pad {auto_pad} with strides {strides} needs a static input "
                          "spatial shape")
    else:
        return None, f"unknown auto_pad '{auto_pad}'"
    return {"kernel_shape": kernel, "strides": strides, "pads": pads, "dilations": dilations,
            "group": group}, ""


def conv_call_info(graph: gs.Graph, node: gs.Node) -> ConvCallInfo | None:
    """The :class:`ConvCallInfo` of ``node`` if it calls a fused conv function with constant W and B
    (and, for ``ConvBiasAdd...`` functions, a residual input Z), else None. Reads the function body,
    not its name."""
    if not is_fused_layer(node) or len(node.inputs) not in (3, 4) or len(node.outputs) != 1:
        return None
    function = function_of(graph, node)
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
        return ConvCallInfo(node, function, attrs, SILU.option, {}, weights, bias, residual)
    if len(rest) != 1 or rest[0].op not in ACTIVATIONS:
        return None
    activation_node = rest[0]
    spec = ACTIVATIONS[activation_node.op]
    params: dict[str, float] = {}
    if spec.op == "Clip":
        for bound, tensor in zip(("min", "max"), activation_node.inputs[1:]):
            value = constant_value(tensor) if not tensor.is_empty() else None
            if value is not None:
                params[bound] = float(np.asarray(value).reshape(-1)[0])
    else:
        for param, _, default in spec.params:
            params[param] = float(activation_node.attrs.get(param, default))
    return ConvCallInfo(node, function, attrs, spec.option, params, weights, bias, residual)


def is_fused_conv(graph: gs.Graph, node: gs.Node) -> bool:
    """Whether ``node`` calls a fused layer whose body starts with a Conv of the call's first input
    (a fused conv of any epilogue, whatever its weights are: constants, or quantized)."""
    if not is_fused_layer(node):
        return False
    function = function_of(graph, node)
    return (function is not None and bool(function.nodes) and function.nodes[0].op == "Conv"
            and bool(function.inputs) and function.nodes[0].inputs[0] is function.inputs[0])
