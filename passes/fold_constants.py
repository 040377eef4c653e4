"""fold-constants: compute at compile time what does not depend on the graph's inputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from trtcompile import ir
from trtcompile.pm import Pass, PassContext, PassResult

#: Ops onnx-graphsurgeon never folds: quantization is expressed in the graph and TensorRT reads the
#: Q/DQ pairs on weights as precision, so they must stay.
_NEVER_FOLDED = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})

#: Ops whose results are sequences or optionals, not tensors: onnx-graphsurgeon's folding turns a
#: value into an initializer, which only a tensor can be (a folded ``SequenceEmpty`` is a Python
#: list), so these ops and what reads them stay (rule 9).
_NON_TENSOR_OPS = frozenset({
    "SequenceEmpty", "SequenceConstruct", "SequenceInsert", "SequenceErase", "SplitToSequence",
    "SequenceMap", "Optional", "OptionalGetElement",
})

#: Ops whose outputs only depend on their input's shape.
_SHAPE_OPS = frozenset({"Shape", "Size"})

#: Weight operands: input positions TensorRT reads as layer weights (a convolution's kernel and
#: bias, a Gemm's B and C, a MatMul's second operand). A tensor computed at run time there costs
#: TensorRT a layer of its own (and its full size in activation memory) that a constant does not.
_WEIGHT_INPUTS: dict[str, frozenset[int]] = {
    "Conv": frozenset({1, 2}), "ConvTranspose": frozenset({1, 2}), "Gemm": frozenset({1, 2}),
    "MatMul": frozenset({1}),
}


@dataclass
class _Island:
    """The nodes of one graph (the main graph or an If/Loop/Scan body) that may fold, in order."""

    graph: gs.Graph
    nodes: list[gs.Node] = field(default_factory=list)
    evaluates: bool = False  # holds a node other than Constant: ONNX Runtime has work to do


@dataclass
class _Scan:
    """What the pre-scan found: enough to decide whether onnx-graphsurgeon needs to run, and on what."""

    islands: list[_Island] = field(default_factory=list)
    ranged_shapes: list[tuple[gs.Graph, gs.Node]] = field(default_factory=list)
    unknown_shapes: bool = False  # some Shape input has no known shape: infer shapes first
    constant_condition: bool = False  # an If whose condition folds: flatten it in its graph


@dataclass(frozen=True)
class FoldConstants(Pass):
    """Fold constant subgraphs into initializers so later passes see weights as constants.

    Evaluation is onnx-graphsurgeon's ``Graph.fold_constants`` (ONNX Runtime on the constant part
    of the graph). Rules:
      1. ``Constant`` nodes become initializers (``constant_nodes_to_initializers``) of the element
         type ONNX gives their attribute: ``value`` its own, ``value_float(s)`` float32,
         ``value_int(s)`` int64, ``value_string(s)`` strings; ``sparse_value`` stays a node.
      2. A node whose inputs are all constant (initializers, lowered ``Constant`` nodes, earlier folded
         results, and for If/Loop/Scan the outer tensors their bodies read) is evaluated and its
         outputs become initializers (``folded_nodes``). QuantizeLinear/DequantizeLinear stay.
      3. With ``fold_shapes``, ``Shape`` of a tensor with a static shape becomes a constant, as do
         ``Gather``/``Slice`` of a shape that pick only static dimensions (``folded_shape_ops``
         counts the Shape nodes that disappear). Dynamic dimensions stay dynamic: a Shape of a
         tensor with a dynamic dimension is rejected and all that depends on it is kept. A
         ``Shape`` with ``start``/``end`` (opset 15) whose range selects only static dimensions is
         first rewritten as Shape + Slice so the range is respected, and folds; one whose range
         holds a dynamic dimension is left as it is (splitting it would leave a Slice behind:
         measured on a dynamic-shape BERT export, 7 extra nodes).
      4. ``CastLike(c, t)`` of a constant ``c`` reads only ``t``'s element type: when that type is
         known it becomes ``Cast(c, to=type)`` and folds (``castlike_of_constant``). PyTorch's
         exporter writes the zero bias of a convolution that BatchNorm follows as
         ``Expand(CastLike(0.0, x), shape)``: without this rule the bias stays a run-time
         tensor, the convolution's weights and bias are not all constants, and neither the
         BatchNorm nor the activation fuses (ResNet50: 53 BatchNormalization layers left).
      5. A result larger than ``size_threshold`` bytes stays computed at run time (rejected with
         its size), unless it only ever becomes weights: every reader takes it as a weight
         operand (a Conv/ConvTranspose kernel or bias, a Gemm's B or C, a MatMul's second input),
         directly or through other constant nodes whose results are read that way, and it is
         not a graph output. Such a result folds whatever its size, with the constant nodes
         that lead to it (``folded_large_weights`` counts them; they count in ``folded_nodes``
         too): weights are what TensorRT keeps constant in a layer,
         while computed they are a layer of their own that fills them on every run (VGG19 light
         model: the 411 MB ``fc6`` weight, a ``ConstantOfShape``, was one engine layer of 28;
         the peers fold it too). The price is the weight's size in the model and the engine
         (VGG19 light: 164 -> 575 MB ONNX, 103 -> 514 MB engine), as for any model whose weights
         are stored. A large broadcast read by an activation op (``Expand`` or ``Tile`` of a
         constant added to a tensor), the case the threshold exists for, stays guarded by it. A
         result ONNX Runtime cannot evaluate stays.
      6. An If with a constant condition is replaced by the nodes of the branch it takes
         (``flattened_if``) when ``flatten_conditionals`` is on. The branch not taken is
         detached: its nodes no longer count as readers of the values they read.
      7. If/Loop/Scan bodies are folded the same way; model-local function bodies are left alone
         (they are fused layers whose bodies other passes write).
      8. The nodes folding leaves without readers are removed.
      9. Sequences and optionals are left alone: a node that makes one (``_NON_TENSOR_OPS``, or an
         output typed as a sequence or an optional) does not fold, so neither does what reads it.
         Overridable initializers (graph inputs with a default) are inputs, not constants.

    Cost: one scan over the nodes finds the *islands* that may fold (nodes whose inputs are
    constant or derive from a partly static shape). Without one, onnx-graphsurgeon is not called;
    otherwise it runs on the islands only, not on a copy of the whole graph, so folding a few
    nodes of a 100k-node graph costs about as much as folding them alone. Shapes are inferred with
    ONNX shape inference first when a Shape reads a tensor whose shape is unknown or not static
    (a dim an export or an earlier inference left symbolic may be known once folding made the
    shapes that produce it constant: the TorchScript export of Swin-T computes each attention
    head split from Shape ops of such tensors). (An If whose
    condition folds makes onnx-graphsurgeon run on the whole graph, which flattens it.)

    Requires: topologically sorted nodes. Preserves: topological order, graph inputs and outputs,
    every output value. Options: ``fold_shapes``, ``size_threshold`` (bytes, rule 5),
    ``flatten_conditionals``.
    """

    name: ClassVar[str] = "fold-constants"

    fold_shapes: bool = True
    size_threshold: int = 64 << 20
    flatten_conditionals: bool = True

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = PassResult()
        _constant_castlikes_to_casts(graph, result, ctx)
        folded = False
        while True:  # a round per cascade of shapes that inference learns only after folding
            scan = _Scan()
            self._scan(graph, set(), set(), scan)
            if scan.unknown_shapes and _infer_shapes(graph, ctx):
                scan = _Scan()  # known shapes may make more Shape nodes foldable
                self._scan(graph, set(), set(), scan)
            if not (scan.islands or scan.ranged_shapes):
                break
            whole_graph = scan.constant_condition or scan.ranged_shapes
            if whole_graph and not ctx.may_rewrite("fold-whole-graph", graph.name or "graph", result):
                return result
            nodes = len(graph.nodes)
            scope = ir.NameScope(graph) if scan.ranged_shapes else None
            created = {id(_split_ranged_shape(subgraph, node, scope))
                       for subgraph, node in scan.ranged_shapes}
            if scan.constant_condition or scan.ranged_shapes:
                self._fold_whole_graph(graph, created, result)
            else:
                self._fold_islands(graph, scan.islands, result, ctx)
            folded = True
            # Shapes folded into a Reshape may let inference give dims it did not know: once more
            # while that can happen and this round removed nodes (so the rounds end).
            if not scan.unknown_shapes or len(graph.nodes) >= nodes:
                break
        if folded:
            self._fold_large_weights(graph, result, ctx)
        self._reject(graph, result)
        return result

    def _fold_large_weights(self, graph: gs.Graph, result: PassResult, ctx: PassContext) -> None:
        """Rule 5's exception: fold what the threshold kept computed when it only becomes weights.

        The constant part left after folding (nodes whose inputs are constants or results of other
        such nodes) is walked backwards: a tensor is *weight-bound* when it is not a graph output,
        has readers, and each reader reads it as a weight operand or is a node of the constant part
        whose outputs are all weight-bound. The nodes whose outputs are all weight-bound (and whose
        constant-part producers are too, so nothing outside is folded past the threshold) are
        folded without a threshold.
        """
        for subgraph in list(ir.scopes(graph)):
            graph_outputs = ir.output_names(subgraph)
            derived: set[int] = set()  # the constant part, in node order
            part: list[gs.Node] = []
            for node in subgraph.nodes:
                if (node.op in _NEVER_FOLDED or node.op == "Constant" or ir.subgraphs(node)
                        or not node.inputs or not ir.is_onnx_op(node) or _makes_non_tensor(node)):
                    continue
                if all(t.is_empty() or isinstance(t, gs.Constant) or id(ir.producer(t)) in derived
                       for t in node.inputs):
                    derived.add(id(node))
                    part.append(node)
            if not part:
                continue
            bound: set[int] = set()  # ids of the weight-bound tensors
            whole: set[int] = set()  # ids of the nodes whose outputs are all weight-bound
            for node in reversed(part):
                for tensor in node.outputs:
                    if tensor.name in graph_outputs or not tensor.outputs:
                        continue
                    if all(id(reader) in whole or any(
                            t is tensor and i in _WEIGHT_INPUTS.get(reader.op, ())
                            for i, t in enumerate(reader.inputs)) and ir.is_onnx_op(reader)
                           for reader in tensor.outputs):
                        bound.add(id(tensor))
                if node.outputs and all(id(t) in bound for t in node.outputs):
                    whole.add(id(node))
            chosen = [node for node in part if id(node) in whole and all(
                id(ir.producer(t)) in whole for t in node.inputs
                if not t.is_empty() and id(ir.producer(t)) in derived)]
            large = [node for node in chosen if any(
                (n := ir.analysis.result_bytes(node, t)) is not None and n > self.size_threshold
                for t in node.outputs)]
            if not large or not ctx.may_rewrite("fold-large-weights", chosen, result):
                continue
            island = _Island(subgraph, chosen, evaluates=True)
            folded_counts = PassResult()
            with ir.quiet_graphsurgeon():
                gs.Graph(nodes=list(chosen), inputs=[], outputs=_island_outputs(island),
                         opset=subgraph.opset or graph.opset,
                         import_domains=subgraph.import_domains or graph.import_domains,
                         ir_version=ir.IR_VERSION).fold_constants(
                    fold_shapes=self.fold_shapes, recurse_subgraphs=False, partitioning=None,
                    error_ok=True, flatten_subgraphs=False, size_threshold=None,
                    recurse_functions=False)
            dead: set[int] = set()
            for node in reversed(chosen):
                if any(t.outputs or t.name in graph_outputs for t in node.outputs):
                    continue
                dead.add(id(node))
                self._count_removed(node, folded_counts)
                result.count("folded_large_weights")
                node.inputs.clear()
                node.outputs.clear()
            for key, n in folded_counts.counts.items():
                result.count(key, n)
            if dead:
                subgraph.nodes = [n for n in subgraph.nodes if id(n) not in dead]

    def _fold_islands(self, graph: gs.Graph, islands: list[_Island], result: PassResult,
                      ctx: PassContext) -> None:
        """Fold each island in place, then drop the island nodes left without readers."""
        for island in islands:  # outer graphs come first: their results are constants for bodies
            if not island.nodes or not ctx.may_rewrite("fold-island", island.nodes, result):
                continue
            if not island.evaluates:
                # Only Constant nodes (and Shapes of partly static shapes that no Gather or Slice
                # reads, which stay): lowering the constants is all onnx-graphsurgeon would do.
                for node in island.nodes:
                    if node.op == "Constant":
                        ir.lower_constant(node)
                continue
            for node in island.nodes:
                if node.op == "Constant":
                    ir.lower_constant(node)  # typed as ONNX says, before onnx-graphsurgeon lowers it
            outputs = _island_outputs(island)
            # The island shares its node and tensor objects with the graph, so the folder's
            # tensor.to_constant() rewrites the graph's own tensors.
            part = gs.Graph(nodes=list(island.nodes), inputs=[], outputs=outputs,
                            opset=island.graph.opset or graph.opset,
                            import_domains=island.graph.import_domains or graph.import_domains,
                            ir_version=ir.IR_VERSION)
            with ir.quiet_graphsurgeon():
                part.fold_constants(fold_shapes=self.fold_shapes, recurse_subgraphs=False,
                                    partitioning=None, error_ok=True, flatten_subgraphs=False,
                                    size_threshold=self.size_threshold, recurse_functions=False)
        for island in islands:
            graph_outputs = ir.output_names(island.graph)
            dead: set[int] = set()
            for node in reversed(island.nodes):
                if any(t.outputs or t.name in graph_outputs for t in node.outputs):
                    continue
                dead.add(id(node))
                self._count_removed(node, result)
                node.inputs.clear()
                node.outputs.clear()
            if dead:
                island.graph.nodes = [n for n in island.graph.nodes if id(n) not in dead]

    def _fold_whole_graph(self, graph: gs.Graph, created: set[int], result: PassResult) -> None:
        """onnx-graphsurgeon on the whole graph: needed to flatten If nodes, which it does in place in
        the node list, and after splitting ranged Shapes."""
        before = {id(node): node for node in ir.scope_nodes(graph)}
        branch_of = {id(body_node): id(node) for node in before.values() if node.op == "If"
                     for body in ir.subgraphs(node) for body_node in ir.scope_nodes(body)}
        live_before = ir.live_nodes(graph)
        for node in list(ir.scope_nodes(graph)):
            if node.op == "Constant" and node.outputs and ir.is_lowerable_constant(node):
                ir.lower_constant(node)  # typed as ONNX says, before onnx-graphsurgeon lowers them
        with ir.quiet_graphsurgeon(), ir.evaluable_ir_version(graph):
            graph.fold_constants(
                fold_shapes=self.fold_shapes, recurse_subgraphs=True, partitioning=None,
                error_ok=True, flatten_subgraphs=self.flatten_conditionals,
                size_threshold=self.size_threshold, recurse_functions=False)
        graph.cleanup(remove_unused_graph_inputs=False, recurse_subgraphs=True,
                      recurse_functions=False)
        # The branch a flattened If did not take still reads the outer values it read.
        ir.detach_dropped(graph, before.values())
        after = {id(node) for node in ir.scope_nodes(graph)}
        for key, node in before.items():
            if key in after or key in created:  # kept, or made by this pass (ranged Shape split)
                continue
            if branch_of.get(key) is not None and branch_of[key] not in after:
                continue  # a node of a flattened If's branch: counted as the If's flattening
            if key not in live_before:
                result.count("removed_dead")
            elif node.op == "If" and not node.outputs:
                result.count("flattened_if")
            else:
                self._count_removed(node, result)

    @staticmethod
    def _count_removed(node: gs.Node, result: PassResult) -> None:
        if node.op == "Constant":
            result.count("constant_nodes_to_initializers")
        elif node.op in _SHAPE_OPS:
            result.count("folded_shape_ops")
        else:
            result.count("folded_nodes")

    # Pre-scan ---------------------------------------------------------------------------------

    def _scan(self, graph: gs.Graph, outer_constants: set[str], outer_shapes: set[str],
              scan: _Scan) -> None:
        """Find the islands of ``graph`` and of its bodies in one walk.

        ``constants`` are tensors known to fold; ``shapes`` are tensors that derive from a partly
        static shape and may fold (onnx-graphsurgeon decides which dimensions it can read).
        """
        constants, shapes = set(outer_constants), set(outer_shapes)
        island = _Island(graph)
        scan.islands.append(island)

        def is_constant(tensor: gs.Tensor) -> bool:
            return tensor.is_empty() or isinstance(tensor, gs.Constant) or tensor.name in constants

        def may_fold(tensor: gs.Tensor) -> bool:
            return is_constant(tensor) or tensor.name in shapes

        for node in graph.nodes:
            if node.op == "Constant":
                if ir.is_lowerable_constant(node):
                    island.nodes.append(node)
                    constants.update(t.name for t in node.outputs)
                continue
            subgraphs = ir.subgraphs(node)
            if _makes_non_tensor(node):
                for sub in subgraphs:
                    self._scan(sub, constants, shapes, scan)
                continue
            foreign = [t for sub in subgraphs for t in sub._foreign_tensors().values()]
            if node.op not in _NEVER_FOLDED and all(is_constant(t) for t in node.inputs) and all(
                    is_constant(t) for t in foreign):
                island.nodes.append(node)
                island.evaluates = True
                constants.update(t.name for t in node.outputs)
                continue
            if node.op == "If" and self.flatten_conditionals and is_constant(node.inputs[0]):
                scan.constant_condition = True
            if self.fold_shapes and node.op == "Shape":
                source = node.inputs[0]
                if "start" in node.attrs or "end" in node.attrs:
                    if source.shape is None or not _is_static(source.shape):
                        scan.unknown_shapes = True  # (inference may know dims the graph does not)
                    if source.shape is not None and _range_is_static(node):
                        scan.ranged_shapes.append((graph, node))
                    # A range with a dynamic dimension stays one Shape node: split, its Slice
                    # would stay too (an extra node on every dynamic-shape export).
                    continue
                if source.shape is None or not _is_static(source.shape):
                    scan.unknown_shapes = True  # (inference may know dims the graph does not)
                if source.shape is not None and _is_static(source.shape):
                    island.nodes.append(node)
                    island.evaluates = True
                    constants.update(t.name for t in node.outputs)
                elif source.shape is not None and any(_is_static([d]) for d in source.shape):
                    island.nodes.append(node)  # a Gather/Slice may pick its static dimensions
                    shapes.update(t.name for t in node.outputs)
            elif (self.fold_shapes and node.op not in _NEVER_FOLDED and not subgraphs
                  and node.inputs and all(may_fold(t) for t in node.inputs)):
                island.nodes.append(node)
                island.evaluates = True
                shapes.update(t.name for t in node.outputs)
            for sub in subgraphs:
                self._scan(sub, constants, shapes, scan)
        if not island.nodes:
            scan.islands.remove(island)

    # Rejections -------------------------------------------------------------------------------

    def _reject(self, graph: gs.Graph, result: PassResult) -> None:
        """Record why what still looks constant or shape-derived did not fold."""
        for subgraph in ir.scopes(graph):
            outputs = ir.output_names(subgraph)
            for node in subgraph.nodes:
                if node.op == "Constant":
                    if not ir.is_lowerable_constant(node):
                        result.reject(node, f"Constant with attribute '{next(iter(node.attrs), '')}' "
                                            "cannot become an initializer")
                    continue
                if self.fold_shapes and node.op == "Shape" and (
                        node.outputs[0].outputs or node.outputs[0].name in outputs):
                    source = node.inputs[0]
                    if isinstance(source, gs.Constant):
                        continue
                    if source.shape is None:
                        result.reject(node, f"shape of '{source.name}' is unknown")
                    else:
                        dynamic = [str(d) if d not in (None, "") else "?" for d in source.shape
                                   if not _is_static([d])]
                        if dynamic:
                            result.reject(node, f"shape of '{source.name}' has dynamic "
                                                f"dimension(s) {', '.join(dynamic)}")
                    continue
                if (node.op in _NEVER_FOLDED or not node.inputs or ir.subgraphs(node)
                        or _makes_non_tensor(node)):
                    continue
                if all(t.is_empty() or isinstance(t, gs.Constant) for t in node.inputs):
                    result.reject(node, self._unfolded_reason(node))

    def _unfolded_reason(self, node: gs.Node) -> str:
        for tensor in node.outputs:
            nbytes = ir.analysis.result_bytes(node, tensor)
            if nbytes is not None and nbytes > self.size_threshold:
                return (f"result '{tensor.name}' is {nbytes} bytes, above size-threshold "
                        f"{self.size_threshold}")
        return "ONNX Runtime could not evaluate it"


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _island_outputs(island: _Island) -> list[gs.Tensor]:
    """Island tensors read outside the island (by other nodes, bodies, or as graph outputs)."""
    members = {id(node) for node in island.nodes}
    graph_outputs = ir.output_names(island.graph)
    outputs = []
    for node in island.nodes:
        for tensor in node.outputs:
            if tensor.name in graph_outputs or any(id(r) not in members for r in tensor.outputs):
                outputs.append(tensor)
    return outputs


def _makes_non_tensor(node: gs.Node) -> bool:
    """True if ``node`` produces a sequence or an optional (rule 9)."""
    return (node.op in _NON_TENSOR_OPS and ir.is_onnx_op(node)) or any(
        getattr(t, "type", "tensor_type") not in ("tensor_type", None) for t in node.outputs)


def _is_static(shape) -> bool:
    return all(isinstance(d, (int, np.integer)) and d >= 0 for d in shape)


def _constant_castlikes_to_casts(graph: gs.Graph, result: PassResult, ctx: PassContext) -> None:
    """Rule 4: ``CastLike(constant, t)`` with a known element type of ``t`` becomes a Cast."""
    for node in graph.nodes:
        if node.op != "CastLike" or not ir.is_onnx_op(node) or len(node.inputs) != 2:
            continue
        value, like = node.inputs
        dtype = getattr(like, "dtype", None)
        if ir.constant_value(value) is None or dtype is None:
            continue
        try:
            to = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        except (TypeError, KeyError, ValueError):
            continue
        if not ctx.may_rewrite("castlike-of-constant", node, result):
            continue
        node.op = "Cast"
        node.attrs = {"to": int(to)}
        del node.inputs[1]
        result.count("castlike_of_constant")


def _range_is_static(node: gs.Node) -> bool:
    """Whether ``Shape(x, start, end)`` selects only static dimensions of ``x`` (so it folds)."""
    dims = list(node.inputs[0].shape)
    start = int(node.attrs.get("start", 0))
    end = node.attrs.get("end")
    selected = dims[start:int(end)] if end is not None else dims[start:]
    return _is_static(selected)


def _infer_shapes(graph: gs.Graph, ctx: PassContext) -> bool:
    """Give tensors without a shape the one ONNX shape inference finds (main graph); True if some
    tensor got a shape."""
    try:
        return ir.analysis.infer_missing_shapes(graph)
    except ir.analysis.GraphTooLarge:
        ctx.log("fold-constants: model above 2 GiB, shape inference skipped")
    except ValueError as exc:
        ctx.log(f"fold-constants: shape inference failed, folding with known shapes: {exc}")
    return False


def _split_ranged_shape(graph: gs.Graph, node: gs.Node, scope: ir.NameScope) -> gs.Node:
    """Rewrite ``Shape(x, start, end)`` as ``Slice(Shape(x), start, end)``.

    onnx-graphsurgeon's shape folding reads a Shape's input shape whole and ignores ``start`` and
    ``end``; after this rewrite its Slice folding applies the range.
    """
    start = int(node.attrs.pop("start", 0))
    end = node.attrs.pop("end", None)
    end = int(end) if end is not None else np.iinfo(np.int64).max
    output = node.outputs[0]
    full = gs.Variable(scope.fresh(f"{output.name}_full_shape"), dtype=np.int64)
    node.outputs[0] = full
    constant = lambda suffix, v: gs.Constant(  # noqa: E731
        scope.fresh(f"{output.name}_{suffix}"), np.array([v], np.int64))
    range_node = gs.Node(
        "Slice", name=scope.fresh(f"{node.name}_range"),
        inputs=[full, constant("starts", start), constant("ends", end), constant("axes", 0)],
        outputs=[output])
    graph.nodes.insert(graph.nodes.index(node) + 1, range_node)
    return range_node




__all__ = ["FoldConstants"]
