"""grouped-query-attention: read shared key/value heads by broadcast, from one per-head GEMM.

Grouped-query attention (Llama 2/3, Mistral, Qwen2, Phi-3, Gemma) projects fewer key/value heads
than query heads and repeats each ``g`` times before the attention (transformers' ``repeat_kv``,
written by both torch exporters as ``Reshape(Expand(Unsqueeze(kv, 2), [B, kv, g, S, D]),
[B, kv*g, S, D])``). TensorRT materializes the repeat: a copy kernel per repeated tensor, which
for the value also has to lay the heads out of the projection GEMM's output. This pass lets the
attention GEMMs read the shared heads by broadcasting instead, and lays every head split of the
block out in its projection GEMM, so the value reaches the context GEMM without a copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from trtcompile import ir
from trtcompile.pm import Pass, PassContext, PassResult

_HEADS_FIRST = (0, 2, 1, 3)  # [B, S, H, D] -> [B, H, S, D]


@dataclass
class _Path:
    """How one reader reaches the attention GEMM from the repeated heads: the per-head ops on the
    way (each a Transpose keeping the batch and head axes, a scalar Mul or Div, or the
    Reshape-Transpose-Reshape swap of the last two axes) and the GEMM."""

    ops: list[list[gs.Node]]  # each entry one op (three nodes for the swap)
    matmul: gs.Node
    index: int  # which MatMul input the repeated heads reach
    other: tuple[int, ...]  # dims of the other operand, [B, H, M, N]
    result: tuple[int, ...]  # dims of the MatMul's output


@dataclass
class _Repeat:
    """``Reshape(Expand(x5, [B, kv, g, S, D]), [B, kv*g, S, D])`` and the GEMMs reading it."""

    expand: gs.Node
    reshape: gs.Node
    source: gs.Tensor  # x5, [B, kv, 1, S, D]
    dims: tuple[int, ...]  # [B, kv, S, D]
    groups: int
    paths: list[_Path] = field(default_factory=list)

    @property
    def nodes(self) -> list[gs.Node]:
        return [self.expand, self.reshape, *(n for p in self.paths for op in p.ops for n in op),
                *(p.matmul for p in self.paths)]


@dataclass
class _HeadSplit:
    """``Transpose(Reshape(MatMul(x, W) [+ b], [1, S, H, D]), [0, 2, 1, 3])``, possibly of one piece
    (a Slice or Split of the last axis) of a merged projection: the columns of ``W`` it projects
    by."""

    weights: np.ndarray  # [E, H * D]
    bias: np.ndarray | None  # [H * D]
    heads: int
    head_size: int
    output: gs.Tensor  # [1, H, S, D]
    nodes: list[gs.Node]


class _Skip(Exception):
    """A candidate that does not take the pass's form: the reason."""


@dataclass(frozen=True)
class GroupedQueryAttention(Pass):
    """Rewrite the key/value head repeat of grouped-query attention into a broadcast, and the
    block's head-split projections into one per-head GEMM.

    Rules (applied to a block together: see below):
      1. Heads by broadcast: ``R = Reshape(Expand(x5, [B, kv, g, S, D]), [B, kv*g, S, D])`` with
         ``x5`` of dims ``[B, kv, 1, S, D]`` repeats each of ``kv`` heads ``g`` times (head
         ``i`` of ``R`` is head ``i // g`` of ``x5``). Every reader of ``R`` must reach a
         ``MatMul`` through per-head ops only: a ``Transpose`` that keeps axes 0 and 1, a ``Mul``
         or ``Div`` by a scalar constant, the swap of the last two axes written as
         ``Reshape [B*H, S, D], Transpose [0, 2, 1], Reshape [B, H, D, S]`` (torch's dynamo
         exporter); the MatMul's other operand has known dims ``[B, kv*g, M, N]``. Those ops then
         run on the ``kv`` heads, and the MatMul reads the other operand as ``[B, kv, g, M, N]``
         against the heads as ``[B, kv, 1, ., .]``: ONNX MatMul broadcasts the batch axes, so
         each of the ``g`` query heads of a group meets its one key/value head, and the result is
         reshaped back to ``[B, kv*g, M, .]``. Exact: the same products and sums.
      2. One per-head projection GEMM: the head splits of the input ``x`` of a block's repeated
         value, ``Transpose(Reshape(MatMul(x, W_i) [+ b_i], [1, S, H_i, D]), [0, 2, 1, 3])``
         (the Reshape's constant shape may leave ``H_i`` or ``D`` as -1, as the exporters and
         ``view(B, S, H, -1)`` write it; a piece of one merged projection split along its
         features counts with its columns of ``W`` and ``b``, when every piece is such a head
         split: Phi-3's ``qkv_proj``), become one ``MatMul(Unsqueeze(x, 1), W')`` with
         ``W' [1, sum H_i, E, D]`` holding each projection's weights laid out per head (and one
         bias Add ``[sum H_i, 1, D]`` if any had a bias), and each head split becomes a
         ``Slice`` of the head axis. Exact. Only at batch 1 (a known 1; a per-head GEMM of a batch
         reads ``x`` once per head, which TensorRT copies out: attention-head-layout's
         measurement) and for the value's own input ``x``:
         the rule exists so the context GEMM reads the shared value heads in place.

    Measured with TensorRT-RTX 1.7 (FP32), a Llama block (8 query heads, 2 key/value heads,
    rotary embeddings) builds 14 compute layers as exported: the merged Q/K/V GEMM, the query's
    and the key's rotary embedding kernels (which absorb their head splits; the key's also its
    repeat), a copy kernel for the value's head split and repeat, the scores GEMM, the softmax
    kernel, the context GEMM, the head merge, the output GEMM and the MLP's five layers. Rule 1
    alone builds 14 (the value still needs its head split copied, now without the repeat), rule 2
    alone 14 (the repeat's copy stays); together 13: the per-head GEMM writes every head where the
    rotary kernels and the context GEMM read them. Llama (4 layers, both torch exporters) 57 -> 53
    engine compute layers, no MACs added (docs/benchmarks.md). A block without a repeat
    (multi-head attention) is left alone: TensorRT reads its value heads from the merged GEMM's
    output already. Requires: constant weights and known shapes (``fold-constants``), and the
    head splits as exported (run before ``transpose-cancellation``, which moves their Transposes).
    Preserves: graph inputs and outputs. Counts: ``repeats_broadcast``, ``broadcast_matmuls``,
    ``per_head_projections``, ``projections_merged``.
    """

    name: ClassVar[str] = "grouped-query-attention"
    needs_ops: ClassVar[frozenset[str]] = frozenset({"Expand"})

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = PassResult()
        expands = [n for n in graph.nodes if n.op == "Expand" and ir.is_onnx_op(n)]
        if not expands:
            return result
        precision = str((ctx.resources.get(self.name) or {}).get("precision", "fp32")).lower()
        facts = ir.ShapeFacts(graph, ctx.log, self.name)
        outputs = ir.output_names(graph)
        members = {id(n) for n in graph.nodes}
        repeats: list[_Repeat] = []
        for expand in expands:
            try:
                repeat = _match_repeat(expand, facts, outputs, members)
            except _Skip as skip:
                result.reject([expand], str(skip))
                continue
            if repeat is None:
                continue
            if precision != "fp32":
                result.reject(repeat.nodes, f"the engine is built in {precision.upper()}: TensorRT "
                                            "fuses the attention into one kernel there, which the "
                                            "broadcast form prevents (Llama FP16: 46 -> 53 layers)")
                continue
            repeats.append(repeat)
        # Rule 2 first: a repeated value's head split becomes a Slice of the per-head GEMM writing
        # the same tensor, so the repeats matched above stay valid.
        names: ir.NameScope | None = None
        new: list[gs.Node] = []
        merged: set[int] = set()  # head-split tensors a per-head GEMM's Slice writes now
        tried: set[int] = set()  # projected inputs
        kept: list[_Repeat] = []
        derived: list[_Repeat] = []  # repeats of heads computed from a head split
        for repeat in repeats:
            split = _head_split_of(repeat.source)
            if split is None:  # a key after its rotary embedding, say: see below
                derived.append(repeat)
                continue
            x = _projection_input(split)
            if x is not None and id(x) not in tried:
                tried.add(id(x))
                try:
                    splits = _head_splits(x, facts, outputs, members, ir.opset(graph))
                    if not any(s.output is split for s in splits):
                        raise _Skip("the value's projection is not a constant MatMul whose every "
                                    "piece is a head split")
                except _Skip as skip:
                    result.reject(repeat.nodes, str(skip))
                else:
                    if ctx.may_rewrite("per-head-projection", [n for s in splits for n in s.nodes],
                                       result):
                        names = names or ir.NameScope(graph)
                        new += _merge_projections(x, splits, names, result)
                        merged.update(id(s.output) for s in splits)
            elif x is None:
                result.reject(repeat.nodes, "the value's head split does not read a MatMul "
                                            "projection")
            if id(split) in merged:  # else broadcasting the value alone leaves its copy
                kept.append(repeat)
        for repeat in derived:  # broadcast in a block whose projections are laid out per head
            if _derives_from(repeat.source, merged):
                kept.append(repeat)
            else:
                result.reject(repeat.nodes, "the repeated heads are not computed from a head "
                                            "split of a block whose projections became one "
                                            "per-head GEMM")
        for repeat in kept:
            if not ctx.may_rewrite("heads-by-broadcast", repeat.nodes, result):
                continue
            names = names or ir.NameScope(graph)
            new += _broadcast(repeat, names, result)
        if new:
            graph.nodes.extend(new)
            graph.cleanup(remove_unused_node_outputs=False, remove_unused_graph_inputs=False)
            ir.toposort(graph)
        return result


# --------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------


def _dims(tensor: gs.Tensor, facts: ir.ShapeFacts) -> tuple[int, ...] | None:
    """The tensor's dims when every one is a known int, in the graph or by shape inference (an
    exporter's value info may name a dim that inference, after folding, knows)."""
    dims = ir.merged_dims(tensor, facts.inferred)
    if dims is None or not all(isinstance(d, (int, np.integer)) and d >= 0 for d in dims):
        return None
    return tuple(int(d) for d in dims)


def _sole_reader(tensor: gs.Tensor, outputs: set[str], members: set[int]) -> gs.Node | None:
    if not ir.has_single_use(tensor, outputs):
        return None
    reader = tensor.outputs[0]
    return reader if id(reader) in members and ir.is_onnx_op(reader) else None


def _match_repeat(expand: gs.Node, facts: ir.ShapeFacts, outputs: set[str],
                  members: set[int]) -> _Repeat | None:
    """The head repeat ``expand`` starts (rule 1), None if it is none, _Skip if its readers do not
    let it become a broadcast."""
    source = expand.inputs[0]
    dims = _dims(source, facts)
    shape = ir.constant_ints(expand.inputs[1]) if len(expand.inputs) > 1 else None
    if dims is None or len(dims) != 5 or dims[2] != 1 or shape is None:
        return None
    try:
        expanded = tuple(int(d) for d in np.broadcast_shapes(dims, tuple(shape)))
    except ValueError:
        return None
    groups = expanded[2]
    if len(expanded) != 5 or groups < 2 or expanded[:2] + expanded[3:] != dims[:2] + dims[3:]:
        return None
    reshape = _sole_reader(expand.outputs[0], outputs, members)
    if reshape is None or reshape.op != "Reshape":
        return None
    b, kv, _, s, d = dims
    h = kv * groups
    repeat = _Repeat(expand, reshape, source, (b, kv, s, d), groups)
    start: list[list[gs.Node]] = []
    target = ir.reshaped(reshape, list(expanded))
    if target == [b * h, s, d]:
        # torch's dynamo exporter merges the repeat's Reshape into the key's axis swap:
        # Reshape [B*H, S, D], Transpose [0, 2, 1], Reshape [B, H, D, S].
        transpose = _sole_reader(reshape.outputs[0], outputs, members)
        outer = None if transpose is None else _sole_reader(transpose.outputs[0], outputs, members)
        if transpose is None or transpose.op != "Transpose" or \
                [int(p) for p in transpose.attrs.get("perm", ())] != [0, 2, 1] or \
                outer is None or outer.op != "Reshape" or ir.reshaped(outer, [b * h, d, s]) != [b, h, d, s]:
            raise _Skip("the repeated heads, merged with the batch, are not read by the swap of "
                        "their last two axes")
        start = [[transpose, outer]]
        repeated = outer.outputs[0]
    elif target == [b, h, s, d]:
        repeated = reshape.outputs[0]
    else:
        return None
    if repeated.name in outputs:
        raise _Skip("the repeated heads are a graph output")
    for reader in list(repeated.outputs):
        repeat.paths.append(_path(repeated, reader, h, facts, outputs, members, list(start)))
    return repeat


def _path(tensor: gs.Tensor, reader: gs.Node, heads: int, facts: ir.ShapeFacts,
          outputs: set[str], members: set[int], ops: list[list[gs.Node]]) -> _Path:
    """Follow per-head ops from the repeated heads to the MatMul that reads them (``ops``: those
    on the way already)."""
    dims = facts.inferred
    for _ in range(8):
        if id(reader) not in members or not ir.is_onnx_op(reader):
            raise _Skip(f"the repeated heads are read by '{reader.name}' in another scope")
        if reader.op == "MatMul":
            index = 0 if reader.inputs[0] is tensor else 1
            other = _dims(reader.inputs[1 - index], facts)
            mine = _dims(tensor, facts)
            result = _dims(reader.outputs[0], facts)
            if other is None or mine is None or result is None or len(other) != 4 or \
                    len(mine) != 4 or other[:2] != mine[:2] or other[1] != heads:
                raise _Skip(f"MatMul '{reader.name}' does not read the repeated heads against "
                            f"an operand of known dims [B, {heads}, M, N]")
            return _Path(ops, reader, index, other, result)
        if reader.op == "Transpose":
            perm = [int(p) for p in reader.attrs.get("perm", ())]
            if len(perm) != 4 or perm[:2] != [0, 1]:
                raise _Skip(f"Transpose '{reader.name}' moves the batch or head axis")
            op = [reader]
        elif reader.op in ("Mul", "Div") and _scalar_operand(reader, tensor) is not None:
            op = [reader]
        elif reader.op == "Reshape":
            swap = _forward_swap(reader, outputs, members, dims)
            if swap is None:
                raise _Skip(f"Reshape '{reader.name}' mixes the heads with other axes")
            op = swap
        else:
            raise _Skip(f"the repeated heads are read by {reader.op} '{reader.name}', which "
                        "needs them copied")
        ops.append(op)
        tensor = op[-1].outputs[0]
        reader = _sole_reader(tensor, outputs, members)
        if reader is None:
            raise _Skip(f"'{tensor.name}' on the way to the attention is read more than once")
    raise _Skip("no MatMul within 8 per-head ops of the repeated heads")


def _scalar_operand(node: gs.Node, tensor: gs.Tensor) -> gs.Tensor | None:
    """The scalar float constant ``node`` multiplies or divides ``tensor`` by (a Div must divide
    ``tensor``)."""
    if len(node.inputs) != 2 or tensor not in node.inputs:
        return None
    index = 1 if node.inputs[0] is tensor else 0
    if node.op == "Div" and index != 1:
        return None
    value = ir.constant_value(node.inputs[index])
    if value is None or value.size != 1 or value.ndim > 4 or not np.issubdtype(value.dtype, np.floating):
        return None
    return node.inputs[index]


def _forward_swap(inner: gs.Node, outputs: set[str], members: set[int], dims: dict) -> list[gs.Node] | None:
    transpose = _sole_reader(inner.outputs[0], outputs, members)
    if transpose is None or transpose.op != "Transpose":
        return None
    outer = _sole_reader(transpose.outputs[0], outputs, members)
    if outer is None or outer.op != "Reshape":
        return None
    swap = ir.swap_last_axes(outer, dims)
    return swap if swap is not None and swap[0] is inner else None


def _head_split_of(source: gs.Tensor) -> gs.Tensor | None:
    """The head split ``source`` unsqueezes: ``Unsqueeze(t, [2])`` of ``t = Transpose(Reshape(.),
    [0, 2, 1, 3])``; returns ``t``."""
    unsqueeze = ir.producer(source)
    if unsqueeze is None or unsqueeze.op != "Unsqueeze" or not ir.is_onnx_op(unsqueeze):
        return None
    if not _is_axis_2(unsqueeze):
        return None
    split = unsqueeze.inputs[0]
    transpose = ir.producer(split)
    if transpose is None or transpose.op != "Transpose" or \
            tuple(int(p) for p in transpose.attrs.get("perm", ())) != _HEADS_FIRST:
        return None
    reshape = ir.producer(transpose.inputs[0])
    return split if reshape is not None and reshape.op == "Reshape" else None


def _is_axis_2(unsqueeze: gs.Node) -> bool:
    """True if ``unsqueeze`` inserts axis 2 only (as an input from opset 13, before as an attribute)."""
    axes = ir.constant_ints(unsqueeze.inputs[1]) if len(unsqueeze.inputs) > 1 else \
        [int(a) for a in unsqueeze.attrs.get("axes", ())]
    return axes == [2]


def _derives_from(tensor: gs.Tensor, splits: set[int], depth: int = 12) -> bool:
    """True if ``tensor`` is computed from one of ``splits`` (ids of head-split tensors) within
    ``depth`` producers (a rotary embedding takes five)."""
    frontier, seen = [tensor], set()
    for _ in range(depth):
        following = []
        for t in frontier:
            if id(t) in splits:
                return True
            node = ir.producer(t)
            if node is not None and id(node) not in seen:
                seen.add(id(node))
                following += [i for i in node.inputs if not isinstance(i, gs.Constant)]
        frontier = following
    return any(id(t) in splits for t in frontier)


def _projection_input(split: gs.Tensor) -> gs.Tensor | None:
    """``x`` of the projection ``MatMul(x, W)`` a head split's Reshape reads (through a bias Add
    and a Slice or Split of a merged projection)."""
    tensor = ir.producer(ir.producer(split).inputs[0]).inputs[0]
    for _ in range(3):
        node = ir.producer(tensor)
        if node is None:
            return None
        if node.op == "MatMul":
            return node.inputs[0]
        if node.op not in ("Add", "Slice", "Split"):
            return None
        tensor = next((t for t in node.inputs if ir.constant_value(t) is None), None)
        if tensor is None:
            return None
    return None


def _head_splits(x: gs.Tensor, facts: ir.ShapeFacts, outputs: set[str], members: set[int],
                 opset: int) -> list[_HeadSplit]:
    """Every head split of a constant projection of ``x`` (rule 2), _Skip when they cannot be one
    per-head GEMM."""
    x_dims = _dims(x, facts)
    if x_dims is None or len(x_dims) != 3:
        raise _Skip("the projected input's dims are not known [B, S, E]")
    if x_dims[0] != 1:
        raise _Skip(f"the batch is {x_dims[0]}, not 1: a per-head GEMM of a batch reads the "
                    "projected input once per head, which TensorRT copies out")
    splits: list[_HeadSplit] = []
    for matmul in list(x.outputs):
        if matmul.op != "MatMul" or not ir.is_onnx_op(matmul) or matmul.inputs[0] is not x or \
                id(matmul) not in members:
            continue
        weights = ir.constant_value(matmul.inputs[1])
        if weights is None or weights.ndim != 2 or weights.dtype != np.float32:
            continue
        pieces = _pieces(matmul, weights, x_dims, opset, outputs, members)
        if pieces is not None:
            splits += pieces
    if len({s.head_size for s in splits}) > 1:
        raise _Skip("the head splits of the projected input have different head sizes")
    return splits


def _pieces(matmul: gs.Node, weights: np.ndarray, x_dims: tuple[int, ...], opset: int,
            outputs: set[str], members: set[int]) -> list[_HeadSplit] | None:
    """The head splits of one projection, None unless all of its result is head splits."""
    nodes = [matmul]
    tensor = matmul.outputs[0]
    bias = None
    reader = _sole_reader(tensor, outputs, members)
    if reader is not None and reader.op == "Add":
        other = reader.inputs[1] if reader.inputs[0] is tensor else reader.inputs[0]
        value = ir.constant_value(other)
        if value is None or value.size != weights.shape[1] or \
                value.shape[-1:] != (weights.shape[1],) or value.ndim > 3:
            return None
        bias = value.reshape(-1).astype(weights.dtype)
        nodes.append(reader)
        tensor = reader.outputs[0]
    columns = _column_pieces(tensor, weights.shape[1], opset, outputs, members)
    if columns is None:
        return None
    pieces = []
    for start, stop, piece, cut in columns:
        reshape = _sole_reader(piece, outputs, members)
        if reshape is None or reshape.op != "Reshape":
            return None
        s, width = x_dims[1], stop - start
        # [1, S, -1, D] or [1, S, H, D] (both torch exporters) or [1, S, H, -1] (view(B, S, H, -1)):
        # the dims the Reshape gives, whichever one it infers.
        target = ir.reshaped(reshape, [1, s, width])
        if target is None or len(target) != 4 or target[:2] != [1, s] or target[3] <= 0:
            return None
        head_size = target[3]
        transpose = _sole_reader(reshape.outputs[0], outputs, members)
        if transpose is None or transpose.op != "Transpose" or \
                tuple(int(p) for p in transpose.attrs.get("perm", ())) != _HEADS_FIRST:
            return None
        pieces.append(_HeadSplit(
            weights[:, start:stop], None if bias is None else bias[start:stop], width // head_size,
            head_size, transpose.outputs[0], [*nodes, *cut, reshape, transpose]))
    return pieces


def _column_pieces(tensor: gs.Tensor, width: int, opset: int, outputs: set[str],
                   members: set[int]):
    """``[(start, stop, piece tensor, [slicing node])]``: the whole tensor when one node reads it,
    else its pieces when every reader is a Slice (step 1) or Split of its last axis."""
    if tensor.name in outputs:
        return None
    readers = tensor.outputs
    if len(readers) == 1 and readers[0].op == "Reshape":
        return [(0, width, tensor, [])]
    pieces = []
    for node in readers:
        if id(node) not in members or not ir.is_onnx_op(node) or node.inputs[0] is not tensor:
            return None
        if node.op == "Slice":
            starts, ends = ir.constant_ints(node.inputs[1]), ir.constant_ints(node.inputs[2])
            axes = ir.constant_ints(node.inputs[3]) if len(node.inputs) > 3 else None
            steps = ir.constant_ints(node.inputs[4]) if len(node.inputs) > 4 else [1]
            if starts is None or ends is None or axes is None or len(axes) != 1 or \
                    axes[0] not in (2, -1) or steps != [1]:
                return None
            start, stop = (max(0, min(width, v + width if v < 0 else v)) for v in (starts[0], ends[0]))
            pieces.append((start, stop, node.outputs[0], [node]))
        elif node.op == "Split" and int(node.attrs.get("axis", 0)) in (2, -1):
            sizes = ir.split_sizes(node, width, opset)
            if sizes is None:
                return None
            start = 0
            for size, piece in zip(sizes, node.outputs):
                pieces.append((start, start + size, piece, [node]))
                start += size
        else:
            return None
    pieces.sort(key=lambda p: p[0])
    if [p[0] for p in pieces] != [0, *(p[1] for p in pieces[:-1])] or pieces[-1][1] != width:
        return None  # the pieces must tile the features once
    return pieces


# --------------------------------------------------------------------------------------------
# Rewriting
# --------------------------------------------------------------------------------------------


def _merge_projections(x: gs.Tensor, splits: list[_HeadSplit], names: ir.NameScope,
                       result: PassResult) -> list[gs.Node]:
    """Rule 2: one ``MatMul(Unsqueeze(x, 1), W')`` (+ bias) whose head-axis Slices write the head
    splits' tensors."""
    new: list[gs.Node] = []
    base = x.name
    dtype = splits[0].weights.dtype
    e, d = splits[0].weights.shape[0], splits[0].head_size
    per_head = np.concatenate([s.weights.reshape(e, s.heads, d).transpose(1, 0, 2) for s in splits])
    heads_in = gs.Variable(names.fresh(f"{base}_heads"), dtype=x.dtype)
    new.append(gs.Node("Unsqueeze", name=names.fresh(f"{base}_heads_unsqueeze"), inputs=[
        x, gs.Constant(names.fresh(f"{base}_heads_axis"), np.array([1], np.int64))], outputs=[heads_in]))
    projected = gs.Variable(names.fresh(f"{base}_per_head"), dtype=dtype)
    new.append(gs.Node("MatMul", name=names.fresh(f"{base}_per_head_projection"), inputs=[
        heads_in, gs.Constant(names.fresh(f"{base}_per_head_weights"),
                              np.ascontiguousarray(per_head[None]))], outputs=[projected]))
    if any(s.bias is not None for s in splits):
        bias = np.concatenate([(s.bias if s.bias is not None else np.zeros(s.heads * d, dtype))
                               .reshape(s.heads, 1, d) for s in splits])
        biased = gs.Variable(names.fresh(f"{base}_per_head_biased"), dtype=dtype)
        new.append(gs.Node("Add", name=names.fresh(f"{base}_per_head_bias"), inputs=[
            projected, gs.Constant(names.fresh(f"{base}_per_head_bias_values"),
                                   np.ascontiguousarray(bias))], outputs=[biased]))
        projected = biased
    start = 0
    for split in splits:
        transpose = split.nodes[-1]
        transpose.outputs.clear()
        bounds = [gs.Constant(names.fresh(f"{split.output.name}_{what}"), np.array([v], np.int64))
                  for what, v in (("start", start), ("stop", start + split.heads), ("axis", 1))]
        new.append(gs.Node("Slice", name=names.fresh(f"{transpose.name}_heads"),
                           inputs=[projected, *bounds], outputs=[split.output]))
        start += split.heads
    result.count("per_head_projections")
    result.count("projections_merged", len({id(s.nodes[0]) for s in splits}))
    return new


def _broadcast(repeat: _Repeat, names: ir.NameScope, result: PassResult) -> list[gs.Node]:
    """Rule 1: the per-head ops run on the ``kv`` heads, each MatMul reads them by broadcast."""
    new: list[gs.Node] = []
    b, kv, s, d = repeat.dims
    g = repeat.groups
    base = repeat.expand.name or repeat.source.name

    def node(op: str, inputs: list[gs.Tensor], name: str, attrs: dict | None = None,
             output: gs.Tensor | None = None) -> gs.Tensor:
        out = output if output is not None else gs.Variable(names.fresh(f"{base}_{name}"),
                                                            dtype=repeat.source.dtype)
        new.append(gs.Node(op, name=names.fresh(f"{base}_{name}"), attrs=attrs or {}, inputs=inputs,
                           outputs=[out]))
        return out

    def ints(name: str, values: list[int]) -> gs.Constant:
        return gs.Constant(names.fresh(f"{base}_{name}"), np.array(values, np.int64))

    unsqueeze = ir.producer(repeat.source)
    heads: gs.Tensor | None = None  # [B, kv, S, D], made when a path has ops to run on it
    for path in repeat.paths:
        if not path.ops:  # the source is the heads grouped already: [B, kv, 1, S, D]
            grouped = repeat.source
        else:
            if heads is None:
                heads = (unsqueeze.inputs[0] if unsqueeze is not None and unsqueeze.op == "Unsqueeze"
                         and _is_axis_2(unsqueeze) else
                         node("Reshape", [repeat.source, ints("kv_shape", [b, kv, s, d])], "kv_heads"))
            tensor = heads
            for op in path.ops:
                first = op[0]
                if len(op) > 1:  # the swap of the last two axes
                    tensor = node("Transpose", [tensor], "swap", {"perm": [0, 1, 3, 2]})
                elif first.op == "Transpose":
                    tensor = node("Transpose", [tensor], "transpose", dict(first.attrs))
                else:  # a Mul or Div by a scalar constant: the other input is the heads
                    inputs = [t if ir.constant_value(t) is not None else tensor for t in first.inputs]
                    tensor = node(first.op, inputs, first.op.lower())
            grouped = node("Unsqueeze", [tensor, ints("group_axis", [2])], "grouped")
        matmul = path.matmul
        other = matmul.inputs[1 - path.index]
        bb, _, m, n = path.other
        other5 = node("Reshape", [other, ints("groups_shape", [bb, kv, g, m, n])], "by_group")
        operands = [other5, grouped] if path.index == 1 else [grouped, other5]
        product = node("MatMul", operands, "grouped_matmul")
        output = matmul.outputs[0]
        matmul.inputs.clear()
        matmul.outputs.clear()
        node("Reshape", [product, ints("heads_shape", list(path.result))], "merged_heads",
             output=output)
        result.count("broadcast_matmuls")
    result.count("repeats_broadcast")
    return new
