"""The engine-build flags of ``trtcompile compile`` (with trtexec's spellings) and the commands that
work on plan files: ``trtcompile refit`` and ``trtcompile inspect``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from trtcompile import checks
from trtcompile.errors import InputError


def add_build_flags(compile_: argparse.ArgumentParser, flag_value) -> None:
    """The ``TensorRT build options`` group of ``trtcompile compile`` (docs/backend.md)."""
    build = _LazyOptions()
    group = compile_.add_argument_group(
        "TensorRT build options", "how TensorRT builds the engine; trtexec's spellings work too "
        "(see docs/backend.md)")
    group.add_argument("--builder-optimization-level", "--builderOptimizationLevel",
                       dest="optimization_level", default=None, metavar="N",
                       type=flag_value(int, lambda f, v: checks.count(f, v, maximum=5),
                                       "--builder-optimization-level", "an integer"),
                       help="builder optimization level 0-5 (TensorRT's default 3)")
    group.add_argument("--tiling-optimization-level", "--tilingOptimizationLevel",
                       dest="tiling_level", default=None, metavar="LEVEL",
                       type=flag_value(build.tiling_level, lambda f, v: v,
                                       "--tiling-optimization-level", "a level"),
                       help="tiling optimization: none, fast, moderate, full (or 0-3)")
    group.add_argument("--compute-capability", "--computeCapabilities", action="append",
                       default=[], dest="compute_capabilities", metavar="CC[,CC]",
                       help="GPUs to build for, e.g. 8.6,8.9,12.0 (TensorRT-RTX; repeatable)")
    group.add_argument("--hardware-compatibility-level", "--hardwareCompatibilityLevel",
                       dest="hardware_compatibility", default=None, metavar="LEVEL",
                       type=flag_value(build.hardware_compatibility, lambda f, v: v,
                                       "--hardware-compatibility-level", "a level"),
                       help="none, ampere+ or same-compute-capability (trtexec: "
                            "sameComputeCapability)")
    group.add_argument("--version-compatible", "--versionCompatible", "--vc",
                       dest="version_compatible", action="store_true",
                       help="a plan later TensorRT versions can run")
    group.add_argument("--timing-cache", "--timingCacheFile", dest="timing_cache", default=None,
                       metavar="FILE", help="builder cache: created when missing, reused when "
                                            "present, reported (hit or miss, bytes)")
    group.add_argument("--refittable", "--refit", dest="refittable", action="store_true",
                       help="a plan whose weights 'trtcompile refit' can replace")
    group.add_argument("--strip-weights", "--stripWeights", dest="strip_weights",
                       action="store_true",
                       help="leave the refittable weights out of the plan; refill it from "
                            "OUT/optimized.onnx with 'trtcompile refit'")
    group.add_argument("--plugin-library", "--staticPlugins", "--dynamicPlugins",
                       dest="plugin_libraries", action="append", default=[], metavar="LIB",
                       help="plugin library to load (repeatable)")
    group.add_argument("--plugin-module", dest="plugin_modules", action="append", default=[],
                       metavar="FILE", help="Python file whose plugin_creators(trt) returns "
                                            "plugin creators to register (repeatable)")
    group.add_argument("--stronglyTyped", "--strongly-typed", dest="strongly_typed",
                       action="store_const", const=True, default=None,
                       help="require a strongly typed network (the default where TensorRT has it)")
    group.add_argument("--no-strongly-typed", dest="strongly_typed", action="store_const",
                       const=False, help="a weakly typed network")
    group.add_argument("--layerPrecisions", "--layer-precisions", dest="layer_precisions",
                       action="append", default=[], metavar="SPEC",
                       help="per-node compute precision, trtexec's NODE:TYPE[,NODE:TYPE] "
                            "(fp32, fp16, bf16; one '*' per name; later ones win)")
    group.add_argument("--layerOutputTypes", "--layer-output-types", dest="layer_output_types",
                       action="append", default=[], metavar="SPEC",
                       help="per-node output types, NODE:TYPE[+TYPE...][,...] (one per output)")
    group.add_argument("--weight-streaming-budget", "--weightStreamingBudget",
                       dest="weight_streaming_budget", default=None, metavar="SIZE",
                       type=flag_value(_budget, lambda f, v: v, "--weight-streaming-budget",
                                       "a size"),
                       help="build a weight-streaming plan; bytes of weights kept on the GPU "
                            "(K/M/G suffixes; -1: TensorRT's automatic budget)")
    group.add_argument("--allowWeightStreaming", dest="weight_streaming_budget",
                       action="store_const", const=-1,
                       help="--weight-streaming-budget -1 (trtexec's spelling)")


class _LazyOptions:
    """The value parsers of :mod:`trtcompile.backend.options`, imported when a flag is given:
    building the parser (``--help``) imports nothing heavy."""

    def __getattr__(self, name: str):
        def convert(text: str):
            from trtcompile.backend import options

            return getattr(options, name)(text)

        convert.__name__ = name
        return convert


def _budget(text: str) -> int:
    return -1 if text.strip() in ("-1", "auto") else checks.parse_size(
        "--weight-streaming-budget", text)


def build_options(args: argparse.Namespace):
    """The :class:`~trtcompile.backend.options.BuildOptions` the flags describe (checked)."""
    from trtcompile.backend import options as build

    return build.BuildOptions(
        optimization_level=args.optimization_level, tiling_level=args.tiling_level,
        compute_capabilities=build.parse_compute_capabilities(args.compute_capabilities),
        hardware_compatibility=args.hardware_compatibility,
        version_compatible=args.version_compatible, timing_cache=args.timing_cache,
        refittable=args.refittable, strip_weights=args.strip_weights,
        plugin_libraries=tuple(args.plugin_libraries), plugin_modules=tuple(args.plugin_modules),
        strongly_typed=args.strongly_typed,
        layer_precisions=build.parse_layer_precisions(args.layer_precisions),
        layer_output_types=build.parse_layer_output_types(args.layer_output_types),
        weight_streaming_budget=args.weight_streaming_budget).validate()


# --------------------------------------------------------------------------------------------
# refit, inspect
# --------------------------------------------------------------------------------------------


def add_plan_commands(commands) -> None:
    """The ``trtcompile refit`` and ``trtcompile inspect`` subcommands."""
    refit = commands.add_parser(
        "refit", help="put an ONNX model's weights into a refittable or stripped plan",
        description="Refit ENGINE (built with --refittable or --strip-weights) with the weights "
                    "of MODEL.onnx and write the whole plan to -o. Needs the TensorRT that "
                    "built ENGINE and a GPU it runs on (TensorRT refits a deserialized engine).")
    refit.add_argument("engine", metavar="ENGINE", help="the plan to refit")
    refit.add_argument("model", metavar="MODEL.onnx",
                       help="the ONNX model holding the weights (OUT/optimized.onnx of the "
                            "compile that built ENGINE)")
    refit.add_argument("-o", "--output", required=True, metavar="ENGINE2",
                       help="where to write the refitted plan")
    refit.set_defaults(handler=run_refit)

    inspect = commands.add_parser(
        "inspect", help="layers, bindings, profiles and build options of a plan file",
        description="Describe ENGINE (trtexec --loadEngine ... --dumpLayerInfo): the TensorRT "
                    "version and targets from its header; layers, bindings and profiles where "
                    "TensorRT can deserialize it here; build options and the builder's layer "
                    "report from the report.json of the compile that wrote it, when it sits "
                    "beside the plan. Says what could not be read and why.")
    inspect.add_argument("engine", metavar="ENGINE", help="a plan file (any TensorRT build)")
    inspect.add_argument("--json", action="store_true", help="print the description as JSON")
    inspect.set_defaults(handler=run_inspect)


def _read_plan(path_text: str) -> bytes:
    path = Path(path_text)
    if not path.is_file():
        raise InputError(f"{path}: no such plan file")
    return path.read_bytes()


def run_refit(args: argparse.Namespace) -> int:
    """``trtcompile refit``: refit ENGINE with MODEL.onnx's weights, write ENGINE2."""
    from trtcompile import ir
    from trtcompile.backend.refit import refit_plan
    from trtcompile.flow.outputs import check_output_location

    plan = _read_plan(args.engine)
    output = Path(args.output)
    if output.is_dir():
        raise InputError(f"-o {output} is a folder; give a file path")
    check_output_location(output.parent, None, None)
    refitted = refit_plan(plan, args.model)
    ir.atomic_write_bytes(output, refitted)
    print(f"wrote {output} ({len(refitted)} bytes, weights of {args.model})")
    return 0


def describe_plan(path_text: str) -> dict[str, Any]:
    """Everything ``trtcompile inspect`` says about a plan file, as a dict."""
    import hashlib

    from trtcompile.backend.plan import inspect_plan

    plan = _read_plan(path_text)
    record = {"file": path_text, **inspect_plan(plan)}
    digest = hashlib.sha256(plan).hexdigest()
    report_path = Path(path_text).parent / "report.json"
    record["recorded"] = None
    if report_path.is_file():
        try:
            engine = json.loads(report_path.read_text()).get("engine") or {}
        except (OSError, ValueError):
            engine = {}
        if engine.get("plan_sha256") == digest:
            record["recorded"] = {
                "report": str(report_path), "backend": engine.get("backend"),
                "version": engine.get("version"), "build_options": engine.get("build_options"),
                "plan_properties": engine.get("plan_properties"), "cache": engine.get("cache"),
                "profiles": engine.get("profiles"),
                "layers": [{k: layer.get(k) for k in ("name", "type", "precision", "onnx_nodes",
                                                      "profile", "compute")}
                           for layer in engine.get("layers", [])]}
    return record


def format_description(record: dict[str, Any]) -> list[str]:
    """The description as lines for the terminal."""
    header = record["header"]
    kind = header["kind"] or "not a TensorRT plan"
    lines = [f"plan: {record['file']} ({record['bytes']} bytes), {kind}"
             + (f" built with version {header['version']}" if header["version"] else "")]
    if header["compute_capabilities"] is not None:
        targets = ", ".join(header["compute_capabilities"]) or "none named"
        if header["unnamed_targets"]:
            targets += f" (and {len(header['unnamed_targets'])} target(s) "\
                       f"{record['tensorrt_in_use']} does not name)"
        lines.append(f"targets (compute capabilities): {targets}")
    if record["deserialized"]:
        engine = record["engine"]
        lines.append(f"engine: refittable {engine['refittable']}, stripped "
                     f"{engine.get('stripped', 'unknown')}, hardware compatibility "
                     f"{engine.get('hardware_compatibility', 'unknown')}, "
                     f"{engine['profiles']} optimization profile(s)")
        for binding in engine["bindings"]:
            lines.append(f"  {binding['mode']:<6} {binding['name']}: {binding['dtype']} "
                         f"{binding['shape']}")
        lines += _layer_table([(l["name"], l["type"] or "-", l["precision"] or "-", "-")
                               for l in engine["layers"]])
    else:
        lines.append(f"engine: not deserialized with {record['tensorrt_in_use']}: "
                     f"{record['why_not']}; layers, bindings and profiles are only in the "
                     "deserialized engine")
    recorded = record.get("recorded")
    if recorded is None:
        lines.append("build options: not recorded (no report.json of this plan beside it)")
        return lines
    options = {k: v for k, v in (recorded["build_options"] or {}).items() if v not in (None, False, [], ())}
    lines.append(f"recorded by the compile that built it ({recorded['report']}): "
                 f"{recorded['backend']} {recorded['version']}")
    lines.append("  build options: " + (", ".join(f"{k}={v}" for k, v in options.items())
                                        or "TensorRT's defaults"))
    properties = recorded.get("plan_properties") or {}
    if properties.get("plugin_layers"):
        lines.append(f"  plugin layers: {', '.join(properties['plugin_layers'])}")
    for index, profile in enumerate(recorded.get("profiles") or []):
        lines.append(f"  profile {index}: " + ", ".join(
            f"{name} {v['min']}..{v['max']}" for name, v in profile.items()))
    if not record["deserialized"]:
        lines.append("  layers as the builder reported them:")
        lines += _layer_table([(l["name"], l["type"], l.get("precision") or "-",
                                ", ".join(l.get("onnx_nodes") or []) or "-")
                               for l in recorded["layers"] if l.get("profile", 0) == 0])
    return lines


def _layer_table(rows: list[tuple[str, str, str, str]]) -> list[str]:
    from trtcompile.report import format_table

    if not rows:
        return ["  (no layers)"]
    return ["  " + line for line in format_table(("layer", "type", "precision", "ONNX nodes"),
                                                 rows, (False,) * 4)]


def run_inspect(args: argparse.Namespace) -> int:
    """``trtcompile inspect``: describe a plan file (table, or --json)."""
    record = describe_plan(args.engine)
    if args.json:
        sys.stdout.write(json.dumps(record, indent=2) + "\n")
    else:
        sys.stdout.write("\n".join(format_description(record)) + "\n")
    return 0


__all__ = ["add_build_flags", "add_plan_commands", "build_options", "describe_plan",
           "format_description", "run_inspect", "run_refit"]
