"""What a lowering produces and hands between its stages: the bindings of ONNX inputs and outputs
to TensorFlow tensors, the frozen source graph, and the JSON-serializable result the worker process
returns."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass
class TensorBinding:
    """One ONNX graph input or output and the TensorFlow tensor it stands for."""

    onnx_name: str
    tf_name: str  # tensor in the frozen graph, e.g. "serving_default_image:0"
    feed_key: str  # how the reference passes/receives it: signature key, Keras name, or tensor name
    shape: list[int | None] = field(default_factory=list)  # TensorFlow's shape (NHWC for images)
    dtype: str = "float32"
    nchw: bool = False  # the ONNX input is the NCHW transpose of the TensorFlow input


@dataclass
class LoweringResult:
    """What a lowering produced besides the ONNX model (JSON-serializable)."""

    tool: str
    mode: str
    source_kind: str
    source_ops: int
    onnx_nodes: int
    seconds: float
    peak_rss_mb: float
    inputs: list[TensorBinding]
    outputs: list[TensorBinding]
    hidden_weights: int = 0
    #: Seconds per stage: load (source + freeze), grappler, tf2onnx, onnx-model, check.
    stage_seconds: dict[str, float] = field(default_factory=dict)
    #: What the user must know about the lowering (a fallback from ``faithful``); empty if nothing.
    note: str = ""
    #: What the faithful cleanup removed, by rule (see tf_lowering.check.clean_faithful).
    cleaned: dict[str, int] = field(default_factory=dict)
    #: Lookup tables lowered with their contents (StaticHashTable, StaticVocabularyTable).
    tables: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "LoweringResult":
        data = json.loads(text)
        data["inputs"] = [TensorBinding(**b) for b in data["inputs"]]
        data["outputs"] = [TensorBinding(**b) for b in data["outputs"]]
        return cls(**data)


@dataclass
class SourceGraph:
    """A frozen TensorFlow graph with the ONNX names of its inputs and outputs."""

    graph_def: object  # tf.compat.v1.GraphDef
    inputs: list[TensorBinding]
    outputs: list[TensorBinding]
    #: Contents of the lookup tables the graph reads, by shared name: (keys, values), as
    #: tf2onnx's SavedModel path hands them to ``process_tf_graph``.
    initialized_tables: dict = field(default_factory=dict)
    #: Set by the conversion: the lowering's note and the faithful cleanup's counts.
    note: str = ""
    cleaned: dict = field(default_factory=dict)
