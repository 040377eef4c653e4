"""trtcompile: TensorFlow models to TensorRT engines through ONNX, one explicit pass at a time.

The public Python API:

* :mod:`trtcompile.ir` - helpers over onnx-graphsurgeon graphs (layer counts, local functions);
* :mod:`trtcompile.pass_manager` - :class:`Pass`, :class:`PassResult`, :class:`PassManager`,
  pipeline text, instruments;
* :mod:`trtcompile.verify` - Polygraphy parity;
* :mod:`trtcompile.backend` - TensorRT engine building and the engine layer report;
* :func:`load` - a compiled output folder, ready to run (:mod:`trtcompile.runtime`).
"""

from trtcompile.pass_manager import (
    DumpInstrument,
    EngineGuided,
    FixedPoint,
    Instrument,
    Pass,
    PassContext,
    PassManager,
    PassRegistry,
    PassResult,
    PipelineReport,
    VerifyInstrument,
    default_registry,
    parse_pipeline,
    print_pipeline,
    run_pipeline,
)

__version__ = "0.1.0"


def load(folder, *, device: str = "auto"):
    """Open a ``trtcompile compile`` output folder for running (:func:`trtcompile.runtime.load`):
    engines on TensorRT where a supported GPU exists, otherwise ONNX Runtime."""
    from trtcompile.runtime import load as load_compiled

    return load_compiled(folder, device=device)

__all__ = [
    "DumpInstrument", "EngineGuided", "FixedPoint", "Instrument", "Pass", "PassContext", "PassManager",
    "PassRegistry", "PassResult", "PipelineReport", "VerifyInstrument", "default_registry",
    "parse_pipeline", "print_pipeline", "run_pipeline", "__version__", "load",
]
