"""attention-head-layout: matching an attention block and its head-split projections."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from trtcompile import ir
from trtcompile.pm import PassResult

#: Permutations from the ``[B, S, H, D]`` head split to the operand the attention reads.
_HEADS_FIRST = (0, 2, 1, 3)  # [B, H, S, D]: query, value
_HEADS_FIRST_TRANSPOSED = (0, 2, 3, 1)  # [B, H, D, S]: key, transposed for Q . K^T
#: Casts allowed between the Softmax and the value MatMul (transformers casts the probabilities
#: back to the activation type): to these types rows of probabilities still sum to 1 up to rounding.
_FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                          onnx.TensorProto.DOUBLE})


@dataclass
class Projection:
    """``s * Transpose(Reshape(MatMul(x, W) [+ b]))``: one of the query, key or value head splits,
    with the product ``s`` of the scalar scales on the way (1 when there are none)."""

    x: gs.Tensor
    weights: np.ndarray  # [E, H * D]
    bias: np.ndarray | None  # [H * D]
    heads: int
    head_size: int
    nodes: list[gs.Node]  # the product, its bias Add (if any), Reshape, then layout and scale ops
    scale: float = 1.0
    split: gs.Node | None = None  # the Split of a merged projection this is one piece of
    plain: bool = True  # written MatMul [-> Add] -> head split (rules 2 and 3 alone edit that form)
    batch: int | None = None  # the projected input's batch dim, when known


@dataclass
class Block:
    """A matched attention block."""

    query: Projection
    key: Projection
    value: Projection
    scores: gs.Node  # MatMul(Q, K^T)
    pointwise: list[gs.Node]  # scale and mask ops between the scores and the Softmax, in order
    masks: list[tuple[gs.Node, int]]  # (Add node, index of its mask input)
    softmax: gs.Node
    elementwise: list[gs.Node]  # float Casts and the NaN guard between the Softmax and the context
    probabilities: gs.Tensor  # what the context MatMul reads
    guarded: bool  # a NaN guard writes 0 over NaN probabilities
    drop_guard: bool  # ... which can only act where the context is NaN without it (rule 6)
    context: gs.Node  # MatMul(P, V)
    output_matmul: gs.Node | None  # the output projection, when the value bias is folded into it
    output_bias: gs.Node | None  # its bias Add, if any




# --------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------


def _single_reader(tensor: gs.Tensor, graph_outputs: set[str]) -> gs.Node | None:
    return tensor.outputs[0] if ir.has_single_use(tensor, graph_outputs) else None


def _scalar(tensor: gs.Tensor) -> bool:
    value = ir.constant_value(tensor)
    return value is not None and value.size == 1 and np.issubdtype(value.dtype, np.floating)


def _scalar_factor(node: gs.Node, max_rank: int) -> tuple[int, float] | None:
    """``(index, s)`` when ``node`` is a ``Mul`` by the scalar float constant ``s`` at input
    ``index`` whose rank is at most ``max_rank`` (a higher rank would also add axes)."""
    if node.op != "Mul" or len(node.inputs) != 2:
        return None
    for index in (0, 1):
        if _scalar(node.inputs[index]):
            value = ir.constant_value(node.inputs[index])
            if value.ndim <= max_rank:
                return index, float(value.reshape(-1)[0])
    return None


def rank(tensor: gs.Tensor, dims: dict) -> int | None:
    if isinstance(tensor, gs.Constant):
        return tensor.values.ndim
    value = ir.constant_value(tensor)
    if value is not None:
        return value.ndim
    if tensor.shape is not None:
        return len(tensor.shape)
    known = dims.get(tensor.name)
    return None if known is None else len(known)


def match(softmax: gs.Node, opset: int, dims: dict, graph_outputs: set[str],
           result: PassResult) -> Block | None:
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
    # Down from the Softmax: float Casts and a NaN guard, then the value MatMul.
    axis = int(softmax.attrs.get("axis", -1 if opset >= 13 else 1))  # opset 13 changed the default
    elementwise: list[gs.Node] = []
    guarded = False
    tensor = softmax.outputs[0]
    while True:
        guard = _nan_guard(tensor, graph_outputs)
        if isinstance(guard, str):
            result.reject([softmax, *tensor.outputs], guard)
            return None
        if guard is not None and not guarded:
            elementwise += guard
            guarded = True
            tensor = guard[1].outputs[0]
            continue
        reader = _single_reader(tensor, graph_outputs)
        if reader is None or not ir.is_onnx_op(reader):
            return None
        if reader.op == "Cast" and int(reader.attrs.get("to", 0)) in _FLOAT_TYPES:
            elementwise.append(reader)
            tensor = reader.outputs[0]
            continue
        if reader.op != "MatMul" or reader.inputs[0] is not tensor:
            return None
        break
    context = reader
    if axis not in (-1, 3):
        result.reject([scores, softmax], f"Softmax over axis {axis}, not the key axis")
        return None
    query = _projection(scores.inputs[0], _HEADS_FIRST, dims, graph_outputs, opset, scaled=True)
    key = _projection(scores.inputs[1], _HEADS_FIRST_TRANSPOSED, dims, graph_outputs, opset,
                      scaled=True)
    value = _projection(context.inputs[1], _HEADS_FIRST, dims, graph_outputs, opset, scaled=False)
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
    for split in {id(p.split): p.split for p in (query, key, value) if p.split is not None}.values():
        pieces = sum(p.split is split for p in (query, key, value))
        if pieces != len(split.outputs):  # the rewrite would leave the merged projection live
            result.reject([split, scores, context], f"the merged projection's Split has "
                          f"{len(split.outputs)} pieces, {pieces} of them this block's")
            return None
    for add, index in masks:
        mask_rank = rank(add.inputs[index], dims)
        if mask_rank is None or mask_rank > 4:
            result.reject([add, softmax], "the mask's rank is not known" if mask_rank is None else
                          f"the mask has rank {mask_rank}, more than the scores' 4")
            return None
    output_matmul = output_bias = None
    infinite = next((add for add, index in masks if not _finite(add.inputs[index])), None)
    if value.bias is not None and guarded and infinite is not None:
        result.reject([infinite, softmax], "the value bias cannot be folded: the probabilities are "
                      "NaN-guarded and the mask may be infinite (a fully masked row is 0, not the "
                      "value bias)")
        return None
    if value.bias is not None:
        found = _output_projection(context, value, graph_outputs)
        if isinstance(found, str):
            result.reject([context], f"the value bias cannot be folded: {found}")
            return None
        output_matmul, output_bias = found
    drop_guard = guarded and infinite is None and query.x is key.x is value.x
    return Block(query, key, value, scores, pointwise, masks, softmax, elementwise, tensor, guarded,
                 drop_guard, context, output_matmul, output_bias)


def _nan_guard(tensor: gs.Tensor, graph_outputs: set[str]) -> list[gs.Node] | str | None:
    """``[IsNaN, Where]`` when ``tensor``'s only readers are ``Where(IsNaN(tensor), 0, tensor)``
    (torch's exported scaled_dot_product_attention writes 0 over the NaN a row of infinite scores
    gives); the reason when they are an IsNaN and a Where of another form; else None."""
    readers = tensor.outputs
    if tensor.name in graph_outputs or len(readers) != 2:
        return None
    isnan = next((n for n in readers if n.op == "IsNaN" and ir.is_onnx_op(n)), None)
    where = next((n for n in readers if n.op == "Where" and ir.is_onnx_op(n)), None)
    if isnan is None or where is None or not ir.has_single_use(isnan.outputs[0], graph_outputs):
        return None
    zero = ir.constant_value(where.inputs[1])
    if where.inputs[0] is not isnan.outputs[0] or where.inputs[2] is not tensor or zero is None \
            or zero.size != 1 or float(zero.reshape(-1)[0]) != 0.0:
        return "the probabilities' NaN test does not write 0 over them (rows may not sum to 1)"
    return [isnan, where]


def _finite(mask: gs.Tensor) -> bool:
    """Whether every value ``mask`` can hold is finite: a constant of finite values, or a
    ``Where`` choosing between two such constants (the exported boolean attention mask)."""
    value = ir.constant_value(mask)
    if value is not None:
        return bool(np.isfinite(value).all())
    node = ir.producer(mask)
    if node is None or node.op != "Where" or not ir.is_onnx_op(node):
        return False
    branches = [ir.constant_value(t) for t in node.inputs[1:]]
    return all(b is not None and bool(np.isfinite(b).all()) for b in branches)


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


def _projection(tensor: gs.Tensor, perm: tuple[int, ...], dims: dict, graph_outputs: set[str],
                opset: int, scaled: bool) -> Projection | str:
    """The head-split projection that ``tensor`` is, or the reason it is not one; ``scaled``: the
    layout ops may be interleaved with multiplications by scalar constants (the operands of the
    scores, which torch's scaled_dot_product_attention export scales by the root of the scale)."""
    nodes: list[gs.Node] = []
    composed = tuple(range(4))
    scale, layouts = 1.0, 0
    # One Transpose, or two that compose to ``perm`` (``.transpose(1, 2)`` then ``.transpose(-1, -2)``,
    # the second possibly written as Reshape [B*H, S, D], Transpose, Reshape [B, H, D, S]).
    while (node := ir.producer(tensor)) is not None and ir.is_onnx_op(node):
        # (a scale of rank 5 or more would also add axes: not a scale of the head split)
        if scaled and (factor := _scalar_factor(node, max_rank=4)) is not None:
            scale *= factor[1]
            nodes.insert(0, node)
            tensor = node.inputs[1 - factor[0]]
            continue
        if node.op == "Transpose":
            node_perm = tuple(int(p) for p in node.attrs.get("perm", ()))
            if len(node_perm) != 4:
                return "a Transpose that is not of rank 4"
            nodes.insert(0, node)
        elif node.op == "Reshape" and (swap := ir.swap_last_axes(node, dims)) is not None:
            node_perm = (0, 1, 3, 2)
            nodes[0:0] = swap
        else:
            break
        composed = tuple(node_perm[i] for i in composed)
        tensor = nodes[0].inputs[0]
        layouts += 1
        if layouts > 2:
            return "more than two Transposes"
    if not layouts:
        return "no Transpose after the head split"
    if composed != perm:
        return f"the heads are permuted {list(composed)}, not {list(perm)}"
    reshape = ir.producer(tensor)
    if reshape is None or reshape.op != "Reshape" or not ir.is_onnx_op(reshape):
        return "no Reshape splitting the heads"
    nodes.insert(0, reshape)
    tensor = reshape.inputs[0]
    node = ir.producer(tensor)
    # A scalar scale of the projection before its head split (Whisper scales the projected query):
    # s (x W + b) = x (s W) + s b, like the operand scales (rank at most 3: it adds no axis).
    if node is not None and ir.is_onnx_op(node) and \
            (factor := _scalar_factor(node, max_rank=3)) is not None:
        scale *= factor[1]
        nodes.insert(0, node)
        tensor = node.inputs[1 - factor[0]]
    found = _source(tensor, dims, graph_outputs, opset)
    if isinstance(found, str):
        return found
    x, weights, bias, source_nodes, split = found
    for inner in nodes:  # the head split feeds this attention only (decoders also output K, V)
        if not ir.has_single_use(inner.outputs[0], graph_outputs):
            return f"'{inner.name}' has other readers"
    nodes[0:0] = source_nodes
    width = weights.shape[1]
    x_dims = ir.merged_dims(x, dims)
    if x_dims is None or len(x_dims) != 3:
        return "the projected input is not of rank 3 [batch, sequence, features]"
    shape = ir.constant_value(reshape.inputs[1])
    if shape is None or shape.size != 4:
        return "the head split's shape is not a constant of rank 4"
    target = [int(v) for v in shape.reshape(-1)]
    allowzero = int(reshape.attrs.get("allowzero", 0))
    head_size = target[3]
    if head_size == -1 and target[2] > 0 and width % target[2] == 0:
        head_size = width // target[2]  # [B, S, H, -1] (view(B, S, H, -1)): the size inferred
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
    plain = split is None and nodes[0].op == "MatMul"
    batch = x_dims[0] if isinstance(x_dims[0], int) else None
    return Projection(x, weights, bias, heads, head_size, nodes, scale, split, plain, batch)


def _source(tensor: gs.Tensor, dims: dict, graph_outputs: set[str],
            opset: int) -> tuple[gs.Tensor, np.ndarray, np.ndarray | None, list[gs.Node],
                                 gs.Node | None] | str:
    """``(x, W, b, nodes, split)`` of the projection ``x W + b`` that writes ``tensor``, or the
    reason there is none. The product is ``MatMul(x, W)`` or a linear layer written on a flattened
    input, ``Reshape(Gemm(Reshape(x, [B*S, E]), W, b), [B, S, N])`` (GPT-2's Conv1D, the dynamo
    exporter's addmm); the bias an ``Add`` of a constant or the Gemm's ``C``; and ``tensor`` may be
    one piece of a ``Split`` of the features (a merged query-key-value projection, possibly biased
    after the split), of which ``W`` and ``b`` are then the piece's columns."""
    nodes: list[gs.Node] = []
    merged: list[np.ndarray] = []  # biases of the projection's features (before any Split)
    piece_biases: list[np.ndarray] = []  # biases of the piece (after the Split)

    def take_bias(tensor: gs.Tensor, biases: list[np.ndarray]) -> gs.Tensor | str:
        node = ir.producer(tensor)
        if node is None or node.op != "Add" or not ir.is_onnx_op(node):
            return tensor
        for index in (0, 1):
            value = ir.constant_value(node.inputs[index])
            if value is not None and ir.producer(node.inputs[1 - index]) is not None:
                if not ir.has_single_use(node.inputs[1 - index], graph_outputs):
                    return f"'{ir.producer(node.inputs[1 - index]).name}' has other readers"
                biases.append(value)
                nodes.insert(0, node)
                return node.inputs[1 - index]
        return "the bias is not constant"

    if not ir.has_single_use(tensor, graph_outputs):
        node = ir.producer(tensor)
        return f"'{node.name if node is not None else tensor.name}' has other readers"
    tensor = take_bias(tensor, piece_biases)
    if isinstance(tensor, str):
        return tensor
    split, piece = ir.producer(tensor), 0
    if split is not None and split.op == "Split" and ir.is_onnx_op(split):
        piece = next(i for i, output in enumerate(split.outputs) if output is tensor)
        nodes.insert(0, split)
        tensor = split.inputs[0]
        if len(tensor.outputs) != 1 or tensor.name in graph_outputs:
            return "the merged projection has other readers than its Split"
        tensor = take_bias(tensor, merged)
        if isinstance(tensor, str):
            return tensor
    else:
        split = None
    found = _product(tensor, dims, graph_outputs)
    if isinstance(found, str):
        return found
    x, weights, bias, product_nodes = found
    nodes[0:0] = product_nodes
    if bias is not None:
        merged.append(bias)
    start, stop = 0, weights.shape[1]
    if split is not None:
        if int(split.attrs.get("axis", 0)) not in (-1, 2):
            return "the merged projection is not split along its features"
        sizes = ir.split_sizes(split, weights.shape[1], opset)
        if sizes is None:
            return "the merged projection's split sizes are not known"
        start, stop = sum(sizes[:piece]), sum(sizes[:piece + 1])
    total = None
    for biases, width, sliced in ((merged, weights.shape[1], True), (piece_biases, stop - start, False)):
        for value in biases:
            if value.size != width or value.shape[-1] != width or any(d != 1 for d in value.shape[:-1]):
                return "the bias is not one value per output feature"
            if value.dtype != weights.dtype:
                return "the bias and weights differ in type"
            value = value.reshape(-1)[start:stop] if sliced else value.reshape(-1)
            total = value if total is None else (total.astype(np.float64) + value).astype(value.dtype)
    return x, weights[:, start:stop], total, nodes, split


def _product(tensor: gs.Tensor, dims: dict,
             graph_outputs: set[str]) -> tuple[gs.Tensor, np.ndarray, np.ndarray | None,
                                               list[gs.Node]] | str:
    """``(x, W, C, nodes)`` of the ``MatMul(x, W)`` or flattened ``Gemm`` (see :func:`_source`)
    writing ``tensor``."""
    node = ir.producer(tensor)
    if node is not None and node.op == "MatMul" and ir.is_onnx_op(node):
        weights = ir.constant_value(node.inputs[1])
        if weights is None or weights.ndim != 2:
            return "the projection weights are not a constant matrix"
        return node.inputs[0], weights, None, [node]
    gemm = ir.producer(node.inputs[0]) if node is not None and node.op == "Reshape" else None
    if gemm is None or gemm.op != "Gemm" or not ir.is_onnx_op(gemm) or not ir.is_onnx_op(node):
        return "no MatMul projecting the heads"
    found = gemm_operands(gemm)
    if isinstance(found, str):
        return found
    weights, bias = found
    flatten = ir.producer(gemm.inputs[0])
    if flatten is None or flatten.op != "Reshape" or not ir.is_onnx_op(flatten):
        return "the Gemm's input is not a flattened [batch, sequence, features] tensor"
    x = flatten.inputs[0]
    x_dims = ir.merged_dims(x, dims)
    if x_dims is None or len(x_dims) != 3 or not all(isinstance(d, int) and d > 0 for d in x_dims):
        return "the Gemm's input is not a flattened [batch, sequence, features] tensor"
    b, s, e = x_dims
    n = weights.shape[1]
    if weights.shape[0] != e or ir.reshaped(flatten, x_dims) != [b * s, e] or \
            ir.reshaped(node, [b * s, n]) != [b, s, n]:
        return "the Gemm's input is not a flattened [batch, sequence, features] tensor"
    for inner in (flatten, gemm):
        if not ir.has_single_use(inner.outputs[0], graph_outputs):
            return f"'{inner.name}' has other readers"
    return x, weights, bias, [gemm, flatten, node]


def gemm_operands(gemm: gs.Node) -> tuple[np.ndarray, np.ndarray | None] | str:
    """``(W, C)`` of ``Gemm(A, B, C) = A W + C`` (``W`` is ``B`` or ``B^T``) when ``B`` and ``C``
    are constants and the Gemm scales neither; the reason otherwise."""
    if int(gemm.attrs.get("transA", 0)) or float(gemm.attrs.get("alpha", 1.0)) != 1.0:
        return "the Gemm transposes or scales its input"
    weights = ir.constant_value(gemm.inputs[1])
    if weights is None or weights.ndim != 2:
        return "the projection weights are not a constant matrix"
    if int(gemm.attrs.get("transB", 0)):
        weights = weights.T
    if len(gemm.inputs) < 3 or gemm.inputs[2].is_empty():
        return weights, None
    bias = ir.constant_value(gemm.inputs[2])
    if bias is None or float(gemm.attrs.get("beta", 1.0)) != 1.0:
        return "the Gemm's bias is not a constant it adds as is"
    if bias.size == 1:
        bias = np.full(weights.shape[1], bias.reshape(-1)[0], bias.dtype)
    return weights, bias


def _output_projection(context: gs.Node, value: Projection,
                       graph_outputs: set[str]) -> tuple[gs.Node, gs.Node | None] | str:
    """(output projection, its bias Add or None) reached from the context through the head merge:
    a ``MatMul`` with constant weights, or a ``Gemm`` (:func:`gemm_operands`, whose bias is its
    ``C``) reading the merged heads flattened to ``[B*S, features]``."""
    transpose = _single_reader(context.outputs[0], graph_outputs)
    if transpose is None or transpose.op != "Transpose" or \
            tuple(transpose.attrs.get("perm", ())) != _HEADS_FIRST:
        return "the context does not go only to a head-merging Transpose"
    width = value.heads * value.head_size
    tensor, reshapes = transpose.outputs[0], 0
    # The head merge, [B, S, features] or already flattened to [B*S, features], and a flattening
    # Reshape of the former (the projection's weights having ``width`` rows makes the last axis
    # the features of one token whatever the leading axes are).
    while (reshape := _single_reader(tensor, graph_outputs)) is not None and \
            reshape.op == "Reshape" and ir.is_onnx_op(reshape) and reshapes < 2:
        shape = ir.constant_value(reshape.inputs[1])
        if shape is None or shape.size not in (2, 3) or int(shape.reshape(-1)[-1]) not in (-1, width):
            return "the Reshape does not merge heads into features"
        tensor, reshapes = reshape.outputs[0], reshapes + 1
    if not reshapes:
        return "the heads are not merged by a Reshape"
    matmul = _single_reader(tensor, graph_outputs)
    if matmul is None or matmul.op not in ("MatMul", "Gemm") or not ir.is_onnx_op(matmul) or \
            matmul.inputs[0] is not tensor:
        return "the merged heads are not projected by a MatMul"
    if matmul.op == "Gemm":
        found = gemm_operands(matmul)
        if isinstance(found, str):
            return f"the output projection: {found}"
        weights = found[0]
    else:
        weights = ir.constant_value(matmul.inputs[1])
    if weights is None or weights.ndim != 2 or weights.shape[0] != width:
        return "the output projection weights are not a constant matrix"
    if weights.dtype != value.weights.dtype:
        return "the output projection and value weights differ in type"
    if matmul.op == "Gemm":
        return matmul, None
    add = _single_reader(matmul.outputs[0], graph_outputs)
    if add is not None and add.op == "Add" and ir.is_onnx_op(add):
        index = 1 if add.inputs[0] is matmul.outputs[0] else 0
        bias = ir.constant_value(add.inputs[index])
        if bias is not None and bias.size == weights.shape[1] and bias.shape[-1] == weights.shape[1]:
            return matmul, add
    return matmul, None
