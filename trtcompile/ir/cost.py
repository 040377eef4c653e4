"""Arithmetic cost model, an analysis of the IR: multiply-accumulates (MACs) of the layers of a
graph, from static shapes.

Passes that trade arithmetic for fewer layers (zero-padding kernels to merge convolutions, folding a
pooling layer into the convolution after it) price each rewrite with this module and keep the sum
under a budget (:class:`MacLedger`). Reports use it to show what a pipeline did to the model's
arithmetic.

What is counted: one MAC per multiply-add of ``Conv``, ``ConvTranspose``, ``MatMul`` and ``Gemm``
(FLOPs are about twice the MACs), including the ones inside the body of a fused-layer call, priced
with the call's operands. Pointwise layers, pooling, normalization and data movement are memory
bound and not counted. A layer whose operand shapes are not static is *unknown*: it is listed, not
guessed. One exception: a graph input whose only unknown dimension is its first (the batch of a
model exported with a dynamic batch, as TensorFlow SavedModels are) is priced at batch 1, so the
figures are MACs per sample. Every counted op's MACs are proportional to the batch, so a budget
(a fraction of the graph's MACs) accepts the same rewrites whatever the batch.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import onnx
import onnx_graphsurgeon as gs

from trtcompile.errors import InputError
from trtcompile.ir.analysis import cached
from trtcompile.ir.graph import function_of, is_onnx_op, op_key, static_shape
from trtcompile.ir.io import export_model, import_model

#: Ops the model prices (outside them a layer costs no MACs).
COUNTED_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})

Shape = tuple[int, ...]


# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------


def tensor_shapes(graph: gs.Graph) -> dict[str, Shape]:
    """Static shapes of the main graph's tensors: the ones the graph knows, completed by ONNX shape
    inference when a priced layer's operand has none. Inference runs on an exported copy, so the
    graph is not changed; in that copy an unknown batch (first) dimension of the graph inputs is 1
    (:func:`_per_sample`). It runs once per graph fingerprint; the caller gets its own dict."""
    shapes: dict[str, Shape] = {}
    for name, tensor in graph.tensors().items():
        shape = static_shape(tensor)
        if shape is not None:
            shapes[name] = shape
    if all(t.name in shapes for node in graph.nodes if _priced(graph, node)
           for t in [*node.inputs, *node.outputs] if not t.is_empty()):
        return shapes
    for name, shape in cached(graph, "per_sample_shapes", _inferred_static_shapes).items():
        shapes.setdefault(name, shape)
    return shapes


def _inferred_static_shapes(graph: gs.Graph) -> dict[str, Shape]:
    """The fully static shapes ONNX shape inference gives the per-sample copy of ``graph``; empty
    when inference fails (best effort: layers whose shapes stay unknown are reported as unknown)."""
    try:
        # data_prop: shapes computed in the graph (Shape -> Gather -> Concat -> Reshape, as every
        # PyTorch export of attention writes them) propagate, so MatMuls after a Reshape are priced.
        inferred = onnx.shape_inference.infer_shapes(_per_sample(export_model(graph.copy())),
                                                     strict_mode=False, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, ValueError):
        return {}
    shapes: dict[str, Shape] = {}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        if value.name in shapes or not value.type.HasField("tensor_type"):
            continue
        tensor_type = value.type.tensor_type
        if not tensor_type.HasField("shape"):
            continue
        dims = tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(int(d.dim_value) for d in dims)
    return shapes


def _per_sample(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with the unknown first dimension of its inputs (of rank 2 or more, all other
    dimensions known) set to 1, and the shapes derived from the old dimension cleared so inference
    derives them again."""
    bound = False
    for value in model.graph.input:
        if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
            continue
        dims = value.type.tensor_type.shape.dim
        if len(dims) >= 2 and not dims[0].HasField("dim_value") and all(
                d.HasField("dim_value") for d in dims[1:]):
            dims[0].dim_value = 1  # dim_value and dim_param are one field: this drops the symbol
            bound = True
    if bound:
        del model.graph.value_info[:]
        for value in model.graph.output:
            if value.type.HasField("tensor_type"):
                value.type.tensor_type.ClearField("shape")
    return model


def _priced(graph: gs.Graph, node: gs.Node) -> bool:
    if is_onnx_op(node):
        return node.op in COUNTED_OPS
    function = function_of(graph, node)
    return function is not None and any(n.op in COUNTED_OPS for n in function.nodes)


# --------------------------------------------------------------------------------------------
# Per-op MACs
# --------------------------------------------------------------------------------------------


def conv_output_spatial(input_spatial: Sequence[int], kernel: Sequence[int],
                        strides: Sequence[int], pads: Sequence[int],
                        dilations: Sequence[int]) -> Shape:
    """Output spatial size of a convolution or pooling window with explicit pads (ONNX semantics,
    ``ceil_mode`` 0): ``floor((in + begin + end - dilation * (k - 1) - 1) / stride) + 1``."""
    rank = len(kernel)
    return tuple(
        (input_spatial[i] + pads[i] + pads[rank + i] - dilations[i] * (kernel[i] - 1) - 1)
        // strides[i] + 1
        for i in range(rank))


def conv_macs(input_shape: Shape, weight_shape: Shape, attrs: Mapping[str, Any],
              output_shape: Shape | None = None) -> int:
    """MACs of ``Conv(X, W)``: output elements times ``C/group * prod(kernel)``.

    The output spatial size is ``output_shape``'s when given, else computed from the attributes
    (``auto_pad`` SAME_* gives ``ceil(in / stride)``).
    """
    batch = input_shape[0]
    out_channels, in_per_group, *kernel = weight_shape
    if output_shape is not None:
        spatial = tuple(output_shape[2:])
    else:
        rank = len(kernel)
        strides = list(attrs.get("strides", [1] * rank))
        auto_pad = attrs.get("auto_pad", "NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            spatial = tuple(-(-input_shape[2 + i] // strides[i]) for i in range(rank))
        else:
            pads = [0] * (2 * rank) if auto_pad == "VALID" else list(attrs.get("pads", [0] * (2 * rank)))
            spatial = conv_output_spatial(input_shape[2:], kernel, strides, pads,
                                          list(attrs.get("dilations", [1] * rank)))
    return batch * out_channels * math.prod(spatial) * in_per_group * math.prod(kernel)


def conv_transpose_macs(input_shape: Shape, weight_shape: Shape, attrs: Mapping[str, Any]) -> int:
    """MACs of ``ConvTranspose(X, W)``: every input element meets ``O/group * prod(kernel)`` weights."""
    in_channels, out_per_group, *kernel = weight_shape
    return math.prod(input_shape) * out_per_group * math.prod(kernel) if in_channels else 0


def matmul_macs(a_shape: Shape, b_shape: Shape) -> int:
    """MACs of ``MatMul(A, B)`` with NumPy broadcasting of the batch dimensions."""
    a = (1, *a_shape) if len(a_shape) == 1 else a_shape
    b = (*b_shape, 1) if len(b_shape) == 1 else b_shape
    batch_rank = max(len(a), len(b)) - 2
    a_batch = (1,) * (batch_rank - (len(a) - 2)) + tuple(a[:-2])
    b_batch = (1,) * (batch_rank - (len(b) - 2)) + tuple(b[:-2])
    batch = math.prod(max(x, y) for x, y in zip(a_batch, b_batch))
    return batch * a[-2] * a[-1] * b[-1]


def gemm_macs(a_shape: Shape, b_shape: Shape, attrs: Mapping[str, Any]) -> int:
    """MACs of ``Gemm(A, B, C)``: ``M * K * N`` after ``transA``/``transB``."""
    m, k = (a_shape[1], a_shape[0]) if int(attrs.get("transA", 0)) else (a_shape[0], a_shape[1])
    n = b_shape[0] if int(attrs.get("transB", 0)) else b_shape[1]
    return m * k * n


def op_macs(op: str, attrs: Mapping[str, Any], operand_shapes: Sequence[Shape | None],
            output_shape: Shape | None = None) -> int | None:
    """MACs of one ONNX op given its operands' shapes; 0 for ops not priced, None when a needed
    shape is unknown."""
    if op not in COUNTED_OPS:
        return 0
    if len(operand_shapes) < 2 or operand_shapes[0] is None or operand_shapes[1] is None:
        return None
    a, b = operand_shapes[0], operand_shapes[1]
    if op == "Conv":
        return conv_macs(a, b, attrs, output_shape)
    if op == "ConvTranspose":
        return conv_transpose_macs(a, b, attrs)
    if op == "MatMul":
        return matmul_macs(a, b)
    return gemm_macs(a, b, attrs)


def node_macs(graph: gs.Graph, node: gs.Node, shapes: Mapping[str, Shape]) -> int | None:
    """MACs of a top-level node: a plain op, or the priced ops of a local function's body, whose
    operands are looked up through the call's inputs. None when a needed shape is unknown."""
    def shape_of(tensor: gs.Tensor) -> Shape | None:
        return shapes.get(tensor.name) or static_shape(tensor)

    if is_onnx_op(node):
        output = shape_of(node.outputs[0]) if node.outputs else None
        return op_macs(node.op, node.attrs, [shape_of(t) for t in node.inputs], output)
    function = function_of(graph, node)
    if function is None:
        return 0
    outer = {id(inner): outer_tensor for inner, outer_tensor in zip(function.inputs, node.inputs)}
    total = 0
    for inner_node in function.nodes:
        if inner_node.op not in COUNTED_OPS:
            continue
        operands = [shape_of(outer[id(t)]) if id(t) in outer else static_shape(t)
                    for t in inner_node.inputs]
        macs = op_macs(inner_node.op, inner_node.attrs, operands)
        if macs is None:
            return None
        total += macs
    return total


# --------------------------------------------------------------------------------------------
# Whole graphs
# --------------------------------------------------------------------------------------------


@dataclass
class CostSummary:
    """MACs of a graph: the total of the layers whose shapes are static, by op, and the layers whose
    cost is unknown."""

    macs: int = 0
    by_op: dict[str, int] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    def to_dict(self) -> dict[str, Any]:
        return {"macs": self.macs, "by_op": dict(self.by_op), "unknown": list(self.unknown)}


def graph_macs(graph: gs.Graph, shapes: Mapping[str, Shape] | None = None) -> CostSummary:
    """The :class:`CostSummary` of the graph's top-level layers (``shapes`` from
    :func:`tensor_shapes` when not given)."""
    shapes = tensor_shapes(graph) if shapes is None else shapes
    summary = CostSummary()
    for node in graph.nodes:
        if not _priced(graph, node):
            continue
        macs = node_macs(graph, node, shapes)
        if macs is None:
            summary.unknown.append(node.name)
            continue
        summary.macs += macs
        key = op_key(node)
        summary.by_op[key] = summary.by_op.get(key, 0) + macs
    return summary


def model_macs(model: onnx.ModelProto) -> CostSummary:
    """The :class:`CostSummary` of an ONNX model."""
    return graph_macs(import_model(model))


# --------------------------------------------------------------------------------------------
# Budgets
# --------------------------------------------------------------------------------------------


@dataclass
class MacLedger:
    """What arithmetic-increasing rewrites have added to one graph during one compilation.

    ``baseline`` is the graph's MACs when the first such rewrite priced itself; ``spent`` the MACs
    the accepted rewrites have added since. A pass with budget ``fraction`` may add a rewrite while
    ``spent + extra <= fraction * baseline``: budgets are fractions of the same baseline, so a pass
    that runs again in a fixed-point loop cannot spend its budget twice.
    """

    baseline: int
    spent: int = 0
    entries: list[tuple[str, str, int]] = field(default_factory=list)  # (pass, what, extra MACs)

    def allows(self, extra: int, fraction: float) -> bool:
        """True if adding ``extra`` MACs keeps the total added within ``fraction`` of the baseline."""
        return self.spent + extra <= fraction * self.baseline

    def remaining(self, fraction: float) -> int:
        """MACs still available under ``fraction``."""
        return max(0, int(fraction * self.baseline) - self.spent)

    def spend(self, pass_name: str, what: str, extra: int) -> None:
        """Record an accepted rewrite."""
        self.spent += extra
        self.entries.append((pass_name, what, extra))

    def share(self, macs: int) -> str:
        """``macs`` as a percentage of the baseline, for messages."""
        return f"{100.0 * macs / self.baseline:.2f}%" if self.baseline else "n/a"


#: Key of the ledgers in :attr:`trtcompile.pm.PassContext.resources`.
LEDGER_RESOURCE = "mac-ledger"


class _Ledgers:
    """The ledgers of one compilation, one per graph object (held weakly)."""

    def __init__(self) -> None:
        self._by_graph: list[tuple[weakref.ref, MacLedger]] = []

    def get(self, graph: gs.Graph) -> MacLedger | None:
        self._by_graph = [(ref, ledger) for ref, ledger in self._by_graph if ref() is not None]
        for ref, ledger in self._by_graph:
            if ref() is graph:
                return ledger
        return None

    def add(self, graph: gs.Graph, ledger: MacLedger) -> None:
        self._by_graph.append((weakref.ref(graph), ledger))


def check_budget(pass_name: str, fraction: float) -> None:
    """Raise InputError unless ``fraction`` (a pass's ``max-extra-macs`` option) is a fraction >= 0
    of the model's MACs (NaN is not)."""
    if not fraction >= 0:
        raise InputError(f"{pass_name}: max-extra-macs must be a fraction >= 0 of the model's MACs, "
                         f"got {fraction}")


def mac_ledger(graph: gs.Graph, resources: dict[str, Any],
               shapes: Mapping[str, Shape] | None = None) -> MacLedger:
    """The :class:`MacLedger` of ``graph`` in this compilation (``resources`` is the pass context's),
    created with the graph's current MACs as baseline on first use."""
    ledgers = resources.get(LEDGER_RESOURCE)
    if not isinstance(ledgers, _Ledgers):
        ledgers = _Ledgers()
        resources[LEDGER_RESOURCE] = ledgers
    ledger = ledgers.get(graph)
    if ledger is None:
        ledger = MacLedger(baseline=graph_macs(graph, shapes).macs)
        ledgers.add(graph, ledger)
    return ledger


def format_macs(macs: int | float) -> str:
    """``1234567890`` -> ``1.23 GMAC``, ``45600000`` -> ``45.6 MMAC``, ``5040`` -> ``5040 MAC``."""
    if abs(macs) >= 1e9:
        return f"{macs / 1e9:.2f} GMAC"
    if abs(macs) >= 1e6:
        return f"{macs / 1e6:.1f} MMAC"
    return f"{int(macs)} MAC"


def ledger_entries(resources: dict[str, Any]) -> Iterable[tuple[str, str, int]]:
    """Every recorded rewrite of every ledger in ``resources`` (for reports)."""
    ledgers = resources.get(LEDGER_RESOURCE)
    if not isinstance(ledgers, _Ledgers):
        return []
    return [entry for _, ledger in ledgers._by_graph for entry in ledger.entries]


__all__ = ["COUNTED_OPS", "LEDGER_RESOURCE", "CostSummary", "MacLedger", "Shape", "check_budget",
           "conv_macs",
           "conv_output_spatial", "conv_transpose_macs", "format_macs", "gemm_macs", "graph_macs",
           "ledger_entries", "mac_ledger", "matmul_macs", "model_macs", "node_macs", "op_macs",
           "tensor_shapes"]
