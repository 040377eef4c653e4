"""Mutation check: break each pass's rules one at a time and count how many the test suite catches.

Each mutation is a text edit of one pass module (an operator, constant or condition flipped), naming
the rule it breaks. For each one the script copies the repository's tracked files into a temporary
folder, applies the edit there (the working tree is never touched), runs the part of the test suite
that covers that pass (its pass cases, its own tests and the property tests of that pass alone
and of the default pipeline, ``ci`` profile with
``PROPERTY_EXAMPLES`` examples per test) and records whether it failed (caught) or passed
(survived). A mutation whose text is not found exactly once is an error: the list is stale.

    python benchmarks/mutation_check.py                       # every mutation, writes docs/testing.md
    python benchmarks/mutation_check.py --only transpose      # mutations whose id contains it
    python benchmarks/mutation_check.py --list

The tally and the survivors go into docs/testing.md (section ``mutation-check``, written with
benchmarks/markdown_section.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.markdown_section import write_section as write_markdown_section  # noqa: E402


@dataclass(frozen=True)
class Mutation:
    """One edit breaking ``rule`` of the pass ``module``: ``old`` (found exactly once in
    :attr:`file`) becomes ``new``."""

    id: str
    module: str  # the pass whose tests judge the mutant: passes/<module>.py or passes/<module>/
    rule: str
    old: str
    new: str
    #: The file edited, relative to the repository, where the rule's code is not in
    #: passes/<module>.py (a module of a pass package, or the IR the pass builds on).
    path: str = ""
    #: ``passes`` for a pass's rule; ``trtcompile`` for the checks that judge the passes (then
    #: ``module`` is ``trtcompile/<module>.py`` and its tests are ``tests/test_<module>*.py``).
    package: str = "passes"

    @property
    def file(self) -> str:
        return self.path or f"{self.package}/{self.module}.py"


M = Mutation
FP16 = "passes/precision_fp16/__init__.py"
AHL = "passes/attention_head_layout/__init__.py"
AHL_MATCHING = "passes/attention_head_layout/matching.py"
GQA = "passes/grouped_query_attention.py"
MUTATIONS: tuple[Mutation, ...] = (
    # dead-layer-elimination -------------------------------------------------------------------
    M("dle-dropout-training", "dead_layer_elimination", "2: a training-mode Dropout stays",
      "            if bool(training.reshape(-1)[0]):", "            if False:"),
    M("dle-dropout-mask", "dead_layer_elimination", "2: a Dropout whose mask is read stays",
      "        if len(node.outputs) > 1 and (node.outputs[1].outputs or",
      "        if False and (node.outputs[1].outputs or"),
    M("dle-output-rename", "dead_layer_elimination",
      "1: an Identity between two graph outputs stays",
      "    return producer(source) is not None and source.name not in outputs",
      "    return producer(source) is not None", "trtcompile/ir/rewrite.py"),
    M("dle-subgraph-dead", "dead_layer_elimination", "3: dead nodes in If/Loop bodies go too",
      "graph.cleanup(remove_unused_node_outputs=False, recurse_subgraphs=True,",
      "graph.cleanup(remove_unused_node_outputs=False, recurse_subgraphs=False,",
      "trtcompile/ir/rewrite.py"),
    M("dle-noop-pad", "dead_layer_elimination", "5: a Pad of non-zero pads stays",
      "    return pads is not None and all(p == 0 for p in pads)",
      "    return pads is not None"),
    M("dle-noop-slice", "dead_layer_elimination", "5: a Slice that drops elements stays",
      "        if step != 1 or start > 0 or end < dim:", "        if step != 1:"),
    M("dle-noop-expand", "dead_layer_elimination", "5: an Expand that broadcasts stays",
      "    if shape is None or any(d != 1 for d in shape):", "    if shape is None:"),
    M("dle-noop-reshape", "dead_layer_elimination", "5: a Reshape that changes the shape stays",
      "    return tuple(target) == static", "    return True"),
    # fold-constants ---------------------------------------------------------------------------
    M("fold-never-qdq", "fold_constants", "2: QuantizeLinear/DequantizeLinear stay",
      '_NEVER_FOLDED = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})',
      "_NEVER_FOLDED = frozenset()"),
    M("fold-dynamic-shape", "fold_constants", "3: a Shape of a dynamic dimension stays",
      "    return all(isinstance(d, (int, np.integer)) and d >= 0 for d in shape)",
      "    return all(d is not None for d in shape)"),
    M("fold-constant-dtype", "fold_constants", "1: a Constant keeps its dtype as an initializer",
      "    return np.array(value, dtype=_CONSTANT_ATTR_DTYPES[key])",
      "    return np.array(value)", "trtcompile/ir/graph.py"),
    M("fold-ranged-shape", "fold_constants", "3: Shape start/end is respected",
      '                if "start" in node.attrs or "end" in node.attrs:\n'
      '                    if source.shape is None or not _is_static(source.shape):',
      '                if False:\n                    if source.shape is None or not _is_static(source.shape):'),
    # conv-bias-activation-fusion --------------------------------------------------------------
    M("conv-leaky-default", "conv_bias_activation_fusion", "5: LeakyRelu's default alpha is 0.01",
      '(("alpha", "a", 0.01),)', '(("alpha", "a", 0.1),)', "trtcompile/ir/fused_layer.py"),
    M("conv-elu-default", "conv_bias_activation_fusion", "5: Elu's default alpha is 1",
      'Activation("Elu", "elu", "Elu", (("alpha", "a", 1.0),))',
      'Activation("Elu", "elu", "Elu", (("alpha", "a", 0.5),))', "trtcompile/ir/fused_layer.py"),
    M("conv-clip-attr-bounds", "conv_bias_activation_fusion",
      "5: an opset-6 Clip with attribute bounds is not fused",
      '            if "min" in node.attrs or "max" in node.attrs:\n                raise _Stop("Clip with',
      '            if False:\n                raise _Stop("Clip with'),
    M("conv-sub-sign", "conv_bias_activation_fusion", "1: Sub folds as a negative bias",
      "                affine.shift = affine.shift - payload", "                affine.shift = affine.shift + payload"),
    M("conv-sub-order", "conv_bias_activation_fusion", "1: only conv - c folds, not c - conv",
      '        if node.op == "Sub" and node.inputs[0] is not current:',
      '        if False:'),
    M("conv-scale-bias", "conv_bias_activation_fusion", "2: a scale also scales the bias",
      "affine.scale, affine.shift = affine.scale * payload, affine.shift * payload",
      "affine.scale, affine.shift = affine.scale * payload, affine.shift"),
    M("conv-bn-epsilon", "conv_bias_activation_fusion", "3: BatchNorm folds with its epsilon",
      '        values["epsilon"] = float(node.attrs.get("epsilon", 1e-5))',
      '        values["epsilon"] = 1e-5'),
    M("conv-bn-mean", "conv_bias_activation_fusion", "3: BatchNorm subtracts the mean",
      "affine.shift = ((affine.shift - payload[\"mean\"].astype(np.float64)) * factor",
      "affine.shift = ((affine.shift + payload[\"mean\"].astype(np.float64)) * factor"),
    M("conv-bn-training", "conv_bias_activation_fusion", "3: a training-mode BatchNorm stays",
      '        training = _batchnorm_training_form(node, opset)\n        if training:',
      '        training = _batchnorm_training_form(node, opset)\n        if False:'),
    M("conv-per-channel", "conv_bias_activation_fusion",
      "1: a bias that varies along another axis stays",
      "    if any(d != 1 for i, d in enumerate(shape) if i != 1) or shape[1] not in (1, channels):",
      "    if shape[1] not in (1, channels):"),
    M("conv-residual-shape", "conv_bias_activation_fusion",
      "4: only a residual of the chain's exact shape fuses",
      "def known_dims(shape: Any) -> tuple[int | str, ...] | None:",
      "def known_dims(shape: Any) -> tuple[int | str, ...] | None:\n    return ('same',)",
      "trtcompile/ir/analysis.py"),
    # horizontal-fusion ------------------------------------------------------------------------
    M("hf-grouped", "horizontal_fusion", "3: grouped convolutions are not merged",
      '        if family == "conv" and members[0].described.get("group", 1) != 1:',
      '        if False:', "passes/horizontal_fusion/__init__.py"),
    M("hf-cycle", "horizontal_fusion", "4: a layer reading another candidate's result stays",
      "            if self._index.get(id(other)) in ancestors:\n                return other",
      "            if False:\n                return other", "passes/horizontal_fusion/branches.py"),
    M("hf-key-strides", "horizontal_fusion", "2: convs with different strides do not merge",
      '        "strides": tuple(int(s) for s in node.attrs.get("strides", [1] * rank)),',
      '        "strides": (),', "passes/horizontal_fusion/branches.py"),
    M("hf-gemm-alpha", "horizontal_fusion", "2: Gemms with different alpha do not merge",
      '        "alpha": float(node.attrs.get("alpha", 1.0)),', '        "alpha": 1.0,',
      "passes/horizontal_fusion/branches.py"),
    M("hf-min-branches", "horizontal_fusion", "8: at least min-branches layers",
      "            if len(subset) >= self.min_branches:", "            if len(subset) >= 1:",
      "passes/horizontal_fusion/__init__.py"),
    # average-pool-conv-fusion -----------------------------------------------------------------
    M("apc-ceil-mode", "average_pool_conv_fusion", "2: ceil_mode=1 pools stay",
      '        if int(pool.attrs.get("ceil_mode", 0)):', '        if False:'),
    M("apc-count-include-pad", "average_pool_conv_fusion",
      "4: count_include_pad=0 with pads scales the border",
      '        if any(pads) and not int(pool.attrs.get("count_include_pad", 0)):',
      '        if False:'),
    M("apc-border-valid", "average_pool_conv_fusion", "4: the border divisor counts valid taps",
      "        valid = np.minimum(starts + kernel[i], spatial[i]) - np.maximum(starts, 0)",
      "        valid = np.minimum(starts + kernel[i], spatial[i]) - starts"),
    M("apc-window", "average_pool_conv_fusion", "3: the weights are divided by the window size",
      "        window = math.prod(kernel)", "        window = max(kernel)"),
    # concat-elimination -----------------------------------------------------------------------
    M("ce-slice-step", "concat_elimination", "4: Slices with step != 1 are not joined",
      "    if slice_axis != axis or (steps is not None and int(steps.reshape(-1)[0]) != 1):",
      "    if slice_axis != axis:"),
    M("ce-slice-negative", "concat_elimination", "4: negative Slice starts are normalized",
      "        start = max(0, start + dim) if start < 0 else start\n        stop = max(0, stop + dim) if stop < 0 else stop",
      "        pass"),
    # attention-head-layout --------------------------------------------------------------------
    M("ahl-divisor", "attention_head_layout", "4: only scores divided by a constant are rescaled",
      '        if node.op == "Div" and chain_index != 0:', '        if False:', AHL_MATCHING),
    M("ahl-scalar-scale", "attention_head_layout", "4: the scale must be a scalar constant",
      '        if node.op in ("Mul", "Div") and not _scalar(other):', '        if False:', AHL_MATCHING),
    M("ahl-opset", "attention_head_layout", "4: below opset 13 Softmax cannot take the key axis",
      "            if biases[0] and opset < 13:", "            if False:", AHL),
    M("ahl-bias-shape", "attention_head_layout", "1: a bias is one value per output feature",
      "            if value.size != width or value.shape[-1] != width or any(d != 1 for d in value.shape[:-1]):",
      "            if value.size != width:", AHL_MATCHING),
    M("ahl-single-use", "attention_head_layout", "1: a head split's inner tensors have one reader",
      "    for inner in nodes:  # the head split feeds this attention only (decoders also output K, V)\n"
      "        if not ir.has_single_use(inner.outputs[0], graph_outputs):",
      "    for inner in nodes:  # the head split feeds this attention only (decoders also output K, V)\n"
      "        if False:", AHL_MATCHING),
    M("ahl-batch", "attention_head_layout", "1: per-head GEMMs only at batch 1",
      "            if biases[0] and block.query.batch != 1:", "            if False:", AHL),
    M("ahl-merged-pieces", "attention_head_layout",
      "1: every piece of a merged projection's Split belongs to the block",
      "        if pieces != len(split.outputs):", "        if False:", AHL_MATCHING),
    M("ahl-merged-axis", "attention_head_layout", "1: a merged projection is split along its features",
      '        if int(split.attrs.get("axis", 0)) not in (-1, 2):', "        if False:", AHL_MATCHING),
    M("ahl-merged-columns", "attention_head_layout", "1: a piece's weights are its columns",
      "    return x, weights[:, start:stop], total, nodes, split",
      "    return x, weights[:, :stop - start], total, nodes, split", AHL_MATCHING),
    M("gqa-repeat", "grouped_query_attention", "1: a repeat expands one unit axis to a group of 2 or more",
      "    if len(expanded) != 5 or groups < 2 or expanded[:2] + expanded[3:] != dims[:2] + dims[3:]:",
      "    if len(expanded) != 5:", GQA),
    M("gqa-scalar", "grouped_query_attention", "1: only scalar factors run on the shared heads",
      "    if value is None or value.size != 1 or value.ndim > 4 or not np.issubdtype(value.dtype, np.floating):",
      "    if value is None:", GQA),
    M("gqa-batch", "grouped_query_attention", "2: per-head GEMMs only at batch 1",
      "    if x_dims[0] != 1:", "    if False:", GQA),
    M("gqa-derived", "grouped_query_attention", "1: a key is broadcast only in a block laid out per head",
      "            if _derives_from(repeat.source, merged):", "            if True:", GQA),
    M("gqa-precision", "grouped_query_attention", "FP16/BF16/INT8 engines keep the repeat",
      '            if precision != "fp32":', "            if False:", GQA),
    M("ahl-gemm-alpha", "attention_head_layout", "1: a Gemm that scales its product is not read as x W + C",
      '    if int(gemm.attrs.get("transA", 0)) or float(gemm.attrs.get("alpha", 1.0)) != 1.0:',
      '    if int(gemm.attrs.get("transA", 0)):', AHL_MATCHING),
    M("ahl-gemm-value-bias", "attention_head_layout", "3: the value bias joins an output Gemm's C",
      "        bias = folded if old is None else old.astype(np.float64) + folded",
      "        bias = folded if old is None else old.astype(np.float64)", AHL),
    M("ahl-scale-fold", "attention_head_layout", "5: an operand scale multiplies the per-head weights",
      "_scaled(projection.weights, projection.scale)", "projection.weights", AHL),
    M("ahl-swap-dims", "attention_head_layout",
      "5: Reshape, Transpose, Reshape is a swap only when it folds [B*H, S, D] and unfolds [B, H, D, S]",
      "    if reshaped(inner, source) != [b * h, s, d] or reshaped(outer, [b * h, d, s]) != [b, h, d, s]:",
      "    if False:", "trtcompile/ir/analysis.py"),
    M("ahl-guard-zero", "attention_head_layout", "6: a NaN guard writes 0",
      "            or zero.size != 1 or float(zero.reshape(-1)[0]) != 0.0:",
      "            or zero.size != 1:", AHL_MATCHING),
    M("ahl-guard-self-attention", "attention_head_layout",
      "6: the guard is dropped only when query, key and value project one tensor",
      "    drop_guard = guarded and infinite is None and query.x is key.x is value.x",
      "    drop_guard = guarded and infinite is None", AHL_MATCHING),
    M("ahl-guard-infinite-mask", "attention_head_layout",
      "3: behind a NaN guard the value bias folds only with finite masks",
      "    if value.bias is not None and guarded and infinite is not None:",
      "    if False:", AHL_MATCHING),
    # common-subexpression-elimination ---------------------------------------------------------
    M("cse-constant-bytes", "common_subexpression_elimination",
      "1: constants are equal only when their bytes are",
      "            for other in self.by_digest.get((prefix, entry.get_digest()), ()):\n                if _same_bytes(entry.values(), other.values()):",
      "            for other in bucket:\n                if True:"),
    M("cse-commutative", "common_subexpression_elimination", "1: only commutative ops swap operands",
      '_COMMUTATIVE = frozenset({"Add", "Mul",', '_COMMUTATIVE = frozenset({"Sub", "Div", "Add", "Mul",'),
    M("cse-random", "common_subexpression_elimination", "3: random ops are never merged",
      "    if node.op in _RANDOM_OPS:\n", "    if False:\n"),
    M("cse-output-clash", "common_subexpression_elimination",
      "2: two graph outputs keep their own names",
      "            if clash:\n", "            if False:\n"),
    M("cse-optional-outputs", "common_subexpression_elimination",
      "1: nodes writing different optional outputs differ",
      "            outputs = tuple(not t.is_empty() for t in node.outputs)",
      "            outputs = ()"),
    # conv-split-fission -----------------------------------------------------------------------
    M("csf-unread-piece", "conv_split_fission", "4: a Split output nothing reads gets no piece",
      "            if not scope.is_read(output):", "            if False:"),
    M("csf-axis", "conv_split_fission", "1: only a Split on the channel axis is fissioned",
      "        if axis != 1:\n            return Reject([node, reader]",
      "        if False:\n            return Reject([node, reader]"),
    M("csf-single-reader", "conv_split_fission", "1: the Split must be the conv's only reader",
      "        if not ir.has_single_use(output, graph_outputs):\n            splits",
      "        if not output.outputs:\n            splits"),
    M("csf-group", "conv_split_fission", "3: grouped convolutions stay whole",
      "        if group != 1:\n            return Reject([node, split], f\"grouped convolution",
      "        if False:\n            return Reject([node, split], f\"grouped convolution"),
    M("csf-residual", "conv_split_fission", "1: a fused conv with a residual input stays whole",
      "            if info.residual is not None:", "            if False:"),
    # global-pool-window -----------------------------------------------------------------------
    M("gpw-axes", "global_pool_window", "1: only a mean over exactly the spatial axes is a pool",
      "        if rank < 3 or axes != list(range(2, rank)):", "        if rank < 3 or not axes:"),
    M("gpw-keepdims", "global_pool_window", "1: keepdims=0 gets a Flatten to [N, C]",
      "        if match.keepdims:\n            return [pool]",
      "        if True:\n            return [pool]"),
    M("gpw-window-limit", "global_pool_window", "2: windows above TensorRT's limit stay global",
      "        if math.prod(spatial) > MAX_WINDOW_ELEMENTS:", "        if False:"),
    M("gpw-producer", "global_pool_window", "3: only a convolution's output is pooled by window",
      "        if source is None or not (source.op == \"Conv\" and ir.is_onnx_op(source)",
      "        if source is None and not (source.op == \"Conv\" and ir.is_onnx_op(source)"),
    M("gpw-graph-output", "global_pool_window", "4: a pool that is a graph output stays",
      "    if pooled.name in graph_outputs:\n        return \"the pooled result is a graph output",
      "    if False:\n        return \"the pooled result is a graph output"),
    M("gpw-pointwise-reader", "global_pool_window", "4: a pool read by a pointwise layer stays",
      "        return (f\"the pooled result is read by {reader.op}: TensorRT",
      "        continue\n        return (f\"the pooled result is read by {reader.op}: TensorRT"),
    # flatten-gemm-conv ------------------------------------------------------------------------
    M("fgc-reshape-lead", "flatten_gemm_conv", "1: a Reshape to [a, -1] flattens only for a = N",
      "                                        or target[1] == -1 and target[0] in lead):",
      "                                        or target[1] == -1):"),
    M("fgc-one-by-one", "flatten_gemm_conv", "2: the flatten of a 1x1 map stays",
      "        if shape[2] * shape[3] == 1:", "        if False:"),
    M("fgc-transposed-map", "flatten_gemm_conv", "3: a Gemm with transA=1 stays",
      "        if int(reader.attrs.get(\"transA\", 0)):", "        if False:"),
    M("fgc-feeds-kernel", "flatten_gemm_conv", "4: a Gemm whose result is a graph output stays",
      "        if not _feeds_kernel(reader.outputs[0], scope.outputs):",
      "        if False:"),
    M("fgc-alpha", "flatten_gemm_conv", "3: alpha scales the kernel",
      "        matrix = matrix * matrix.dtype.type(reader.attrs.get(\"alpha\", 1.0))",
      "        matrix = matrix * 1"),
    M("fgc-beta", "flatten_gemm_conv", "3: beta scales the bias",
      "                c.reshape(-1) * c.dtype.type(reader.attrs.get(\"beta\", 1.0)), (units,)),",
      "                c.reshape(-1), (units,)),"),
    M("fgc-per-row-bias", "flatten_gemm_conv", "3: a bias per row (per image) stays",
      "            if c is None or c.shape not in ((), (1,), (units,), (1, units)):",
      "            if c is None or c.size not in (1, units, c.size):"),
    # partition ----------------------------------------------------------------------------------
    M("partition-cycle", "partition", "2: groups that would form a cycle stay separate",
      "        if detour is not None:\n            through", "        if False:\n            through"),
    M("partition-min-size", "partition", "3: segments below min-segment-size fall back",
      "            if size < self.min_segment_size:", "            if False:"),
    M("ce-adjacent", "concat_elimination", "3: only adjacent pieces are joined",
      "    if left.source is not right.source or left.stop is None or left.stop != right.start:",
      "    if left.source is not right.source or left.stop is None:"),
    M("ce-pair-sizes", "concat_elimination", "5: Split boundaries must equal the Concat's",
      "        if None in concat_sizes or sizes is None or sizes != concat_sizes:",
      "        if None in concat_sizes or sizes is None or len(sizes) != len(concat_sizes):"),
    # Rule 5's axis check alone is not mutated: dropping it changes nothing, since inputs of one
    # Concat agree on every other axis, so Split sizes that match theirs there sum to more than
    # that axis holds (an equivalent mutant). Its size check is mutated above.
    M("ce-flatten-axis", "concat_elimination", "2: only nested Concats on the same axis flatten",
      "                    and _axis(inner.attrs.get(\"axis\", 0), tensor, *inner.inputs,\n"
      "                              graph=graph) == axis\n",
      "\n"),
    # transpose-cancellation -------------------------------------------------------------------
    M("tc-softmax-opset", "transpose_cancellation", "2 softmax: not below opset 13",
      "        if self.opset < 13:", "        if self.opset < 1:",
      "passes/transpose_cancellation/push_through.py"),
    M("tc-reshape-zero", "transpose_cancellation", "2 reshape: a target holding 0 stays",
      "            return target is not None and (0 not in target.tolist()",
      "            return target is not None and (True",
      "passes/transpose_cancellation/push_through.py"),
    M("tc-squeeze-axes", "transpose_cancellation", "2 squeeze: axes are permuted",
      "        new_axes = sorted(perm[a] for a in axes)\n        plan.update = self._set_axes(consumer, new_axes)",
      "        new_axes = sorted(axes)\n        plan.update = self._set_axes(consumer, new_axes)",
      "passes/transpose_cancellation/push_through.py"),
    M("tc-flatten-outer", "transpose_cancellation", "2 reshape: a Flatten's outer dims must match",
      "        return int(np.prod(shape[:axis])) == int(np.prod(transposed[:axis]))",
      "        return True",
      "passes/transpose_cancellation/push_through.py"),
    M("tc-pair-compose", "transpose_cancellation", "1: a pair composes to p∘q",
      "        combined = compose(perm, self.perm_of(consumer))",
      "        combined = compose(self.perm_of(consumer), perm)",
      "passes/transpose_cancellation/canceller.py"),
    M("tc-concat-axis", "transpose_cancellation", "2 concat: the axis is permuted",
      "        axis = perm[_axis(consumer.attrs.get(\"axis\", 0), rank)]\n        plan.update = lambda: consumer.attrs.__setitem__(\"axis\", axis)\n        plan.output_perms = [perm]\n\n    def _first_input_only",
      "        axis = _axis(consumer.attrs.get(\"axis\", 0), rank)\n        plan.update = lambda: consumer.attrs.__setitem__(\"axis\", axis)\n        plan.output_perms = [perm]\n\n    def _first_input_only",
      "passes/transpose_cancellation/push_through.py"),
    M("tc-norm-channel", "transpose_cancellation", "2 normalization: the channel axis stays",
      "        if rank < 2 or perm[1] != 1:", "        if rank < 2:",
      "passes/transpose_cancellation/push_through.py"),
    M("tc-reduce-axes", "transpose_cancellation", "2 reduce: axes are permuted",
      "                new_axes = sorted(perm[a] for a in axes)\n                plan.update = lambda: consumer.attrs.__setitem__(\"axes\", new_axes)",
      "                new_axes = sorted(axes)\n                plan.update = lambda: consumer.attrs.__setitem__(\"axes\", new_axes)",
      "passes/transpose_cancellation/push_through.py"),
    M("tc-constant-fold", "transpose_cancellation", "3: a constant is permuted by perm",
      "        values = np.transpose(ir.constant_value(transpose.inputs[0]), perm)",
      "        values = np.transpose(ir.constant_value(transpose.inputs[0]), inverse(perm))",
      "passes/transpose_cancellation/canceller.py"),
    M("tc-pad-perm", "transpose_cancellation", "2 pad: pads are permuted",
      "            plan.update = self._set_input(consumer, 1, _permute_pads(pads, perm), \"pads\")",
      "            plan.update = self._set_input(consumer, 1, pads, \"pads\")",
      "passes/transpose_cancellation/push_through.py"),
    # precision-fp16 ---------------------------------------------------------------------------
    M("fp16-user-tolerances", "precision_fp16", "5: the keep-list meets the tolerances parity judges by",
      "    return given if given is not None else calibration.precision_tolerances(half.precision)",
      "    return calibration.precision_tolerances(half.precision)",
      path="passes/precision_fp16/measure.py"),
    M("fp16-widening", "precision_fp16", "casts: only exact widenings merge",
      "        if source is None or (source != middle and (source, middle) not in _EXACT_WIDENINGS\n",
      "        if source is None or (False\n", "passes/precision_fp16/casts.py"),
    M("fp16-fits", "precision_fp16", "constants out of float16 range stay float32",
      "        if float(magnitudes.max()) > self.max:", "        if False:",
      "passes/precision_fp16/half.py"),
    M("fp16-underflow", "precision_fp16", "a nonzero constant float16 flushes to zero stays float32",
      "        if flushed.any():", "        if False:", "passes/precision_fp16/half.py"),
    M("fp16-integer-cast", "precision_fp16", "a Cast of integers stays float32",
      "    if node.op != \"Cast\" or not ir.is_onnx_op(node) or not node.inputs:\n        return False",
      "    if True:\n        return False", FP16),
    M("fp16-cpu-kernel", "precision_fp16", "ops without a float16 CPU kernel stay float32",
      '                if ir.text_attr(node, attr, "none") in values:', "                if False:", FP16),
    M("bf16-engine-form", "precision_fp16", "ops TensorRT builds no bfloat16 form of stay float32",
      "            if node.op in self.half.no_engine_form:", "            if False:", FP16),
    M("bf16-fused-form", "precision_fp16", "a fused layer whose Conv has no bfloat16 form stays float32",
      "                if inner.op in _FUSED_COMPUTE_OPS and not self._has_form(inner.op):",
      "                if False:", FP16),
    M("bf16-opset", "precision_fp16", "a model below bfloat16's opset is refused",
      "        if ir.opset(graph) < self.half.min_opset:", "        if False:", FP16),
    M("fp16-boundary-cast", "precision_fp16", "boundary Casts stay: a fixed point of itself",
      "                plans[id(node)] = _Plan()\n                continue\n            reason = (",
      "                pass\n            reason = (", FP16),
    # scopes and interface (the IR the passes build on) ------------------------------------------
    M("cbaf-bn-spatial", "conv_bias_activation_fusion", "3: BatchNorm spatial=0 stays",
      '        if opset < 9 and not int(node.attrs.get("spatial", 1)):', "        if False:"),
    M("cbaf-bn-denominator", "conv_bias_activation_fusion", "3: var + epsilon <= 0 stays",
      "        if not np.all(denominator > 0):", "        if False:"),
    M("ir-function-body", "conv_bias_activation_fusion", "a function is reused only for its body",
      "        if function_body_key(existing) == key:", "        if True:",
      path="trtcompile/ir/graph.py"),
    M("ir-overridable-import", "conv_bias_activation_fusion",
      "overridable initializers stay graph inputs",
      "    names = overridable_initializer_names(model)\n    if not names:",
      "    names = []\n    if not names:", path="trtcompile/ir/io.py"),
    M("fc-sequences", "fold_constants", "9: sequences are left alone",
      "            if _makes_non_tensor(node):\n                for sub in subgraphs:",
      "            if False:\n                for sub in subgraphs:"),
    M("fc-shape-only-island", "fold_constants", "3: a dynamic Shape alone stays",
      '                    if node.op == "Constant":\n                        ir.lower_constant(node)\n                continue',
      '                    if True:\n                        ir.lower_constant(node)\n                continue'),
    M("fc-shape-rounds", "fold_constants", "3: shapes inference learns after a fold fold in the same run",
      "            if not scan.unknown_shapes or len(graph.nodes) >= nodes:\n                break",
      "            break"),
    M("ir-refine-shapes", "fold_constants", "3: a symbolic dim inference now knows is refined",
      "            elif len(shape) == len(dims) and any(",
      "            elif False and any(", path="trtcompile/ir/analysis.py"),
    # quantize-int8 ----------------------------------------------------------------------------
    M("int8-weight-axis", "quantize_int8", "per-channel weight scales on the output axis",
      "                values, scales = quantize_per_channel(layer.weight_values, layer.axis)",
      "                values, scales = quantize_per_channel(layer.weight_values, 1 - layer.axis)"),
    # values, not accidents ------------------------------------------------------------------------
    M("fold-castlike-type", "fold_constants", "4: CastLike takes the type of its second operand",
      "            to = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))",
      "            to = onnx.helper.np_dtype_to_tensor_dtype(ir.constant_value(value).dtype)"),
    M("hf-gemm-member-transb", "horizontal_fusion",
      "6: each merged Gemm's B is read with its own transB",
      '            columns.append(b.T if int(member.node.attrs.get("transB", 0)) else b)',
      "            columns.append(b.T if trans_b else b)", "passes/horizontal_fusion/__init__.py"),
    M("ahl-rank1-mask", "attention_head_layout",
      "4: a rank-1 (per-key) mask becomes a [key, 1] column for the transposed scores",
      'axes = gs.Constant(scope.fresh(f"{mask.name}_column_axis"), np.array([1], np.int64))',
      'axes = gs.Constant(scope.fresh(f"{mask.name}_column_axis"), np.array([0], np.int64))', AHL),
    M("gpw-keepdims-default", "global_pool_window", "1: an omitted keepdims is 1 (no Flatten)",
      '        return bool(int(pool.attrs.get("keepdims", 1)))',
      '        return bool(int(pool.attrs.get("keepdims", 0)))'),
    # the parity rule the passes are judged by ----------------------------------------------------
    M("verify-range-peak", "verify", "atol_range scales the largest |reference|, not their sum",
      "            peak = max(peak, float(np.abs(finite).max()))",
      "            peak = max(peak, float(np.abs(finite).sum()))", package="trtcompile"),
)


#: Examples per property test in a mutant's run (the ``ci`` profile's derandomized examples, fewer).
PROPERTY_EXAMPLES = 60


def _check_tests(module: str) -> list[str]:
    """The test modules of ``trtcompile/<module>.py``: ``tests/test_<module>*.py``."""
    return [str(p.relative_to(REPO)) for p in sorted((REPO / "tests").glob(f"test_{module}*.py"))]


def tests_for(mutation: Mutation | None) -> list[list[str]]:
    """The pytest invocations that cover the code ``mutation`` edits (each a list of arguments);
    with None, those of every pass and check (the baseline run on the unmutated tree)."""
    if mutation is None:
        checks = sorted({path for m in MUTATIONS if m.package != "passes"
                         for path in _check_tests(m.module)})
        return [["tests/test_pass_cases.py", "tests/passes",
                 "tests/property/test_pass_semantics.py", "tests/property/test_differential.py",
                 "-k", "not every_rule"], *([checks] if checks else [])]
    module = mutation.module
    if mutation.package != "passes":
        return [_check_tests(module)]
    pass_name = module.replace("_", "-")
    own = [str(p.relative_to(REPO)) for p in (REPO / "tests" / "passes" / module).glob("test_*.py")]
    # The differential tests first: they catch most mutants, and a caught mutant stops the run.
    runs = [["tests/property/test_differential.py", "-k",
             f"{pass_name} or default or fp16 or int8"],
            ["tests/test_pass_cases.py", "-k", module]]
    if own:
        runs.append(own)
    runs.append(["tests/property/test_pass_semantics.py", "-k",
                 f"{pass_name} or default_pipeline"])
    return runs


def tracked_copy(destination: Path) -> None:
    """Copy the repository's tracked files (and untracked, not ignored ones) to ``destination``."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    for name in listed:
        source = REPO / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def run_tests(tree: Path, mutation: Mutation | None, timeout: float) -> tuple[bool, str]:
    """(passed, what failed) of the tests covering ``mutation``'s code in ``tree`` (every pass's
    and check's with None)."""
    env = dict(os.environ, PYTHONPATH=str(tree), TRTCOMPILE_PROPERTY_PROFILE="ci",
               TRTCOMPILE_PROPERTY_FAILURES=str(tree / "property-failures"),
               TRTCOMPILE_PROPERTY_EXAMPLES=str(PROPERTY_EXAMPLES),
               TF_CPP_MIN_LOG_LEVEL="2")
    for args in tests_for(mutation):
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *args]
        try:
            completed = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True,
                                       timeout=timeout)
        except subprocess.TimeoutExpired:
            return False, f"{' '.join(args)}: timed out after {timeout:g}s"
        if completed.returncode not in (0, 5):  # 5: nothing selected
            failed = [line for line in completed.stdout.splitlines() if line.startswith("FAILED")]
            return False, f"{' '.join(args)}: {failed[0] if failed else completed.stdout[-200:]}"
    return True, ""


def apply(tree: Path, mutation: Mutation) -> None:
    path = tree / mutation.file
    text = path.read_text()
    found = text.count(mutation.old)
    if found != 1:
        raise SystemExit(f"mutation {mutation.id}: its text occurs {found} times in "
                         f"{mutation.file} (expected once): update the list")
    path.write_text(text.replace(mutation.old, mutation.new))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="",
                        help="run the mutations whose id contains one of these (comma-separated)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per test run")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/testing.md")
    parser.add_argument("--jobs", type=int, default=1, help="mutants tested at once")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the run of the unmutated tree (when it is known to pass)")
    args = parser.parse_args()
    wanted = [part for part in args.only.split(",") if part] or [""]
    chosen = [m for m in MUTATIONS if any(part in m.id for part in wanted)]
    if args.list:
        for m in chosen:
            print(f"{m.id:24} {m.file}  rule {m.rule}")
        return 0
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mutation-") as scratch:
        pristine = Path(scratch) / "pristine"
        tracked_copy(pristine)
        for m in chosen:  # every text must match before an hour is spent on the rest
            apply_check = (pristine / m.file).read_text().count(m.old)
            if apply_check != 1:
                raise SystemExit(f"mutation {m.id}: text found {apply_check} times: update the list")
        if not args.no_baseline:
            passed, detail = run_tests(pristine, None, args.timeout)
            if not passed:
                raise SystemExit(f"the unmutated tree fails its tests: {detail}")

        def test_mutant(m: Mutation) -> tuple[Mutation, bool, str]:
            tree = Path(scratch) / m.id
            shutil.copytree(pristine, tree)
            apply(tree, m)
            passed, detail = run_tests(tree, m, args.timeout)
            print(f"{'caught  ' if not passed else 'SURVIVED'} {m.id:24} {detail[:110]}", flush=True)
            shutil.rmtree(tree, ignore_errors=True)
            return m, not passed, detail

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            rows = list(pool.map(test_mutant, chosen))
    caught = sum(1 for _, killed, _ in rows if killed)
    minutes = (time.perf_counter() - start) / 60
    print(f"{caught} of {len(rows)} mutations caught ({100 * caught / max(1, len(rows)):.0f}%), "
          f"{minutes:.0f} min")
    if not args.no_write and not args.only:
        write_section(rows, minutes)
    return 0


def write_section(rows, minutes: float) -> None:
    caught = sum(1 for _, killed, _ in rows if killed)
    lines = [
        f"Measured with `python benchmarks/mutation_check.py` ({len(rows)} mutations, "
        f"{minutes:.0f} minutes on two cores): **{caught} of {len(rows)} caught "
        f"({100 * caught / max(1, len(rows)):.0f}%)**. Each mutation breaks one rule of one pass "
        "in a temporary copy of the tree; it is caught when that pass's pass cases, its own "
        "tests or the property tests (the pass alone, the default pipeline, `ci` profile, "
        f"{PROPERTY_EXAMPLES} examples per test) fail.",
        "",
        "| mutation | pass | rule broken | verdict |",
        "| --- | --- | --- | --- |",
    ]
    for m, killed, detail in rows:
        verdict = "caught" if killed else "**survived**"
        where = m.module.replace("_", "-") if m.package == "passes" else f"`{m.file}`"
        lines.append(f"| `{m.id}` | {where} | {m.rule} | {verdict} |")
    survivors = [m for m, killed, _ in rows if not killed]
    lines += ["", "Survivors: " + (", ".join(f"`{m.id}` ({m.rule})" for m in survivors)
                                    if survivors else "none.")]
    write_markdown_section("mutation-check", "\n".join(lines), REPO / "docs" / "testing.md")


if __name__ == "__main__":
    sys.exit(main())
