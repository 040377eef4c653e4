"""Dynamic shapes: shape specs, optimization profiles, profile strategies and the default profile.

A model input with an unknown dimension (ONNX ``dim_param`` such as ``N`` or ``unk__612``, or no
value at all) stays unknown through the passes; TensorRT then needs *optimization profiles*, one
``(min, opt, max)`` shape per dynamic input each. This module decides which profiles a compile uses
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
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from trtcompile.errors import InputError

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


# --------------------------------------------------------------------------------------------
# The model's inputs
# --------------------------------------------------------------------------------------------


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
            if dim.HasField("dim_value") and dim.dim_value > 0:
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


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


def parse_dims(text: str, where: str) -> Shape:
    """``1x3x224x224`` (trtexec) or ``[1,3,224,224]`` (Polygraphy) -> ``(1, 3, 224, 224)``;
    positive integers only."""
    text = text.strip()
    bracketed = text.startswith("[") and text.endswith("]")
    parts = text[1:-1].split(",") if bracketed else text.lower().split("x")
    try:
        shape = tuple(int(d) for d in parts)
    except ValueError:
        raise InputError(f"{where}: dimensions must be integers separated by 'x', such as "
                         "1x3x224x224, or a list such as [1,3,224,224]") from None
    if any(d <= 0 for d in shape):
        raise InputError(f"{where}: dimensions must be positive")
    return shape


def split_shape_items(value: str) -> list[str]:
    """The ``NAME:DIMS`` items of a spec: separated by commas outside brackets (trtexec's
    ``a:1x3,b:1x8``), or by spaces between Polygraphy items (``a:[1,3] b:[1,8]``)."""
    items, depth, current = [], 0, []
    for char in value:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if depth == 0 and (char == "," or (char.isspace() and "".join(current).endswith("]"))):
            items.append("".join(current))
            current = []
            continue
        current.append(char)
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


def parse_shape_spec(value: str, flag: str) -> ShapeSet:
    """One shape spec to ``{name: shape}``: trtexec's ``name:1x3x224x224,other:1x16`` or
    Polygraphy's ``name:[1,3,224,224] other:[1,16]`` (commas between items work too).

    The name is everything before the last colon, so TensorFlow tensor names (``input_1:0:1x8``)
    work; it may be quoted (``'input_1:0':1x8``) as trtexec allows.
    """
    shapes: ShapeSet = {}
    for item in split_shape_items(value):
        if not item:
            continue
        name, sep, dims = item.rpartition(":")
        name = name.strip()
        if len(name) >= 2 and name[0] == name[-1] and name[0] in "'\"":
            name = name[1:-1]
        if not sep or not name or not dims.strip():
            raise InputError(f"{flag} '{item}': expected NAME:DIMS such as input:1x3x224x224")
        if name in shapes:
            raise InputError(f"{flag} gives '{name}' twice in '{value}'")
        shapes[name] = parse_dims(dims, f"{flag} '{item}'")
    if not shapes:
        raise InputError(f"{flag} '{value}': no shapes given; expected NAME:DIMS such as "
                         "input:1x3x224x224")
    return shapes


def profiles_from_flags(min_shapes: Sequence[Mapping[str, Sequence[int]]] = (),
                        opt_shapes: Sequence[Mapping[str, Sequence[int]]] = (),
                        max_shapes: Sequence[Mapping[str, Sequence[int]]] = ()) -> list[Profile]:
    """Profiles from ``--min-shapes``/``--opt-shapes``/``--max-shapes`` groups.

    The k-th occurrence of each flag forms profile k. A group is either all three flags, min and
    max (opt is then max, as TF-TRT's range strategy chooses), or ``--opt-shapes`` alone (a
    profile of exactly that shape: min = opt = max). Each flag of a group names the same inputs.
    """
    counts = {"--min-shapes": len(min_shapes), "--opt-shapes": len(opt_shapes),
              "--max-shapes": len(max_shapes)}
    groups = max(counts.values())
    if not groups:
        return []
    given = {flag: n for flag, n in counts.items() if n}
    if len(set(given.values())) > 1:
        listed = ", ".join(f"{flag} {n} time{'s' if n != 1 else ''}" for flag, n in counts.items())
        raise InputError(f"profile flags given unevenly ({listed}): the k-th --min-shapes, "
                         "--opt-shapes and --max-shapes form profile k, so give each equally often")
    if bool(min_shapes) != bool(max_shapes):
        present, absent = (("--min-shapes", "--max-shapes") if min_shapes
                           else ("--max-shapes", "--min-shapes"))
        raise InputError(f"{present} needs {absent} (or give --opt-shapes alone for a profile of "
                         "one shape)")
    profiles = []
    for index in range(groups):
        opt = dict(opt_shapes[index]) if opt_shapes else None
        low = dict(min_shapes[index]) if min_shapes else opt
        high = dict(max_shapes[index]) if max_shapes else opt
        opt = opt if opt is not None else high
        assert low is not None and high is not None and opt is not None
        for label, shapes in (("--opt-shapes", opt), ("--max-shapes", high)):
            for name in shapes:
                if name not in low:
                    raise InputError(f"profile {index}: '{name}' is in {label} but not in "
                                     "--min-shapes; give every input in each of the three")
        for name in low:
            for label, shapes in (("--opt-shapes", opt), ("--max-shapes", high)):
                if name not in shapes:
                    raise InputError(f"profile {index}: '{name}' is in --min-shapes but not in "
                                     f"{label}; give every input in each of the three")
        profiles.append({name: (tuple(low[name]), tuple(opt[name]), tuple(high[name]))
                         for name in low})
    return profiles


def _shape_value(value: Any, where: str) -> Shape:
    """A shape in a file: ``"1x3x224x224"`` or ``[1, 3, 224, 224]``."""
    if isinstance(value, str):
        return parse_dims(value, where)
    if isinstance(value, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        if any(d <= 0 for d in value):
            raise InputError(f"{where}: dimensions must be positive")
        return tuple(value)
    raise InputError(f"{where}: expected a shape such as \"1x3x224x224\" or [1, 3, 224, 224], "
                     f"got {value!r}")


def load_profiles_file(path: str | Path) -> list[Profile]:
    """Profiles from a TOML or JSON file (``--profiles FILE``).

    TOML: one ``[[profiles]]`` table per profile, one key per input whose value holds ``min``,
    ``opt`` and ``max`` (strings ``"1x3x224x224"`` or integer lists). JSON: ``{"profiles":
    [...]}`` or the list alone, in the form ``report.json`` records (``engine.profiles``), so the
    profiles of an earlier compile can be fed back. As with the flags, ``opt`` defaults to
    ``max`` and ``opt`` alone means min = opt = max.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--profiles {path}: no such file")
    suffix = path.suffix.lower()
    text = path.read_text()
    try:
        if suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise InputError(f"--profiles {path}: expected a .toml or .json file")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"--profiles {path}: not valid {suffix[1:].upper()}: {exc}") from None
    if isinstance(data, dict):
        unknown = sorted(set(data) - {"profiles"})
        if unknown:
            raise InputError(f"--profiles {path}: unknown key(s) {', '.join(map(repr, unknown))}; "
                             "the file holds a 'profiles' list")
        data = data.get("profiles")
    if not isinstance(data, list) or not data:
        raise InputError(f"--profiles {path}: no profiles; expected a non-empty 'profiles' list "
                         "(see docs/shapes.md)")
    profiles = []
    for index, entry in enumerate(data):
        where = f"--profiles {path.name}: profile {index}"
        if not isinstance(entry, dict) or not entry:
            raise InputError(f"{where}: expected a table of input names, got {entry!r}")
        profile: Profile = {}
        for name, shapes in entry.items():
            if not isinstance(shapes, dict):
                raise InputError(f"{where}, input '{name}': expected min, opt and max shapes, "
                                 f"got {shapes!r}")
            unknown = sorted(set(shapes) - {"min", "opt", "max"})
            if unknown:
                raise InputError(f"{where}, input '{name}': unknown key(s) "
                                 f"{', '.join(map(repr, unknown))} (expected min, opt, max)")
            given = {key: _shape_value(value, f"{where}, input '{name}', {key}")
                     for key, value in shapes.items()}
            if ("min" in given) != ("max" in given):
                raise InputError(f"{where}, input '{name}': give both min and max (or opt alone)")
            if not given.get("opt") and "min" not in given:
                raise InputError(f"{where}, input '{name}': expected min, opt and max shapes")
            opt = given.get("opt", given.get("max"))
            assert opt is not None
            profile[name] = (given.get("min", opt), opt, given.get("max", opt))
        profiles.append(profile)
    return profiles


def parse_representative_shapes(value: str) -> list[ShapeSet]:
    """``--representative-shapes``: shape sets separated by ``;`` (each a trtexec spec naming
    every dynamic input), or ``@FILE``: a text file with one set per line (``#`` comments) or a
    JSON list of ``{name: shape}``."""
    if value.startswith("@"):
        return load_representative_shapes(value[1:])
    sets = [parse_shape_spec(part, REPRESENTATIVE_FLAG) for part in value.split(";") if part.strip()]
    if not sets:
        raise InputError(f"{REPRESENTATIVE_FLAG} '{value}': no shapes given; expected sets such as "
                         "'input:1x224x224x3;input:8x224x224x3'")
    return sets


def load_representative_shapes(path: str | Path) -> list[ShapeSet]:
    """Representative shape sets from a file (see :func:`parse_representative_shapes`)."""
    path = Path(path)
    where = f"{REPRESENTATIVE_FLAG} @{path}"
    if not path.is_file():
        raise InputError(f"{where}: no such file")
    text = path.read_text()
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not valid JSON: {exc}") from None
        if not isinstance(data, list) or not all(isinstance(e, dict) and e for e in data):
            raise InputError(f"{where}: expected a list of {{input name: shape}} objects")
        sets = [{name: _shape_value(shape, f"{where}, set {index}, input '{name}'")
                 for name, shape in entry.items()} for index, entry in enumerate(data)]
    else:
        sets = []
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            sets += [parse_shape_spec(part, where) for part in line.split(";") if part.strip()]
    if not sets:
        raise InputError(f"{where}: the file holds no shapes")
    return sets


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
                             f"{format_shape(shape)} gives {size}")


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
# Resolution
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShapeOptions:
    """How a compile chooses its optimization profiles (the CLI's shape flags).

    At most one source: explicit ``profiles`` (or the min/opt/max groups, or a ``profiles_file``),
    or ``representative_shapes`` with a ``strategy``. With none, the default profile applies.
    """

    #: ``--min-shapes``/``--opt-shapes``/``--max-shapes``: the k-th entry of each forms profile k.
    min_shapes: Sequence[Mapping[str, Sequence[int]]] = ()
    opt_shapes: Sequence[Mapping[str, Sequence[int]]] = ()
    max_shapes: Sequence[Mapping[str, Sequence[int]]] = ()
    #: Profiles given directly (Python API): ``[{input: (min, opt, max)}]``.
    profiles: Sequence[Mapping[str, Sequence[Sequence[int]]]] = ()
    #: TOML or JSON profile file (``--profiles``).
    profiles_file: str | Path | None = None
    #: ``range``, ``optimal`` or ``range+optimal`` (None: ``range`` when representative shapes
    #: are given).
    strategy: str | None = None
    #: Representative input shape sets the strategy derives profiles from.
    representative_shapes: Sequence[Mapping[str, Sequence[int]]] = ()

    def sources(self) -> list[str]:
        """The profile sources given, as flags."""
        given = []
        if self.min_shapes or self.opt_shapes or self.max_shapes:
            given.append(PROFILE_FLAGS)
        if self.profiles:
            given.append("profiles")
        if self.profiles_file is not None:
            given.append("--profiles")
        if self.strategy is not None or self.representative_shapes:
            given.append("--profile-strategy/--representative-shapes")
        return given


@dataclass
class ProfilePlan:
    """The optimization profiles a compile uses and the shapes parity checks."""

    #: The profiles for the engine (empty when every input is static).
    profiles: list[Profile]
    #: Where they came from: ``static``, ``default``, ``flags``, ``api``, ``file``, or
    #: ``strategy:<name>``.
    source: str
    #: One line for the terminal: which profile(s) and why.
    description: str
    #: Input shape sets parity runs at: min, opt and max of every profile, distinct, in order
    #: (the static shapes when there is no profile).
    parity_shapes: list[ShapeSet] = field(default_factory=list)
    #: Dynamic inputs as the model declares them (``[N, 3, 224, 224]``, None for unnamed dims).
    dynamic_inputs: dict[str, list[int | str | None] | None] = field(default_factory=dict)

    def backend_profiles(self) -> list[dict[str, tuple[list[int], list[int], list[int]]]] | None:
        """The profiles in :func:`trtcompile.backend.build_engine`'s form (None: no profile)."""
        if not self.profiles:
            return None
        return [{name: tuple(list(s) for s in shapes) for name, shapes in profile.items()}
                for profile in self.profiles]  # type: ignore[misc]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "description": self.description,
            "dynamic_inputs": self.dynamic_inputs,
            "profiles": [{name: {"min": list(low), "opt": list(opt), "max": list(high)}
                          for name, (low, opt, high) in profile.items()}
                         for profile in self.profiles],
            "parity_shapes": [{name: list(shape) for name, shape in shapes.items()}
                              for shapes in self.parity_shapes],
        }


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


def _normalize(profiles: Sequence[Mapping[str, Sequence[Sequence[int]]]], origin: str) -> list[Profile]:
    normalized = []
    for index, profile in enumerate(profiles):
        entry: Profile = {}
        for name, shapes in profile.items():
            try:
                low, opt, high = (tuple(int(d) for d in shape) for shape in shapes)
            except (TypeError, ValueError):
                raise InputError(f"{origin}, profile {index}, input '{name}': expected three shapes "
                                 f"(min, opt, max) of integers, got {shapes!r}") from None
            entry[name] = (low, opt, high)
        normalized.append(entry)
    return normalized


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


def resolve_profiles(model: onnx.ModelProto, options: ShapeOptions | None = None) -> ProfilePlan:
    """The optimization profiles for ``model`` under ``options``, checked against its inputs.

    Raises InputError (one line naming the input and the flag) for anything that does not fit.
    """
    options = options or ShapeOptions()
    inputs = model_inputs(model)
    dynamic = {s.name: (list(s.dims) if s.dims is not None else None)
               for s in inputs.values() if s.is_dynamic}
    sources = options.sources()
    if len(sources) > 1:
        raise InputError(f"give optimization profiles one way, not with {' and '.join(sources)}")
    if options.profiles_file is not None:
        profiles = load_profiles_file(options.profiles_file)
        source, origin = "file", f"--profiles {Path(options.profiles_file).name}"
    elif options.profiles:
        profiles = _normalize(options.profiles, "profiles")
        source, origin = "api", "profiles"
    elif options.min_shapes or options.opt_shapes or options.max_shapes:
        profiles = profiles_from_flags(options.min_shapes, options.opt_shapes, options.max_shapes)
        source, origin = "flags", PROFILE_FLAGS
    elif options.strategy is not None or options.representative_shapes:
        strategy = (options.strategy or DEFAULT_STRATEGY).lower()
        if strategy not in STRATEGIES:
            raise InputError(f"--profile-strategy {options.strategy}: expected one of "
                             f"{', '.join(STRATEGIES)}")
        if not options.representative_shapes:
            raise InputError(f"--profile-strategy {strategy} needs {REPRESENTATIVE_FLAG} (the input "
                             "shapes to derive profiles from)")
        check_shape_sets(options.representative_shapes, inputs, REPRESENTATIVE_FLAG)
        profiles = derive_profiles(strategy, options.representative_shapes)
        count = len(distinct(options.representative_shapes))
        source, origin = f"strategy:{strategy}", f"--profile-strategy {strategy}"
        check_profiles(profiles, inputs, origin)
        return ProfilePlan(
            profiles=profiles, source=source,
            description=(f"{len(profiles)} profile{'s' if len(profiles) != 1 else ''} by strategy "
                         f"{strategy} from {count} representative shape set"
                         f"{'s' if count != 1 else ''}: {describe_profiles(profiles)}"),
            parity_shapes=parity_shape_sets(profiles, inputs), dynamic_inputs=dynamic)
    else:
        if not dynamic:
            static = {s.name: s.static_shape() for s in inputs.values()}
            return ProfilePlan(profiles=[], source="static",
                               description="static input shapes: no optimization profile needed",
                               parity_shapes=[static] if static else [], dynamic_inputs={})
        profile = default_profile(inputs)
        return ProfilePlan(
            profiles=[profile], source="default",
            description=(f"default profile (unknown batch dimension set to {DEFAULT_BATCH}): "
                         f"{describe_profiles([profile])}; set shapes with {PROFILE_FLAGS}"),
            parity_shapes=parity_shape_sets([profile], inputs), dynamic_inputs=dynamic)
    check_profiles(profiles, inputs, origin)
    label = {"file": origin, "api": "given", "flags": "from " + PROFILE_FLAGS}[source]
    description = (f"{len(profiles)} profile{'s' if len(profiles) != 1 else ''} {label}: "
                   f"{describe_profiles(profiles)}")
    if not dynamic:
        # Shapes for static inputs are accepted when they agree; the engine needs no profile.
        static = {s.name: s.static_shape() for s in inputs.values()}
        return ProfilePlan(profiles=[], source="static",
                           description=f"static input shapes (the {origin} shapes agree): no "
                                       "optimization profile needed",
                           parity_shapes=[static], dynamic_inputs={})
    return ProfilePlan(profiles=profiles, source=source, description=description,
                       parity_shapes=parity_shape_sets(profiles, inputs), dynamic_inputs=dynamic)


__all__ = [
    "DEFAULT_BATCH", "DEFAULT_STRATEGY", "STRATEGIES", "InputSignature", "Profile", "ProfilePlan",
    "ShapeOptions", "check_profiles", "default_profile", "derive_profiles", "load_profiles_file",
    "model_inputs", "parse_representative_shapes", "parse_shape_spec", "profiles_from_flags",
    "resolve_profiles",
]
