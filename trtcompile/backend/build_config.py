"""Turning :class:`~trtcompile.backend.options.BuildOptions` into TensorRT builder settings, and
refusing, before any work, an option the installed TensorRT does not have.

Standard TensorRT and TensorRT-RTX spell most controls alike; where one lacks a control the
attribute is probed (``hasattr``) and :func:`check_supported` refuses the option in one line naming
the TensorRT in use (InputError, exit 2), so nothing is loaded or written for a build that cannot
happen.
"""

from __future__ import annotations

import types
from typing import Any

from trtcompile.backend.options import HARDWARE_COMPATIBILITY, TILING_LEVELS, BuildOptions
from trtcompile.errors import InputError, UnsupportedPrecision


def tensorrt_name(trt: types.ModuleType) -> str:
    """``TensorRT-RTX 1.7.1.116`` / ``TensorRT 10.8.0.43``: the TensorRT in use, for messages."""
    label = "TensorRT-RTX" if trt.__name__ == "tensorrt_rtx" else "TensorRT"
    return f"{label} {getattr(trt, '__version__', '?')} ({trt.__name__})"


def _flag(trt: types.ModuleType, name: str) -> Any:
    return trt.BuilderFlag.__members__.get(name)


def _capability_member(trt: types.ModuleType, text: str) -> Any:
    major, minor = text.split(".")
    return getattr(trt, "ComputeCapability").__members__.get(f"SM{major}{minor}")


def unsupported(trt: types.ModuleType, options: BuildOptions) -> list[str]:
    """What of ``options`` the TensorRT module ``trt`` cannot do, one phrase per option."""
    config = trt.IBuilderConfig
    problems = []
    if options.optimization_level is not None and not hasattr(config, "builder_optimization_level"):
        problems.append("--builder-optimization-level: no builder optimization levels")
    if options.tiling_level is not None and not (
            hasattr(config, "tiling_optimization_level") and hasattr(trt, "TilingOptimizationLevel")):
        problems.append("--tiling-optimization-level: no tiling optimization levels")
    if options.compute_capabilities:
        if not (hasattr(config, "set_compute_capability") and hasattr(trt, "ComputeCapability")):
            problems.append("--compute-capability: it builds for the GPU it runs on (per-target "
                            "builds are TensorRT-RTX's)")
        else:
            members = [m for m in trt.ComputeCapability.__members__ if m.startswith("SM")]
            for text in options.compute_capabilities:
                if _capability_member(trt, text) is None:
                    known = ", ".join(f"{m[2:-1]}.{m[-1]}" for m in members)
                    problems.append(f"--compute-capability {text}: not a target it builds for "
                                    f"(targets: {known})")
    if options.hardware_compatibility is not None:
        member = HARDWARE_COMPATIBILITY[options.hardware_compatibility]
        levels = getattr(trt, "HardwareCompatibilityLevel", None)
        if levels is None or member not in levels.__members__:
            problems.append(f"--hardware-compatibility-level {options.hardware_compatibility}: "
                            "no such level")
    wanted_flags = [("--version-compatible", options.version_compatible, "VERSION_COMPATIBLE"),
                    ("--refittable", options.refittable, "REFIT"),
                    ("--strip-weights", options.strip_weights, "STRIP_PLAN"),
                    ("--weight-streaming-budget", options.weight_streaming_budget is not None,
                     "WEIGHT_STREAMING")]
    for flag, wanted, member in wanted_flags:
        if wanted and _flag(trt, member) is None:
            problems.append(f"{flag}: no BuilderFlag.{member}")
    if options.timing_cache is not None and not hasattr(config, "create_timing_cache"):
        problems.append("--timing-cache: no builder cache")
    if options.plugin_libraries and not hasattr(trt.get_plugin_registry(), "load_library"):
        problems.append("--plugin-library: its plugin registry loads no library")
    if options.plugin_modules and not (hasattr(trt, "IPluginCreatorV3One")
                                       or hasattr(trt, "IPluginCreator")):
        problems.append("--plugin-module: no Python plugin creators")
    if options.strongly_typed and \
            "STRONGLY_TYPED" not in trt.NetworkDefinitionCreationFlag.__members__:
        problems.append("--stronglyTyped: no strongly typed networks")
    return problems


def precision_problem(trt: types.ModuleType, precision: str, options: BuildOptions) -> str | None:
    """Why the TensorRT module ``trt`` cannot build a ``precision`` graph with ``options`` (None
    when it can). BF16 is built from the graph's own types: TensorRT-RTX has no
    ``BuilderFlag.BF16`` and needs none in a strongly typed network (measured on 1.7: bfloat16
    Conv, MatMul, Gemm, LayerNormalization, elementwise layers build with no flag set)."""
    if precision.lower() != "bf16":
        return None
    if "BF16" not in trt.DataType.__members__:
        return "it has no BF16 data type"
    if "STRONGLY_TYPED" not in trt.NetworkDefinitionCreationFlag.__members__:
        return "it builds no strongly typed networks, where the graph's bfloat16 types decide"
    if options.strongly_typed is False:
        return ("a weakly typed network (--no-strongly-typed) takes no bfloat16 types from the "
                "graph; drop --no-strongly-typed")
    return None


def check_precision(trt: types.ModuleType, precision: str, options: BuildOptions) -> None:
    """UnsupportedPrecision (exit code 6) in one line when ``trt`` cannot build ``precision``."""
    problem = precision_problem(trt, precision, options)
    if problem is not None:
        raise UnsupportedPrecision(f"--precision {precision.lower()} cannot be built with "
                                   f"{tensorrt_name(trt)}: {problem} (or compile with "
                                   "--no-engine, or --precision fp16)")


def check_supported(trt: types.ModuleType, options: BuildOptions) -> None:
    """InputError naming the TensorRT in use and the first option it does not have."""
    problems = unsupported(trt, options)
    if problems:
        more = f" (and {len(problems) - 1} more: {'; '.join(problems[1:])})" if len(problems) > 1 else ""
        raise InputError(f"{problems[0]} in {tensorrt_name(trt)}{more}")


def network_flags(trt: types.ModuleType, strongly_typed: bool | None = None) -> int:
    """Strongly typed networks where supported (the graph decides precision) unless
    ``strongly_typed`` is False; explicit batch on TensorRT 8, where it is not yet the default."""
    members = trt.NetworkDefinitionCreationFlag.__members__
    flags = 0
    if "STRONGLY_TYPED" in members and strongly_typed is not False:
        flags |= 1 << int(members["STRONGLY_TYPED"])
    major = int(str(getattr(trt, "__version__", "10")).split(".")[0] or 10)
    if "EXPLICIT_BATCH" in members and major < 10:
        flags |= 1 << int(members["EXPLICIT_BATCH"])
    return flags


def apply(trt: types.ModuleType, config: Any, options: BuildOptions) -> list[str]:
    """Set the builder config from ``options`` (checked by :func:`check_supported` first); returns
    the builder flags set, by name."""
    check_supported(trt, options)
    if options.optimization_level is not None:
        config.builder_optimization_level = int(options.optimization_level)
    if options.tiling_level is not None:
        config.tiling_optimization_level = trt.TilingOptimizationLevel.__members__[
            options.tiling_level.upper()]
    if options.compute_capabilities:
        config.num_compute_capabilities = len(options.compute_capabilities)
        for index, text in enumerate(options.compute_capabilities):
            config.set_compute_capability(_capability_member(trt, text), index)
    if options.hardware_compatibility is not None:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.__members__[
            HARDWARE_COMPATIBILITY[options.hardware_compatibility]]
    flags = []
    if options.version_compatible:
        flags.append("VERSION_COMPATIBLE")
    if options.refittable:
        flags.append("REFIT")
    if options.strip_weights:
        flags.append("STRIP_PLAN")
        # trtexec's --stripWeights: without --refit, strip the weights that a refit with the same
        # weights restores (REFIT_IDENTICAL); with it, every refittable weight.
        if not options.refittable:
            flags.append("REFIT_IDENTICAL" if _flag(trt, "REFIT_IDENTICAL") is not None else "REFIT")
    if options.weight_streaming_budget is not None:
        flags.append("WEIGHT_STREAMING")
    for name in flags:
        config.set_flag(_flag(trt, name))
    return flags


#: Builder failures of known causes -> what to say after TensorRT's own words.
BUILD_FAILURE_HINTS = (
    (("REFIT", "REFIT_IDENTICAL", "STRIP_PLAN"), "CUDA_SUCCESS",
     "its builder compiles refittable weights on a GPU, and none is available here"),
    (("VERSION_COMPATIBLE",), "libnvinfer_lean",
     "a version-compatible plan embeds TensorRT's lean runtime, whose library is not installed"),
)


def failure_hint(flags: list[str], message: str) -> str:
    """Why a build with ``flags`` failed with ``message``, when the cause is known ("" if not)."""
    for wanted, marker, hint in BUILD_FAILURE_HINTS:
        if marker in message and any(flag in flags for flag in wanted):
            return hint
    return ""


__all__ = ["BUILD_FAILURE_HINTS", "TILING_LEVELS", "apply", "check_precision", "check_supported",
           "failure_hint", "network_flags", "precision_problem", "tensorrt_name", "unsupported"]
