"""trtcompile: TensorFlow models to TensorRT engines through ONNX, one explicit pass at a time.

The public Python API:

* :mod:`trtcompile.ir` - helpers over onnx-graphsurgeon graphs (layer counts, local functions);
* :mod:`trtcompile.pass_manager` - :class:`Pass`, :class:`PassResult`, :class:`PassManager`,
  pipeline text, instruments;
* :mod:`trtcompile.verify` - Polygraphy parity;
* :mod:`trtcompile.backend` - TensorRT engine building and the engine layer report.
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

__all__ = [
    "DumpInstrument", "EngineGuided", "FixedPoint", "Instrument", "Pass", "PassContext", "PassManager",
    "PassRegistry", "PassResult", "PipelineReport", "VerifyInstrument", "default_registry",
    "parse_pipeline", "print_pipeline", "run_pipeline", "__version__",
]
