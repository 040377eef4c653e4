"""The vocabulary of dynamic shapes: shape and profile types, the flags messages name, a model's
input signatures, and the spellings shapes are printed in (trtexec's ``1x3x224x224``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import onnx

#: A concrete input shape.
Shape = tuple[int, ...]
#: One optimization profile: input name -> (min, opt, max).
Profile = dict[str, tuple[Shape, Shape, Shape]]
#: One set of concrete input shapes (a representative input, or a profile's min/opt/max).
ShapeSet = dict[str, Shape]

#: Profile strategies (TF-TRT's names, lower case).
STRATEGIES = ("range", "optimal", "range+optimal")
#: Strategy used when representative shapes are given without ``--profile-strategy`` (TF-TRT's).
DEFAULT_STRATEGY = "range"
#: Size the default profile gives an unknown first (batch) dimension.
DEFAULT_BATCH = 1

#: Flags named in messages.
PROFILE_FLAGS = "--min-shapes/--opt-shapes/--max-shapes"
REPRESENTATIVE_FLAG = "--representative-shapes"


@dataclass(frozen=True)
class InputSignature:
    """A model input's shape as the model declares it: ``int`` for fixed dimensions, the symbol
    (``str``) or ``None`` for unknown ones; ``rank`` None when even the rank is unknown."""

    name: str
    dims: tuple[int | str | None, ...] | None

    @property
    def rank(self) -> int | None:
        return None if self.dims is None else len(self.dims)

    @property
    def dynamic_axes(self) -> list[int]:
        """Axes whose size the model leaves open."""
        if self.dims is None:
            return []
        return [axis for axis, dim in enumerate(self.dims) if not isinstance(dim, int)]

    @property
    def is_dynamic(self) -> bool:
        return self.dims is None or bool(self.dynamic_axes)

    def static_shape(self) -> Shape:
        """The shape of an input without unknown dimensions."""
        assert not self.is_dynamic, self.name
        return tuple(int(d) for d in self.dims)  # type: ignore[union-attr]

    def text(self) -> str:
        """``[N,3,224,224]`` (``?`` for an unnamed unknown dimension)."""
        if self.dims is None:
            return "[unknown rank]"
        return format_dims(self.dims)


def model_inputs(model: onnx.ModelProto) -> dict[str, InputSignature]:
    """The model's real inputs (initializers excluded) in order, with their declared shapes."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        if not tensor_type.HasField("shape"):
            inputs[value.name] = InputSignature(value.name, None)
            continue
        dims: list[int | str | None] = []
        for dim in tensor_type.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value >= 0:  # 0: a valid, empty size
                dims.append(int(dim.dim_value))
            else:
                dims.append(dim.dim_param or None)
        inputs[value.name] = InputSignature(value.name, tuple(dims))
    return inputs


def format_dims(dims: Sequence[int | str | None]) -> str:
    """``[N,3,224,224]``: a declared shape, ``?`` for an unnamed unknown dimension."""
    return "[" + ",".join("?" if d is None else str(d) for d in dims) + "]"


def format_shape(shape: Sequence[int]) -> str:
    """``1x3x224x224`` (trtexec's spelling)."""
    return "x".join(str(d) for d in shape)


def format_shape_set(shapes: Mapping[str, Sequence[int]]) -> str:
    """``input:1x3x224x224,mask:1x16``."""
    return ",".join(f"{name}:{format_shape(shape)}" for name, shape in shapes.items())
