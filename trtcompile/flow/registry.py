"""The registry a compile uses: the built-in passes and the passes of the user's modules."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

from trtcompile.errors import InputError
from trtcompile.pass_manager import PassRegistry, default_registry


def build_registry(pass_modules: Sequence[str | Path]) -> PassRegistry:
    """The built-in passes plus the passes of the user's modules."""
    registry = default_registry().copy()
    for module in pass_modules:
        try:
            registry.load_module(module)
        except ValueError as exc:  # a name clash with a built-in pass: the user's to fix
            raise InputError(f"pass module {module}: {exc}") from None
    return registry


def map_passes(pipeline: Sequence, fn: Callable) -> tuple:
    """``pipeline`` with ``fn`` applied to every pass, through every group (a group is any element
    with ``elements``)."""
    def visit(element):
        if hasattr(element, "elements"):
            return dataclasses.replace(element, elements=tuple(visit(e) for e in element.elements))
        return fn(element)

    return tuple(visit(element) for element in pipeline)
