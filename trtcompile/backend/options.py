"""The engine-build controls: one frozen :class:`BuildOptions` the compile carries (its
``build`` field) and every engine of the compile is built with.

Each field has a flag of ``trtcompile compile`` and trtexec's spelling beside it (docs/backend.md);
the same names are ``Converter`` arguments and keys of a golden manifest's ``[model.build]`` table.
:meth:`BuildOptions.validate` checks the values alone (InputError naming the flag);
:func:`trtcompile.backend.capabilities.check_supported` checks them against the installed
TensorRT before anything is loaded or written.

Nothing heavy is imported here: the command line parses these values before loading anything.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trtcompile import checks
from trtcompile.errors import InputError

#: ``--builder-optimization-level`` range (trtexec's ``--builderOptimizationLevel``; 3 is
#: TensorRT's default).
OPTIMIZATION_LEVELS = range(0, 6)
#: ``--tiling-optimization-level`` names, by TensorRT's ``TilingOptimizationLevel`` value.
TILING_LEVELS = ("none", "fast", "moderate", "full")
#: ``--hardware-compatibility-level`` values -> TensorRT's ``HardwareCompatibilityLevel`` member
#: (trtexec spells them none, ampere+, sameComputeCapability).
HARDWARE_COMPATIBILITY = {"none": "NONE", "ampere+": "AMPERE_PLUS",
                          "same-compute-capability": "SAME_COMPUTE_CAPABILITY"}
_HARDWARE_ALIASES = {"ampere_plus": "ampere+", "ampereplus": "ampere+",
                     "samecomputecapability": "same-compute-capability",
                     "same_compute_capability": "same-compute-capability"}
#: Precisions ``--layerPrecisions``/``--layerOutputTypes`` may name -> ONNX element type name.
LAYER_PRECISIONS = {"fp32": "FLOAT", "fp16": "FLOAT16", "bf16": "BFLOAT16"}


@dataclass(frozen=True)
class BuildOptions:
    """How TensorRT builds the engine (the defaults are TensorRT's own)."""

    #: Builder optimization level 0-5 (``--builder-optimization-level``; None: TensorRT's, 3).
    optimization_level: int | None = None
    #: Tiling optimization level: none, fast, moderate or full (``--tiling-optimization-level``).
    tiling_level: str | None = None
    #: GPUs the plan is built for, as compute capabilities ``("8.6", "8.9", "12.0")``
    #: (``--compute-capability``; TensorRT-RTX only; empty: TensorRT's default targets).
    compute_capabilities: tuple[str, ...] = ()
    #: none, ampere+ or same-compute-capability (``--hardware-compatibility-level``).
    hardware_compatibility: str | None = None
    #: A plan later TensorRT versions can run (``--version-compatible``).
    version_compatible: bool = False
    #: Builder cache file, created when missing and reused when present (``--timing-cache``): the
    #: timing cache of TensorRT, the compilation cache TensorRT-RTX's builder serializes.
    timing_cache: str | Path | None = None
    #: Weights can be replaced in the built plan (``--refittable``, trtexec ``--refit``).
    refittable: bool = False
    #: Leave the refittable weights out of the plan (``--strip-weights``): refill it from the
    #: ONNX model with ``trtcompile refit``.
    strip_weights: bool = False
    #: Plugin libraries loaded into TensorRT's plugin registry (``--plugin-library``).
    plugin_libraries: tuple[str, ...] = ()
    #: Python files registering plugin creators (``--plugin-module``).
    plugin_modules: tuple[str, ...] = ()
    #: Strongly typed network: None where TensorRT supports it (the default), True required,
    #: False weakly typed (``--stronglyTyped`` / ``--no-strongly-typed``).
    strongly_typed: bool | None = None
    #: Per-node compute precision, ``((node_pattern, precision), ...)`` in trtexec's order (later
    #: ones win; one ``*`` wildcard per name) (``--layerPrecisions``).
    layer_precisions: tuple[tuple[str, str], ...] = ()
    #: Per-node output types, ``((node_pattern, (type, ...)), ...)`` (``--layerOutputTypes``).
    layer_output_types: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: Weights kept on the device while running, in bytes (``--weight-streaming-budget``); builds
    #: a weight-streaming plan. None: not streamed.
    weight_streaming_budget: int | None = None

    @property
    def is_default(self) -> bool:
        """True when nothing differs from TensorRT's defaults."""
        return self == BuildOptions()

    def validate(self) -> BuildOptions:
        """Check every value alone (InputError naming the flag); returns self."""
        if self.optimization_level is not None:
            checks.count("--builder-optimization-level", self.optimization_level, minimum=0,
                         maximum=OPTIMIZATION_LEVELS[-1])
        if self.tiling_level is not None and self.tiling_level not in TILING_LEVELS:
            raise InputError(f"--tiling-optimization-level {self.tiling_level!r}: expected "
                             f"{', '.join(TILING_LEVELS)} or 0-3")
        for capability in self.compute_capabilities:
            parse_compute_capability(capability)
        if self.hardware_compatibility is not None \
                and self.hardware_compatibility not in HARDWARE_COMPATIBILITY:
            raise InputError(f"--hardware-compatibility-level {self.hardware_compatibility!r}: "
                             f"expected {', '.join(HARDWARE_COMPATIBILITY)}")
        if self.strip_weights and self.weight_streaming_budget is not None:
            raise InputError("--strip-weights and --weight-streaming-budget cannot be combined: "
                             "a stripped plan has no weights to stream")
        if self.weight_streaming_budget is not None and self.weight_streaming_budget < -1:
            raise InputError(f"--weight-streaming-budget {self.weight_streaming_budget}: expected "
                             "bytes >= 0, or -1 for TensorRT's automatic budget")
        for flag, paths in (("--plugin-library", self.plugin_libraries),
                            ("--plugin-module", self.plugin_modules)):
            for path in paths:
                if not Path(path).is_file():
                    raise InputError(f"{flag} {path}: no such file")
        if self.timing_cache is not None and Path(self.timing_cache).is_dir():
            raise InputError(f"--timing-cache {self.timing_cache} is a folder; give a file path")
        if self.strongly_typed is False and (self.layer_precisions or self.layer_output_types):
            raise InputError("--layerPrecisions/--layerOutputTypes are written into the graph as "
                             "casts, which only a strongly typed network obeys: drop "
                             "--no-strongly-typed")
        for _, precision in self.layer_precisions:
            _check_precision("--layerPrecisions", precision)
        for _, types in self.layer_output_types:
            for precision in types:
                _check_precision("--layerOutputTypes", precision)
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, every field (report.json's ``engine.build_options``)."""
        record = dataclasses.asdict(self)
        record["timing_cache"] = None if self.timing_cache is None else str(self.timing_cache)
        record["layer_precisions"] = [list(pair) for pair in self.layer_precisions]
        record["layer_output_types"] = [[name, list(types)]
                                        for name, types in self.layer_output_types]
        for key in ("compute_capabilities", "plugin_libraries", "plugin_modules"):
            record[key] = [str(value) for value in record[key]]
        return record

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], where: str = "build") -> BuildOptions:
        """Options from a mapping of field names (a manifest's ``[model.build]`` table, Converter
        arguments); strings in trtexec's syntax are accepted for the precision fields."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"{where}: unknown build option(s) {', '.join(unknown)} (known: "
                             f"{', '.join(sorted(known))})")
        fields = dict(values)
        for key in ("compute_capabilities", "plugin_libraries", "plugin_modules"):
            if isinstance(fields.get(key), str):
                fields[key] = tuple(v.strip() for v in fields[key].split(",") if v.strip())
            elif key in fields:
                fields[key] = tuple(str(v) for v in fields[key])
        if isinstance(fields.get("layer_precisions"), str):
            fields["layer_precisions"] = parse_layer_precisions(fields["layer_precisions"])
        elif "layer_precisions" in fields:
            fields["layer_precisions"] = tuple((str(n), str(p)) for n, p in
                                               dict(fields["layer_precisions"]).items())
        if isinstance(fields.get("layer_output_types"), str):
            fields["layer_output_types"] = parse_layer_output_types(fields["layer_output_types"])
        elif "layer_output_types" in fields:
            fields["layer_output_types"] = tuple(
                (str(n), tuple(t.split("+")) if isinstance(t, str) else tuple(t))
                for n, t in dict(fields["layer_output_types"]).items())
        if isinstance(fields.get("tiling_level"), int):
            fields["tiling_level"] = tiling_level(str(fields["tiling_level"]))
        return cls(**fields).validate()


def _check_precision(flag: str, precision: str) -> None:
    if precision not in LAYER_PRECISIONS:
        raise InputError(f"{flag}: precision {precision!r} is not one a graph cast can give "
                         f"(use {', '.join(LAYER_PRECISIONS)})")


def parse_compute_capability(text: str) -> tuple[int, int]:
    """``"8.9"`` (or ``"89"``, ``"sm_89"``) -> ``(8, 9)``; InputError otherwise."""
    value = str(text).strip().lower().removeprefix("sm_").removeprefix("sm")
    major, dot, minor = value.partition(".")
    if not dot and value.isdigit() and len(value) in (2, 3):
        major, minor = value[:-1], value[-1]
    if not (major.isdigit() and minor.isdigit() and len(minor) == 1):
        raise InputError(f"--compute-capability {text!r}: expected MAJOR.MINOR such as 8.9 or "
                         "12.0")
    return int(major), int(minor)


def compute_capability_text(major: int, minor: int) -> str:
    """``(8, 9)`` -> ``"8.9"``."""
    return f"{major}.{minor}"


def parse_compute_capabilities(values: Sequence[str]) -> tuple[str, ...]:
    """``--compute-capability 8.6,8.9 --compute-capability 12.0`` -> ``("8.6", "8.9", "12.0")``."""
    found: list[str] = []
    for value in values:
        for item in str(value).split(","):
            if item.strip():
                text = compute_capability_text(*parse_compute_capability(item))
                if text not in found:
                    found.append(text)
    return tuple(found)


def tiling_level(text: str) -> str:
    """``--tiling-optimization-level`` value: a name or trtexec's number 0-3."""
    value = str(text).strip().lower()
    if value.isdigit() and int(value) < len(TILING_LEVELS):
        return TILING_LEVELS[int(value)]
    if value not in TILING_LEVELS:
        raise InputError(f"--tiling-optimization-level {text!r}: expected "
                         f"{', '.join(TILING_LEVELS)} or 0-3")
    return value


def hardware_compatibility(text: str) -> str:
    """``--hardware-compatibility-level`` value, in either spelling (trtexec's
    ``sameComputeCapability``, ``ampere+``)."""
    value = str(text).strip().lower()
    value = _HARDWARE_ALIASES.get(value, value)
    if value not in HARDWARE_COMPATIBILITY:
        raise InputError(f"--hardware-compatibility-level {text!r}: expected "
                         f"{', '.join(HARDWARE_COMPATIBILITY)}")
    return value


def _spec_items(flag: str, text: str) -> list[tuple[str, str]]:
    """trtexec's ``name:value[,name:value]`` (the value after the last colon, so node names may
    hold colons)."""
    items = []
    for item in str(text).split(","):
        if not item.strip():
            continue
        name, sep, value = item.strip().rpartition(":")
        if not sep or not name or not value:
            raise InputError(f"{flag} {item!r}: expected NODE:TYPE (trtexec's syntax, e.g. "
                             "conv1:fp16,*:fp32)")
        if name.count("*") > 1:
            raise InputError(f"{flag} {name!r}: at most one '*' wildcard per name")
        items.append((name, value.strip().lower()))
    return items


def parse_layer_precisions(text: str | Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``--layerPrecisions conv1:fp16,*:fp32`` (repeatable) -> ``(("conv1", "fp16"), ("*", "fp32"))``."""
    texts = [text] if isinstance(text, str) else list(text)
    pairs = tuple(pair for value in texts for pair in _spec_items("--layerPrecisions", value))
    for _, precision in pairs:
        _check_precision("--layerPrecisions", precision)
    return pairs


def parse_layer_output_types(text: str | Sequence[str]
                             ) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``--layerOutputTypes split:fp16+fp32`` -> ``(("split", ("fp16", "fp32")),)`` (one type per
    output, ``+``-separated, as trtexec)."""
    texts = [text] if isinstance(text, str) else list(text)
    pairs = []
    for value in texts:
        for name, types in _spec_items("--layerOutputTypes", value):
            split = tuple(t.strip() for t in types.split("+"))
            for precision in split:
                _check_precision("--layerOutputTypes", precision)
            pairs.append((name, split))
    return tuple(pairs)


def constraint_for(node: str, constraints: Sequence[tuple[str, Any]]) -> Any:
    """The value the last matching pattern gives ``node`` (exact names and one-``*`` globs, read
    left to right as trtexec does), or None."""
    found = None
    for pattern, value in constraints:
        if pattern == node or ("*" in pattern and fnmatch.fnmatchcase(node, pattern)):
            found = value
    return found


__all__ = ["HARDWARE_COMPATIBILITY", "LAYER_PRECISIONS", "OPTIMIZATION_LEVELS", "TILING_LEVELS",
           "BuildOptions", "compute_capability_text", "constraint_for", "hardware_compatibility",
           "parse_compute_capabilities", "parse_compute_capability", "parse_layer_output_types",
           "parse_layer_precisions", "tiling_level"]
