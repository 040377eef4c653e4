"""average-pool-conv-fusion: an AveragePool and the 1x1 convolution reading it become one convolution.

A 1x1 convolution is linear per position and an average pool is a weighted sum over a window, so
``conv1x1(avgpool(x))`` is a convolution of ``x`` with the pool's window, strides and pads whose
weights are the 1x1 weights tiled over the window and divided by the window's element count. The
pool branch of an Inception module (3x3 average pool, stride 1, then a 1x1 convolution) becomes one
3x3 convolution: one layer fewer, at the price of the convolution's arithmetic times the window
size. Every fusion is therefore priced (:mod:`trtcompile.ir.cost`) and kept within a MAC budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from trtcompile import ir
from trtcompile.ir import cost
from trtcompile.ir.fused_layer import conv_call_info, conv_function, function_name
from trtcompile.ir.rewrite import Match, Reject, RewriteRule, Scope, apply_rule
from trtcompile.pm import Pass, PassContext, PassResult


@dataclass
class _Candidate(Match):
    """A pool and the 1x1 convolution that is its only reader (the anchor), with what the fused
    layer needs."""

    kernel: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()
    weights: np.ndarray | None = None  # [O, C, 1, ..., 1]
    bias: np.ndarray | None = None
    activation: str | None = None
    activation_params: dict[str, float] | None = None
    border_scale: np.ndarray | None = None  # [1, 1, *out_spatial] when pads are not averaged over
    added_macs: int = 0

    @property
    def pool(self) -> gs.Node:
        return self.nodes[0]

    @property
    def conv(self) -> gs.Node:
        return self.nodes[1]


@dataclass(frozen=True)
class AveragePoolConvFusion(Pass, RewriteRule):
    """Fold an ``AveragePool`` into the 1x1 convolution that reads it.

    Rules:
      1. The pattern is ``AveragePool(X)`` whose output is read only by a convolution (not a graph
         output) with a 1x1 kernel, strides 1, no pads, dilations 1, group 1 and constant weights
         (and bias): a plain ``Conv`` or a call of a fused conv function (its activation is kept;
         a call that adds a residual input is left alone).
      2. The pool must be an ordinary window average: ``ceil_mode`` 0, dilations 1, ``auto_pad``
         NOTSET or VALID, or SAME_UPPER/SAME_LOWER with a static input shape (the pads are then
         computed as ONNX does).
      3. The fused convolution has the pool's kernel, strides and pads and the weights
         ``W[o, c] / n`` on every tap of the window (``n`` = window elements). When the pool counts
         padded elements (``count_include_pad=1``) or has no pads, that is all: a plain ``Conv`` or
         a call of the fused conv function with the new attributes.
      4. Otherwise (``count_include_pad=0`` with pads, the Keras/TensorFlow ``'same'`` pool) a
         border output averages fewer elements: the convolution output before the bias is
         multiplied by the constant map ``n / n_valid(p)`` (1 inside, larger on the border; needs
         a static input shape). The layer is a call of ``ConvScaleBias<Act>_<attributes>`` with
         inputs (X, W, S, B) whose body is ``Conv(x, w)``, ``Mul(·, s)``, ``Add(·, b)`` and the
         activation. TensorRT(-RTX) builds it as one layer (measured on TensorRT-RTX 1.7: the
         Inception pool branches become one fused convolution each).
      5. A fusion multiplies the convolution's MACs by ``n``. Candidates are priced with
         :mod:`trtcompile.ir.cost` and accepted, cheapest first, while the MACs added in this
         compilation stay within ``max_extra_macs`` times the model's MACs (a budget shared with
         the other arithmetic-increasing passes); the others are rejected with their price.
         ``added_macs`` counts what was spent.

    Requires: nothing (run it after ``conv-bias-activation-fusion`` to keep activations fused).
    Preserves: graph inputs and outputs, topological order, every output within FP32 rounding
    (the same sum of products, in another order). Options: ``max_extra_macs`` (a fraction of the
    model's MACs; 0.1 by default).
    """

    name: ClassVar[str] = "average-pool-conv-fusion"
    anchor_ops: ClassVar[frozenset[str]] = frozenset({"AveragePool"})
    needs_ops: ClassVar[frozenset[str]] = anchor_ops
    rule: ClassVar[str] = "fuse-pool-into-conv"
    # Every candidate is priced before any is accepted: the cheapest go first (see ``order``).
    match_all_first: ClassVar[bool] = True

    max_extra_macs: float = 0.1

    def __post_init__(self) -> None:
        cost.check_budget(self.name, self.max_extra_macs)

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = apply_rule(self, graph, ctx, PassResult(), who=self.name)
        if result.counts:
            graph.cleanup(remove_unused_node_outputs=False, remove_unused_graph_inputs=False)
            ir.toposort(graph)
        return result

    def match(self, pool: gs.Node, scope: Scope) -> _Candidate | Reject | None:
        found = self._reader(scope.graph, pool, scope.outputs)
        if not isinstance(found, gs.Node):
            return found
        return self._candidate(scope.graph, pool, found, _shapes(scope))

    def order(self, matches: list[_Candidate], scope: Scope) -> list[_Candidate]:
        return sorted(matches, key=lambda c: (c.added_macs, c.conv.name))

    def check(self, candidate: _Candidate, scope: Scope) -> str | None:
        ledger = self._ledger(scope)
        if ledger.allows(candidate.added_macs, self.max_extra_macs):
            return None
        return (f"fusing would add {cost.format_macs(candidate.added_macs)} "
                f"({ledger.share(candidate.added_macs)} of the model's "
                f"{cost.format_macs(ledger.baseline)}); "
                f"{cost.format_macs(ledger.remaining(self.max_extra_macs))} of "
                f"max-extra-macs={self.max_extra_macs:g} remain")

    def rewrite(self, candidate: _Candidate, scope: Scope) -> list[gs.Node]:
        self._ledger(scope).spend(self.name, f"{candidate.pool.name} into {candidate.conv.name}",
                                  candidate.added_macs)
        fused = self._fuse(scope.graph, candidate, scope.names)
        scope.count("fused_pools")
        scope.count("border_scaled" if candidate.border_scale is not None else "plain_windows")
        scope.count("added_macs", candidate.added_macs)
        return [fused]

    @staticmethod
    def _ledger(scope: Scope) -> cost.MacLedger:
        return scope.once("ledger", lambda: cost.mac_ledger(scope.graph, scope.ctx.resources,
                                                            _shapes(scope)))

    # Matching ----------------------------------------------------------------------------------

    @staticmethod
    def _reader(graph: gs.Graph, pool: gs.Node, graph_outputs: set[str]) -> gs.Node | Reject | None:
        """The convolution that is the pool's only reader (rule 1), why there is none, or None."""
        output = pool.outputs[0]
        if not ir.has_single_use(output, graph_outputs):
            readers = len(output.outputs) + (output.name in graph_outputs)
            if readers > 1:
                return Reject([pool], f"the pooled tensor has {readers} readers: the pool would "
                                      "stay and the fused convolution would only add arithmetic")
            return None
        conv = output.outputs[0]
        if conv.inputs[0] is not output:
            return None
        if ir.is_fused_layer(conv):
            info = conv_call_info(graph, conv)
            if info is None:
                return None
            if info.residual is not None:
                return Reject([pool, conv], f"the convolution adds a residual input "
                                            f"'{info.residual.name}', which the pooled layer's "
                                            "functions do not take")
            attrs = info.attrs
        elif conv.op == "Conv" and ir.is_onnx_op(conv):
            attrs = conv.attrs
        else:
            return None
        weights = conv.inputs[1] if len(conv.inputs) > 1 else None
        bias = conv.inputs[2] if len(conv.inputs) > 2 else None
        if not isinstance(weights, gs.Constant) or (
                bias is not None and not bias.is_empty() and not isinstance(bias, gs.Constant)):
            return Reject([pool, conv], "the convolution's weights or bias are not constants")
        rank = weights.values.ndim - 2
        one = [1] * rank
        expected = {"kernel_shape": one, "strides": one, "pads": [0] * (2 * rank), "dilations": one}
        differs = []
        for key, wanted in expected.items():
            default = list(weights.values.shape[2:]) if key == "kernel_shape" else wanted
            actual = [int(v) for v in attrs.get(key, default)]
            if actual != wanted:
                differs.append(f"{key} {'x'.join(str(v) for v in actual)}")
        if int(attrs.get("group", 1)) != 1:
            differs.append(f"group {int(attrs['group'])}")
        auto_pad = attrs.get("auto_pad", "NOTSET")
        if (auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)) not in ("NOTSET",
                                                                                         "VALID"):
            differs.append(f"auto_pad {auto_pad}")
        if differs:
            return Reject([pool, conv], "the convolution after the pool is not a plain 1x1 "
                                        f"convolution ({', '.join(differs)})")
        return conv

    def _candidate(self, graph: gs.Graph, pool: gs.Node, conv: gs.Node,
                   shapes: dict[str, cost.Shape]) -> _Candidate | Reject:
        """The fusion of ``pool`` into ``conv`` (rules 2-4) with its price, or why there is none."""
        x = pool.inputs[0]
        x_shape = shapes.get(x.name) or ir.static_shape(x)
        kernel = tuple(int(k) for k in pool.attrs.get("kernel_shape", ()))
        rank = len(kernel)
        strides = tuple(int(s) for s in pool.attrs.get("strides", [1] * rank))
        if int(pool.attrs.get("ceil_mode", 0)):
            return Reject([pool, conv], "ceil_mode=1: the last windows are clipped, so their "
                                        "divisor is not the convolution's")
        if any(int(d) != 1 for d in pool.attrs.get("dilations", [1] * rank)):
            return Reject([pool, conv], "dilated pooling window")
        pads = _pool_pads(pool, kernel, strides, x_shape)
        if pads is None:
            return Reject([pool, conv], "auto_pad SAME needs a static input shape to place the pads")
        weights = conv.inputs[1].values
        if weights.ndim - 2 != rank:
            return Reject([pool, conv], f"pool window rank {rank} differs from the convolution's "
                                        f"{weights.ndim - 2}")
        window = math.prod(kernel)
        tiled = np.broadcast_to(weights, (*weights.shape[:2], *kernel)) / np.asarray(window,
                                                                                      weights.dtype)
        info = conv_call_info(graph, conv) if ir.is_fused_layer(conv) else None
        bias_tensor = info.bias if info is not None else (
            conv.inputs[2] if len(conv.inputs) > 2 and not conv.inputs[2].is_empty() else None)
        candidate = _Candidate([pool, conv], conv, "", kernel, strides, pads,
                               np.ascontiguousarray(tiled, dtype=weights.dtype),
                               None if bias_tensor is None else bias_tensor.values.reshape(-1),
                               info.activation if info else None,
                               info.activation_params if info else None)
        if any(pads) and not int(pool.attrs.get("count_include_pad", 0)):
            if x_shape is None:
                return Reject([pool, conv], "count_include_pad=0 with pads needs a static input "
                                            "shape to build the border divisor map")
            candidate.border_scale = _border_scale(x_shape[2:], kernel, strides, pads,
                                                   weights.dtype)
        conv_out = shapes.get(conv.outputs[0].name) or ir.static_shape(conv.outputs[0])
        if x_shape is None or conv_out is None:
            return Reject([pool, conv], "input or output shapes are not static, so the MACs the "
                                        "fusion adds cannot be priced")
        macs = cost.conv_macs(x_shape, weights.shape, {}, conv_out)
        candidate.added_macs = macs * (window - 1)
        return candidate

    # Rewrite -----------------------------------------------------------------------------------

    def _fuse(self, graph: gs.Graph, candidate: _Candidate, scope: ir.NameScope) -> gs.Node:
        pool, conv = candidate.pool, candidate.conv
        x, y = pool.inputs[0], conv.outputs[0]
        rank = len(candidate.kernel)
        attrs: dict[str, Any] = {"kernel_shape": list(candidate.kernel),
                                 "strides": list(candidate.strides), "pads": list(candidate.pads),
                                 "dilations": [1] * rank, "group": 1}
        dtype = candidate.weights.dtype
        out_channels = candidate.weights.shape[0]
        bias = (candidate.bias if candidate.bias is not None
                else np.zeros(out_channels, dtype=dtype)).astype(dtype)
        name = conv.name
        w = gs.Constant(scope.fresh(f"{name}_W"), candidate.weights)
        pool.inputs.clear()
        pool.outputs.clear()
        conv.inputs.clear()
        conv.outputs.clear()
        if candidate.border_scale is not None:
            function = _scaled_conv_function(graph, attrs, candidate.activation,
                                             candidate.activation_params or {}, dtype)
            s = gs.Constant(scope.fresh(f"{name}_S"), candidate.border_scale)
            b = gs.Constant(scope.fresh(f"{name}_B"),
                            bias.reshape((1, out_channels) + (1,) * rank))
            fused = ir.call(function, name, [x, w, s, b], [y])
        elif ir.is_fused_layer(conv) or candidate.activation is not None:
            function = conv_function(graph, attrs, candidate.activation,
                                     candidate.activation_params, dtype=dtype)
            fused = ir.call(function, name, [x, w, gs.Constant(scope.fresh(f"{name}_B"), bias)], [y])
        else:
            inputs = [x, w]
            if candidate.bias is not None:
                inputs.append(gs.Constant(scope.fresh(f"{name}_B"), bias))
            fused = gs.Node("Conv", name=name, attrs=attrs, inputs=inputs, outputs=[y])
        return fused


def _shapes(scope: Scope) -> dict[str, cost.Shape]:
    """The static shapes of the scope's tensors as the run started (for pricing)."""
    return scope.once("shapes", lambda: cost.tensor_shapes(scope.graph))


def _pool_pads(pool: gs.Node, kernel: tuple[int, ...], strides: tuple[int, ...],
               x_shape: cost.Shape | None) -> tuple[int, ...] | None:
    """The pool's explicit pads (begin..., end...), resolving ``auto_pad`` as ONNX does."""
    rank = len(kernel)
    auto_pad = ir.text_attr(pool, "auto_pad", "NOTSET")
    if auto_pad == "VALID":
        return (0,) * (2 * rank)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        if x_shape is None:
            return None
        pads = ir.same_pads(auto_pad, kernel, strides, (1,) * rank, x_shape[2:])
        return None if pads is None else tuple(pads)
    return tuple(int(p) for p in pool.attrs.get("pads", [0] * (2 * rank)))


def _border_scale(spatial: tuple[int, ...], kernel: tuple[int, ...], strides: tuple[int, ...],
                  pads: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """``n / n_valid(p)`` for every output position ``p``: the window size over the number of its
    elements inside the input (separable: the product over axes of the per-axis counts)."""
    rank = len(kernel)
    out = cost.conv_output_spatial(spatial, kernel, strides, pads, [1] * rank)
    scale = np.ones((1, 1), dtype=np.float64)
    for i in range(rank):
        starts = np.arange(out[i]) * strides[i] - pads[i]
        valid = np.minimum(starts + kernel[i], spatial[i]) - np.maximum(starts, 0)
        scale = np.multiply.outer(scale, kernel[i] / valid)
    return scale.reshape((1, 1, *out)).astype(dtype)


def _scaled_conv_function(graph: gs.Graph, attrs: dict[str, Any], activation: str | None,
                          activation_params: dict[str, float], dtype: np.dtype) -> gs.Function:
    """The fused layer ``act(Conv(x, w) * s + b)``: built from the fused conv function of the same
    attributes (whose activation nodes it reuses), named ``ConvScaleBias<Act>_<attributes>``."""
    name = "ConvScaleBias" + function_name(attrs, activation, activation_params,
                                           dtype)[len("ConvBias"):]
    # The activation (and any constants it reads) as conv_function spells it: one convention for
    # every fused conv, whatever its epilogue.
    template = conv_function(gs.Graph(opset=ir.opset(graph)), attrs, activation, activation_params,
                             dtype=dtype)
    x, w, s, b = (gs.Variable(n) for n in ("x", "w", "s", "b"))
    conv_out, scaled = gs.Variable("conv_out"), gs.Variable("scaled")
    biased = gs.Variable("biased" if activation else "y")
    conv_attrs = {key: (list(value) if key != "group" else int(value)) for key, value in attrs.items()}
    body = [
        gs.Node("Conv", name="conv", inputs=[x, w], outputs=[conv_out], attrs=conv_attrs),
        gs.Node("Mul", name="border_scale", inputs=[conv_out, s], outputs=[scaled]),
        gs.Node("Add", name="bias", inputs=[scaled, b], outputs=[biased]),
    ]
    output = biased
    if activation:
        template_conv_out = template.nodes[0].outputs[0]
        renamed: dict[int, gs.Tensor] = {id(template_conv_out): biased}
        for node in template.nodes[1:]:
            inputs = [renamed.get(id(t), t) for t in node.inputs]
            outputs = [gs.Variable(t.name) for t in node.outputs]
            for old, new in zip(node.outputs, outputs):
                renamed[id(old)] = new
            body.append(gs.Node(node.op, name=node.name, attrs=dict(node.attrs), inputs=inputs,
                                outputs=outputs))
        output = renamed[id(template.outputs[0])]
    function = gs.Function(name, domain=ir.TRTCOMPILE_DOMAIN, nodes=body, inputs=[x, w, s, b],
                           outputs=[output], opset=ir.opset(graph))
    return ir.add_local_function(graph, function)
