"""What every frontend takes and returns: :class:`FrontendOptions` (the CLI's frontend flags),
:class:`LoadedModel` (the ONNX model the passes optimize, with its parity reference) and the
:class:`LoweringRecord` of a TensorFlow lowering. A leaf module, so each frontend can import it
without importing the dispatch in :mod:`trtcompile.frontend`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx


@dataclass(frozen=True)
class FrontendOptions:
    """How to load and lower a model (the CLI's frontend flags)."""

    #: TensorFlow signature to lower (SavedModel), default ``serving_default``.
    signature: str = "serving_default"
    #: Shape overrides for inputs with unknown dimensions, ``{name: [1, 224, 224, 3]}``.
    input_shapes: Mapping[str, Sequence[int]] = field(default_factory=dict)
    #: Inputs to transpose from NHWC to NCHW at the graph boundary (tf2onnx ``inputs_as_nchw``).
    inputs_as_nchw: Sequence[str] = ()
    #: ONNX opset to lower to (None: the frontend's default).
    opset: int | None = None
    #: Output tensor names of a frozen graph (``logits:0``); required for ``.pb`` files.
    outputs: Sequence[str] = ()
    #: ``faithful`` (tf2onnx's optimizers off) or ``tf2onnx-optimized``.
    lowering: str = "faithful"
    #: Keras safe mode (refuse arbitrary code in .keras files).
    safe_mode: bool = True
    #: Elapsed-time lines on stderr while lowering and importing TensorFlow (see
    #: :mod:`trtcompile.progress`); changes nothing in the lowered model.
    progress: bool | str = False


@dataclass
class LoweringRecord:
    """The lowering step, reported as the first row of the per-pass table."""

    tool: str  # e.g. "tf2onnx 1.17.0"
    mode: str  # "faithful" | "tf2onnx-optimized"
    source_kind: str  # "savedmodel" | "keras" | "h5" | "frozen-pb"
    source_ops: int  # TensorFlow layers/ops counted in the source
    onnx_nodes: int  # nodes of the lowered ONNX graph
    seconds: float
    peak_rss_mb: float | None = None
    #: What the user must know about the lowering (``faithful`` fell back to
    #: ``tf2onnx-optimized``, and why); empty when nothing.
    note: str = ""
    #: What the faithful cleanup removed, by rule (``identity_extra_inputs=2``).
    cleaned: Mapping[str, int] = field(default_factory=dict)
    #: Lookup tables lowered with their keys and values.
    tables: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool, "mode": self.mode, "source_kind": self.source_kind,
            "source_ops": self.source_ops, "onnx_nodes": self.onnx_nodes,
            "seconds": round(self.seconds, 6), "peak_rss_mb": self.peak_rss_mb,
            "note": self.note, "cleaned": dict(self.cleaned), "tables": self.tables,
        }


#: Runs the source model (e.g. TensorFlow) on ONNX-named feeds, returning ONNX-named outputs.
ReferenceRunner = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass
class LoadedModel:
    """A model ready for the pass manager."""

    model: onnx.ModelProto
    source_path: Path | None
    kind: str  # "onnx" | "savedmodel" | "keras" | "h5" | "frozen-pb" | "example"
    model_dir: Path | None = None  # folder that external data resolves against
    lowering: LoweringRecord | None = None
    #: Runs the original (TensorFlow) model for parity; None for ONNX inputs.
    reference: ReferenceRunner | None = None
    reference_name: str = ""  # e.g. "tensorflow"
    description: str = ""  # one line for the terminal, e.g. "built-in example (GoogLeNet-style)"
