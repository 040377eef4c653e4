"""attention-head-layout: lay out scaled dot-product attention so TensorRT runs it without copies.

Transformer exports write each attention head split as ``MatMul -> Add(bias) -> Reshape -> Transpose``
for the query, key and value, and the scores as ``MatMul(Q, K^T) -> scale -> (+ mask) -> Softmax ->
MatMul(., V)``. TensorRT merges the three projections into one GEMM and then copies each slice out
with its bias and transpose (three layers per attention block). This pass writes the block in the
form TensorRT reads straight from the merged GEMM's output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from trtcompile import ir
from trtcompile.pm import Pass, PassContext, PassResult

#: Permutations from the ``[B, S, H, D]`` head split to the operand the attention reads.
_HEADS_FIRST = (0, 2, 1, 3)  # [B, H, S, D]: query, value
_HEADS_FIRST_TRANSPOSED = (0, 2, 3, 1)  # [B, H, D, S]: key, transposed for Q . K^T
#: Casts allowed between the Softmax and the value MatMul (transformers casts the probabilities
#: back to the activation type): to these types rows of probabilities still sum to 1 up to rounding.
_FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                          onnx.TensorProto.DOUBLE})


@dataclass
class _Projection:
    """``Transpose(Reshape(MatMul(x, W) [+ b]))``: one of the query, key or value head splits."""

    x: gs.Tensor
    weights: np.ndarray  # [E, H * D]
    bias: np.ndarray | None  # [H * D]
    heads: int
    head_size: int
    nodes: list[gs.Node]


@dataclass
class _Block:
    """A matched attention block."""

    query: _Projection
    key: _Projection
    value: _Projection
    scores: gs.Node  # MatMul(Q, K^T)
    pointwise: list[gs.Node]  # scale and mask ops between the scores and the Softmax, in order
    masks: list[tuple[gs.Node, int]]  # (Add node, index of its mask input)
    softmax: gs.Node
    casts: list[gs.Node]
    context: gs.Node  # MatMul(P, V)
    output_matmul: gs.Node | None  # the output projection, when the value bias is folded into it
    output_bias: gs.Node | None  # its bias Add, if any


@dataclass(frozen=True)
class AttentionHeadLayout(Pass):
    """Rewrite ``softmax(Q K^T * s + M) V`` with projected, head-split Q, K, V so that TensorRT
    reads the query, key and value heads straight from their (merged) projection GEMM.

    Rules (a block whose query has a bias rewrites only when all apply, each one alone does not
    pay, see below; a block whose query has no bias gets rules 2 and 3 only, which then leave no
    bias between the merged GEMM and the attention; a block without any of the three biases is
    left alone):
      1. Per-head weights: a head split ``Transpose(Reshape(MatMul(x, W) + b, [B, S, H, D]))`` with
         constant ``W [E, H*D]`` and bias becomes ``MatMul(Unsqueeze(x, 1), W') + b'`` with
         ``W' = W`` laid out ``[H, E, D]`` and ``b' [H, 1, D]``: the same products, written
         ``[B, H, S, D]`` by the GEMM itself. Exact.
      2. Key bias dropped: ``(Q)(K + 1 b_k^T)^T = Q K^T + (Q b_k) 1^T`` adds to every score of a
         query row the same number; the scale keeps it row-constant and Softmax over the key axis
         does not see it (``softmax(z + c) = softmax(z)``). Requires that only scalar-constant
         ``Mul``/``Div`` and ``Add`` lie between the scores and the Softmax. Exact up to rounding.
      3. Value bias folded into the output projection: the probabilities of a row sum to 1, so
         ``P (V + 1 b_v^T) = P V + 1 b_v^T``; after the heads merge and the output projection
         ``(. + b_v) W_o + b_o = . W_o + (b_v W_o + b_o)``. Requires the context to reach the
         output ``MatMul`` with constant ``W_o`` only through the merging ``Transpose`` and
         ``Reshape``, and only float ``Cast`` ops between Softmax and the value ``MatMul``. Exact
         up to rounding (a fully masked row with an infinite mask is NaN before and after).
      4. Transposed scores: ``S = Q K^T`` becomes ``S^T = K Q^T``; the scale and mask ops apply to
         ``S^T`` (each mask transposed in its last two axes, one Transpose per mask tensor shared
         by every block; a constant mask becomes a new constant holding the transposed values),
         the Softmax runs over axis 2 (the key axis of ``S^T``) and the value MatMul reads
         ``Transpose(P^T)``. Exact: the same numbers in another layout. Requires
         opset >= 13 (Softmax on one axis) and masks of known rank.

    Measured with TensorRT-RTX 1.7 (FP32): one BERT-base attention block builds 9 compute layers
    as exported (merged QKV GEMM, three bias+reshape+transpose copies, scores GEMM, softmax kernel,
    context GEMM, head-merge copy, output GEMM) and 7 after this pass: the query's bias kernel writes
    ``Q^T``, the key and value GEMM outputs are read in place (the score GEMM reads ``K`` and the
    context GEMM reads ``P^T`` transposed, without copies). Each rule alone builds 9 to 11 layers
    (a key or value without its bias Add is copied out of the merged GEMM by a layer of its own),
    so the pass applies them together. Without biases TensorRT reads the heads in place from the
    exported layout (6 layers), fewer than rule 4's form builds (7): a query without bias keeps
    the layout and loses only the key and value biases (9 -> 6), and a block with no bias is left
    alone. On transformers exports (docs/benchmarks.md, default
    pipeline, FP32): BERT-base 159 -> 136, DistilBERT 79 -> 68, ViT-B/16 209 -> 185 engine compute
    layers; BERT and DistilBERT compute their mask in the graph, and its transpose costs one layer
    for the model. Not for FP16 engines: TensorRT fuses the standard form into one attention
    kernel there and the transposed one breaks it (DistilBERT FP16: 62 -> 74 layers); INT8 engines
    were not measured and are left alone too. So the pass leaves blocks with non-float32 weights
    alone, and a compile passes the engine precision in ``resources["attention-head-layout"]``.
    The ONNX ``Attention`` op (opset 23) does not pay either: TensorRT-RTX 1.7 builds it in FP32
    only without a mask (7 layers, as many as the primitives) and in FP16 with one layer more
    than the primitives TensorRT fuses itself. Adds no MACs. Requires: constant projection weights and
    biases (``fold-constants``). Preserves: graph inputs and outputs. Counts: ``attention_blocks``,
    ``unbiased_blocks`` (rules 2 and 3 only), ``key_biases_dropped``, ``value_biases_folded``,
    ``masks_transposed``.
    """

    name: ClassVar[str] = "attention-head-layout"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = PassResult()
        softmaxes = [node for node in graph.nodes if node.op == "Softmax" and ir.is_onnx_op(node)]
        if not softmaxes:
            return result
        precision = str((ctx.resources.get(self.name) or {}).get("precision", "fp32")).lower()
        opset = ir.opset(graph)
        dims = ir.ShapeFacts(graph, ctx.log, self.name).inferred
        graph_outputs = ir.output_names(graph)
        scope: ir.NameScope | None = None
        unsqueezed: dict[str, gs.Tensor] = {}
        transposed_masks: dict[str, gs.Tensor] = {}
        new_nodes: list[gs.Node] = []
        rewritten = False
        for softmax in softmaxes:
            block = _match(softmax, opset, dims, graph_outputs, result)
            if block is None:
                continue
            all_nodes = [*block.query.nodes, *block.key.nodes, *block.value.nodes, block.scores,
                         *block.pointwise, softmax, *block.casts, block.context]
            if precision != "fp32":
                result.reject([block.scores, softmax, block.context],
                              f"the engine is built in {precision.upper()}: TensorRT fuses standard "
                              "attention into one kernel there, which transposed scores prevent")
                continue
            biases = [p.bias is not None for p in (block.query, block.key, block.value)]
            if not any(biases):
                result.reject([block.scores, softmax, block.context],
                              "no query, key or value bias: TensorRT reads the heads from the "
                              "merged GEMM in place already")
                continue
            if biases[0] and opset < 13:
                result.reject([block.scores, softmax, block.context],
                              f"opset {opset} < 13: Softmax flattens trailing axes, so it cannot "
                              "run over the key axis of transposed scores")
                continue
            if not ctx.may_rewrite("attention-head-layout", all_nodes, result):
                continue
            if scope is None:
                scope = ir.NameScope(graph)
            rewritten = True
            if biases[0]:
                new_nodes += _rewrite(block, scope, unsqueezed, transposed_masks, dims, result)
            else:
                new_nodes += _drop_biases(block, scope, result)
        if rewritten:
            graph.nodes.extend(new_nodes)
            graph.cleanup(remove_unused_node_outputs=False, remove_unused_graph_inputs=False)
            ir.toposort(graph)
        return result


# --------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------


def _single_reader(tensor: gs.Tensor, graph_outputs: set[str]) -> gs.Node | None:
    return tensor.outputs[0] if ir.has_single_use(tensor, graph_outputs) else None


def _scalar(tensor: gs.Tensor) -> bool:
    value = ir.constant_value(tensor)
    return value is not None and value.size == 1 and np.issubdtype(value.dtype, np.floating)


def _rank(tensor: gs.Tensor, dims: dict) -> int | None:
    if isinstance(tensor, gs.Constant):
        return tensor.values.ndim
    value = ir.constant_value(tensor)
    if value is not None:
        return value.ndim
    if tensor.shape is not None:
        return len(tensor.shape)
    known = dims.get(tensor.name)
    return None if known is None else len(known)


def _known_dims(tensor: gs.Tensor, dims: dict) -> list | None:
    """The tensor's dims, each an int where the graph or shape inference knows it."""
    own, inferred = tensor.shape, dims.get(tensor.name)
    if own is None or inferred is None:
        return own if own is not None else inferred
    if len(own) != len(inferred):
        return None
    return [a if isinstance(a, int) else b for a, b in zip(own, inferred)]


def _match(softmax: gs.Node, opset: int, dims: dict, graph_outputs: set[str],
           result: PassResult) -> _Block | None:
    """The attention block around ``softmax``, or None (with the reason recorded when the Softmax
    does sit in an attention-shaped chain)."""
    # Up from the Softmax: scalar scale and mask Adds, then the score MatMul.
    pointwise: list[gs.Node] = []
    masks: list[tuple[gs.Node, int]] = []
    tensor = softmax.inputs[0]
    while True:
        node = ir.producer(tensor)
        if node is None or not ir.is_onnx_op(node):
            return None
        if node.op == "MatMul":
            break
        if node.op not in ("Mul", "Div", "Add") or len(node.inputs) != 2:
            return None
        if not ir.has_single_use(tensor, graph_outputs):
            return None
        leads = [_leads_to_matmul(t) for t in node.inputs]
        if leads.count(True) != 1:
            return None
        chain_index = leads.index(True)
        other = node.inputs[1 - chain_index]
        if node.op == "Div" and chain_index != 0:
            result.reject([node, softmax], "the scores are a divisor, not scaled by a constant")
            return None
        if node.op in ("Mul", "Div") and not _scalar(other):
            result.reject([node, softmax], f"the scores' {node.op} is not by a scalar constant")
            return None
        if node.op == "Add":
            masks.append((node, 1 - chain_index))
        pointwise.insert(0, node)
        tensor = node.inputs[chain_index]
    scores = node
    if not ir.has_single_use(scores.outputs[0], graph_outputs):
        return None
    # Down from the Softmax: float Casts, then the value MatMul.
    axis = int(softmax.attrs.get("axis", -1 if opset >= 13 else 1))  # opset 13 changed the default
    casts: list[gs.Node] = []
    tensor = softmax.outputs[0]
    while True:
        reader = _single_reader(tensor, graph_outputs)
        if reader is None or not ir.is_onnx_op(reader):
            return None
        if reader.op == "Cast" and int(reader.attrs.get("to", 0)) in _FLOAT_TYPES:
            casts.append(reader)
            tensor = reader.outputs[0]
            continue
        if reader.op != "MatMul" or reader.inputs[0] is not tensor:
            return None
        break
    context = reader
    if axis not in (-1, 3):
        result.reject([scores, softmax], f"Softmax over axis {axis}, not the key axis")
        return None
    query = _projection(scores.inputs[0], _HEADS_FIRST, dims, graph_outputs)
    key = _projection(scores.inputs[1], _HEADS_FIRST_TRANSPOSED, dims, graph_outputs)
    value = _projection(context.inputs[1], _HEADS_FIRST, dims, graph_outputs)
    for role, found in (("query", query), ("key", key), ("value", value)):
        if isinstance(found, str):
            result.reject([scores, softmax, context], f"the {role} is not a head split of a constant "
                                                      f"projection: {found}")
            return None
    if any(p.weights.dtype != np.float32 for p in (query, key, value)):
        result.reject([scores, softmax, context], "the projections are not float32: TensorRT "
                                                  "fuses FP16 attention into one kernel")
        return None
    if not (query.heads == key.heads == value.heads and query.head_size == key.head_size):
        result.reject([scores, softmax, context], "query, key and value head counts differ")
        return None
    for add, index in masks:
        rank = _rank(add.inputs[index], dims)
        if rank is None or rank > 4:
            result.reject([add, softmax], "the mask's rank is not known" if rank is None else
                          f"the mask has rank {rank}, more than the scores' 4")
            return None
    output_matmul = output_bias = None
    if value.bias is not None:
        found = _output_projection(context, value, graph_outputs)
        if isinstance(found, str):
            result.reject([context], f"the value bias cannot be folded: {found}")
            return None
        output_matmul, output_bias = found
    return _Block(query, key, value, scores, pointwise, masks, softmax, casts, context,
                  output_matmul, output_bias)


def _leads_to_matmul(tensor: gs.Tensor, depth: int = 8) -> bool:
    """Whether ``tensor`` comes from a MatMul through at most ``depth`` Mul, Div and Add ops, each
    with one such input (the score side of the chain before a Softmax, as opposed to a mask or a
    scale)."""
    node = ir.producer(tensor)
    if node is None or not ir.is_onnx_op(node):
        return False
    if node.op == "MatMul":
        return True
    if depth == 0 or node.op not in ("Mul", "Div", "Add") or len(node.inputs) != 2:
        return False
    return [_leads_to_matmul(t, depth - 1) for t in node.inputs].count(True) == 1


def _projection(tensor: gs.Tensor, perm: tuple[int, ...], dims: dict,
                graph_outputs: set[str]) -> _Projection | str:
    """The head-split projection that ``tensor`` is, or the reason it is not one."""
    nodes: list[gs.Node] = []
    composed = tuple(range(4))
    # One Transpose, or two that compose to ``perm`` (``.transpose(1, 2)`` then ``.transpose(-1, -2)``).
    while (node := ir.producer(tensor)) is not None and node.op == "Transpose" and ir.is_onnx_op(node):
        node_perm = tuple(int(p) for p in node.attrs.get("perm", ()))
        if len(node_perm) != 4:
            return "a Transpose that is not of rank 4"
        composed = tuple(node_perm[i] for i in composed)
        nodes.insert(0, node)
        tensor = node.inputs[0]
        if len(nodes) > 2:
            return "more than two Transposes"
    if not nodes:
        return "no Transpose after the head split"
    if composed != perm:
        return f"the heads are permuted {list(composed)}, not {list(perm)}"
    reshape = ir.producer(tensor)
    if reshape is None or reshape.op != "Reshape" or not ir.is_onnx_op(reshape):
        return "no Reshape splitting the heads"
    nodes.insert(0, reshape)
    tensor = reshape.inputs[0]
    node = ir.producer(tensor)
    bias = None
    if node is not None and node.op == "Add" and ir.is_onnx_op(node):
        for index in (0, 1):
            value = ir.constant_value(node.inputs[index])
            if value is not None and ir.producer(node.inputs[1 - index]) is not None:
                bias, tensor = value, node.inputs[1 - index]
                break
        else:
            return "the bias is not constant"
        nodes.insert(0, node)
        node = ir.producer(tensor)
    if node is None or node.op != "MatMul" or not ir.is_onnx_op(node):
        return "no MatMul projecting the heads"
    weights = ir.constant_value(node.inputs[1])
    if weights is None or weights.ndim != 2:
        return "the projection weights are not a constant matrix"
    nodes.insert(0, node)
    for inner in nodes:  # the head split feeds this attention only (decoders also output K, V)
        if not ir.has_single_use(inner.outputs[0], graph_outputs):
            return f"'{inner.name}' has other readers"
    width = weights.shape[1]
    if bias is not None:
        if bias.size != width or any(d != 1 for d in bias.shape[:-1]) or bias.shape[-1] != width:
            return "the bias is not one value per output feature"
        bias = bias.reshape(width)
        if bias.dtype != weights.dtype:
            return "the bias and weights differ in type"
    x = node.inputs[0]
    x_dims = _known_dims(x, dims)
    if x_dims is None or len(x_dims) != 3:
        return "the projected input is not of rank 3 [batch, sequence, features]"
    shape = ir.constant_value(reshape.inputs[1])
    if shape is None or shape.size != 4:
        return "the head split's shape is not a constant of rank 4"
    target = [int(v) for v in shape.reshape(-1)]
    allowzero = int(reshape.attrs.get("allowzero", 0))
    head_size = target[3]
    if head_size <= 0 or width % head_size:
        return f"head size {head_size} does not divide {width} features"
    heads = width // head_size
    if target[2] not in (-1, heads):
        return "the head split does not split the last axis into heads"
    for axis in (0, 1):
        if target[axis] == 0 and not allowzero:
            continue
        if target[axis] == -1 and target[2] != -1:
            continue  # -1 resolves to this axis: the product of the others is the input's
        if not isinstance(x_dims[axis], int) or x_dims[axis] != target[axis]:
            return "the head split changes the batch or sequence axes"
    return _Projection(x, weights, bias, heads, head_size, nodes)


def _output_projection(context: gs.Node, value: _Projection,
                       graph_outputs: set[str]) -> tuple[gs.Node, gs.Node | None] | str:
    """(output MatMul, its bias Add or None) reached from the context through the head merge."""
    transpose = _single_reader(context.outputs[0], graph_outputs)
    if transpose is None or transpose.op != "Transpose" or \
            tuple(transpose.attrs.get("perm", ())) != _HEADS_FIRST:
        return "the context does not go only to a head-merging Transpose"
    reshape = _single_reader(transpose.outputs[0], graph_outputs)
    if reshape is None or reshape.op != "Reshape":
        return "the heads are not merged by a Reshape"
    shape = ir.constant_value(reshape.inputs[1])
    width = value.heads * value.head_size
    if shape is None or shape.size != 3 or int(shape.reshape(-1)[2]) not in (-1, width):
        return "the Reshape does not merge heads into features"
    matmul = _single_reader(reshape.outputs[0], graph_outputs)
    if matmul is None or matmul.op != "MatMul" or matmul.inputs[0] is not reshape.outputs[0]:
        return "the merged heads are not projected by a MatMul"
    weights = ir.constant_value(matmul.inputs[1])
    if weights is None or weights.ndim != 2 or weights.shape[0] != width:
        return "the output projection weights are not a constant matrix"
    if weights.dtype != value.weights.dtype:
        return "the output projection and value weights differ in type"
    add = _single_reader(matmul.outputs[0], graph_outputs)
    if add is not None and add.op == "Add" and ir.is_onnx_op(add):
        index = 1 if add.inputs[0] is matmul.outputs[0] else 0
        bias = ir.constant_value(add.inputs[index])
        if bias is not None and bias.size == weights.shape[1] and bias.shape[-1] == weights.shape[1]:
            return matmul, add
    return matmul, None


# --------------------------------------------------------------------------------------------
# Rewriting
# --------------------------------------------------------------------------------------------


def _rewrite(block: _Block, scope: ir.NameScope, unsqueezed: dict[str, gs.Tensor],
             transposed_masks: dict[str, gs.Tensor], dims: dict, result: PassResult) -> list[gs.Node]:
    """Rewrite one block in place; returns the new nodes to add to the graph."""
    new: list[gs.Node] = []
    base = block.scores.name or "attention"

    def heads_input(x: gs.Tensor) -> gs.Tensor:
        if x.name not in unsqueezed:
            axes = gs.Constant(scope.fresh(f"{x.name}_heads_axis"), np.array([1], np.int64))
            out = gs.Variable(scope.fresh(f"{x.name}_heads"), dtype=x.dtype)
            new.append(gs.Node("Unsqueeze", name=scope.fresh(f"{base}_unsqueeze"),
                               inputs=[x, axes], outputs=[out]))
            unsqueezed[x.name] = out
        return unsqueezed[x.name]

    def per_head(role: str, projection: _Projection, keep_bias: bool) -> gs.Tensor:
        e, h, d = projection.weights.shape[0], projection.heads, projection.head_size
        matmul = projection.nodes[0]
        weights = gs.Constant(scope.fresh(f"{matmul.name}_heads_weights"), np.ascontiguousarray(
            projection.weights.reshape(e, h, d).transpose(1, 0, 2)))
        out = gs.Variable(scope.fresh(f"{base}_{role}_heads"), dtype=projection.weights.dtype)
        new.append(gs.Node("MatMul", name=scope.fresh(f"{matmul.name}_heads"),
                           inputs=[heads_input(projection.x), weights], outputs=[out]))
        if keep_bias and projection.bias is not None:
            bias = gs.Constant(scope.fresh(f"{matmul.name}_heads_bias"),
                               np.ascontiguousarray(projection.bias.reshape(h, 1, d)))
            biased = gs.Variable(scope.fresh(f"{base}_{role}_heads_biased"), dtype=out.dtype)
            new.append(gs.Node("Add", name=scope.fresh(f"{matmul.name}_heads_bias_add"),
                               inputs=[out, bias], outputs=[biased]))
            out = biased
        return out

    def transpose_last(tensor: gs.Tensor, name: str) -> gs.Tensor:
        out = gs.Variable(scope.fresh(f"{tensor.name}_transposed"), dtype=tensor.dtype)
        new.append(gs.Node("Transpose", name=scope.fresh(name), attrs={"perm": [0, 1, 3, 2]},
                           inputs=[tensor], outputs=[out]))
        return out

    query = per_head("query", block.query, keep_bias=True)
    key = per_head("key", block.key, keep_bias=False)
    value = per_head("value", block.value, keep_bias=False)
    if block.key.bias is not None:
        result.count("key_biases_dropped")
    # Rule 4: S^T = K Q^T, written into the old score MatMul.
    block.scores.inputs = [key, transpose_last(query, f"{base}_query_transpose")]
    for add, index in block.masks:
        mask = add.inputs[index]
        if mask.name not in transposed_masks:
            transposed_masks[mask.name] = _transpose_mask(mask, _rank(mask, dims), scope, new)
            result.count("masks_transposed")
        add.inputs[index] = transposed_masks[mask.name]
    for node in [block.scores, *block.pointwise, block.softmax, *block.casts]:
        node.outputs[0].shape = None  # now laid out [B, H, key, query]
    block.softmax.attrs["axis"] = 2
    probabilities = block.casts[-1].outputs[0] if block.casts else block.softmax.outputs[0]
    block.context.inputs = [transpose_last(probabilities, f"{base}_probabilities_transpose"), value]
    if block.value.bias is not None:
        new += _fold_value_bias(block, scope, result)
    result.count("attention_blocks")
    return new


def _fold_value_bias(block: _Block, scope: ir.NameScope, result: PassResult) -> list[gs.Node]:
    """Rule 3: ``b_v W_o`` joins the output projection's bias (a new Add when it has none)."""
    new: list[gs.Node] = []
    matmul = block.output_matmul
    weights = ir.constant_value(matmul.inputs[1])
    folded = block.value.bias.astype(np.float64) @ weights.astype(np.float64)
    if block.output_bias is not None:
        add = block.output_bias
        index = 1 if add.inputs[0] is matmul.outputs[0] else 0
        old = ir.constant_value(add.inputs[index])
        add.inputs[index] = gs.Constant(scope.fresh(f"{add.name}_bias"), (
            old.astype(np.float64) + folded.reshape(old.shape)).astype(old.dtype))
    else:
        output = matmul.outputs[0]
        product = gs.Variable(scope.fresh(f"{output.name}_unbiased"), dtype=output.dtype,
                              shape=output.shape)
        matmul.outputs = [product]
        bias = gs.Constant(scope.fresh(f"{matmul.name}_bias"), folded.astype(weights.dtype))
        new.append(gs.Node("Add", name=scope.fresh(f"{matmul.name}_bias_add"),
                           inputs=[product, bias], outputs=[output]))
    result.count("value_biases_folded")
    return new


def _drop_biases(block: _Block, scope: ir.NameScope, result: PassResult) -> list[gs.Node]:
    """Rules 2 and 3 alone, for a block whose query has no bias: without Adds on the key and value
    TensorRT reads every head from the merged GEMM, in the layout as exported."""
    for role, projection in (("key", block.key), ("value", block.value)):
        if projection.bias is None:
            continue
        add, reshape = projection.nodes[1], projection.nodes[2]
        reshape.inputs[0] = projection.nodes[0].outputs[0]
        add.outputs.clear()
        if role == "key":
            result.count("key_biases_dropped")
    new = _fold_value_bias(block, scope, result) if block.value.bias is not None else []
    result.count("unbiased_blocks")
    return new


def _transpose_mask(mask: gs.Tensor, rank: int, scope: ir.NameScope, new: list[gs.Node]) -> gs.Tensor:
    """``mask`` with its last two axes swapped (a rank-1 mask becomes a column).

    A constant mask becomes a new constant holding the swapped values: an Unsqueeze or Transpose
    of a constant is work fold-constants would otherwise find on the next run of the pipeline.
    """
    if rank == 0:
        return mask
    if isinstance(mask, gs.Constant):
        values = mask.values.reshape(-1, 1) if rank == 1 else np.swapaxes(mask.values, -1, -2)
        return gs.Constant(scope.fresh(f"{mask.name}_transposed"), np.ascontiguousarray(values))
    out = gs.Variable(scope.fresh(f"{mask.name}_transposed"), dtype=mask.dtype)
    if rank == 1:
        axes = gs.Constant(scope.fresh(f"{mask.name}_column_axis"), np.array([1], np.int64))
        new.append(gs.Node("Unsqueeze", name=scope.fresh(f"{mask.name}_column"),
                           inputs=[mask, axes], outputs=[out]))
        return out
    perm = [*range(rank - 2), rank - 1, rank - 2]
    new.append(gs.Node("Transpose", name=scope.fresh(f"{mask.name}_transpose"), attrs={"perm": perm},
                       inputs=[mask], outputs=[out]))
    return out


__all__ = ["AttentionHeadLayout"]
