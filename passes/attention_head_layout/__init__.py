"""attention-head-layout: lay out scaled dot-product attention so TensorRT runs it without copies.

Transformer exports write each attention head split as ``MatMul -> Add(bias) -> Reshape -> Transpose``
for the query, key and value, and the scores as ``MatMul(Q, K^T) -> scale -> (+ mask) -> Softmax ->
MatMul(., V)``. TensorRT merges the three projections into one GEMM and then copies each slice out
with its bias and transpose (three layers per attention block). This pass writes the block in the
form TensorRT reads straight from the merged GEMM's output. Torch's dynamo exporter writes
``scaled_dot_product_attention`` its own way (rules 5 and 6): the query and the transposed key each
scaled by the root of the scale, the key transposed by ``Reshape [B*H, S, D] -> Transpose ->
Reshape [B, H, D, S]``, and a NaN guard ``Where(IsNaN(P), 0, P)`` after the Softmax.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from passes.attention_head_layout.matching import Block, Projection, gemm_operands, match, rank
from trtcompile import ir
from trtcompile.pm import Pass, PassContext, PassResult


@dataclass(frozen=True)
class AttentionHeadLayout(Pass):
    """Rewrite ``softmax(Q K^T * s + M) V`` with projected, head-split Q, K, V so that TensorRT
    reads the query, key and value heads straight from their (merged) projection GEMM.

    Rules (a block whose query has a bias rewrites only when all apply, each one alone does not
    pay, see below; a block whose query has no bias gets rules 2 and 3 only, which then leave no
    bias between the merged GEMM and the attention; a block without any of the three biases is
    left alone):
      1. Per-head weights: a head split ``Transpose(Reshape(MatMul(x, W) + b, [B, S, H, D]))``
         (``H`` or ``D`` may be written -1) with constant ``W [E, H*D]`` and bias becomes
         ``MatMul(Unsqueeze(x, 1), W') + b'`` with ``W' = W`` laid out ``[H, E, D]`` and
         ``b' [H, 1, D]``: the same products, written ``[B, H, S, D]`` by the GEMM itself.
         Exact. Only at batch ``B = 1`` (a known 1): a per-head GEMM of a batch broadcasts ``x``
         over the heads, and TensorRT-RTX 1.7 copies it out once per head (one block: 10 -> 14
         engine layers at batch 2; Swin's windowed attention, a batch of windows: 225 -> 239),
         while rules 2 and 3 alone gain nothing there (10 -> 10). The projection may be written
         as a linear layer on a flattened input,
         ``Reshape(Gemm(Reshape(x, [B*S, E]), W, b), [B, S, N])``
         (GPT-2's Conv1D, the dynamo exporter's ``addmm``; a Gemm that transposes ``A`` or scales
         is left alone), and the query, key and value may be pieces of one merged projection
         split along its features (GPT-2's ``c_attn``): each piece is the projection by its
         columns of ``W`` and ``b``. Every piece of that Split must belong to the block (else the
         merged projection would stay computed beside the per-head ones).
      2. Key bias dropped: ``(Q)(K + 1 b_k^T)^T = Q K^T + (Q b_k) 1^T`` adds to every score of a
         query row the same number; the scale keeps it row-constant and Softmax over the key axis
         does not see it (``softmax(z + c) = softmax(z)``). Requires that only scalar-constant
         ``Mul``/``Div`` and ``Add`` lie between the scores and the Softmax. Exact up to rounding.
      3. Value bias folded into the output projection: the probabilities of a row sum to 1, so
         ``P (V + 1 b_v^T) = P V + 1 b_v^T``; after the heads merge and the output projection
         ``(. + b_v) W_o + b_o = . W_o + (b_v W_o + b_o)``. Requires the context to reach the
         output ``MatMul`` with constant ``W_o`` (or a ``Gemm`` reading the heads flattened to
         ``[B*S, E]``, whose ``C`` takes the folded bias) only through the merging ``Transpose``
         and one or two ``Reshape`` ops, and only float ``Cast`` ops and a NaN guard (rule 6) between Softmax and
         the value ``MatMul``. Exact up to rounding (a fully masked row with an infinite mask is
         NaN before and after; behind a NaN guard it is 0 before and ``b_v W_o`` after, so a
         guarded block whose masks may be infinite is left alone: every mask must be a finite
         constant or a ``Where`` of two finite constants, the exported boolean mask).
      4. Transposed scores: ``S = Q K^T`` becomes ``S^T = K Q^T``; the scale and mask ops apply to
         ``S^T`` (each mask transposed in its last two axes, one Transpose per mask tensor shared
         by every block; a constant mask becomes a new constant holding the transposed values),
         the Softmax runs over axis 2 (the key axis of ``S^T``) and the value MatMul reads
         ``Transpose(P^T)``. Exact: the same numbers in another layout. Requires
         opset >= 13 (Softmax on one axis) and masks of known rank.
      5. Operand scales folded: scalar-constant ``Mul`` ops among the layout ops of the query and
         key head splits (after their bias), and a scalar-constant ``Mul`` between any projection
         and its head split (Whisper scales the projected query), multiply the per-head weights
         and bias of rule 1: ``s (x W + b) = x (s W) + s b``. The swap of the last two axes written as
         ``Reshape [B*H, S, D], Transpose [0, 2, 1], Reshape [B, H, D, S]`` of a tensor of known
         dims ``[B, H, S, D]`` counts as a ``Transpose [0, 1, 3, 2]``. Exact up to rounding.
      6. NaN guard dropped: with finite masks (rule 3's condition) a row of probabilities holds a
         NaN only where a score is NaN or infinite, that is where a query or key activation is
         not finite or a product overflows float range. When the query, key and value project one
         tensor (self-attention) a non-finite query or key token has a non-finite value too, and
         the guard's zero row times those values is NaN as the unguarded row is; so the context
         reads ``P`` itself. Applied with rules 1-4 (the guard between the transposed
         probabilities and the context GEMM costs TensorRT a layer per block: BERT 2 layers,
         27 -> 25). Cross-attention keeps its guard.

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
    pipeline, FP32): BERT-base 159 -> 136, DistilBERT 79 -> 68, ViT-B/16 209 -> 185, GPT-2 (4
    layers, merged projections) 53 -> 45 engine compute
    layers, from the TorchScript exporter and from the dynamo exporter alike (its
    ``scaled_dot_product_attention`` form only with rules 5 and 6: 159, 79 and 209 without); BERT
    and DistilBERT compute their mask in the graph, and its transpose costs one layer for the
    model. Not for FP16 engines: TensorRT fuses the standard form into one attention
    kernel there and the transposed one breaks it (DistilBERT FP16: 62 -> 74 layers); INT8 engines
    were not measured and are left alone too. So the pass leaves blocks with non-float32 weights
    alone, and a compile passes the engine precision in ``resources["attention-head-layout"]``.
    The ONNX ``Attention`` op (opset 23) does not pay either: TensorRT-RTX 1.7 builds it in FP32
    only without a mask (7 layers, as many as the primitives) and in FP16 with one layer more
    than the primitives TensorRT fuses itself. Adds no MACs. Requires: constant projection weights and
    biases (``fold-constants``). Preserves: graph inputs and outputs. Counts: ``attention_blocks``,
    ``unbiased_blocks`` (rules 2 and 3 only), ``key_biases_dropped``, ``value_biases_folded``,
    ``masks_transposed``, ``scales_folded``, ``nan_guards_dropped``.
    """

    name: ClassVar[str] = "attention-head-layout"
    needs_ops: ClassVar[frozenset[str]] = frozenset({"Softmax"})

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
            block = match(softmax, opset, dims, graph_outputs, result)
            if block is None:
                continue
            all_nodes = [*block.query.nodes, *block.key.nodes, *block.value.nodes, block.scores,
                         *block.pointwise, softmax, *block.elementwise, block.context]
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
            if not biases[0] and not all(p.plain for p in (block.query, block.key, block.value)):
                result.reject([block.scores, softmax, block.context],
                              "no query bias, and the key and value biases are not Adds after a "
                              "projection of their own (a Gemm's or a merged projection's): "
                              "nothing to drop in place")
                continue
            if biases[0] and block.query.batch != 1:
                batch = "not known to be 1" if block.query.batch is None else \
                    f"{block.query.batch}, not 1"
                result.reject([block.scores, softmax, block.context],
                              f"the batch is {batch}: a per-head GEMM of a batch reads the "
                              "projected input once per head, which TensorRT copies out (one "
                              "block at batch 2: 10 -> 14 engine layers)")
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
# Rewriting
# --------------------------------------------------------------------------------------------


def _rewrite(block: Block, scope: ir.NameScope, unsqueezed: dict[str, gs.Tensor],
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

    def per_head(role: str, projection: Projection, keep_bias: bool) -> gs.Tensor:
        e, h, d = projection.weights.shape[0], projection.heads, projection.head_size
        matmul = projection.nodes[0]
        weights = gs.Constant(scope.fresh(f"{matmul.name}_heads_weights"), np.ascontiguousarray(
            _scaled(projection.weights, projection.scale).reshape(e, h, d).transpose(1, 0, 2)))
        out = gs.Variable(scope.fresh(f"{base}_{role}_heads"), dtype=projection.weights.dtype)
        new.append(gs.Node("MatMul", name=scope.fresh(f"{matmul.name}_heads"),
                           inputs=[heads_input(projection.x), weights], outputs=[out]))
        if keep_bias and projection.bias is not None:
            bias = gs.Constant(scope.fresh(f"{matmul.name}_heads_bias"),
                               np.ascontiguousarray(
                                   _scaled(projection.bias, projection.scale).reshape(h, 1, d)))
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
    for projection in (block.query, block.key):
        if projection.scale != 1.0:
            result.count("scales_folded")
    # Rule 4: S^T = K Q^T, written into the old score MatMul.
    block.scores.inputs = [key, transpose_last(query, f"{base}_query_transpose")]
    for add, index in block.masks:
        mask = add.inputs[index]
        if mask.name not in transposed_masks:
            transposed_masks[mask.name] = _transpose_mask(mask, rank(mask, dims), scope, new)
            result.count("masks_transposed")
        add.inputs[index] = transposed_masks[mask.name]
    probabilities = _drop_nan_guard(block, result) if block.drop_guard else block.probabilities
    for node in [block.scores, *block.pointwise, block.softmax, *block.elementwise]:
        for output in node.outputs:
            output.shape = None  # now laid out [B, H, key, query]
    block.softmax.attrs["axis"] = 2
    block.context.inputs = [transpose_last(probabilities, f"{base}_probabilities_transpose"), value]
    if block.value.bias is not None:
        new += _fold_value_bias(block, scope, result)
    result.count("attention_blocks")
    return new


def _drop_nan_guard(block: Block, result: PassResult) -> gs.Tensor:
    """Rule 6: readers of ``Where(IsNaN(P), 0, P)`` read ``P``; returns the tensor the context
    MatMul reads now."""
    isnan = next(node for node in block.elementwise if node.op == "IsNaN")
    where = next(node for node in block.elementwise if node.op == "Where")
    guarded, unguarded = where.outputs[0], where.inputs[2]
    for reader in list(guarded.outputs):
        reader.inputs[reader.inputs.index(guarded)] = unguarded
    isnan.outputs.clear()
    where.outputs.clear()
    result.count("nan_guards_dropped")
    return unguarded if block.probabilities is guarded else block.probabilities


def _scaled(values: np.ndarray, scale: float) -> np.ndarray:
    """Rule 5: ``values * scale`` in the values' type (unchanged when the scale is 1)."""
    if scale == 1.0:
        return values
    return (values.astype(np.float64) * scale).astype(values.dtype)


def _fold_value_bias(block: Block, scope: ir.NameScope, result: PassResult) -> list[gs.Node]:
    """Rule 3: ``b_v W_o`` joins the output projection's bias (a Gemm's ``C``; a new Add after a
    MatMul that has none)."""
    new: list[gs.Node] = []
    matmul = block.output_matmul
    if matmul.op == "Gemm":
        weights, old = gemm_operands(matmul)
    else:
        weights = ir.constant_value(matmul.inputs[1])
    folded = block.value.bias.astype(np.float64) @ weights.astype(np.float64)
    if matmul.op == "Gemm":
        bias = folded if old is None else old.astype(np.float64) + folded
        constant = gs.Constant(scope.fresh(f"{matmul.name}_bias"), bias.astype(weights.dtype))
        if len(matmul.inputs) > 2:
            matmul.inputs[2] = constant
        else:
            matmul.inputs.append(constant)
        matmul.attrs["beta"] = 1.0
    elif block.output_bias is not None:
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


def _drop_biases(block: Block, scope: ir.NameScope, result: PassResult) -> list[gs.Node]:
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
