"""horizontal-fusion: layers that read the same tensor with the same attributes become one layer.

Parallel branches that start with the same kind of layer on the same input (the 1x1 convolutions of
an inception module, the Q/K/V projections of attention, several Gemm heads on one feature vector)
compute ``op(X, W_i) + B_i`` for one ``X``. Concatenating the ``W_i`` (and ``B_i``) along the output
channels gives one layer whose output holds every branch's result side by side; a ``Split`` on the
channel axis gives each branch its tensor back, under its original name.

The pass is a package: :mod:`.branches` finds and keys the candidates (rules 1-2), this module
decides the merges and rewrites them (rules 3-8), :mod:`.padded_kernels` merges convolutions by
zero-padding their kernels (rule 9).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from passes.horizontal_fusion.branches import (
    _Branch,
    _concat_on_merge_axis,
    _Reachability,
    _show,
    candidate,
)
from passes.horizontal_fusion.padded_kernels import PaddedKernels, _pad_kernel, _Padding
from trtcompile import ir
from trtcompile.errors import InputError
from trtcompile.ir import cost
from trtcompile.ir.fused_layer import conv_call_info, conv_function
from trtcompile.pm import Pass, PassContext, PassResult

#: Values of the ``ops`` option and the layers each covers.
OP_FAMILIES = ("conv", "matmul", "gemm")

#: Longest name a merged layer gets from its members' names (the rest is summarized).
_MAX_NAME = 160


@dataclass(frozen=True)
class HorizontalFusion(Pass, PaddedKernels):
    """Merge layers that read the same tensor and differ only in their weights into one layer + Split.

    Rules:
      1. Candidates are layers with one output whose first input is the shared tensor ``X``:
         ``Conv`` (``ops=conv``), calls of one fused conv function (``ops=conv``; the function name
         is its specialization key, so equal names mean equal kernel, strides, pads, dilations,
         group and activation), ``MatMul(X, W)`` with a 2-D ``W`` (``ops=matmul``) and
         ``Gemm(X, B[, C])`` (``ops=gemm``).
      2. Layers merge when their keys are equal: for Conv the kernel, strides, pads, dilations,
         group and auto_pad; for Gemm transA, alpha and beta (ONNX types X and the weights alike,
         so the shared input fixes the dtype). Convolutions with different kernels or pads are
         merged only by rule 9 (rejected with the differing attributes otherwise).
      3. Grouped convolutions (group > 1) are not merged: each group's outputs read only that
         group's input channels, so the merged layer's outputs of one branch would be interleaved
         with the other branch's, which a Split cannot undo.
      4. A layer that (through any path, checked with networkx) reads another candidate's result is
         not merged with it: the merged layer would be its own ancestor.
      5. Weights, biases and Gemm's C must be constants (a runtime weight would need a Concat
         layer of its own); a fused conv call that adds a residual input is not merged (its
         residual, a run-time tensor, would need one too).
      6. The merged layer concatenates the weights along the output channels (Conv: axis 0 of W;
         MatMul: columns of W; Gemm: columns of op(B), C broadcast per branch) and a missing bias
         becomes zeros. A ``Split`` on the channel axis (1 for Conv and Gemm, -1 for MatMul) writes
         the original output tensors, so every name, including graph outputs, is kept.
      7. ``free_split_only`` (default on) merges layers only when the Split can vanish: every
         merged branch's output is read once, by one Concat on the merge axis (channels; the last
         axis for MatMul), at consecutive positions in the same order. ``concat-elimination`` then narrows the Split away and the
         merged layer writes the Concat's range directly. Measured on TensorRT-RTX 1.7: the
         builder lowers every other Split output to a copy layer (N convolutions become one
         convolution plus N slice copies; Keras InceptionV3 goes from 113 to 122 engine layers),
         so other convolution merges add engine layers. MatMul and Gemm merges follow the same
         rule for a measured reason of their own: TensorRT merges MatMuls sharing an input by
         itself, and a merge made in the graph makes it slice the merged result back with extra
         layers (DistilBERT's Q/K/V projections: 79 -> 85 engine layers, BERT-base 159 -> 171).
      8. At least ``min_branches`` layers must remain for a merge.
      9. ``pad_kernels`` (default off) also merges convolutions that differ only in kernel shape
         and pads (same kind, activation, strides, group 1, dilations 1, left without a partner by
         rule 2), subject to rules 4-8: each kernel is zero-padded into the smallest common kernel
         in which every member's window keeps its place (common leading pad = the largest leading
         pad; a member's offset = that pad minus its own), which requires the windows to end at
         the same offset too (equal trailing reach). The 1x3 and 3x1 convolutions of an Inception
         module reading one tensor become one 3x3 convolution writing both halves of their Concat.
         Exact for finite inputs (a padded tap multiplies a zero weight), but the zeros are
         arithmetic: each merge is priced with :mod:`trtcompile.ir.cost` and accepted, cheapest
         first, while the MACs added in this compilation stay within ``max_extra_macs`` times the
         model's MACs (the budget is shared with the other arithmetic-increasing passes).
         ``added_macs`` counts what was spent; merges over budget are rejected with their price.

    Every candidate left alone is recorded with the reason. Requires: nothing. Preserves: graph
    inputs and outputs, topological order, every output within FP32 rounding (the same products
    and sums as before, in one layer; with ``pad_kernels``, plus products with zero weights).
    Options: ``min_branches``, ``ops``, ``free_split_only``, ``pad_kernels``, ``max_extra_macs``
    (a fraction of the model's MACs; 0.1 by default).
    """

    name: ClassVar[str] = "horizontal-fusion"

    min_branches: int = 2
    ops: tuple[str, ...] = OP_FAMILIES
    free_split_only: bool = True
    pad_kernels: bool = False
    max_extra_macs: float = 0.1

    def __post_init__(self) -> None:
        cost.check_budget(self.name, self.max_extra_macs)
        unknown = [op for op in self.ops if op not in OP_FAMILIES]
        if unknown:
            raise InputError(f"{self.name}: unknown op family {', '.join(unknown)}; "
                             f"choose from {', '.join(OP_FAMILIES)}")
        if self.min_branches < 2:
            raise InputError(f"{self.name}: min-branches must be at least 2, got {self.min_branches}")

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = PassResult()
        by_input: dict[int, list[_Branch]] = defaultdict(list)
        for node in graph.nodes:
            branch = candidate(graph, node, self.ops)
            if branch is not None:
                by_input[id(node.inputs[0])].append(branch)

        merges: list[tuple[list[_Branch], _Padding | None]] = []
        padded: list[tuple[list[_Branch], list[_Branch]]] = []  # (subset, its siblings)
        reachability = _Reachability(graph)
        graph_outputs = ir.output_names(graph)
        for branches in by_input.values():
            if len(branches) < 2:
                continue
            groups: dict[tuple, list[_Branch]] = defaultdict(list)
            for branch in branches:
                groups[branch.key].append(branch)
            unmatched = []
            for members in groups.values():
                if len(members) == 1:
                    unmatched.append(members[0])
                    continue
                merges.extend((subset, None) for subset in
                              self._legal_subsets(members, reachability, graph_outputs, result))
            if self.pad_kernels:
                unmatched = self._padding_candidates(unmatched, branches, reachability,
                                                     graph_outputs, padded, result)
            for branch in unmatched:
                self._reject_unmatched(branch, branches, result)
        if padded:
            merges.extend(self._priced_padded_merges(graph, padded, ctx, result))

        merges = [(members, padding) for members, padding in merges if padding is not None
                  or ctx.may_rewrite(f"merge-{members[0].family}", [m.node for m in members], result)]
        if not merges:
            return result
        scope = ir.NameScope(graph)
        split_opset = ir.opset(graph)
        for members, padding in merges:
            self._merge(graph, members, scope, split_opset, padding)
            result.count(f"merged_{members[0].family}_layers", len(members))
            result.count(f"{members[0].family}_merges")
            if padding is not None:
                result.count("padded_kernel_merges")
        graph.cleanup(remove_unused_node_outputs=False, remove_unused_graph_inputs=False)
        ir.toposort(graph)
        return result

    # Legality and profitability -----------------------------------------------------------------

    def _reject_unmatched(self, branch: _Branch, siblings: list[_Branch], result: PassResult) -> None:
        """Say why a layer found no partner among the layers reading the same tensor: name the
        closest sibling of its family and the attributes in which they differ."""
        others = [b for b in siblings if b is not branch and b.family == branch.family]
        if not others:
            return

        def differing(other: _Branch) -> list[str]:
            return [key for key in branch.described if key in other.described
                    and other.described[key] != branch.described[key]]

        other = min(others, key=lambda b: len(differing(b)))
        keys = differing(other)
        parts = [f"{key} {_show(branch.described[key])} vs {_show(other.described[key])}"
                 for key in keys]
        if branch.key[0] != other.key[0]:
            parts.insert(0, "kind (a plain Conv and a fused conv call)")
        shown = ", ".join(parts) or "fused conv function"
        reason = f"differs from '{other.node.name}' reading the same tensor in {shown}"
        if ("kernel_shape" in keys or "pads" in keys) and not self.pad_kernels:
            reason += ("; one merged layer has one kernel: pad-kernels=true zero-pads the kernels "
                       "to a common one, at the price of the added multiply-adds")
        result.reject([branch.node, other.node], reason)

    def _legal_subsets(self, members: list[_Branch], reachability: _Reachability,
                       graph_outputs: set[str], result: PassResult) -> list[list[_Branch]]:
        family = members[0].family
        if family == "conv" and members[0].described.get("group", 1) != 1:
            result.reject([m.node for m in members],
                          f"grouped convolution (group={members[0].described['group']}): each "
                          "group's outputs read only its own input channels, so merged outputs "
                          "would interleave the branches and a Split could not restore them")
            return []

        legal: list[_Branch] = []
        for member in members:
            others = [m.node for m in members if m is not member]
            if member.residual is not None:
                result.reject(member.node, f"adds a residual input '{member.residual.name}': a "
                                           "merged layer would need the branches' residuals "
                                           "concatenated at run time")
                continue
            if member.dynamic_inputs:
                reached = reachability.reached_from(member, others)
                if reached is not None:
                    result.reject([member.node, reached],
                                  f"reads a result of '{reached.name}': merging them would make "
                                  "the merged layer its own ancestor (a cycle)")
                    continue
                names = ", ".join(f"'{t.name}'" for t in member.dynamic_inputs)
                result.reject(member.node, f"weights are not constants ({names}): a merge would "
                                           "need a runtime Concat of the weights")
                continue
            if member.channels is None:
                result.reject(member.node, "output channel count is unknown")
                continue
            legal.append(member)

        if self.free_split_only:
            subsets = self._concat_runs(legal, graph_outputs, result)
        else:
            subsets = [legal]
        chosen = []
        for subset in subsets:
            if len(subset) >= self.min_branches:
                chosen.append(subset)
            elif subset and len(legal) >= 2:
                result.reject([m.node for m in subset],
                              f"fewer than min-branches={self.min_branches} mergeable layers")
        return chosen

    def _concat_runs(self, members: list[_Branch], graph_outputs: set[str],
                     result: PassResult) -> list[list[_Branch]]:
        """Subsets whose outputs feed one Concat on the merge axis at consecutive positions."""
        by_output = {id(m.output): m for m in members}
        runs: list[list[_Branch]] = []
        placed: set[int] = set()
        for member in members:
            output = member.output
            if id(member) in placed or not ir.has_single_use(output, graph_outputs):
                continue
            concat = output.outputs[0]
            if concat.op != "Concat" or not _concat_on_merge_axis(concat, member):
                continue
            run: list[_Branch] = []
            for tensor in list(concat.inputs) + [None]:
                branch = by_output.get(id(tensor)) if tensor is not None else None
                usable = (branch is not None and id(branch) not in placed
                          and ir.has_single_use(tensor, graph_outputs))
                if usable:
                    run.append(branch)
                    continue
                if len(run) >= 2:
                    runs.append(run)
                    placed.update(id(b) for b in run)
                run = []
        rest = [m for m in members if id(m) not in placed]
        if len(rest) >= 1 and len(members) >= 2:
            for member in rest:
                if member.family == "conv":
                    reason = ("the branches do not all feed one Concat side by side: TensorRT "
                              "lowers a Split output that feeds another layer to a copy, so the "
                              "merge would not reduce engine layers (free-split-only=false merges "
                              "anyway)")
                else:
                    reason = (f"{member.node.op}s sharing an input are merged by TensorRT itself; "
                              "merged in the graph, the engine slices the result back with extra "
                              "layers (DistilBERT: 79 -> 85 engine layers), so they merge only "
                              "into one Concat side by side (free-split-only=false merges anyway)")
                # The readers go into the rejection's node list, so the reason stays one sentence
                # that groups in summaries.
                result.reject([member.node, *member.output.outputs], reason)
        return runs

    # Rewrite -----------------------------------------------------------------------------------

    def _merge(self, graph: gs.Graph, members: list[_Branch], scope: ir.NameScope,
               split_opset: int, padding: _Padding | None = None) -> None:
        first = members[0]
        family = first.family
        x = first.node.inputs[0]
        sizes = [int(m.channels) for m in members]
        if family == "conv":
            inputs, axis = self._merged_conv_inputs(members, padding), 1
        elif family == "matmul":
            weights = np.concatenate([m.node.inputs[1].values for m in members], axis=1)
            inputs, axis = [weights], -1
        else:
            inputs, axis = self._merged_gemm_inputs(members), 1

        names = [m.node.name for m in members]
        joined = "+".join(names)
        if len(joined) > _MAX_NAME:
            joined = f"{names[0]}+{len(names) - 1}_more"
        merged_name = scope.fresh(joined)
        constants = [
            gs.Constant(scope.fresh(f"{merged_name}_{role}"), np.ascontiguousarray(value))
            for role, value in zip(("W", "B", "C"), inputs)
        ]
        merged_output = gs.Variable(scope.fresh(f"{merged_name}_out"), dtype=first.output.dtype,
                                    shape=_merged_shape(members, axis, sizes))
        if family == "conv" and ir.is_fused_layer(first.node):
            info = conv_call_info(graph, first.node)
            attrs = dict(info.attrs)
            if padding is not None:
                attrs["kernel_shape"], attrs["pads"] = list(padding.kernel), list(padding.pads)
            function = conv_function(graph, attrs, info.activation, info.activation_params,
                                     dtype=info.weights.values.dtype)
            merged = ir.call(function, merged_name, [x, *constants], [merged_output])
        else:
            attrs = dict(first.node.attrs)
            if padding is not None:
                attrs.pop("auto_pad", None)
                attrs["kernel_shape"], attrs["pads"] = list(padding.kernel), list(padding.pads)
            if family == "gemm":
                attrs["transB"] = int(first.node.attrs.get("transB", 0))
            merged = gs.Node(first.node.op, name=merged_name, attrs=attrs,
                             inputs=[x, *constants], outputs=[merged_output])

        outputs = [m.output for m in members]
        for member in members:
            member.node.inputs.clear()
            member.node.outputs.clear()
        split_attrs: dict[str, Any] = {"axis": axis}
        split_inputs: list[gs.Tensor] = [merged_output]
        if split_opset >= 13:
            split_inputs.append(gs.Constant(scope.fresh(f"{merged_name}_split"),
                                            np.array(sizes, dtype=np.int64)))
        else:
            split_attrs["split"] = sizes
        split = gs.Node("Split", name=scope.fresh(f"{merged_name}_split"), attrs=split_attrs,
                        inputs=split_inputs, outputs=outputs)
        graph.nodes.extend([merged, split])

    @staticmethod
    def _merged_conv_inputs(members: list[_Branch], padding: _Padding | None) -> list[np.ndarray]:
        weights = [m.node.inputs[1].values for m in members]
        if padding is not None:
            weights = [_pad_kernel(w, padding.kernel, offset)
                       for w, offset in zip(weights, padding.offsets)]
        merged = [np.concatenate(weights, axis=0)]
        biases = []
        has_bias = False
        for member, w in zip(members, weights):
            bias = member.node.inputs[2] if len(member.node.inputs) > 2 else None
            if bias is not None and not bias.is_empty():
                biases.append(bias.values.reshape(-1))
                has_bias = True
            else:
                biases.append(np.zeros(w.shape[0], dtype=w.dtype))
        if has_bias:
            merged.append(np.concatenate(biases).astype(weights[0].dtype))
        return merged

    @staticmethod
    def _merged_gemm_inputs(members: list[_Branch]) -> list[np.ndarray]:
        trans_b = int(members[0].node.attrs.get("transB", 0))
        columns = []  # op(B) of each branch, [K, N_i]
        for member in members:
            b = member.node.inputs[1].values
            columns.append(b.T if int(member.node.attrs.get("transB", 0)) else b)
        merged_b = np.concatenate(columns, axis=1)
        merged = [merged_b.T if trans_b else merged_b]
        biases = [m.node.inputs[2] if len(m.node.inputs) > 2 and not m.node.inputs[2].is_empty()
                  else None for m in members]
        if any(b is not None for b in biases):
            # C broadcasts to [M, N_i]; keep it as [rows, N_i] with rows 1 unless some C has M rows.
            shaped = []
            for bias, cols in zip(biases, columns):
                n = cols.shape[1]
                value = np.zeros((1, n), dtype=cols.dtype) if bias is None else np.asarray(bias.values)
                value = value.reshape((1,) * (2 - value.ndim) + value.shape) if value.ndim < 2 else value
                shaped.append(value)
            rows = max(v.shape[0] for v in shaped)
            merged.append(np.concatenate(
                [np.broadcast_to(v, (rows, c.shape[1])) for v, c in zip(shaped, columns)], axis=1))
        return merged


def _merged_shape(members: list[_Branch], axis: int, sizes: list[int]) -> list | None:
    shape = members[0].output.shape
    if shape is None:
        return None
    merged = list(shape)
    merged[axis] = sum(sizes)
    return merged


__all__ = ["OP_FAMILIES", "HorizontalFusion"]
