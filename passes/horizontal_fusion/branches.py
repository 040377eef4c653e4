"""horizontal-fusion's candidates: the layers that may merge (rule 1), how they are keyed (rule 2),
and what the merge rules ask of the graph around them (reachability, the Concat they feed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import onnx_graphsurgeon as gs

from trtcompile import ir
from trtcompile.ir.fused_layer import conv_call_info


@dataclass
class _Branch:
    """One layer that may merge: what it reads, how it is keyed, its weights."""

    node: gs.Node
    family: str  # "conv" (Conv or fused conv call), "matmul" or "gemm"
    key: tuple  # equal keys <=> the layers differ only in their weights
    described: dict[str, Any]  # attributes as shown in rejection reasons
    channels: int | None  # output channels (conv) or columns (matmul, gemm) it contributes
    dynamic_inputs: list[gs.Tensor]  # inputs besides X that are not constants
    residual: gs.Tensor | None = None  # a fused conv call's residual input Z

    @property
    def output(self) -> gs.Tensor:
        return self.node.outputs[0]


def candidate(graph: gs.Graph, node: gs.Node, ops: tuple[str, ...]) -> _Branch | None:
    """The layer ``node`` as a merge candidate (rule 1) of the op families ``ops``, or None."""
    if len(node.outputs) != 1 or not node.inputs or isinstance(node.inputs[0], gs.Constant):
        return None
    if ir.is_fused_layer(node):
        return _conv_call(graph, node) if "conv" in ops else None
    if not ir.is_onnx_op(node):
        return None
    if node.op == "Conv" and "conv" in ops:
        return _conv(node)
    if node.op == "MatMul" and "matmul" in ops:
        return _matmul(node)
    if node.op == "Gemm" and "gemm" in ops:
        return _gemm(node)
    return None


def _conv(node: gs.Node) -> _Branch | None:
    if len(node.inputs) < 2:
        return None
    weights = node.inputs[1]
    shape = weights.shape
    kernel = node.attrs.get("kernel_shape")
    if kernel is None and shape is not None and all(isinstance(d, int) for d in shape[2:]):
        kernel = shape[2:]
    if kernel is None:
        return None
    rank = len(kernel)
    auto_pad = ir.text_attr(node, "auto_pad", "NOTSET")
    pads = list(node.attrs.get("pads", [0] * (2 * rank)))
    if auto_pad == "VALID":  # VALID is zero padding: key it like explicit zero pads
        auto_pad, pads = "NOTSET", [0] * (2 * rank)
    described = {
        "kernel_shape": tuple(int(k) for k in kernel),
        "strides": tuple(int(s) for s in node.attrs.get("strides", [1] * rank)),
        "pads": tuple(int(p) for p in pads),
        "dilations": tuple(int(d) for d in node.attrs.get("dilations", [1] * rank)),
        "group": int(node.attrs.get("group", 1)),
        "auto_pad": auto_pad,
    }
    channels = shape[0] if shape is not None and isinstance(shape[0], int) else None
    dynamic = [t for t in node.inputs[1:] if not isinstance(t, gs.Constant) and not t.is_empty()]
    return _Branch(node, "conv", ("Conv", *described.values()), described, channels, dynamic)


def _conv_call(graph: gs.Graph, node: gs.Node) -> _Branch | None:
    info = conv_call_info(graph, node)
    if info is None:
        return None
    described = {key: tuple(v) if isinstance(v, list) else v for key, v in info.attrs.items()}
    described["activation"] = info.activation or "none"
    described.update(info.activation_params)
    return _Branch(node, "conv", ("call", node.domain, node.op), described,
                   int(info.weights.shape[0]), [], info.residual)


def _matmul(node: gs.Node) -> _Branch | None:
    weights = node.inputs[1]
    if weights.shape is not None and len(weights.shape) != 2:
        return None  # batched weights: not a projection of X
    channels = (weights.shape[1] if weights.shape is not None
                and isinstance(weights.shape[1], int) else None)
    dynamic = [] if isinstance(weights, gs.Constant) else [weights]
    return _Branch(node, "matmul", ("MatMul",), {}, channels, dynamic)


def _gemm(node: gs.Node) -> _Branch | None:
    weights = node.inputs[1]
    if weights.shape is not None and len(weights.shape) != 2:
        return None
    trans_b = int(node.attrs.get("transB", 0))
    channels = None if weights.shape is None else weights.shape[0 if trans_b else 1]
    described = {
        "transA": int(node.attrs.get("transA", 0)),
        "alpha": float(node.attrs.get("alpha", 1.0)),
        "beta": float(node.attrs.get("beta", 1.0)),
    }
    dynamic = [t for t in node.inputs[1:] if not isinstance(t, gs.Constant) and not t.is_empty()]
    return _Branch(node, "gemm", ("Gemm", *described.values()), described,
                   channels if isinstance(channels, int) else None, dynamic)


class _Reachability:
    """Lazily built dataflow graph answering "does this layer read another one's result?"."""

    def __init__(self, graph: gs.Graph):
        self._graph = graph
        self._dag = None
        self._index: dict[int, int] = {}

    def reached_from(self, member: _Branch, others: list[gs.Node]) -> gs.Node | None:
        """The first of ``others`` from which ``member``'s node is reachable, or None."""
        import networkx as nx

        if self._dag is None:
            self._dag = ir.to_networkx(self._graph)
            self._index = {id(data["node"]): i for i, data in self._dag.nodes(data=True)}
        ancestors = nx.ancestors(self._dag, self._index[id(member.node)])
        for other in others:
            if self._index.get(id(other)) in ancestors:
                return other
        return None


def _concat_on_merge_axis(concat: gs.Node, branch: _Branch) -> bool:
    """Whether ``concat`` joins along the axis the merged layer's Split would cut (rule 6)."""
    axis = _concat_axis(concat)
    if branch.family != "matmul":
        return axis == 1
    if int(concat.attrs.get("axis", 0)) == -1:
        return True
    shape = concat.outputs[0].shape
    return shape is not None and axis == len(shape) - 1


def _concat_axis(concat: gs.Node) -> int | None:
    axis = int(concat.attrs.get("axis", 0))
    if axis >= 0:
        return axis
    shape = concat.outputs[0].shape
    return axis + len(shape) if shape is not None else None


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "x".join(str(v) for v in value) if value else "()"
    return str(value)
