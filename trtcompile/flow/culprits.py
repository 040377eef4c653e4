"""Which node makes a TensorRT build fail: binary search over node ranges, built for real.

TensorRT's parser may accept a node its builder then cannot build (TensorRT-RTX has no runner for
``NonMaxSuppression``: "has no runners that implement it"). The parser's support query cannot see
that; only a build can. :func:`find_build_culprit` finds the node by building prefixes of the
model's nodes in topological order (a prefix reads only the model's own inputs, so the profiles of
the model apply to it, restricted to the inputs it reads):

1. when the builder's words name a layer made from a node of the model (``NonMaxSuppression__42``
   in ``NonMaxSuppression__42_163 has no runners``), two builds confirm it: the prefix up to that
   node builds and the prefix through it fails;
2. otherwise the shortest failing prefix is found by binary search (:func:`first_failing`): its
   last node is the culprit. ``log2(nodes)`` builds.

The same search serves ``trtcompile bisect --engine`` (:func:`first_failing`,
:class:`NodeRanges`) and the partition stage, which moves each culprit to the ONNX Runtime side
with the builder's words as the reason and builds the rest.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import onnx

#: The start of the message a failed build (not a parser rejection) raises with
#: (:func:`trtcompile.backend.build.build_engine`).
BUILD_FAILURE = "TensorRT could not build the engine"


def first_failing(lo: int, hi: int, fails: Callable[[int], bool]) -> int:
    """The least ``k`` in ``(lo, hi]`` with ``fails(k)``, given ``fails(hi)`` and not ``fails(lo)``."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fails(mid):
            hi = mid
        else:
            lo = mid
    return hi


def reads(node: onnx.NodeProto) -> list[str]:
    """Tensors a node reads, including the outer tensors its subgraph bodies read."""
    names = list(node.input)
    for attr in node.attribute:
        for body in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
            inner = {name for n in body.node for name in n.output} | {i.name for i in body.input} \
                | {i.name for i in body.initializer}
            names += [name for n in body.node for name in reads(n) if name not in inner]
    return names


class NodeRanges:
    """Contiguous node ranges of a topologically sorted model as models of their own. Tensors
    crossing a range's border are typed as ONNX shape inference types them, and tensors whose
    type it cannot find (after data-dependent ops) by name only: TensorRT's parser types a
    network's outputs itself, and a prefix's inputs are the model's own, always typed."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.nodes = list(model.graph.node)
        self._types: dict[str, onnx.TypeProto] | None = None

    def __len__(self) -> int:
        return len(self.nodes)

    def range_model(self, start: int, stop: int) -> onnx.ModelProto:
        """Nodes ``[start, stop)`` as a model: its inputs are the tensors they read from outside,
        its outputs the tensors they write that are read outside or are graph outputs."""
        if (start, stop) == (0, len(self.nodes)):
            return self.model
        if self._types is None:
            from trtcompile.backend.support import value_types

            self._types = value_types(self.model)
            self._types.update({value.name: value.type for value in self.model.graph.input})
        graph = self.model.graph
        nodes = self.nodes[start:stop]
        initializers = {init.name: init for init in graph.initializer}
        produced = {name for node in nodes for name in node.output if name}
        read = list(dict.fromkeys(name for node in nodes for name in reads(node) if name))
        inputs = [name for name in read if name not in produced and name not in initializers]
        read_after = {name for node in self.nodes[stop:] for name in reads(node)}
        graph_outputs = {o.name for o in graph.output}
        outputs = [name for node in nodes for name in node.output
                   if name and (name in read_after or name in graph_outputs)]
        if not outputs:
            outputs = [name for name in nodes[-1].output if name]

        def value_info(name: str) -> onnx.ValueInfoProto:
            value = onnx.ValueInfoProto(name=name)
            if name in self._types:
                value.type.CopyFrom(self._types[name])
            return value

        part = onnx.helper.make_graph(
            [_copy(node) for node in nodes], f"{graph.name}_{start}_{stop}",
            [value_info(name) for name in inputs], [value_info(name) for name in outputs],
            [initializers[name] for name in read if name in initializers])
        model = onnx.helper.make_model(part, opset_imports=list(self.model.opset_import))
        model.ir_version = self.model.ir_version
        called = {(n.domain, n.op_type) for n in nodes}
        model.functions.extend(f for f in self.model.functions if (f.domain, f.name) in called)
        return model


def _copy(node: onnx.NodeProto) -> onnx.NodeProto:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    return copy


def segment_model(model: onnx.ModelProto, start: int, stop: int) -> onnx.ModelProto:
    """Nodes ``[start, stop)`` of ``model`` (topologically sorted) as a model of their own."""
    return NodeRanges(model).range_model(start, stop)


def restrict_profiles(profiles: Sequence[Mapping[str, Any]] | None, model: onnx.ModelProto
                      ) -> list[dict[str, Any]] | None:
    """``profiles`` with only the inputs ``model`` has (a node range reads a subset)."""
    if not profiles:
        return None
    names = {value.name for value in model.graph.input}
    restricted = [{name: shapes for name, shapes in profile.items() if name in names}
                  for profile in profiles]
    return restricted if any(restricted) else None


@dataclass
class Culprit:
    """A node whose build fails: its name, op, the builder's words and the builds it took."""

    node: str
    op: str
    error: str
    builds: int

    @property
    def reason(self) -> str:
        """The fallback reason the partition report gives."""
        detail = self.error.split(": ", 1)[-1] if self.error.startswith(BUILD_FAILURE) else self.error
        return f"TensorRT's builder fails on it: {detail}"


def named_node(error: str, nodes: Sequence[onnx.NodeProto]) -> int | None:
    """The index of the node whose name the builder's words give as a layer name (the node's
    name, maybe followed by ``_<number>``), longest name first; None when none is named."""
    candidates = sorted(((node.name, index) for index, node in enumerate(nodes) if node.name),
                        key=lambda item: len(item[0]), reverse=True)
    for name, index in candidates:
        if re.search(re.escape(name) + r"(?:_\d+)?(?![\w/])", error):
            return index
    return None


def find_build_culprit(model: onnx.ModelProto, build: Callable[[onnx.ModelProto], str | None],
                       error: str) -> Culprit | None:
    """The node of ``model`` (topologically sorted) whose build fails, given that the whole
    model's build failed with ``error``; ``build(range_model)`` returns None when the model
    builds, else the builder's words. None for a model without nodes."""
    ranges = NodeRanges(model)
    size = len(ranges)
    errors: dict[int, str | None] = {size: error, 0: None}

    def prefix_error(stop: int) -> str | None:
        if stop not in errors:
            errors[stop] = build(ranges.range_model(0, stop))
        return errors[stop]

    def builds() -> int:
        return len(errors) - 2

    if size == 0:
        return None
    hint = named_node(error, ranges.nodes)
    if hint is not None and prefix_error(hint + 1) is not None and (
            hint == 0 or prefix_error(hint) is None):
        stop = hint + 1
    else:
        stop = first_failing(0, size, lambda k: prefix_error(k) is not None)
    node = ranges.nodes[stop - 1]
    return Culprit(node=node.name, op=node.op_type, error=prefix_error(stop) or error,
                   builds=builds())


__all__ = ["BUILD_FAILURE", "Culprit", "NodeRanges", "find_build_culprit", "first_failing",
           "named_node", "reads", "restrict_profiles", "segment_model"]
