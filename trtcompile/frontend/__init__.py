"""Frontends: turn a model file into the ONNX model the passes optimize.

:func:`load_model` dispatches on what the path is:

* ``.onnx`` files: validated and loaded as they are (:mod:`trtcompile.frontend.onnx_loader`);
* TensorFlow SavedModel folders, Keras ``.keras``/``.h5`` files and frozen ``.pb`` graphs: lowered to
  ONNX with tf2onnx (:mod:`trtcompile.frontend.tensorflow`).

Every problem with the input raises :class:`trtcompile.errors.InputError` with one line naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from trtcompile.errors import InputError


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool, "mode": self.mode, "source_kind": self.source_kind,
            "source_ops": self.source_ops, "onnx_nodes": self.onnx_nodes,
            "seconds": round(self.seconds, 6), "peak_rss_mb": self.peak_rss_mb,
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


TENSORFLOW_SUFFIXES = (".keras", ".h5", ".hdf5", ".pb")


def load_model(path: str | Path, options: FrontendOptions | None = None) -> LoadedModel:
    """Load ``path`` as ONNX or lower it from TensorFlow. Raises InputError on bad input."""
    options = options or FrontendOptions()
    path = Path(path)
    if not path.exists():
        raise InputError(f"model not found: {path}")
    if path.is_dir():
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            from trtcompile.frontend import tensorflow

            return tensorflow.load(path, options)
        raise InputError(f"{path} is a folder but not a TensorFlow SavedModel (no saved_model.pb)")
    if path.suffix.lower() in TENSORFLOW_SUFFIXES:
        from trtcompile.frontend import tensorflow

        return tensorflow.load(path, options)
    from trtcompile.frontend import onnx_loader

    return onnx_loader.load(path, options)
