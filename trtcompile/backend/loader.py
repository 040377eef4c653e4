"""Choosing the TensorRT module: ``tensorrt`` when it can be imported, else ``tensorrt_rtx``
(TensorRT for RTX, which builds serialized plans without a GPU)."""

from __future__ import annotations

import importlib
import types
from dataclasses import dataclass

from trtcompile import interrupts
from trtcompile.errors import BackendError

#: Python modules tried in order of preference.
TENSORRT_MODULES = ("tensorrt", "tensorrt_rtx")


@dataclass(frozen=True)
class BackendInfo:
    """Which TensorRT Python module the backend uses, and its version."""

    module: str
    version: str


def load_tensorrt() -> types.ModuleType:
    """The TensorRT module: ``tensorrt`` if importable, else ``tensorrt_rtx``.

    Raises BackendError if neither can be imported.
    """
    reasons = []
    for name in TENSORRT_MODULES:
        try:
            return importlib.import_module(name)
        except (ImportError, OSError) as error:  # OSError: the package is there, its libraries not
            reasons.append(f"{name}: {error}")
    interrupts.check()  # a signal during the import is not a missing package
    raise BackendError("no TensorRT Python module can be imported (" + "; ".join(reasons)
                       + "); install tensorrt or tensorrt-rtx")


def backend_info() -> BackendInfo:
    """Name and version of the TensorRT module the backend uses."""
    trt = load_tensorrt()
    return BackendInfo(module=trt.__name__, version=str(getattr(trt, "__version__", "unknown")))
