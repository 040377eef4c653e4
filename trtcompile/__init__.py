"""trtcompile: TensorFlow models to TensorRT engines through ONNX, one explicit pass at a time.

The public Python API:

* :mod:`trtcompile.ir` - helpers over onnx-graphsurgeon graphs (layer counts, local functions);
* :mod:`trtcompile.pass_manager` - :class:`Pass`, :class:`PassResult`, :class:`PassManager`,
  pipeline text, instruments;
* :mod:`trtcompile.verify` - Polygraphy parity;
* :mod:`trtcompile.backend` - TensorRT engine building and the engine layer report;
* :func:`load` - a compiled output folder, ready to run (:mod:`trtcompile.runtime`).
"""

import importlib

from trtcompile.version import __version__

#: Public names and the module each comes from. They are imported on first use (PEP 562) so that
#: ``trtcompile --help`` and ``--version`` import neither onnx nor numpy.
_EXPORTS = {
    **dict.fromkeys(
        ("DumpInstrument", "EngineGuided", "FixedPoint", "Instrument", "Pass", "PassContext", "PassManager",
         "PassRegistry", "PassResult", "PipelineReport", "VerifyInstrument", "default_registry",
         "parse_pipeline", "print_pipeline", "run_pipeline"), "trtcompile.pass_manager"),
    "Converter": "trtcompile.converter",
    "Compilation": "trtcompile.flow",
    "CompileOptions": "trtcompile.flow",
    "compile_model": "trtcompile.flow",
}

__all__ = [*_EXPORTS, "__version__", "load"]


def load(folder, *, device: str = "auto"):
    """Open a ``trtcompile compile`` output folder for running (:func:`trtcompile.runtime.load`):
    engines on TensorRT where a supported GPU exists, otherwise ONNX Runtime."""
    from trtcompile.runtime import load as load_compiled

    return load_compiled(folder, device=device)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'trtcompile' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
