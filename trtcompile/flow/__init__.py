"""The one compile flow: options (all validation), stages, the precision policy, parity, the
partition stage, the engine and the outputs.

Every face (``trtcompile compile``, ``golden`` serial/workers/Ray, ``bisect``, ``--why-not``,
``Converter``, :mod:`trtcompile.testing`, the Python API) drives a :class:`Compilation`; none wires
the frontend, the pass manager or the backend itself. This package is the only layer that knows
the built-in pass registry (:mod:`trtcompile.flow.registry`).
"""

from trtcompile.flow.compilation import Compilation, CompileResult, compile_model
from trtcompile.flow.options import CompileOptions
from trtcompile.flow.parity import (
           EngineParity,
           ParityVerdict,
           check_engine_parity,
           check_parity,
)

__all__ = ["Compilation", "CompileOptions", "CompileResult", "EngineParity", "ParityVerdict",
           "check_engine_parity", "check_parity", "compile_model"]
