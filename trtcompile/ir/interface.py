"""The graph's interface beyond onnx-graphsurgeon's: overridable initializers, graph inputs that
have a default value (in ONNX, IR >= 4, a main-graph input that is also an initializer)."""

from __future__ import annotations

import onnx_graphsurgeon as gs



class OverridableInput(gs.Variable):
    """A graph input with a default value: in ONNX (IR >= 4) a main-graph input that is also an
    initializer. The caller may feed it; when it does not, the default applies.

    onnx-graphsurgeon imports such an input as a plain constant and drops it from the inputs, so
    every pass would fold, fuse or merge a value the user can change.
    :func:`~trtcompile.ir.io.import_model` makes it this variable instead: a pass sees a graph
    input like any other (``constant_value`` is None, it is no ``gs.Constant``), and
    :func:`~trtcompile.ir.io.export_model` writes ``default`` back as its initializer.
    """

    def __init__(self, name: str, dtype=None, shape=None, default: gs.Constant | None = None):
        super().__init__(name, dtype, shape)
        #: The initializer's value (a :class:`gs.Constant` outside the graph, loaded lazily).
        self.default = default

    def copy(self) -> OverridableInput:
        """A copy that keeps the default (``Graph.copy`` copies tensors through this)."""
        return OverridableInput(self.name, self.dtype, self.shape, self.default)


def is_overridable(tensor: gs.Tensor) -> bool:
    """True if ``tensor`` is a graph input with a default value (an overridable initializer)."""
    return isinstance(tensor, OverridableInput)


def overridable_initializers(graph: gs.Graph) -> list[OverridableInput]:
    """The graph inputs that have default values, in input order."""
    return [tensor for tensor in graph.inputs if is_overridable(tensor)]
