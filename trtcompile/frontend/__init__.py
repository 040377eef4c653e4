"""Frontends: turn a model file into the ONNX model the passes optimize.

:func:`load_model` dispatches on what the path is:

* ``.onnx`` files: validated and loaded as they are (:mod:`trtcompile.frontend.onnx_loader`);
* TensorFlow SavedModel folders, Keras ``.keras``/``.h5`` files and frozen ``.pb`` graphs: lowered to
  ONNX with tf2onnx (:mod:`trtcompile.frontend.tensorflow`).

Every problem with the input raises :class:`trtcompile.errors.InputError` with one line naming it.
"""

from __future__ import annotations

from pathlib import Path

from trtcompile.errors import InputError
from trtcompile.frontend.model import (
    FrontendOptions,
    LoadedModel,
    LoweringRecord,
    ReferenceRunner,
)

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


__all__ = ["TENSORFLOW_SUFFIXES", "FrontendOptions", "LoadedModel", "LoweringRecord", "ReferenceRunner",
           "load_model"]
