"""Golden-test suites: a TOML manifest of models with the layer counts and tolerances a compiler
team expects, and the runner that checks every entry and explains each regression.

A manifest holds one ``[[model]]`` table per model; relative paths resolve against the manifest's
folder::

    [[model]]
    name = "inception"                            # required, unique
    path = "models/inception.onnx"                # required: ONNX, TensorFlow, or builtin:<example>
    pipeline = "default"                          # pipeline text (default "default")
    precision = "fp32"                            # fp32 | fp16 | int8
    input_shapes = { input = [1, 3, 224, 224] }
    atol = 1e-4                                   # rtol likewise; default: the precision's
    engine = true                                 # build the engine and check its counts
    target_gpu = "RTX4090"                        # with --ray: build on a node of this GPU type
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

from __future__ import annotations

import difflib
import fnmatch
import math
import re
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np
import onnx

from trtcompile import ir, verify
from trtcompile.checks import MAX_SEED
from trtcompile.errors import CheckFailed, InputError, TrtcompileError

#: ``path`` prefix naming a built-in example (:data:`trtcompile.examples.EXAMPLES`).
BUILTIN_PREFIX = "builtin:"

#: Keys of a ``[[model]]`` table.
ENTRY_KEYS = ("name", "path", "pipeline", "precision", "input_shapes", "atol", "rtol", "seed",
              "data_range", "engine", "data", "calib_data", "calib_method", "pass_modules",
              "target_gpu", "min_shapes", "opt_shapes", "max_shapes", "expect")

#: Keys of an entry giving one optimization profile (as ``--min-shapes``/``--opt-shapes``/
#: ``--max-shapes``): each a table of input name -> dimensions.
PROFILE_KEYS = ("min_shapes", "opt_shapes", "max_shapes")

#: Keys of a ``[model.expect]`` table.
EXPECT_KEYS = ("layers", "engine_compute_layers", "passes")

#: A ``target_gpu`` value: it becomes the Ray resource name ``gpu_type:<value>``.
TARGET_GPU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

#: Precisions a manifest may name (see :func:`trtcompile.calibration.parity_tolerances`).
PRECISIONS = ("fp32", "fp16", "int8")
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
        patterns = [p.strip() for p in pattern.split(",") if p.strip()]

        def matches(name: str) -> bool:
            return any(fnmatch.fnmatchcase(name, p) if any(c in p for c in "*?[") else p in name
                       for p in patterns)

        selected = [entry for entry in self.entries if matches(entry.name)]
        if not selected:
            names = ", ".join(entry.name for entry in self.entries)
            raise InputError(f"-k '{pattern}' selects no entry of {self.path} (entries: {names})")
        return selected


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
        self.label = f"model '{name}'" if isinstance(name, str) and name else f"model #{index + 1}"

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


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest. Raises InputError (one line: file, line, entry, key)."""
    from trtcompile import examples
    from trtcompile.flow.registry import build_registry
    from trtcompile.pass_manager import iter_passes, parse_pipeline

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
        if calib_data is not None and precision != "int8":
            raise check.error("calib_data", "applies to precision = \"int8\" only")
        if precision == "int8" and calib_data is None:
            raise check.error("calib_data", "missing: precision = \"int8\" needs calibration "
                                            "samples (.npz, .npy or a folder)")

        pipeline = check.string("pipeline", default="default")
        try:
            registry = build_registry(pass_modules)
            pass_names = {p.name for p in iter_passes(parse_pipeline(pipeline, registry))}
        except InputError as exc:
            raise check.error("pipeline", str(exc)) from None
        if precision == "fp16":
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

        expect = _expectations(check, raw.get("expect", {}), pass_names, pipeline, engine)
        entries.append(GoldenEntry(
            name=name, source=source, path=model_path, example=example, pipeline=pipeline,
            precision=precision, input_shapes=input_shapes, atol=check.number("atol"),
            rtol=check.number("rtol"), seed=seed, data_range=data_range, engine=engine,
            data=check.file("data", suffixes=(".npz",)), calib_data=calib_data,
            calib_method=calib_method, profile=profile,
            pass_modules=tuple(pass_modules), target_gpu=target_gpu, expect=expect, index=index,
            line=locator.entry_line(index)))
    if not entries:
        raise _manifest_error(path, "no [[model]] entry")
    return Manifest(path=path, entries=tuple(entries))


def _expectations(check: _EntryChecker, raw: Any, pass_names: set[str], pipeline: str,
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
        if pass_name not in pass_names:
            raise check.error("expect.passes", f"pass '{pass_name}' does not run in pipeline "
                                               f"'{pipeline}' (it runs: {', '.join(sorted(pass_names)) or 'no pass'})")
        passes[pass_name] = check.count(f"expect.passes.{pass_name}", value)
    return Expectations(layers=layers, engine_compute_layers=engine_layers, passes=passes)


def load_parity_data(path: Path, model: onnx.ModelProto, entry: str = "") -> dict[str, np.ndarray]:
    """The parity inputs of a ``data = "file.npz"`` entry: one array per model input, by name,
    cast to the input's dtype."""
    label = f"model '{entry}', key 'data': " if entry else ""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"{label}cannot read {path}: {exc}") from None
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


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mismatch:
    """One expectation an entry did not meet."""

    #: ``layers``, ``engine_compute_layers`` or ``passes.<pass>``.
    key: str
    expected: int
    #: None when the thing could not be counted (a pass that did not run).
    got: int | None

    def describe(self) -> str:
        if self.got is None:
            return f"{self.key}: expected {self.expected}, but the pass did not run"
        diff = self.got - self.expected
        return (f"{self.key}: expected {self.expected}, got {self.got} "
                f"({abs(diff)} {'more' if diff > 0 else 'fewer'})")


@dataclass
class GoldenOutcome:
    """What running one entry found: the counts, parity, time, and what regressed."""

    entry: GoldenEntry
    seconds: float = 0.0
    layers_input: int | None = None
    layers: int | None = None
    #: Layers after the last run of each pass that ran, by pass name.
    passes: dict[str, int] = field(default_factory=dict)
    engine_compute_layers: int | None = None
    parity: Any = None  # trtcompile.flow.ParityVerdict
    pipeline_report: Any = None  # trtcompile.pass_manager.PipelineReport
    engine: Any = None  # trtcompile.backend.EngineBuild
    #: Digest of the optimized model's graph and functions (:func:`trtcompile.ir.model_digest`).
    digest: str | None = None
    #: The partition stage's outcome when TensorRT's parser rejected nodes (one engine per
    #: segment; ``engine_compute_layers`` is then their sum).
    partition: Any = None
    histogram: dict[str, int] = field(default_factory=dict)
    mismatches: list[Mismatch] = field(default_factory=list)
    #: The error that stopped the entry (unusable input, a failing pass, a failed engine build).
    error: TrtcompileError | None = None

    @property
    def parity_passed(self) -> bool:
        return self.parity is not None and self.parity.passed

    @property
    def passed(self) -> bool:
        return self.error is None and self.parity_passed and not self.mismatches

    @property
    def status(self) -> str:
        """``ok``, ``REGRESSED`` (counts), ``PARITY FAILED``, or ``ERROR``."""
        if self.error is not None:
            return "ERROR"
        if not self.parity_passed:
            return "PARITY FAILED"
        return "REGRESSED" if self.mismatches else "ok"

    @property
    def max_abs_error(self) -> float | None:
        """Largest absolute error of any output of the end-to-end comparison."""
        if self.parity is None or not self.parity.primary.outputs:
            return None
        return max(o.max_abs for o in self.parity.primary.outputs.values())

    def problems(self) -> list[str]:
        """One line per thing that regressed, in the order it matters."""
        lines = []
        if self.error is not None:
            lines.append(f"error ({type(self.error).__name__}): {self.error}")
        if self.parity is not None and not self.parity.passed:
            lines.append(self.parity.error_message())
        lines += [mismatch.describe() for mismatch in self.mismatches]
        return lines

    def explain(self) -> str:
        """What regressed and the evidence: the layers after each pass, the op histogram, and the
        engine's compute layer types (everything an engineer looks at first)."""
        from trtcompile import report

        lines = [f"{self.entry.name} ({self.entry.source}): {self.status}"]
        lines += [f"  {problem}" for problem in self.problems()]
        if self.pipeline_report is not None:
            trail = ", ".join(f"{report.pass_label(r)} {r['layers_after']}"
                              for r in self.pipeline_report.to_dict()["passes"])
            lines.append(f"  layers after each pass: input {self.layers_input}"
                         f"{', ' + trail if trail else ''}")
            lines.append("  optimized op histogram: " + report.format_counts(self.histogram))
        if self.engine is not None:
            from trtcompile.backend import layer_type_histogram

            lines.append("  engine compute layer types: " + report.format_counts(
                layer_type_histogram(self.engine.layers, compute_only=True)))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (used by the JUnit properties and by tests)."""
        return {
            "name": self.entry.name, "status": self.status, "seconds": round(self.seconds, 6),
            "layers": self.layers, "engine_compute_layers": self.engine_compute_layers,
            "passes": dict(self.passes), "max_abs_error": self.max_abs_error,
            "problems": self.problems(),
        }


def compile_options(entry: GoldenEntry):
    """The :class:`~trtcompile.flow.CompileOptions` an entry describes (no files written)."""
    from trtcompile.flow import CompileOptions
    from trtcompile.frontend import FrontendOptions

    from trtcompile.shapes import ShapeOptions

    atol, rtol = entry.tolerances()
    shapes = ShapeOptions(**{key: [dict(entry.profile[key])] for key in entry.profile})
    return CompileOptions(
        pipeline=entry.pipeline, pass_modules=entry.pass_modules, atol=atol, rtol=rtol,
        seed=entry.seed, data_range=entry.data_range, engine=entry.engine,
        frontend=FrontendOptions(input_shapes={k: list(v) for k, v in entry.input_shapes.items()}),
        progress=False, example=entry.example, precision=entry.precision,
        calib_data=entry.calib_data, calib_method=entry.calib_method, shapes=shapes)


def run_entry(entry: GoldenEntry) -> GoldenOutcome:
    """Compile ``entry`` in memory through the compile flow's stages (load, passes, parity, the
    partition stage, the engine when asked), exactly as ``trtcompile compile`` would, and compare
    what it produced with what it expects. Errors of the entry are recorded in the outcome, not
    raised."""
    from trtcompile.flow import Compilation

    outcome = GoldenOutcome(entry=entry)
    started = time.perf_counter()
    try:
        compilation = Compilation(entry.path, compile_options(entry))
        loaded = compilation.load()
        optimized, pipeline_report = compilation.optimize()
        outcome.digest = ir.model_digest(optimized)
        outcome.pipeline_report = pipeline_report
        outcome.layers_input = pipeline_report.layers_before
        outcome.layers = pipeline_report.layers_after
        outcome.passes = pipeline_report.layers_after_pass()
        outcome.histogram = dict(pipeline_report.histogram_after)
        feeds = load_parity_data(entry.data, loaded.model, entry.name) if entry.data else None
        outcome.parity = compilation.check_parity(feeds)
        if compilation.error is None and entry.engine:
            outcome.partition = compilation.partition()
            outcome.engine = compilation.build_engine()
            if compilation.error is not None:
                raise compilation.error
            if outcome.partition is not None:
                outcome.engine_compute_layers = sum(
                    s.engine.compute_layers for s in outcome.partition.segments if s.engine)
            else:
                if not outcome.engine.layer_report_available:
                    raise CheckFailed("the engine was built but the builder reported no layers, "
                                      "so its compute layers cannot be counted")
                outcome.engine_compute_layers = outcome.engine.compute_layers
    except TrtcompileError as exc:
        outcome.error = exc
    outcome.seconds = time.perf_counter() - started
    outcome.mismatches = compare(entry.expect, outcome)
    return outcome


def compare(expect: Expectations, outcome: GoldenOutcome) -> list[Mismatch]:
    """The expectations ``outcome`` does not meet (counts that could not be measured because the
    entry stopped early are not mismatches: the error says why)."""
    mismatches = []
    if outcome.pipeline_report is not None:
        if expect.layers is not None and outcome.layers != expect.layers:
            mismatches.append(Mismatch("layers", expect.layers, outcome.layers))
        for pass_name, expected in expect.passes.items():
            got = outcome.passes.get(pass_name)
            if got != expected:
                mismatches.append(Mismatch(f"passes.{pass_name}", expected, got))
    if expect.engine_compute_layers is not None and outcome.engine_compute_layers is not None \
            and outcome.engine_compute_layers != expect.engine_compute_layers:
        mismatches.append(Mismatch("engine_compute_layers", expect.engine_compute_layers,
                                   outcome.engine_compute_layers))
    return mismatches


def run_manifest(entries: Sequence[GoldenEntry], *, progress: bool = True,
                 on_outcome: Callable[[GoldenOutcome], None] | None = None,
                 workers: int | None = None, ray: str | None = None) -> list[GoldenOutcome]:
    """Run ``entries`` with a progress bar on stderr (off when stderr is not a terminal) and
    return their outcomes in manifest order; ``on_outcome`` sees each outcome as it is ready.

    By default the entries run one after the other in this process. ``workers=N`` runs them in
    N worker processes, ``ray=ADDRESS`` (or ``"local"``) as tasks of a Ray cluster (see
    :mod:`trtcompile.parallel`); the verdicts are the same, but outcomes that come back from
    another process carry the engine's layers without its plan bytes or builder log.
    """
    if ray is not None:
        from trtcompile import parallel

        return parallel.run_ray(entries, ray, workers=workers, progress=progress,
                                on_outcome=on_outcome)
    if workers is not None:
        from trtcompile import parallel

        return parallel.run_local(entries, workers, progress=progress, on_outcome=on_outcome)
    return _run_serial(entries, progress=progress, on_outcome=on_outcome)


def progress_bar(total: int, progress: bool):
    """The golden runs' progress bar over models (tqdm on stderr)."""
    from tqdm import tqdm

    return tqdm(total=total, desc="golden", unit="model", leave=False, dynamic_ncols=True,
                disable=None if progress else True)


def _run_serial(entries: Sequence[GoldenEntry], *, progress: bool,
                on_outcome: Callable[[GoldenOutcome], None] | None) -> list[GoldenOutcome]:
    outcomes = []
    with progress_bar(len(entries), progress) as bar:
        for entry in entries:
            bar.set_postfix_str(entry.name, refresh=True)
            outcome = run_entry(entry)
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
            bar.update(1)
    return outcomes


def exit_code(outcomes: Iterable[GoldenOutcome]) -> int:
    """0 when every entry passed; 2 when an entry's input was unusable (a model that does not
    load, data that does not fit); otherwise 1 when anything regressed or failed."""
    outcomes = list(outcomes)
    if any(isinstance(o.error, InputError) for o in outcomes):
        return InputError.exit_code
    return 0 if all(o.passed for o in outcomes) else CheckFailed.exit_code


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _vs(expected: int | None, got: int | None) -> str:
    if got is None:
        return "-" if expected is None else f"- (expected {expected})"
    if expected is None or expected == got:
        return str(got)
    return f"{got} (expected {expected})"


def _passes_cell(outcome: GoldenOutcome) -> str:
    expected = outcome.entry.expect.passes
    if not expected:
        return "-"
    wrong = [m for m in outcome.mismatches if m.key.startswith("passes.")]
    if outcome.pipeline_report is None:
        return "-"
    if not wrong:
        return f"{len(expected)} ok"
    if len(wrong) == 1:
        return f"{wrong[0].key[len('passes.'):]} {_vs(wrong[0].expected, wrong[0].got)}"
    return f"{len(wrong)} of {len(expected)} differ"


def format_table(outcomes: Sequence[GoldenOutcome]) -> list[str]:
    """One row per entry: layers and engine compute layers (got, and the expectation when they
    differ), the passes checked, the largest parity error, the time and the verdict."""
    from trtcompile.report import format_seconds
    from trtcompile.report import format_table as table

    header = ("model", "layers", "engine layers", "passes", "parity max_abs", "time", "result")
    rows = []
    for o in outcomes:
        expect = o.entry.expect
        error = o.max_abs_error
        rows.append((
            o.entry.name, _vs(expect.layers, o.layers),
            _vs(expect.engine_compute_layers, o.engine_compute_layers) if o.entry.engine else "-",
            _passes_cell(o), "-" if error is None else f"{error:.3g}",
            format_seconds(o.seconds), o.status))
    return table(header, rows, (False, True, True, False, True, True, False))


def summary_line(outcomes: Sequence[GoldenOutcome]) -> str:
    """``3 models: 2 passed, 1 regressed (inception)``."""
    failed = [o for o in outcomes if not o.passed]
    count = f"{len(outcomes)} model{'s' if len(outcomes) != 1 else ''}"
    if not failed:
        return f"{count}: all passed"
    return (f"{count}: {len(outcomes) - len(failed)} passed, {len(failed)} failed "
            f"({', '.join(o.entry.name for o in failed)})")


def junit_xml(outcomes: Sequence[GoldenOutcome], suite_name: str) -> bytes:
    """A JUnit XML report: one ``testcase`` per entry; a regression or a parity failure is a
    ``failure``, an entry that could not run an ``error``; the explanation is the element text."""
    failures = sum(1 for o in outcomes if o.error is None and not o.passed)
    errors = sum(1 for o in outcomes if o.error is not None)
    total_seconds = f"{sum(o.seconds for o in outcomes):.3f}"
    suites = ElementTree.Element("testsuites", name="trtcompile golden", tests=str(len(outcomes)),
                                 failures=str(failures), errors=str(errors), time=total_seconds)
    suite = ElementTree.SubElement(suites, "testsuite", name=suite_name, tests=str(len(outcomes)),
                                   failures=str(failures), errors=str(errors), skipped="0",
                                   time=total_seconds)
    for o in outcomes:
        case = ElementTree.SubElement(suite, "testcase", classname=f"golden.{suite_name}",
                                      name=o.entry.name, time=f"{o.seconds:.3f}")
        properties = ElementTree.SubElement(case, "properties")
        for key, value in (("source", o.entry.source), ("pipeline", o.entry.pipeline),
                           ("precision", o.entry.precision), ("layers", o.layers),
                           ("engine_compute_layers", o.engine_compute_layers),
                           ("max_abs_error", o.max_abs_error)):
            if value is not None:
                ElementTree.SubElement(properties, "property", name=key, value=str(value))
        if not o.passed:
            problems = o.problems()
            tag = "error" if o.error is not None else "failure"
            kind = type(o.error).__name__ if o.error is not None else o.status.lower()
            element = ElementTree.SubElement(case, tag, message="; ".join(problems), type=kind)
            element.text = o.explain()
    ElementTree.indent(suites)
    return ElementTree.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n"


# --------------------------------------------------------------------------------------------
# Updating expectations
# --------------------------------------------------------------------------------------------


def update_manifest(manifest: Manifest, outcomes: Sequence[GoldenOutcome]) -> list[str]:
    """Rewrite the expected counts of the entries in ``outcomes`` with what they measured, keeping
    every comment, key order and formatting of the file; return one line per changed value.

    ``layers`` is always written; ``engine_compute_layers`` when the engine was built; the
    ``passes`` listed stay those listed (their counts updated). Entries that stopped with an error
    are left alone. Nothing is written when nothing changed.
    """
    import tomlkit

    text = manifest.path.read_text(encoding="utf-8")
    document = tomlkit.parse(text)
    tables = document["model"]
    changes: list[str] = []

    def set_count(container, key: str, label: str, value: int | None) -> None:
        """Write ``value`` under ``key`` if it differs, recording ``label: old -> new``."""
        if value is None:
            return
        previous = container.get(key)
        if previous == value:
            return
        container[key] = value
        changes.append(f"{label} {previous if previous is not None else '(none)'} -> {value}")

    for outcome in outcomes:
        entry = outcome.entry
        if outcome.error is not None or outcome.pipeline_report is None:
            continue
        table = tables[entry.index]
        if "expect" not in table:
            table["expect"] = tomlkit.table()
        expect = table["expect"]
        set_count(expect, "layers", f"{entry.name}: layers", outcome.layers)
        if entry.engine:
            set_count(expect, "engine_compute_layers", f"{entry.name}: engine_compute_layers",
                      outcome.engine_compute_layers)
        if "passes" in expect:
            for pass_name in list(expect["passes"]):
                set_count(expect["passes"], pass_name, f"{entry.name}: passes.{pass_name}",
                          outcome.passes.get(pass_name))
    if changes:
        ir.atomic_write_bytes(manifest.path, tomlkit.dumps(document).encode("utf-8"))
    return changes


__all__ = ["Expectations", "GoldenEntry", "GoldenOutcome", "Manifest", "Mismatch", "compare",
           "compile_options", "exit_code", "format_table", "junit_xml", "load_manifest",
           "load_parity_data", "run_entry", "run_manifest", "summary_line", "update_manifest"]
