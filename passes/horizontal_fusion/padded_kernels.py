"""horizontal-fusion, rule 9: convolutions that differ only in kernel shape and pads merge by
zero-padding their kernels to a common one, priced in MACs and kept within a budget."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from passes.horizontal_fusion.branches import _Branch, _Reachability, _show
from trtcompile import ir
from trtcompile.ir import cost
from trtcompile.pm import PassContext, PassResult


@dataclass
class _Padding:
    """The common kernel of convolutions merged by zero-padding their kernels: its shape, its
    pads, each member's offset inside it, and the MACs the zeros add."""

    kernel: tuple[int, ...]
    pads: tuple[int, ...]
    offsets: list[tuple[int, ...]]
    added_macs: int = 0


class PaddedKernels:
    """Rule 9's part of the pass (:class:`HorizontalFusion` mixes it in): which unmatched
    convolutions may merge by padding, and which of those merges fit the MAC budget."""

    def _padding_candidates(self, unmatched: list[_Branch], siblings: list[_Branch],
                            reachability: _Reachability, graph_outputs: set[str],
                            padded: list[tuple[list[_Branch], list[_Branch]]],
                            result: PassResult) -> list[_Branch]:
        """Queue the subsets of ``unmatched`` that may merge by padding their kernels (to be priced
        once every input is seen); return the layers that found no partner this way either."""
        groups: dict[tuple, list[_Branch]] = defaultdict(list)
        alone: list[_Branch] = []
        for branch in unmatched:
            key = _padding_key(branch)
            if key is None:
                alone.append(branch)
            else:
                groups[key].append(branch)
        for members in groups.values():
            if len(members) < 2:
                alone.extend(members)
                continue
            for subset in self._legal_subsets(members, reachability, graph_outputs, result):
                padded.append((subset, siblings))
        return alone

    def _priced_padded_merges(self, graph: gs.Graph,
                              padded: list[tuple[list[_Branch], list[_Branch]]], ctx: PassContext,
                              result: PassResult) -> list[tuple[list[_Branch], _Padding]]:
        """The padded merges that fit the MAC budget, cheapest first; the others are rejected."""
        shapes = cost.tensor_shapes(graph)
        priced: list[tuple[list[_Branch], _Padding]] = []
        for subset, _ in padded:
            padding = _padding(subset)
            if isinstance(padding, str):
                result.reject([m.node for m in subset], padding)
                continue
            added = _padding_macs(subset, padding, shapes)
            if added is None:
                result.reject([m.node for m in subset], "input or output shapes are not static, so "
                                                        "the MACs the padding adds cannot be priced")
                continue
            padding.added_macs = added
            priced.append((subset, padding))
        if not priced:
            return []
        ledger = cost.mac_ledger(graph, ctx.resources, shapes)
        accepted = []
        for subset, padding in sorted(priced, key=lambda item: (item[1].added_macs,
                                                                 item[0][0].node.name)):
            names = "+".join(m.node.name for m in subset)
            kernel = _show(padding.kernel)
            if not ledger.allows(padding.added_macs, self.max_extra_macs):
                result.reject([m.node for m in subset], (
                    f"zero-padding the kernels to {kernel} would add "
                    f"{cost.format_macs(padding.added_macs)} ({ledger.share(padding.added_macs)} of "
                    f"the model's {cost.format_macs(ledger.baseline)}); "
                    f"{cost.format_macs(ledger.remaining(self.max_extra_macs))} of "
                    f"max-extra-macs={self.max_extra_macs:g} remain"))
                continue
            if not ctx.may_rewrite("merge-conv-padded-kernels", [m.node for m in subset], result):
                continue
            ledger.spend(self.name, f"pad kernels to {kernel}: {names}", padding.added_macs)
            result.count("added_macs", padding.added_macs)
            accepted.append((subset, padding))
        return accepted


def _padding_key(branch: _Branch) -> tuple | None:
    """What convolutions merged by padding their kernels must share (None: cannot be padded)."""
    if branch.family != "conv":
        return None
    described = branch.described
    if described["group"] != 1 or any(d != 1 for d in described["dilations"]):
        return None
    if described.get("auto_pad", "NOTSET") != "NOTSET":
        return None
    shared = tuple((key, value) for key, value in described.items()
                   if key not in ("kernel_shape", "pads"))
    # A plain Conv's key starts with its attributes, a call's ends with the function name (which
    # holds the kernel): keep only what says which kind of layer it is.
    kind = ("Conv",) if branch.key[0] == "Conv" else branch.key[:2]
    return (kind, len(described["kernel_shape"]), shared)


def _padding(members: list[_Branch]) -> _Padding | str:
    """The common kernel of ``members`` (rule 9), or why there is none."""
    kernels = [m.described["kernel_shape"] for m in members]
    pads = [m.described["pads"] for m in members]
    rank = len(kernels[0])
    leading = tuple(max(p[d] for p in pads) for d in range(rank))
    offsets = [tuple(leading[d] - p[d] for d in range(rank)) for p in pads]
    kernel = tuple(max(o[d] + k[d] for o, k in zip(offsets, kernels)) for d in range(rank))
    trailing = {tuple(p[rank + d] + kernel[d] - o[d] - k[d] for d in range(rank))
                for p, o, k in zip(pads, offsets, kernels)}
    if len(trailing) != 1:
        return ("windows do not end at the same offset (kernels "
                f"{', '.join(_show(k) for k in kernels)} with pads "
                f"{', '.join(_show(p) for p in pads)}): no common padded kernel computes every output")
    return _Padding(kernel, leading + trailing.pop(), offsets)


def _padding_macs(members: list[_Branch], padding: _Padding,
                  shapes: dict[str, cost.Shape]) -> int | None:
    """MACs the zeros of ``padding`` add to ``members`` (None if a shape is not static)."""
    x = members[0].node.inputs[0]
    x_shape = shapes.get(x.name) or ir.static_shape(x)
    if x_shape is None:
        return None
    added = 0
    for member in members:
        out_shape = shapes.get(member.output.name) or ir.static_shape(member.output)
        w_shape = tuple(member.node.inputs[1].values.shape)
        if out_shape is None:
            return None
        padded_shape = (*w_shape[:2], *padding.kernel)
        added += (cost.conv_macs(x_shape, padded_shape, {}, out_shape)
                  - cost.conv_macs(x_shape, w_shape, {}, out_shape))
    return added


def _pad_kernel(weights: np.ndarray, kernel: tuple[int, ...], offset: tuple[int, ...]) -> np.ndarray:
    """``weights`` ([O, C, *k]) placed at ``offset`` in a zero kernel of shape ``kernel``."""
    padded = np.zeros((*weights.shape[:2], *kernel), dtype=weights.dtype)
    window = tuple(slice(o, o + k) for o, k in zip(offset, weights.shape[2:]))
    padded[(slice(None), slice(None), *window)] = weights
    return padded
