"""Dynamic shapes: shape specs, optimization profiles, profile strategies and the default profile.

A model input with an unknown dimension (ONNX ``dim_param`` such as ``N`` or ``unk__612``, or no
value at all) stays unknown through the passes; TensorRT then needs *optimization profiles*, one
``(min, opt, max)`` shape per dynamic input each. This package decides which profiles a compile uses
(see docs/shapes.md for every rule):

* explicit profiles: ``--min-shapes``/``--opt-shapes``/``--max-shapes`` in trtexec's spelling
  (``name:1x3x224x224,other:1x16``), the k-th occurrence of each flag forming profile k, or a TOML /
  JSON profile file (``--profiles FILE``);
* profiles derived from representative input shapes by a TF-TRT profile strategy
  (``--profile-strategy range|optimal|range+optimal`` with ``--representative-shapes``);
* otherwise the *default profile*: an unknown first (batch) dimension is 1; any other unknown
  dimension is an :class:`~trtcompile.errors.InputError` naming the input and the flags to use.

:func:`resolve_profiles` checks every profile against the model's inputs (names, ranks, fixed
dimensions, ``min <= opt <= max``, one size per shared dimension symbol) and returns a
:class:`ProfilePlan`: the profiles for the engine, one line saying where they came from, and the
input shapes parity runs at (the min, opt and max of every profile).

The package, by concern: :mod:`~trtcompile.shapes.signature` (types, flags named in messages, the
model's input signatures, shape spellings), :mod:`~trtcompile.shapes.parsing` (flags and files as
users write them), :mod:`~trtcompile.shapes.profiles` (strategies, the default profile, checks
against the model) and :mod:`~trtcompile.shapes.resolution` (:func:`resolve_profiles`). Every name
is importable from ``trtcompile.shapes`` itself.
"""

from trtcompile.shapes.parsing import (
    load_profiles_file,
    load_representative_shapes,
    parse_dims,
    parse_representative_shapes,
    parse_shape_spec,
    profiles_from_flags,
    split_shape_items,
)
from trtcompile.shapes.profiles import (
    check_profiles,
    check_shape,
    check_shape_sets,
    check_symbols,
    default_profile,
    derive_profiles,
    describe_profiles,
    distinct,
    parity_shape_sets,
)
from trtcompile.shapes.resolution import ProfilePlan, ShapeOptions, resolve_profiles
from trtcompile.shapes.signature import (
    DEFAULT_BATCH,
    DEFAULT_STRATEGY,
    PROFILE_FLAGS,
    REPRESENTATIVE_FLAG,
    STRATEGIES,
    InputSignature,
    Profile,
    Shape,
    ShapeSet,
    format_dims,
    format_shape,
    format_shape_set,
    model_inputs,
)

__all__ = [
    "DEFAULT_BATCH", "DEFAULT_STRATEGY", "PROFILE_FLAGS", "REPRESENTATIVE_FLAG", "STRATEGIES",
    "InputSignature", "Profile", "ProfilePlan", "Shape", "ShapeOptions", "ShapeSet",
    "check_profiles", "check_shape", "check_shape_sets", "check_symbols", "default_profile",
    "derive_profiles", "describe_profiles", "distinct", "format_dims", "format_shape",
    "format_shape_set", "load_profiles_file", "load_representative_shapes", "model_inputs",
    "parity_shape_sets", "parse_dims", "parse_representative_shapes", "parse_shape_spec",
    "profiles_from_flags", "resolve_profiles", "split_shape_items",
]
