"""The built-in registry: where the compile flow hands the pass manager the built-in passes.

The pass infrastructure (:mod:`trtcompile.pm`) imports no pass; this module is where the built-in
passes (``passes.BUILTIN_PASSES``), the combinators (``fixed-point``, ``engine-guided``) and the
named pipelines (``passes.PIPELINES``: ``default``, ``fewest-layers``, ``tuned``) meet in one
:class:`~trtcompile.pm.PassRegistry`, to which a user's pass modules add theirs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import passes
from trtcompile.errors import InputError
from trtcompile.flow.engine_guided import EngineGuided
from trtcompile.pm import FixedPoint, PassRegistry

#: The combinators every built-in registry parses, in the order reports list their sections.
BUILTIN_COMBINATORS = (FixedPoint, EngineGuided)


def builtin_registry() -> PassRegistry:
    """A fresh registry of the built-in passes, combinators and named pipelines."""
    return PassRegistry(passes.BUILTIN_PASSES, combinators=BUILTIN_COMBINATORS,
                        pipelines=passes.PIPELINES)


def build_registry(pass_modules: Sequence[str | Path]) -> PassRegistry:
    """The built-in registry plus the passes (and combinators) of the user's modules; a name a
    module takes twice or takes from the registry is an InputError naming the module."""
    registry = builtin_registry()
    for module in pass_modules:
        try:
            registry.load_module(module)
        except ValueError as exc:  # a name clash with a built-in pass: the user's to fix
            raise InputError(f"pass module {module}: {exc}") from None
    return registry


__all__ = ["BUILTIN_COMBINATORS", "build_registry", "builtin_registry"]
