"""Profiles from shapes, and profiles against the model: the TF-TRT profile strategies, the default
profile, the checks every profile and representative shape set passes (names, ranks, fixed
dimensions, ``min <= opt <= max``, shared dimension symbols), and the shapes parity runs at."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from trtcompile.errors import InputError
from trtcompile.shapes.signature import (
    DEFAULT_BATCH,
    PROFILE_FLAGS,
    REPRESENTATIVE_FLAG,
    STRATEGIES,
    InputSignature,
    Profile,
    ShapeSet,
    format_shape,
)

# --------------------------------------------------------------------------------------------
# Strategies and the default profile
# --------------------------------------------------------------------------------------------


def distinct(shape_sets: Iterable[Mapping[str, Sequence[int]]]) -> list[ShapeSet]:
    """The distinct shape sets in first-seen order."""
    seen: list[ShapeSet] = []
    for shapes in shape_sets:
        entry = {name: tuple(int(d) for d in shape) for name, shape in shapes.items()}
        if entry not in seen:
            seen.append(entry)
    return seen


def derive_profiles(strategy: str, representative: Sequence[Mapping[str, Sequence[int]]]) -> list[Profile]:
    """Profiles from representative input shapes by a TF-TRT profile strategy.

    * ``range``: one profile; per input and dimension, min is the smallest and max the largest
      size seen, and opt is max (TF-TRT's choice: kernels are tuned for the largest batch).
    * ``optimal``: one profile per distinct shape set, min = opt = max = that set.
    * ``range+optimal``: the optimal profiles, then the range profile (if it differs from all of
      them). Exact-shape profiles come first so a runtime that picks the first profile containing
      the input shapes (as TF-TRT's does) runs each representative shape on its own profile.

    Every set must name the same inputs with the same ranks (checked here; names, ranks and fixed
    dimensions against the model are checked by :func:`check_profiles`).
    """
    strategy = strategy.lower()
    if strategy not in STRATEGIES:
        raise InputError(f"--profile-strategy {strategy}: expected one of {', '.join(STRATEGIES)}")
    sets = distinct(representative)
    if not sets:
        raise InputError(f"--profile-strategy {strategy} needs {REPRESENTATIVE_FLAG}")
    names = list(sets[0])
    for index, shapes in enumerate(sets[1:], start=1):
        if set(shapes) != set(names):
            raise InputError(f"{REPRESENTATIVE_FLAG}: set {index} names {', '.join(shapes)}, set 0 "
                             f"names {', '.join(names)}; every set gives the same inputs")
        for name in names:
            if len(shapes[name]) != len(sets[0][name]):
                raise InputError(f"{REPRESENTATIVE_FLAG}: input '{name}' has rank "
                                 f"{len(sets[0][name])} in set 0 and {len(shapes[name])} in set "
                                 f"{index}")
    optimal: list[Profile] = [{name: (shape, shape, shape) for name, shape in s.items()} for s in sets]
    ranged: Profile = {}
    for name in names:
        low = tuple(min(s[name][axis] for s in sets) for axis in range(len(sets[0][name])))
        high = tuple(max(s[name][axis] for s in sets) for axis in range(len(sets[0][name])))
        ranged[name] = (low, high, high)
    if strategy == "range":
        return [ranged]
    if strategy == "optimal":
        return optimal
    return optimal + ([ranged] if ranged not in optimal else [])


def default_profile(inputs: Mapping[str, InputSignature]) -> Profile:
    """The profile used without shape flags: an unknown first (batch) dimension is
    :data:`DEFAULT_BATCH`; any other unknown dimension raises InputError naming the input."""
    profile: Profile = {}
    for signature in inputs.values():
        if not signature.is_dynamic:
            continue
        if signature.dims is None:
            raise InputError(f"input '{signature.name}' has an unknown rank; fix its shape with "
                             f"--input-shape {signature.name}:DIMS")
        others = [axis for axis in signature.dynamic_axes if axis != 0]
        if others:
            example = format_shape([d if isinstance(d, int) else (DEFAULT_BATCH if a == 0 else 8)
                                    for a, d in enumerate(signature.dims)])
            raise InputError(
                f"input '{signature.name}' {signature.text()} has unknown dimension"
                f"{'s' if len(others) > 1 else ''} {', '.join(map(str, others))} that cannot be "
                f"defaulted (only an unknown first dimension defaults to batch {DEFAULT_BATCH}); "
                f"give a profile with {PROFILE_FLAGS} {signature.name}:{example} or fix the shape "
                f"with --input-shape {signature.name}:{example}")
        shape = tuple(DEFAULT_BATCH if axis == 0 else int(d)  # type: ignore[arg-type]
                      for axis, d in enumerate(signature.dims))
        profile[signature.name] = (shape, shape, shape)
    return profile


# --------------------------------------------------------------------------------------------
# Validation against the model
# --------------------------------------------------------------------------------------------


def check_shape(inputs: Mapping[str, InputSignature], name: str, shape: Sequence[int],
                where: str, label: str) -> None:
    """InputError unless ``shape`` fits input ``name``: known name, same rank, fixed dims equal."""
    signature = inputs.get(name)
    if signature is None:
        raise InputError(f"{where} names '{name}', which is not an input of the model (inputs: "
                         f"{', '.join(inputs) or 'none'})")
    if signature.dims is None:
        return
    if len(shape) != len(signature.dims):
        raise InputError(f"{where}, input '{name}' {signature.text()}: {label} shape "
                         f"{format_shape(shape)} has rank {len(shape)}, the input has rank "
                         f"{len(signature.dims)}")
    for axis, (size, declared) in enumerate(zip(shape, signature.dims)):
        if isinstance(declared, int) and size != declared:
            raise InputError(f"{where}, input '{name}' {signature.text()}: dimension {axis} is "
                             f"fixed at {declared} in the model, the {label} shape "
                             f"{format_shape(shape)} gives {size}"
                             f"{_layout_hint(name, shape, signature.dims)}")


def _layout_hint(name: str, shape: Sequence[int], dims: Sequence[Any]) -> str:
    """For an image given in the other layout (NHWC for an NCHW input, as a TensorFlow model
    lowered with --inputs-as-nchw declares it, or the reverse): which layout profiles take and
    the shape meant."""
    if len(shape) != 4:
        return ""
    for layout, order in (("NCHW", (0, 3, 1, 2)), ("NHWC", (0, 2, 3, 1))):
        moved = [shape[axis] for axis in order]
        if all(not isinstance(d, int) or d == size for d, size in zip(dims, moved)):
            return (f"; profile shapes take the layout the ONNX model declares, here {layout}: "
                    f"{name}:{'x'.join(map(str, moved))}")
    return ""


def check_symbols(inputs: Mapping[str, InputSignature], shapes: Mapping[str, Sequence[int]],
                  where: str, label: str) -> None:
    """InputError if two dimensions the model names with the same symbol get different sizes."""
    sizes: dict[str, tuple[str, int, int]] = {}
    for name, shape in shapes.items():
        signature = inputs[name]
        for axis, declared in enumerate(signature.dims or ()):
            if not isinstance(declared, str):
                continue
            first = sizes.setdefault(declared, (name, axis, int(shape[axis])))
            if first[2] != shape[axis]:
                raise InputError(f"{where}: dimension {first[1]} of '{first[0]}' and dimension "
                                 f"{axis} of '{name}' are both '{declared}' in the model, the "
                                 f"{label} shapes give {first[2]} and {shape[axis]}")


def check_profiles(profiles: Sequence[Profile], inputs: Mapping[str, InputSignature],
                   origin: str) -> None:
    """InputError unless every profile fits the model: known names, ranks and fixed dimensions,
    ``min <= opt <= max`` per dimension, every dynamic input present, shared symbols agreeing."""
    dynamic = [s for s in inputs.values() if s.is_dynamic]
    for index, profile in enumerate(profiles):
        where = f"{origin}, profile {index}" if len(profiles) > 1 or index else f"{origin}"
        for name, (low, opt, high) in profile.items():
            for label, shape in (("min", low), ("opt", opt), ("max", high)):
                check_shape(inputs, name, shape, where, label)
            if not len(low) == len(opt) == len(high):
                raise InputError(f"{where}, input '{name}': min, opt and max have different ranks "
                                 f"({format_shape(low)}, {format_shape(opt)}, {format_shape(high)})")
            for axis in range(len(low)):
                if low[axis] > high[axis]:
                    raise InputError(f"{where}, input '{name}': min {format_shape(low)} exceeds "
                                     f"max {format_shape(high)} at dimension {axis}")
                if not low[axis] <= opt[axis] <= high[axis]:
                    raise InputError(f"{where}, input '{name}': opt {format_shape(opt)} lies "
                                     f"outside [min {format_shape(low)}, max "
                                     f"{format_shape(high)}] at dimension {axis}")
        missing = [s for s in dynamic if s.name not in profile]
        if missing:
            listed = ", ".join(f"'{s.name}' {s.text()}" for s in missing)
            raise InputError(f"{where} gives no shapes for dynamic input"
                             f"{'s' if len(missing) > 1 else ''} {listed}; add "
                             f"{'them' if len(missing) > 1 else 'it'}")
        for position, label in enumerate(("min", "opt", "max")):
            check_symbols(inputs, {name: shapes[position] for name, shapes in profile.items()},
                          where, label)


def check_shape_sets(shape_sets: Sequence[Mapping[str, Sequence[int]]],
                     inputs: Mapping[str, InputSignature], origin: str) -> None:
    """InputError unless every representative shape set fits the model and gives every dynamic
    input."""
    dynamic = [s for s in inputs.values() if s.is_dynamic]
    for index, shapes in enumerate(shape_sets):
        where = f"{origin}, set {index}"
        for name, shape in shapes.items():
            check_shape(inputs, name, shape, where, "given")
        missing = [s for s in dynamic if s.name not in shapes]
        if missing:
            listed = ", ".join(f"'{s.name}' {s.text()}" for s in missing)
            raise InputError(f"{where} gives no shape for dynamic input"
                             f"{'s' if len(missing) > 1 else ''} {listed}")
        check_symbols(inputs, shapes, where, "given")


# --------------------------------------------------------------------------------------------
# What parity runs at, and the profiles in one line
# --------------------------------------------------------------------------------------------


def parity_shape_sets(profiles: Sequence[Profile], inputs: Mapping[str, InputSignature]) -> list[ShapeSet]:
    """The distinct min, opt and max shape sets of every profile (static inputs at their shape)."""
    static = {s.name: s.static_shape() for s in inputs.values() if not s.is_dynamic}
    sets = []
    for profile in profiles:
        for position in range(3):
            shapes = dict(static)
            shapes.update({name: tuple(shapes_[position]) for name, shapes_ in profile.items()})
            sets.append({name: shapes[name] for name in inputs if name in shapes})
    return distinct(sets)


def describe_profiles(profiles: Sequence[Profile]) -> str:
    """``input 1x3x64x64..8x3x64x64 (opt 4x3x64x64)`` per profile, ``; `` between profiles."""
    parts = []
    for profile in profiles:
        items = []
        for name, (low, opt, high) in profile.items():
            if low == opt == high:
                items.append(f"{name} {format_shape(low)}")
            else:
                items.append(f"{name} {format_shape(low)}..{format_shape(high)} "
                             f"(opt {format_shape(opt)})")
        parts.append(", ".join(items))
    return "; ".join(parts)
