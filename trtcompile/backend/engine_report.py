"""The engine layer report: what TensorRT built, layer by layer, and which ONNX nodes each layer runs.

TensorRT does not expose the final layers of an engine without deserializing it (which needs a GPU),
but with ``profiling_verbosity = DETAILED`` and a VERBOSE logger the builder logs them in one message
that starts with ``Layers:``, one line per engine layer::

    Name: <layer>, LayerType: <type>, Inputs: [ { Name: <tensor>, Dimensions: [...], ..., Datatype: Float,
    Format: ... }], Constants: [...], Outputs: [...], TacticName: <tactic>, StreamId: <n>[, EventId: <n>],
    Metadata: [ONNX Layer: <node>]<US>[ONNX Layer: <body node> | <call node> (<Function>)][<note>]

(``<US>`` is the ASCII unit separator, 0x1f.) The metadata may end in a builder note outside the
brackets: FP16 and INT8 engines lower 1x1 convolutions to GEMMs and mark those layers
``...]__gemm_from_conv1x1``; notes are kept in :attr:`EngineLayer.notes`.
:func:`read_layer_report` turns that message into :class:`EngineLayer` records. Node and tensor names
come from the model and may contain anything (commas, brackets, `` | ``), so the parser anchors on the
fixed field sequence rather than splitting on commas, and resolves metadata against the model's node
names when it is given them. A line it cannot read does not lose the report: the line is named in
:attr:`LayerReport.problems` and, when at least its name and type can be read, it still counts as a
layer (with no ONNX nodes).

**Precision.** Each layer's :attr:`EngineLayer.precision` is the narrowest arithmetic type among the
tensors it reads (its inputs and constants, e.g. a convolution with ``Int8`` input and weights is
``INT8``; a layer reading ``Half`` is ``FP16``; ``Float`` only is ``FP32``). Layers that only read
integers or booleans (shape and index arithmetic) are ``other``. :func:`precision_histogram` counts
compute layers per precision; the report always lists INT8, FP16 and FP32.

**Compute layers.** An engine's *compute layers* are all its layers except the ones that launch no
kernel and carry no tensor (:data:`NON_COMPUTE_LAYER_TYPES`):

* ``signal`` and ``wait``: events that synchronise the auxiliary CUDA streams TensorRT runs independent
  branches on (InceptionV3's parallel towers produce 168 of them);
* ``shape_call``: the host-side shape computation of engines with dynamic input shapes.

Layout moves and reformats (``kgen`` layers with empty metadata) *are* compute layers: they launch
kernels and move memory, and removing them is exactly what layout passes aim at. With several
optimization profiles the engine holds one copy of the network per profile; compute layers count the
first profile's copy, so the figure does not grow with the number of profiles.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

#: Layer types that are not compute layers: stream synchronisation and host-side shape calls.
NON_COMPUTE_LAYER_TYPES = frozenset({"signal", "wait", "shape_call"})

#: First line of the builder's layer message.
LAYERS_HEADER = "Layers:"

_METADATA_ITEM_PREFIX = "[ONNX Layer: "
_UNIT_SEPARATOR = "\x1f"

# Head of a layer line. The name is matched lazily up to the first ", LayerType: <word>, Inputs: ["
# so a name containing ", LayerType: " on its own still parses.
_HEAD = re.compile(r"Name: (?P<name>.*?), LayerType: (?P<type>[\w.:-]+), Inputs: \[", re.S)
# Fixed fields between the tensor lists and the metadata; tactic names and ids contain no commas.
_TAIL = re.compile(
    r"\], TacticName: (?P<tactic>[^,]*), StreamId: (?P<stream>-?\d+)(?:, EventId: (?P<event>-?\d+))?"
    r", Metadata: (?P<metadata>.*)$", re.S)
_DATATYPE = re.compile(r"Datatype: (\w+), Format: ")
# A tensor of a tensor list: its name runs to the fixed ", Dimensions: [" field.
_TENSOR_NAME = re.compile(r"\{ Name: (.*?), Dimensions: \[", re.S)
_CONSTANTS = "], Constants: ["
# Builder notes after the last metadata item (``__gemm_from_conv1x1``): no brackets, no newlines.
_METADATA_NOTE = re.compile(r"[^\[\]\n]*")

#: TensorRT datatype name -> precision, narrowest first (the order decides a layer's precision).
PRECISIONS: dict[str, str] = {
    "Int4": "INT4", "FP4": "FP4", "FP8": "FP8", "Int8": "INT8", "UInt8": "INT8",
    "Half": "FP16", "BFloat16": "BF16", "Float": "FP32",
}
#: Precisions the summary always lists, even at zero layers.
REPORTED_PRECISIONS = ("INT8", "FP16", "FP32")
#: Precision of a layer that reads no floating-point or quantized tensor (shape arithmetic, indices).
OTHER_PRECISION = "other"
_PROFILE = re.compile(r" \[profile (\d+)\]")
# "<body node> | <call node> (<Function>)": a node inside a model-local function.
_FUNCTION_ITEM = re.compile(r"(?P<body>.*?) \| (?P<call>.*) \((?P<function>[^()]*)\)", re.S)


@dataclass
class EngineLayer:
    """One layer of a built engine, as the builder reported it."""

    #: TensorRT's name for the layer (derived from the first fused node, plus a builder suffix).
    name: str
    #: TensorRT's layer type, e.g. ``correlation`` (convolution), ``gemm``, ``kgen`` (generated kernel).
    type: str
    #: Names of the model's top-level ONNX nodes the layer runs; for a node inside a model-local
    #: function, the name of the node calling the function (listed once per layer).
    onnx_nodes: list[str]
    #: Datatypes of the layer's outputs, in order of first appearance (``Float``, ``Half``, ...).
    datatypes: list[str]
    #: False for synchronisation markers and host shape calls (:data:`NON_COMPUTE_LAYER_TYPES`).
    compute: bool
    #: Optimization profile whose copy of the network the layer belongs to.
    profile: int = 0
    #: CUDA stream the layer runs on (0 is the main stream).
    stream: int = 0
    #: Datatypes of the tensors the layer reads (inputs, then constants), in order of first appearance.
    input_datatypes: list[str] = field(default_factory=list)
    #: Builder notes after the metadata, e.g. ``__gemm_from_conv1x1``.
    notes: list[str] = field(default_factory=list)
    #: Names of the run-time tensors the layer reads (its ``Inputs``, not its constants) and
    #: writes: the engine's dataflow, which links an INT8 product to its epilogue
    #: (:mod:`trtcompile.backend.int8_accounting`). Not in :meth:`to_dict`.
    input_tensors: list[str] = field(default_factory=list)
    output_tensors: list[str] = field(default_factory=list)

    @property
    def precision(self) -> str:
        """``INT8``, ``FP16``, ``FP32``, ... : the narrowest arithmetic type the layer reads
        (see the module docstring); ``other`` for layers reading only integers or booleans, and,
        for a layer whose line gave no input types, the narrowest type it writes."""
        return layer_precision(self.input_datatypes or self.datatypes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        record = {
            "name": self.name, "type": self.type, "onnx_nodes": list(self.onnx_nodes),
            "datatypes": list(self.datatypes), "input_datatypes": list(self.input_datatypes),
            "precision": self.precision, "compute": self.compute, "profile": self.profile,
            "stream": self.stream,
        }
        if self.notes:
            record["notes"] = list(self.notes)
        return record


def layer_precision(datatypes: Iterable[str]) -> str:
    """The narrowest precision among TensorRT datatype names (:data:`PRECISIONS` order)."""
    found = {PRECISIONS[name] for name in datatypes if name in PRECISIONS}
    for precision in dict.fromkeys(PRECISIONS.values()):
        if precision in found:
            return precision
    return OTHER_PRECISION


@dataclass
class LayerReport:
    """The builder's layer message, read: the layers and the lines that could not be read."""

    layers: list[EngineLayer]
    #: One text per line that did not parse: ``layer line N: <reason>``.
    problems: list[str] = field(default_factory=list)


@dataclass
class EngineBuild:
    """A built engine: the serialized plan and what the builder reported about it."""

    plan: bytes
    backend: str  # Python module that built it: "tensorrt" or "tensorrt_rtx"
    version: str
    layers: list[EngineLayer]
    build_seconds: float
    #: Optimization profiles, ``[{input: {"min": [...], "opt": [...], "max": [...]}}]``.
    profiles: list[dict] = field(default_factory=list)
    #: Every builder message, ``[V]``/``[I]``/``[W]``/``[E]``-prefixed, in order.
    log_lines: list[str] = field(default_factory=list)
    #: Layer lines of the builder's report that could not be read (``layer line N: reason``).
    layer_report_problems: list[str] = field(default_factory=list)
    #: Every build option the plan was built with (:meth:`BuildOptions.to_dict`).
    build_options: dict[str, Any] = field(default_factory=dict)
    #: The plan's properties, read back from the built plan (see
    #: :func:`trtcompile.backend.build.plan_properties`).
    plan_properties: dict[str, Any] = field(default_factory=dict)
    #: What the build did with the builder cache (:class:`trtcompile.backend.cache.CacheOutcome`).
    cache: dict[str, Any] | None = None

    @property
    def compute_layers(self) -> int:
        """Engine compute layers: layers of the first profile that are not synchronisation markers
        or host shape calls (see the module docstring)."""
        return sum(1 for layer in self.layers if layer.compute and layer.profile == 0)

    @property
    def layer_report_available(self) -> bool:
        """Whether the builder logged its layers (it does not when another logger owns TensorRT's
        process-wide logging, see :mod:`trtcompile.backend.log`)."""
        return bool(self.layers)

    def to_dict(self, path: str | None) -> dict[str, Any]:
        """JSON-ready summary of the build; ``path`` is where the plan was saved, if anywhere."""
        return {
            "path": path,
            "backend": self.backend,
            "version": self.version,
            "plan_bytes": len(self.plan),
            "layers": [layer.to_dict() for layer in self.layers],
            "compute_layers": self.compute_layers,
            "compute_layer_types": layer_type_histogram(self.layers, compute_only=True),
            "compute_layer_precisions": precision_histogram(self.layers),
            "layer_report_problems": list(self.layer_report_problems),
            "build_seconds": round(self.build_seconds, 6),
            "profiles": self.profiles,
            "plan_sha256": hashlib.sha256(self.plan).hexdigest(),
            "build_options": dict(self.build_options),
            "plan_properties": dict(self.plan_properties),
            "cache": self.cache,
        }


# --------------------------------------------------------------------------------------------
# Parsing the builder's "Layers:" message
# --------------------------------------------------------------------------------------------


def find_layer_report(messages: Iterable[str]) -> str | None:
    """The builder's ``Layers:`` message among logged messages (the last one if several), or None."""
    found = None
    for message in messages:
        if message.startswith(LAYERS_HEADER):
            found = message
    return found


def parse_layer_report(message: str, known_nodes: Collection[str] | None = None) -> list[EngineLayer]:
    """Parse the builder's ``Layers:`` message into engine layers, in engine order; strict.

    Like :func:`read_layer_report`, but a line that does not parse raises ValueError naming it.
    """
    report = read_layer_report(message, known_nodes)
    if report.problems:
        raise ValueError(report.problems[0])
    return report.layers


def read_layer_report(message: str, known_nodes: Collection[str] | None = None) -> LayerReport:
    """Read the builder's ``Layers:`` message: every layer it lists, and the lines it could not read.

    ``known_nodes`` (the model's top-level node names) disambiguates metadata whose node names
    themselves contain `` | `` or parentheses; without it, the first `` | `` separates a function's
    body node from its call node. A line whose fields do not parse is named in the problems; if its
    name and type can still be read it stays in the layer list (no ONNX nodes; datatypes as found),
    so one odd line costs one layer's details, not the report.
    """
    body = message[len(LAYERS_HEADER):] if message.startswith(LAYERS_HEADER) else message
    layers: list[EngineLayer] = []
    problems: list[str] = []
    profile = 0
    for number, line in enumerate(_layer_lines(body), start=1):
        try:
            layer = parse_layer_line(line, known_nodes)
        except ValueError as error:
            layer = _partial_layer(line)
            kept = "kept without its ONNX nodes" if layer is not None else "skipped"
            problems.append(f"layer line {number} ({kept}): {error}")
            if layer is None:
                continue
        # Layers of profile k > 0 carry " [profile k]" in their own or their tensors' names;
        # a line without the marker (e.g. a synchronisation event) belongs to the profile before it.
        markers = [int(p) for p in _PROFILE.findall(line)]
        if markers:
            profile = max(markers)
        layer.profile = profile
        layers.append(layer)
    return LayerReport(layers, problems)


def _partial_layer(line: str) -> EngineLayer | None:
    """What can be read from a line the full parser refused: name and type, datatypes found."""
    head = _HEAD.match(line)
    if head is None:
        return None
    rest = line[head.end():]
    outputs_at = rest.rfind("Outputs: [")
    reads = rest[:outputs_at] if outputs_at >= 0 else rest
    writes = rest[outputs_at:] if outputs_at >= 0 else ""
    layer_type = head.group("type")
    return EngineLayer(
        name=head.group("name"), type=layer_type, onnx_nodes=[],
        datatypes=list(dict.fromkeys(_DATATYPE.findall(writes))),
        input_datatypes=list(dict.fromkeys(_DATATYPE.findall(reads))),
        compute=layer_type not in NON_COMPUTE_LAYER_TYPES)


def _layer_lines(body: str) -> list[str]:
    """Split the message body into one string per layer.

    The layer list ends at the first blank line (the I/O tensor table follows). A line that does
    not start a layer continues the previous one: it came from a newline inside a name.
    """
    lines: list[str] = []
    for raw in body.lstrip("\n").split("\n"):
        if not raw.strip():
            break
        if raw.startswith("Name: ") or not lines:
            lines.append(raw)
        else:
            lines[-1] += "\n" + raw
    return lines


def parse_layer_line(line: str, known_nodes: Collection[str] | None = None) -> EngineLayer:
    """Parse one ``Name: ..., LayerType: ..., ..., Metadata: ...`` line of the layer message."""
    head = _HEAD.match(line)
    if head is None:
        raise ValueError(f"not an engine layer line: {line[:120]!r}")
    tail = None
    # The first fixed-field sequence whose remainder is well-formed metadata ends the tensor lists;
    # tensor names that happen to contain the sequence produce a remainder that is not metadata.
    position = head.end()
    while (candidate := _TAIL.search(line, position)) is not None:
        if _is_metadata(candidate.group("metadata")):
            tail = candidate
            break
        position = candidate.start() + 1
    if tail is None:
        raise ValueError(f"engine layer line without TacticName/StreamId/Metadata: {line[:120]!r}")
    tensors = line[head.end():tail.start()]
    outputs_at = tensors.rfind("Outputs: [")
    outputs = tensors[outputs_at:] if outputs_at >= 0 else ""
    reads = tensors[:outputs_at] if outputs_at >= 0 else tensors
    layer_type = head.group("type")
    metadata, note = _split_metadata(tail.group("metadata"))
    constants_at = reads.rfind(_CONSTANTS)
    run_time_inputs = reads[:constants_at] if constants_at >= 0 else reads
    return EngineLayer(
        name=head.group("name"),
        type=layer_type,
        onnx_nodes=parse_metadata(metadata, known_nodes),
        datatypes=list(dict.fromkeys(_DATATYPE.findall(outputs))),
        compute=layer_type not in NON_COMPUTE_LAYER_TYPES,
        stream=int(tail.group("stream")),
        input_datatypes=list(dict.fromkeys(_DATATYPE.findall(reads))),
        notes=[note] if note else [],
        input_tensors=_TENSOR_NAME.findall(run_time_inputs),
        output_tensors=_TENSOR_NAME.findall(outputs),
    )


def _split_metadata(text: str) -> tuple[str, str]:
    """``(items, note)``: the ``[ONNX Layer: ...]`` items and a builder note after the last one."""
    text = text.strip()
    end = text.rfind("]")
    if text.startswith(_METADATA_ITEM_PREFIX) and end >= 0:
        return text[:end + 1], text[end + 1:].strip()
    return "", text


def _is_metadata(text: str) -> bool:
    """Whether ``text`` is a metadata field: empty, or ``[ONNX Layer: ...]`` items, or either
    followed by a bracket-free builder note (``__gemm_from_conv1x1``)."""
    items, note = _split_metadata(text)
    if not items and note:
        return bool(re.fullmatch(r"\w+", note))
    return _METADATA_NOTE.fullmatch(note) is not None


def parse_metadata(text: str, known_nodes: Collection[str] | None = None) -> list[str]:
    """Model node names in a layer's metadata, deduplicated in order of appearance.

    ``[ONNX Layer: <node>]`` names a top-level node; ``[ONNX Layer: <body node> | <call node>
    (<Function>)]`` a node inside a model-local function, recorded as its call node.
    """
    nodes: list[str] = []
    for item in _metadata_items(text):
        name = _resolve_item(item, known_nodes)
        if name not in nodes:
            nodes.append(name)
    return nodes


def _metadata_items(text: str) -> list[str]:
    """The inner texts of the ``[ONNX Layer: ...]`` items of a metadata string."""
    text = text.strip()
    if not text:
        return []
    if _UNIT_SEPARATOR in text:
        pieces = text.split(_UNIT_SEPARATOR)
    else:
        # Without separators the items are only delimited by "][ONNX Layer: ".
        pieces = text.replace("][ONNX Layer: ", "]\x00[ONNX Layer: ").split("\x00")
    items = []
    for piece in pieces:
        piece = piece.strip()
        if piece.startswith(_METADATA_ITEM_PREFIX) and piece.endswith("]"):
            items.append(piece[len(_METADATA_ITEM_PREFIX):-1])
    return items


def _resolve_item(item: str, known_nodes: Collection[str] | None) -> str:
    """The model node an ``ONNX Layer`` item refers to (the call node for function bodies)."""
    if known_nodes is not None and item in known_nodes:
        return item
    if known_nodes is not None:
        # Try every " | " split: the call node is the one the model knows.
        start = 0
        while (bar := item.find(" | ", start)) >= 0:
            rest = item[bar + 3:]
            open_paren = rest.rfind(" (")
            if open_paren >= 0 and rest.endswith(")") and rest[:open_paren] in known_nodes:
                return rest[:open_paren]
            start = bar + 1
    match = _FUNCTION_ITEM.fullmatch(item)
    return match.group("call") if match else item


# --------------------------------------------------------------------------------------------
# Summaries for the terminal and reports
# --------------------------------------------------------------------------------------------


def layer_type_histogram(layers: Iterable[EngineLayer], *, compute_only: bool = False,
                         profile: int | None = 0) -> dict[str, int]:
    """Layer count per TensorRT layer type, most frequent first (ties by name).

    Counts the layers of ``profile`` (all profiles if None); with ``compute_only`` only compute layers.
    """
    counts = Counter(
        layer.type for layer in layers
        if (profile is None or layer.profile == profile) and (layer.compute or not compute_only))
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def precision_histogram(layers: Iterable[EngineLayer], *, profile: int | None = 0) -> dict[str, int]:
    """Compute layers per precision: INT8, FP16 and FP32 always (possibly 0), then any other
    precision found (``FP8``, ``BF16``, ``other``...), most frequent first."""
    counts = Counter(layer.precision for layer in layers
                     if layer.compute and (profile is None or layer.profile == profile))
    histogram = {precision: counts.pop(precision, 0) for precision in REPORTED_PRECISIONS}
    histogram.update(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
    return histogram


def _histogram_text(histogram: dict[str, int]) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in histogram.items()) or "none"


def format_engine_summary(build: EngineBuild) -> str:
    """One line: compute layers by type and synchronisation markers."""
    if not build.layer_report_available:
        return (f"engine built with {build.backend} {build.version} in {build.build_seconds:.2f} s; "
                "the builder reported no layer information")
    first = [layer for layer in build.layers if layer.profile == 0]
    compute = layer_type_histogram(first, compute_only=True)
    markers = layer_type_histogram([layer for layer in first if not layer.compute])
    line = (f"{build.compute_layers} engine compute layers ({_histogram_text(compute)}); "
            f"by precision: {_histogram_text(precision_histogram(first))}; "
            f"{sum(markers.values())} synchronisation/shape markers ({_histogram_text(markers)})")
    profiles = 1 + max((layer.profile for layer in build.layers), default=0)
    if profiles > 1:
        line += f"; {profiles} optimization profiles, counted once"
    if build.layer_report_problems:
        line += (f"; {len(build.layer_report_problems)} layer line(s) not fully read "
                 f"(first: {build.layer_report_problems[0][:160]})")
    return line


def format_engine_layers(build: EngineBuild, *, include_markers: bool = False,
                         max_rows: int | None = None) -> str:
    """The engine layer report as a text table for the terminal.

    One row per compute layer of the first profile (markers too with ``include_markers``): index,
    layer type, precision, output datatypes, and the model nodes it runs; then the one-line summary.
    """
    summary = format_engine_summary(build)
    if not build.layer_report_available:
        return summary
    rows = [layer for layer in build.layers
            if layer.profile == 0 and (layer.compute or include_markers)]
    shown = rows if max_rows is None else rows[:max_rows]
    type_width = max([len("type"), *(len(layer.type) for layer in shown)])
    dtype_width = max([len("datatypes"), *(len(",".join(layer.datatypes)) for layer in shown)])
    precision_width = max([len("precision"), *(len(layer.precision) for layer in shown)])
    lines = [f"{'#':>4}  {'type':<{type_width}}  {'precision':<{precision_width}}  "
             f"{'datatypes':<{dtype_width}}  onnx nodes"]
    for index, layer in enumerate(shown):
        nodes = ", ".join(layer.onnx_nodes) if layer.onnx_nodes else f"({layer.name})"
        lines.append(f"{index:>4}  {layer.type:<{type_width}}  {layer.precision:<{precision_width}}  "
                     f"{','.join(layer.datatypes):<{dtype_width}}  {nodes}")
    if len(shown) < len(rows):
        lines.append(f"   ... {len(rows) - len(shown)} more layers")
    lines.append(summary)
    return "\n".join(lines)
