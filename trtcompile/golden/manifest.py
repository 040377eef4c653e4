"""Golden manifests: a TOML manifest of models with the layer counts and tolerances a compiler
team expects, and the runner that checks every entry and explains each regression.

A manifest holds one ``[[model]]`` table per model; relative paths resolve against the manifest's
folder::

    [[model]]
    name = "inception"                            # required, unique
    path = "models/inception.onnx"                # required: ONNX, TensorFlow, or builtin:<example>
    pipeline = "default"                          # pipeline text (default "default")
    precision = "fp32"                            # fp32 | fp16 | bf16 | int8
    input_shapes = { input = [1, 3, 224, 224] }
    atol = 1e-4                                   # rtol likewise; default: the precision's
    engine = true                                 # build the engine and check its counts
    target_gpu = "RTX4090"                        # with --ray: build on a node of this GPU type
    build = { optimization_level = 5, compute_capabilities = ["8.9"] }   # BuildOptions fields
    [model.expect]
    layers = 42                                   # final layer count
    engine_compute_layers = 30
    passes = { "conv-bias-activation-fusion" = 60 }   # layers after the last run of that pass

Every entry must keep parity (the input model against the optimized one on ONNX Runtime, on seeded
random inputs or on the arrays of ``data = "file.npz"``) and meet every expectation it lists.

* :func:`load_manifest` reads and validates a manifest; any problem raises
  :class:`~trtcompile.errors.InputError` with one line naming the file, line, entry and key;
* :func:`run_entry` compiles one entry (in memory, nothing written) and returns a
  :class:`GoldenOutcome` that knows what regressed and explains it;
* :func:`format_table`, :func:`junit_xml` render outcomes for terminals and CI systems;
* :func:`update_manifest` rewrites the expected counts in place, keeping comments and order.
"""


import difflib
import fnmatch
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from trtcompile import verify
from trtcompile.backend.options import BuildOptions
from trtcompile.checks import MAX_SEED
from trtcompile.errors import InputError

#: ``path`` prefix naming a built-in example (:data:`trtcompile.examples.EXAMPLES`).
BUILTIN_PREFIX = "builtin:"

#: Keys of a ``[[model]]`` table.
ENTRY_KEYS = ("name", "path", "pipeline", "precision", "input_shapes", "atol", "rtol", "seed",
              "data_range", "engine", "data", "calib_data", "calib_method", "pass_modules",
              "target_gpu", "min_shapes", "opt_shapes", "max_shapes", "build", "expect")

#: Keys of an entry giving one optimization profile (as ``--min-shapes``/``--opt-shapes``/
#: ``--max-shapes``): each a table of input name -> dimensions.
PROFILE_KEYS = ("min_shapes", "opt_shapes", "max_shapes")

#: Keys of a ``[model.expect]`` table.
EXPECT_KEYS = ("layers", "engine_compute_layers", "passes")

#: A ``target_gpu`` value: it becomes the Ray resource name ``gpu_type:<value>``.
TARGET_GPU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

#: Precisions a manifest may name (see :func:`trtcompile.calibration.parity_tolerances`).
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
#: ``calib_method`` values (as ``--calib-method``).
CALIB_METHODS = ("entropy", "minmax", "percentile")


# --------------------------------------------------------------------------------------------
# The manifest
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expectations:
    """What an entry expects; ``None`` (or an absent pass) is not checked."""

    #: Top-level layers of the optimized graph (a fused call counts as one).
    layers: int | None = None
    #: Compute layers of the built engine (needs ``engine = true``).
    engine_compute_layers: int | None = None
    #: Layers after the last run of each named pass.
    passes: Mapping[str, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.layers is None and self.engine_compute_layers is None and not self.passes


@dataclass(frozen=True)
class GoldenEntry:
    """One ``[[model]]`` entry of a manifest, validated, with its paths resolved."""

    name: str
    #: ``path`` as written in the manifest.
    source: str
    #: The resolved model path, or None for a built-in example.
    path: Path | None
    #: The built-in example's name when ``path`` is ``builtin:<name>``.
    example: str | None
    pipeline: str = "default"
    precision: str = "fp32"
    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    #: Parity tolerances as given (None: the precision's defaults).
    atol: float | None = None
    rtol: float | None = None
    seed: int = 0
    #: Known range (low, high) of the floating-point inputs: parity draws them uniformly from it
    #: (None: standard normal).
    data_range: tuple[float, float] | None = None
    engine: bool = False
    #: ``.npz`` of parity inputs by input name (None: seeded random inputs).
    data: Path | None = None
    #: INT8 calibration samples (``precision = "int8"``) and the calibration method.
    calib_data: Path | None = None
    calib_method: str = "entropy"
    #: One optimization profile: ``min_shapes``/``opt_shapes``/``max_shapes`` -> {input: dims}
    #: (empty: the profiles a compile chooses by default).
    profile: Mapping[str, Mapping[str, tuple[int, ...]]] = field(default_factory=dict)
    pass_modules: tuple[Path, ...] = ()
    #: GPU type the engine must be built on (``target_gpu``); honoured by Ray runs, which send the
    #: entry to a node offering the resource ``gpu_type:<target_gpu>``.
    target_gpu: str | None = None
    #: The engine-build controls (``build = { ... }``, the fields of
    #: :class:`~trtcompile.backend.options.BuildOptions`; paths resolve against the manifest).
    build: BuildOptions = field(default_factory=BuildOptions)
    expect: Expectations = field(default_factory=Expectations)
    #: Position in the manifest (0-based) and the line of its ``[[model]]`` header (0: unknown).
    index: int = 0
    line: int = 0

    def tolerances(self) -> tuple[float, float]:
        """(atol, rtol) for parity: the entry's, else the defaults of its precision."""
        from trtcompile.calibration import parity_tolerances

        atol, rtol, _ = parity_tolerances(self.precision)
        return (self.atol if self.atol is not None else atol,
                self.rtol if self.rtol is not None else rtol)


@dataclass(frozen=True)
class Manifest:
    """A validated manifest: its path and its entries in file order."""

    path: Path
    entries: tuple[GoldenEntry, ...]

    def select(self, pattern: str | None) -> list[GoldenEntry]:
        """Entries whose name matches ``pattern``: a glob when it has ``*?[``, else a substring;
        several patterns may be separated by commas. None selects all."""
        if not pattern:
            return list(self.entries)
        selected = [entry for entry in self.entries if name_matches(entry.name, pattern)]
        if not selected:
            names = ", ".join(entry.name for entry in self.entries)
            raise InputError(f"-k '{pattern}' selects no entry of {self.path} (entries: {names})")
        return selected


def name_matches(name: str, pattern: str | None) -> bool:
    """Whether an entry named ``name`` is selected by ``-k pattern`` (:meth:`Manifest.select`)."""
    if not pattern:
        return True
    patterns = [p.strip() for p in pattern.split(",") if p.strip()]
    return any(fnmatch.fnmatchcase(name, p) if any(c in p for c in "*?[") else p in name
               for p in patterns)


class _Locator:
    """Finds the line of an entry's header and of its keys in the manifest text, for messages.

    tomllib keeps no positions; entries are found by their ``[[model]]`` headers in order, keys by
    their ``key =`` line within the entry. Best effort: 0 when not found.
    """

    _HEADER = re.compile(r"^\s*\[\[\s*model\s*\]\]")

    def __init__(self, text: str):
        self.lines = text.splitlines()
        self.headers = [i + 1 for i, line in enumerate(self.lines) if self._HEADER.match(line)]

    def entry_line(self, index: int) -> int:
        return self.headers[index] if index < len(self.headers) else 0

    def key_line(self, index: int, key: str) -> int:
        start = self.entry_line(index)
        if not start:
            return 0
        end = self.headers[index + 1] - 1 if index + 1 < len(self.headers) else len(self.lines)
        pattern = re.compile(rf"""^\s*(["']?){re.escape(key)}\1\s*=|[{{,]\s*(["']?){re.escape(key)}\2\s*=""")
        for number in range(start, end + 1):
            if pattern.search(self.lines[number - 1]):
                return number
        return start


class _EntryChecker:
    """Validates one raw entry; every problem is one line naming the entry and the key."""

    def __init__(self, manifest: Path, locator: _Locator, index: int, raw: Mapping[str, Any]):
        self.manifest = manifest
        self.locator = locator
        self.index = index
        self.raw = raw
        name = raw.get("name")
        self.label = (f"model '{name}'" if isinstance(name, str) and name and name.isprintable()
                      else f"model #{index + 1}")

    def error(self, key: str | None, problem: str) -> InputError:
        line = self.locator.key_line(self.index, key.split(".")[-1]) if key \
            else self.locator.entry_line(self.index)
        where = f"{self.manifest}:{line}" if line else str(self.manifest)
        what = f"{self.label}, key '{key}'" if key else self.label
        return InputError(f"{where}: {what}: {problem}")

    def unknown_keys(self, table: Mapping[str, Any], known: Sequence[str], prefix: str = "") -> None:
        for key in table:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise self.error(prefix + key, f"unknown key ({hint}known keys: {', '.join(known)})")

    def string(self, key: str, *, required: bool = False, default: str | None = None) -> str | None:
        if key not in self.raw:
            if required:
                raise self.error(key, "missing (required)")
            return default
        value = self.raw[key]
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"expected a non-empty string, got {_describe(value)}")
        return value

    def shape_table(self, key: str) -> dict[str, tuple[int, ...]]:
        """A table of input name -> list of positive dimensions (empty when absent)."""
        raw = self.raw.get(key, {})
        if not isinstance(raw, dict):
            raise self.error(key, "expected a table of input name -> list of dimensions, got "
                                  f"{_describe(raw)}")
        shapes: dict[str, tuple[int, ...]] = {}
        for input_name, dims in raw.items():
            if not isinstance(dims, list) or not dims or not all(
                    isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
                raise self.error(key, f"input '{input_name}': expected a list of positive "
                                      f"integers, got {_describe(dims)}")
            shapes[input_name] = tuple(dims)
        return shapes

    def number(self, key: str) -> float | None:
        if key not in self.raw:
            return None
        value = self.raw[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 \
                or not math.isfinite(value):
            raise self.error(key, f"expected a finite non-negative number (nan or inf would "
                                  f"switch the check off), got {_describe(value)}")
        return float(value)

    def count(self, key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.error(key, f"expected a non-negative integer, got {_describe(value)}")
        return value

    def file(self, key: str, suffixes: Sequence[str] = ()) -> Path | None:
        text = self.string(key)
        if text is None:
            return None
        path = _resolve(self.manifest, text)
        if not path.exists():
            raise self.error(key, f"'{text}' not found (resolved to {path})")
        if suffixes and path.suffix.lower() not in suffixes:
            raise self.error(key, f"'{text}' is not a {' or '.join(suffixes)} file")
        return path


def _describe(value: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "table"}.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{kind} {text if len(text) <= 40 else text[:37] + '...'}"


def _resolve(manifest: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else manifest.parent / path


def _manifest_error(manifest: Path, problem: str, line: int = 0) -> InputError:
    return InputError(f"{manifest}{f':{line}' if line else ''}: {problem}")


def load_manifest(path: str | Path, select: str | None = None) -> Manifest:
    """Read and validate a manifest. Raises InputError (one line: file, line, entry, key).

    ``select`` (``-k``'s pattern, see :meth:`Manifest.select`): only the entries it selects have
    their pipeline parsed against a registry, so only their pass modules are imported (a pass
    module is code; an entry left out of the run runs none of it). Every entry is checked
    otherwise."""
    from trtcompile import examples
    from trtcompile.flow.registry import build_registry
    from trtcompile.pm import iter_passes, parse_pipeline

    path = Path(path)
    if not path.exists():
        raise InputError(f"manifest not found: {path}")
    if path.is_dir():
        raise InputError(f"manifest {path} is a folder; give the .toml file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read manifest {path}: {exc}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from None
    locator = _Locator(text)
    for key in document:
        if key != "model":
            raise _manifest_error(path, f"unknown top-level key '{key}' (a manifest holds "
                                        "[[model]] tables only)")
    raw_entries = document.get("model")
    if raw_entries is None:
        raise _manifest_error(path, "no [[model]] entry")
    if not isinstance(raw_entries, list) or not all(isinstance(e, dict) for e in raw_entries):
        raise _manifest_error(path, "'model' must be an array of tables: write each entry as "
                                    "[[model]]")

    entries: list[GoldenEntry] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_entries):
        check = _EntryChecker(path, locator, index, raw)
        check.unknown_keys(raw, ENTRY_KEYS)
        name = check.string("name", required=True)
        if not name.isprintable():
            code = ord(next(c for c in name if not c.isprintable()))
            raise check.error("name", f"contains the non-printable character U+{code:04X}; names "
                                      "are printable text (they name test cases in terminals and "
                                      "JUnit XML)")
        if name in seen:
            raise check.error("name", f"duplicate name (entry #{seen[name] + 1}, line "
                                      f"{locator.entry_line(seen[name])}, has it too)")
        seen[name] = index

        source = check.string("path", required=True)
        model_path: Path | None = None
        example: str | None = None
        if source.startswith(BUILTIN_PREFIX):
            example = source[len(BUILTIN_PREFIX):]
            if example not in examples.EXAMPLES:
                raise check.error("path", f"unknown built-in example '{example}' (examples: "
                                          f"{', '.join(sorted(examples.EXAMPLES))})")
        else:
            model_path = check.file("path")

        precision = check.string("precision", default="fp32").lower()
        if precision not in PRECISIONS:
            raise check.error("precision", f"unknown precision '{precision}' (use "
                                           f"{', '.join(PRECISIONS)})")

        input_shapes = check.shape_table("input_shapes")
        profile = {key: check.shape_table(key) for key in PROFILE_KEYS if key in raw}
        if profile and len(profile) != len(PROFILE_KEYS):
            missing = [key for key in PROFILE_KEYS if key not in profile]
            raise check.error(missing[0], "a profile needs min_shapes, opt_shapes and max_shapes")

        seed = raw.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise check.error("seed", f"expected an integer from 0 to {MAX_SEED}, got "
                                      f"{_describe(seed)}")
        data_range = raw.get("data_range")
        if data_range is not None:
            if (not isinstance(data_range, list) or len(data_range) != 2 or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in data_range)):
                raise check.error("data_range", f"expected [LO, HI], two numbers, got "
                                                f"{_describe(data_range)}")
            try:
                verify.InputDistribution(float(data_range[0]), float(data_range[1]))
            except ValueError as exc:
                raise check.error("data_range", str(exc)) from None
            data_range = (float(data_range[0]), float(data_range[1]))
        engine = raw.get("engine", False)
        if not isinstance(engine, bool):
            raise check.error("engine", f"expected true or false, got {_describe(engine)}")

        modules_raw = raw.get("pass_modules", [])
        if isinstance(modules_raw, str):
            modules_raw = [modules_raw]
        if not isinstance(modules_raw, list) or not all(isinstance(m, str) for m in modules_raw):
            raise check.error("pass_modules", f"expected a list of Python files, got "
                                              f"{_describe(modules_raw)}")
        pass_modules = []
        for module in modules_raw:
            module_path = _resolve(path, module)
            if not module_path.is_file():
                raise check.error("pass_modules", f"'{module}' not found (resolved to {module_path})")
            pass_modules.append(module_path)

        calib_data = check.file("calib_data")
        calib_method = check.string("calib_method", default="entropy")
        if calib_method not in CALIB_METHODS:
            raise check.error("calib_method", f"unknown method '{calib_method}' (use "
                                              f"{', '.join(CALIB_METHODS)})")
        if calib_data is not None and precision not in ("int8", "fp16", "bf16"):
            raise check.error("calib_data", "applies to precision = \"int8\", \"fp16\" or "
                                            "\"bf16\" only")
        if precision == "int8" and calib_data is None:
            raise check.error("calib_data", "missing: precision = \"int8\" needs calibration "
                                            "samples (.npz, .npy or a folder)")

        pipeline = check.string("pipeline", default="default")
        pass_names: set[str] | None = None  # not known for an entry left out of the run
        if name_matches(name, select):
            try:
                registry = build_registry(pass_modules)
                pass_names = {p.name for p in iter_passes(parse_pipeline(pipeline, registry))}
            except InputError as exc:
                raise check.error("pipeline", str(exc)) from None
            if precision in ("fp16", "bf16"):
                pass_names.add("precision-fp16")
            elif precision == "int8":
                pass_names.add("quantize-int8")

        target_gpu = check.string("target_gpu")
        if target_gpu is not None:
            if not TARGET_GPU.match(target_gpu):
                raise check.error("target_gpu", f"'{target_gpu}' is not a GPU type name (letters, "
                                                "digits, '_', '.', '-', e.g. \"RTX4090\")")
            if not engine:
                raise check.error("target_gpu", "needs engine = true in the entry (only the "
                                                "engine build depends on the GPU)")

        build = _build_options(check, path, raw.get("build", {}), engine)
        expect = _expectations(check, raw.get("expect", {}), pass_names, pipeline, engine)
        entries.append(GoldenEntry(
            name=name, source=source, path=model_path, example=example, pipeline=pipeline,
            precision=precision, input_shapes=input_shapes, atol=check.number("atol"),
            rtol=check.number("rtol"), seed=seed, data_range=data_range, engine=engine,
            data=check.file("data", suffixes=(".npz",)), calib_data=calib_data,
            calib_method=calib_method, profile=profile,
            pass_modules=tuple(pass_modules), target_gpu=target_gpu, build=build, expect=expect,
            index=index,
            line=locator.entry_line(index)))
    if not entries:
        raise _manifest_error(path, "no [[model]] entry")
    return Manifest(path=path, entries=tuple(entries))


def _build_options(check: _EntryChecker, manifest: Path, raw: Any, engine: bool) -> BuildOptions:
    """The entry's ``build`` table as BuildOptions (file paths resolved against the manifest)."""
    if not isinstance(raw, dict):
        raise check.error("build", f"expected a table of build options, got {_describe(raw)}")
    if raw and not engine:
        raise check.error("build", "needs engine = true in the entry (it sets how the engine is "
                                   "built)")
    values = dict(raw)
    for key in ("timing_cache",):
        if isinstance(values.get(key), str):
            values[key] = str(_resolve(manifest, values[key]))
    for key in ("plugin_libraries", "plugin_modules"):
        if isinstance(values.get(key), list):
            values[key] = [str(_resolve(manifest, v)) if isinstance(v, str) else v
                           for v in values[key]]
    try:
        return BuildOptions.from_mapping(values, where="build")
    except (InputError, TypeError, ValueError) as exc:
        raise check.error("build", str(exc)) from None


def _expectations(check: _EntryChecker, raw: Any, pass_names: set[str] | None, pipeline: str,
                  engine: bool) -> Expectations:
    if not isinstance(raw, dict):
        raise check.error("expect", f"expected a table ([model.expect]), got {_describe(raw)}")
    check.unknown_keys(raw, EXPECT_KEYS, prefix="expect.")
    layers = check.count("expect.layers", raw["layers"]) if "layers" in raw else None
    engine_layers = None
    if "engine_compute_layers" in raw:
        engine_layers = check.count("expect.engine_compute_layers", raw["engine_compute_layers"])
        if not engine:
            raise check.error("expect.engine_compute_layers", "needs engine = true in the entry "
                                                              "(the engine is not built otherwise)")
    passes_raw = raw.get("passes", {})
    if not isinstance(passes_raw, dict):
        raise check.error("expect.passes", "expected a table of pass name -> layers after it, got "
                                           f"{_describe(passes_raw)}")
    passes: dict[str, int] = {}
    for pass_name, value in passes_raw.items():
        if pass_names is not None and pass_name not in pass_names:
            raise check.error("expect.passes", f"pass '{pass_name}' does not run in pipeline "
                                               f"'{pipeline}' (it runs: {', '.join(sorted(pass_names)) or 'no pass'})")
        passes[pass_name] = check.count(f"expect.passes.{pass_name}", value)
    return Expectations(layers=layers, engine_compute_layers=engine_layers, passes=passes)


def load_parity_data(path: Path, model: onnx.ModelProto, entry: str = "") -> dict[str, np.ndarray]:
    """The parity inputs of a ``data = "file.npz"`` entry: one array per model input, by name,
    cast to the input's dtype."""
    from trtcompile.fsutil.npz import read_npz

    label = f"model '{entry}', key 'data': " if entry else ""
    arrays = read_npz(path, f"{label}{path}")
    initializers = {init.name for init in model.graph.initializer}
    inputs = {v.name: v for v in model.graph.input if v.name not in initializers}
    missing = sorted(set(inputs) - set(arrays))
    extra = sorted(set(arrays) - set(inputs))
    if missing or extra:
        raise InputError(f"{label}{path.name} must hold one array per model input "
                         f"({', '.join(sorted(inputs))}); missing {missing or 'none'}, "
                         f"unknown {extra or 'none'}")
    feeds = {}
    for name, value in inputs.items():
        tensor_type = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        array = arrays[name]
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
        if len(dims) != array.ndim or any(d is not None and d != s for d, s in zip(dims, array.shape)):
            shape_text = "x".join(str(d) if d is not None else "?" for d in dims)
            raise InputError(f"{label}array '{name}' in {path.name} has shape "
                             f"{'x'.join(map(str, array.shape))}, the model takes {shape_text}")
        feeds[name] = array.astype(dtype, copy=False)
    return feeds


__all__ = ["BUILTIN_PREFIX", "ENTRY_KEYS", "EXPECT_KEYS", "PROFILE_KEYS", "Expectations",
           "GoldenEntry", "Manifest", "load_manifest", "load_parity_data", "name_matches"]
