"""INT8 layer accounting: which engine layers each quantized layer of the graph became.

A *quantized layer* is a top-level ``Conv``/``ConvTranspose``/``MatMul``/``Gemm`` node (or a call of
a local function whose body runs one) that reads a ``DequantizeLinear`` output: a QDQ-wrapped layer
(``quantize-int8`` writes them). TensorRT-RTX runs each as two engine layers or more, and the builder's
layer report (:mod:`trtcompile.backend.engine_report`) says which: every layer lists the ONNX nodes
fused into it and the tensors it reads and writes. :func:`account_int8` classifies each compute layer
of the first profile:

* **product**: the integer convolution or GEMM itself, a matrix layer (``correlation``, ``gemm``,
  ``runtime_fusion``, ...) that lists a quantized node; it writes Float;
* **epilogue**: a layer reading a product's output: the generated kernel that applies the scales,
  bias, activation, residual Add and requantizes for the next layer (two products whose outputs meet
  in one Add share one epilogue);
* **reformat**: a ``reformat``/``copy``/``shuffle`` layer, or a layer running no ONNX node (a
  layout move TensorRT inserted);
* **Q/DQ kernel**: a layer that runs only ``QuantizeLinear``/``DequantizeLinear`` nodes (and
  the quantized layers those feed): a quantization TensorRT could not fuse into a neighbour;
* **other**: everything else (float layers of the graph: pooling, normalization, the head).

The five classes add up to the engine's compute layers. Per quantized layer the record lists its
products and epilogues, and, walking the engine's dataflow back from its product's input to the
previous product or epilogue (or the network input), the reformats and Q/DQ kernels on the way:
the layers its Q/DQ placement costs. A quantized layer with no product of its own was computed inside
another kernel (``inside`` lists it). Each such walk that found one is a *placement*, with a reason
naming the Q/DQ node and the op it follows; ``between_int8`` tells a cost between two INT8 layers
(what a better placement could remove) from the quantization of the network input (which none can).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import onnx

from trtcompile.backend.engine_report import EngineLayer

#: ONNX ops whose QDQ-wrapped nodes are quantized layers.
MATRIX_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})
#: Engine layer types that run a convolution or matrix product (``runtime_fusion``: a GEMM with
#: its epilogue fused, as FP32 engines run ``MatMul`` + ``Add``).
PRODUCT_LAYER_TYPES = frozenset({
    "correlation", "convolution", "deconvolution", "gemm", "runtime_fusion", "matrix_multiply",
    "fully_connected"})
#: Engine layer types that only move or convert data.
REFORMAT_LAYER_TYPES = frozenset({"reformat", "copy", "shuffle"})
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})

#: Classes of :func:`classify_layers`, in report order.
CLASSES = ("product", "epilogue", "reformat", "qdq", "other")


@dataclass
class QuantizedLayer:
    """One quantized node of the graph and the engine layers it became (engine layer names)."""

    node: str
    op: str
    products: list[str] = field(default_factory=list)
    epilogues: list[str] = field(default_factory=list)
    reformats: list[str] = field(default_factory=list)
    qdq: list[str] = field(default_factory=list)
    #: Precisions of its product layers (``INT8`` when TensorRT ran it quantized).
    product_precisions: list[str] = field(default_factory=list)
    #: With no product of its own: the layers that list it (TensorRT computed it inside another
    #: kernel, e.g. a tiny 1x1 convolution in the epilogue of the layer before it).
    inside: list[str] = field(default_factory=list)

    @property
    def extra_layers(self) -> int:
        """Reformats and Q/DQ kernels on its input: the layers its placement costs."""
        return len(self.reformats) + len(self.qdq)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with ``engine_layers``: how many engine layers it became."""
        return {"node": self.node, "op": self.op, "products": self.products,
                "epilogues": self.epilogues, "reformats": self.reformats, "qdq": self.qdq,
                "product_precisions": self.product_precisions, "inside": self.inside,
                "engine_layers": len(self.products) + len(self.epilogues) + self.extra_layers}


@dataclass
class Placement:
    """A Q/DQ placement that costs engine layers: the quantized node, the layers, and why."""

    node: str
    layers: list[str]
    #: True when the layers sit between two INT8 layers (False: on the network input).
    between_int8: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"node": self.node, "layers": self.layers, "between_int8": self.between_int8,
                "reason": self.reason}


@dataclass
class Int8Accounting:
    """The INT8 layer accounting of one engine (see the module docstring)."""

    layers: list[QuantizedLayer]
    #: Compute layers (first profile) per class; sums to the engine's compute layers.
    classes: dict[str, int]
    placements: list[Placement]

    @property
    def costly_placements(self) -> list[Placement]:
        """Placements whose extra layers sit between two INT8 layers."""
        return [placement for placement in self.placements if placement.between_int8]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``report.json``'s ``engine.int8``), with its summary line."""
        record = {"quantized_layers": len(self.layers), "classes": dict(self.classes),
                  "compute_layers": sum(self.classes.values()),
                  "layers": [layer.to_dict() for layer in self.layers],
                  "placements": [placement.to_dict() for placement in self.placements]}
        record["summary"] = summary_line(record)
        return record

    def summary(self) -> str:
        """One line: quantized layers, engine layers per class, placements that cost layers."""
        return self.to_dict()["summary"]


def summary_line(record: dict[str, Any]) -> str:
    """The one-line summary of an accounting record (``report.json``'s ``engine.int8``)."""
    classes = record["classes"]
    placements = record["placements"]
    costly = sum(1 for placement in placements if placement["between_int8"])
    line = (f"INT8: {record['quantized_layers']} quantized layers -> {classes['product']} products"
            f" + {classes['epilogue']} epilogues + {classes['reformat']} reformats"
            f" + {classes['qdq']} Q/DQ kernels (other layers {classes['other']})")
    if costly:
        line += (f"; {costly} placement{'s cost' if costly != 1 else ' costs'} extra layers "
                 "between INT8 layers (see report)")
    else:
        line += "; no placement costs a layer between INT8 layers"
    inside = sum(1 for layer in record["layers"] if not layer["products"])
    if inside:
        line += (f"; {inside} quantized layer{'s run' if inside != 1 else ' runs'} inside another "
                 "kernel (no product of its own)")
    inputs = len(placements) - costly
    if inputs:
        line += f"; {inputs} network input quantization kernel{'s' if inputs != 1 else ''}"
    return line


# --------------------------------------------------------------------------------------------
# The graph side
# --------------------------------------------------------------------------------------------


@dataclass
class _Graph:
    """What the accounting reads from the ONNX graph: quantized nodes, Q/DQ nodes, producers."""

    quantized: dict[str, onnx.NodeProto]
    qdq: dict[str, onnx.NodeProto]
    producers: dict[str, onnx.NodeProto]


def _read_graph(model: onnx.ModelProto) -> _Graph:
    """The quantized layers (matrix ops or calls of functions running one, reading a
    DequantizeLinear output), the Q/DQ nodes and each tensor's producer of ``model``'s graph."""
    graph = model.graph
    matrix_functions = {(f.domain, f.name) for f in model.functions
                        if any(node.op_type in MATRIX_OPS for node in f.node)}
    producers = {name: node for node in graph.node for name in node.output if name}

    def dequantized(name: str) -> bool:
        producer = producers.get(name)
        return producer is not None and producer.op_type == "DequantizeLinear"

    quantized = {}
    for node in graph.node:
        matrix = ((node.op_type in MATRIX_OPS and node.domain in ("", "ai.onnx"))
                  or (node.domain, node.op_type) in matrix_functions)
        if matrix and any(dequantized(name) for name in node.input):
            quantized[node.name] = node
    qdq = {node.name: node for node in graph.node if node.op_type in QDQ_OPS}
    return _Graph(quantized, qdq, producers)


# --------------------------------------------------------------------------------------------
# The engine side
# --------------------------------------------------------------------------------------------


def classify_layers(layers: Sequence[EngineLayer], quantized: Iterable[str],
                    qdq: Iterable[str]) -> dict[str, str]:
    """Engine layer name -> class (:data:`CLASSES`) for the compute layers of the first profile,
    given the names of the graph's quantized nodes and of its Q/DQ nodes."""
    quantized, qdq = set(quantized), set(qdq)
    compute = [layer for layer in layers if layer.compute and layer.profile == 0]
    classes: dict[str, str] = {}
    product_outputs: set[str] = set()
    for layer in compute:
        if layer.type in PRODUCT_LAYER_TYPES and quantized.intersection(layer.onnx_nodes):
            classes[layer.name] = "product"
            product_outputs.update(layer.output_tensors)
    for layer in compute:
        if layer.name in classes:
            continue
        nodes = set(layer.onnx_nodes)
        if product_outputs.intersection(layer.input_tensors):
            classes[layer.name] = "epilogue"
        elif layer.type in REFORMAT_LAYER_TYPES or not nodes:
            classes[layer.name] = "reformat"
        elif nodes & qdq and nodes <= qdq | quantized:
            classes[layer.name] = "qdq"
        else:
            classes[layer.name] = "other"
    return classes


def account_int8(layers: Sequence[EngineLayer], model: onnx.ModelProto) -> Int8Accounting | None:
    """The INT8 accounting of an engine built from ``model`` (its layer report ``layers``); None
    when the graph has no quantized layer or the builder reported no layers."""
    graph = _read_graph(model)
    compute = [layer for layer in layers if layer.compute and layer.profile == 0]
    if not graph.quantized or not compute:
        return None
    classes = classify_layers(compute, graph.quantized, graph.qdq)
    by_name = {layer.name: layer for layer in compute}
    writer = {tensor: layer for layer in compute for tensor in layer.output_tensors}
    readers: dict[str, list[EngineLayer]] = {}
    for layer in compute:
        for tensor in layer.input_tensors:
            readers.setdefault(tensor, []).append(layer)

    records, placements = [], []
    for name, node in graph.quantized.items():
        record = QuantizedLayer(node=name, op=node.op_type)
        for layer in compute:
            if classes[layer.name] == "product" and name in layer.onnx_nodes:
                record.products.append(layer.name)
                record.product_precisions.append(layer.precision)
        epilogues = list(dict.fromkeys(
            reader.name for product in record.products
            for tensor in by_name[product].output_tensors for reader in readers.get(tensor, [])
            if classes[reader.name] == "epilogue"))
        # A product TensorRT shares among quantized nodes (Q, K and V projections fused into one
        # GEMM) feeds one epilogue per node, each listing its node: keep this node's own.
        own = [epilogue for epilogue in epilogues if name in by_name[epilogue].onnx_nodes]
        record.epilogues = own or epilogues
        if not record.products:
            record.inside = [layer.name for layer in compute if name in layer.onnx_nodes]
        costly, reached_int8 = _walk_inputs([by_name[p] for p in record.products], writer, classes)
        record.reformats = [layer.name for layer in costly if classes[layer.name] == "reformat"]
        record.qdq = [layer.name for layer in costly if classes[layer.name] == "qdq"]
        if costly:
            placements.append(Placement(
                node=name, layers=[layer.name for layer in costly], between_int8=reached_int8,
                reason=_reason(name, costly, classes, graph, compute, reached_int8)))
        records.append(record)
    counts = {kind: 0 for kind in CLASSES}
    for kind in classes.values():
        counts[kind] += 1
    return Int8Accounting(records, counts, placements)


def _walk_inputs(products: list[EngineLayer], writer: dict[str, EngineLayer],
                 classes: dict[str, str]) -> tuple[list[EngineLayer], bool]:
    """The reformats and Q/DQ kernels between ``products`` and the nearest products or epilogues
    upstream (walking through float layers too), and whether any such INT8 neighbour was
    reached (False: the walk ended at network inputs only)."""
    costly: list[EngineLayer] = []
    seen: set[str] = {layer.name for layer in products}
    frontier = [tensor for layer in products for tensor in layer.input_tensors]
    reached_int8 = False
    while frontier:
        layer = writer.get(frontier.pop())
        if layer is None or layer.name in seen:
            continue
        seen.add(layer.name)
        kind = classes.get(layer.name)
        if kind in ("product", "epilogue"):
            reached_int8 = True
            continue
        if kind in ("reformat", "qdq"):
            costly.append(layer)
        frontier.extend(layer.input_tensors)
    return costly, reached_int8


def _reason(node: str, costly: list[EngineLayer], classes: dict[str, str], graph: _Graph,
            compute: list[EngineLayer], between_int8: bool) -> str:
    """Why ``node``'s input costs ``costly``: the Q/DQ node each layer runs and what it follows."""
    parts = []
    for layer in costly:
        quantizers = [name for name in layer.onnx_nodes
                      if name in graph.qdq and graph.qdq[name].op_type == "QuantizeLinear"]
        if classes[layer.name] == "reformat" or not quantizers:
            what = ("a reformat" if classes[layer.name] == "reformat" else "a Q/DQ kernel")
            parts.append(f"{what} ({layer.type} {layer.name}) "
                         + ("between two INT8 layers" if between_int8 else "on the network input"))
            continue
        for name in quantizers:
            source = graph.qdq[name].input[0]
            producer = graph.producers.get(source)
            if producer is None:
                parts.append(f"QuantizeLinear {name} on the network input {source} runs as a "
                             "kernel of its own (the input arrives in Float)")
                continue
            runs_in = next((other.precision for other in compute
                            if producer.name in other.onnx_nodes), "an unknown precision")
            parts.append(f"QuantizeLinear {name} on the output of {producer.op_type} "
                         f"{producer.name} runs as a kernel of its own ({producer.name} runs in "
                         f"{runs_in}" + (" between two INT8 layers)" if between_int8 else ")"))
    return f"{node}: " + "; ".join(parts)


__all__ = [
    "CLASSES",
    "MATRIX_OPS",
    "PRODUCT_LAYER_TYPES",
    "REFORMAT_LAYER_TYPES",
    "Int8Accounting",
    "Placement",
    "QuantizedLayer",
    "account_int8",
    "classify_layers",
    "summary_line",
]
