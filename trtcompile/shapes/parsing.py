"""Profiles and representative shapes as users write them: ``--min-shapes``/``--opt-shapes``/
``--max-shapes`` specs in trtexec's or Polygraphy's spelling, TOML/JSON profile files and
``--representative-shapes`` sets (inline or ``@FILE``). Parsing checks syntax only; whether the
shapes fit the model is :mod:`trtcompile.shapes.profiles`' concern.

A message about a file names the file, where in it (line, profile, set) and the problem, never
what it holds: a flag pointed at a file that is not a shape file (``@/etc/shadow``) must not
print its lines. Only the input names of a file that has the shape file's structure are named.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trtcompile.errors import InputError
from trtcompile.shapes.signature import REPRESENTATIVE_FLAG, Profile, Shape, ShapeSet


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
    """A shape in a file: ``"1x3x224x224"`` or ``[1, 3, 224, 224]`` (messages never quote it)."""
    if isinstance(value, str):
        return parse_dims(value, where)
    if isinstance(value, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        if any(d <= 0 for d in value):
            raise InputError(f"{where}: dimensions must be positive")
        return tuple(value)
    raise InputError(f"{where}: expected a shape such as \"1x3x224x224\" or [1, 3, 224, 224], "
                     f"got {_kind(value)}")


def _kind(value: Any) -> str:
    """What a value read from a file is, without quoting it."""
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _read_text(path: Path, where: str) -> str:
    """The text of a shape file (InputError, naming the file only, when it is not readable text)."""
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise InputError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise InputError(f"{where}: not a text file (expected UTF-8 text)") from None


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
    if suffix not in (".toml", ".json"):
        raise InputError(f"--profiles {path}: expected a .toml or .json file")
    text = _read_text(path, f"--profiles {path}")
    try:
        data: Any = tomllib.loads(text) if suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        # Their messages give a position (line, column), never the text.
        raise InputError(f"--profiles {path}: not valid {suffix[1:].upper()}: {exc}") from None
    if isinstance(data, dict):
        unknown = set(data) - {"profiles"}
        if unknown:
            raise InputError(f"--profiles {path}: {len(unknown)} unknown key"
                             f"{'s' if len(unknown) != 1 else ''}; the file holds a 'profiles' "
                             "list only")
        data = data.get("profiles")
    if not isinstance(data, list) or not data:
        raise InputError(f"--profiles {path}: no profiles; expected a non-empty 'profiles' list "
                         "(see docs/shapes.md)")
    profiles = []
    for index, entry in enumerate(data):
        where = f"--profiles {path.name}: profile {index}"
        if not isinstance(entry, dict) or not entry:
            raise InputError(f"{where}: expected a table of input names, got {_kind(entry)}")
        profile: Profile = {}
        for name, shapes in entry.items():
            if not isinstance(shapes, dict):
                raise InputError(f"{where}, input '{name}': expected min, opt and max shapes, "
                                 f"got {_kind(shapes)}")
            unknown = set(shapes) - {"min", "opt", "max"}
            if unknown:
                raise InputError(f"{where}, input '{name}': {len(unknown)} unknown key"
                                 f"{'s' if len(unknown) != 1 else ''} (expected min, opt, max)")
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
    text = _read_text(path, where)
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:  # its message gives a position, never the text
            raise InputError(f"{where}: not valid JSON: {exc}") from None
        if not isinstance(data, list) or not all(isinstance(e, dict) and e for e in data):
            raise InputError(f"{where}: expected a list of {{input name: shape}} objects")
        sets = [{name: _shape_value(shape, f"{where}, set {index}, input '{name}'")
                 for name, shape in entry.items()} for index, entry in enumerate(data)]
    else:
        sets = []
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.split("#", 1)[0].strip()
            try:
                sets += [parse_shape_spec(part, where) for part in line.split(";") if part.strip()]
            except InputError:  # its message quotes the line: say where and what is expected only
                raise InputError(f"{where}, line {number}: not a shape set; expected sets such as "
                                 "input:1x224x224x3 separated by ';', one or more per line") \
                    from None
    if not sets:
        raise InputError(f"{where}: the file holds no shapes")
    return sets
