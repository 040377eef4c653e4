"""The compile flow's public names, under the module name earlier releases documented.

The flow itself is :mod:`trtcompile.flow` (:class:`~trtcompile.flow.Compilation` and its stages).
"""

from trtcompile.flow import (Compilation, CompileOptions, CompileResult, EngineParity,
                             ParityVerdict, check_engine_parity, check_parity, compile_model)

__all__ = ["Compilation", "CompileOptions", "CompileResult", "EngineParity", "ParityVerdict",
           "check_engine_parity", "check_parity", "compile_model"]
