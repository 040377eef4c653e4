"""Building engines: parse an ONNX model with TensorRT's ONNX parser, add optimization profiles,
build a serialized plan under a log capture, and read the engine's layers from that log.

Networks are strongly typed: precision is whatever the graph says (Cast,
QuantizeLinear/DequantizeLinear), since TensorRT 11 and TensorRT-RTX have no builder precision
flags. Every failure a user can act on raises :class:`trtcompile.errors.BackendError` (or
:class:`~trtcompile.errors.InputError` for a profile that does not fit) with one line.
"""

from __future__ import annotations

import os
import tempfile
import time
import types
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from trtcompile import interrupts, ir
import trtcompile.backend.build_config as build_config
import trtcompile.backend.cache as cache
import trtcompile.backend.plugins as plugins
from trtcompile.backend.build_config import network_flags  # noqa: F401 - importable from here too
from trtcompile.backend.engine_report import (
    EngineBuild,
    LayerReport,
    find_layer_report,
    read_layer_report,
)
from trtcompile.backend.layer_precision import apply_constraints
from trtcompile.backend.loader import load_tensorrt
from trtcompile.backend.options import BuildOptions
from trtcompile.backend.log import LogCapture, capture_log, log_router
from trtcompile.backend.parser_errors import parser_error_line
from trtcompile.backend.progress import make_progress_monitor, progress_enabled
from trtcompile.errors import BackendError, InputError

#: One optimization profile: input name -> (min, opt, max) shapes (values, for shape-tensor inputs).
Profile = Mapping[str, tuple[Sequence[int], Sequence[int], Sequence[int]]]


def build_engine(model: onnx.ModelProto, *, model_dir: Path | None = None, progress: bool = True,
                 profiles: Sequence[Profile] | None = None, workspace_bytes: int | None = None,
                 echo_log: bool | str = False, build: BuildOptions | None = None) -> EngineBuild:
    """Parse ``model`` with TensorRT's ONNX parser and build a serialized engine.

    Args:
        model: the ONNX model (external data, if any, is resolved against ``model_dir``).
        model_dir: folder the model's external data files are in.
        progress: draw a progress bar on stderr while building (only if stderr is a terminal).
        profiles: optimization profiles, one dict ``{input: (min, opt, max)}`` each; required when
            the network has dynamic inputs.
        workspace_bytes: limit of the builder's workspace memory pool (TensorRT's default if None).
        echo_log: also write TensorRT's warnings and errors to stderr as they arrive (``"all"``:
            every message, as ``--verbose`` asks).
        build: the engine-build controls (levels, targets, cache, refit, plugins, precision
            constraints); None: TensorRT's defaults.

    Raises BackendError if the parser rejects the model or the build fails, InputError if a profile
    does not fit the network's inputs or an option is one the installed TensorRT does not have.
    """
    build = build or BuildOptions()
    # Signals are recorded, not raised, while TensorRT runs: it would swallow the exception (see
    # trtcompile.interrupts); the monitor cancels the build and the block raises Interrupted.
    with interrupts.deferred():
        trt = load_tensorrt()
        build_config.check_supported(trt, build)
        plugin_set = plugins.load_plugins(trt, build.plugin_libraries, build.plugin_modules)
        constrained, constraints = apply_constraints(model, build.layer_precisions,
                                                     build.layer_output_types)
        plugins.check_parse_survives(trt, constrained, plugin_set, build.plugin_libraries,
                                     build.plugin_modules)
        built = _build(trt, constrained, model_dir, progress, profiles, workspace_bytes, echo_log,
                       build)
    known_nodes = {node.name for node in model.graph.node if node.name}
    report, note = _engine_layers(built.capture, known_nodes)
    log_lines = built.capture.lines()
    if note:
        log_lines.append(f"[W] {note}")
    plugin_nodes = plugin_set.plugin_nodes(constrained)
    properties = plan_properties(trt, built.plan, build, built.flags)
    properties["plugin_layers"] = [layer.name for layer in report.layers
                                   if "plugin" in layer.type.lower()
                                   or set(layer.onnx_nodes) & set(plugin_nodes)]
    properties["plugin_nodes"] = plugin_nodes
    properties["precision_constraints"] = constraints
    return EngineBuild(plan=built.plan, backend=trt.__name__, version=str(trt.__version__),
                       layers=report.layers, build_seconds=built.seconds,
                       profiles=built.profiles, log_lines=log_lines,
                       layer_report_problems=report.problems, build_options=build.to_dict(),
                       plan_properties=properties,
                       cache=built.cache.to_dict() if built.cache is not None else None)


def plan_properties(trt: types.ModuleType, plan: bytes, build: BuildOptions,
                    flags: list[str]) -> dict[str, Any]:
    """The built plan's properties: read back from its header (TensorRT version, targets), the
    builder flags it was built with, and what only a deserialized engine tells (refittable,
    stripped weights, hardware compatibility) where TensorRT can deserialize it here."""
    from trtcompile.backend.plan import engine_properties, read_header
    from trtcompile.backend.run import deserialize_engine

    header = read_header(plan, trt)
    properties: dict[str, Any] = {
        "tensorrt_version": header.version, "compute_capabilities": header.compute_capabilities,
        "builder_flags": list(flags), "refittable": "REFIT" in flags or build.refittable,
        "stripped": build.strip_weights,
        "hardware_compatibility": build.hardware_compatibility or "none",
        "version_compatible": build.version_compatible,
        "weight_streaming": build.weight_streaming_budget is not None,
        "refill_from": "optimized.onnx" if build.strip_weights else None,
        "read_back": "header",
    }
    try:
        engine = deserialize_engine(plan)
    except BackendError as exc:
        properties["engine_not_read"] = str(exc)
        return properties
    found = engine_properties(engine, trt)
    properties.update({key: found[key] for key in ("refittable", "stripped",
                                                   "hardware_compatibility") if key in found})
    properties["read_back"] = "header and engine"
    return properties


@dataclass
class _Built:
    plan: bytes
    capture: LogCapture
    seconds: float
    profiles: list[dict]
    flags: list[str]
    cache: Any = None  # trtcompile.backend.cache.CacheOutcome


def _build(trt: types.ModuleType, model: onnx.ModelProto, model_dir: Path | None, progress: bool,
           profiles: Sequence[Profile] | None, workspace_bytes: int | None,
           echo_log: bool | str, build: BuildOptions) -> _Built:
    """Parse and build under a log capture. The TensorRT objects are released when it returns,
    before the logger they use."""
    router = log_router(trt)
    cache_file = cache.read_cache(build.timing_cache, trt) if build.timing_cache else None
    with capture_log(trt, echo=echo_log) as capture, warnings.catch_warnings():
        # TensorRT-RTX warns that its timing cache calls are deprecated no-ops; the report says so.
        warnings.simplefilter("ignore", DeprecationWarning)
        builder = trt.Builder(router)
        network = builder.create_network(build_config.network_flags(trt, build.strongly_typed))
        parser = trt.OnnxParser(network, router)
        _parse(parser, model, model_dir, capture)
        config = builder.create_builder_config()
        profile_records = _add_profiles(builder, config, network, profiles, capture)
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        if workspace_bytes is not None:
            if workspace_bytes <= 0:
                raise InputError(f"workspace size must be positive, got {workspace_bytes} bytes")
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
        flags = build_config.apply(trt, config, build)
        timing_cache = cache.attach(config, cache_file) if cache_file is not None else None
        entries_before = cache.entries(timing_cache) if timing_cache is not None else 0
        monitor = make_progress_monitor(trt, display=progress_enabled(progress),
                                        cancelled=interrupts.pending)
        config.progress_monitor = monitor
        start = time.perf_counter()
        try:
            serialized = builder.build_serialized_network(network, config)
        except Exception as error:  # the bindings raise for some invalid networks
            raise BackendError(_build_failure(capture, str(error), flags)) from error
        finally:
            monitor.close()
        build_seconds = time.perf_counter() - start
        if monitor.error is not None:
            capture.record("W", f"progress display stopped: {monitor.error!r}")
        interrupts.check()  # a cancelled build returns None: say why, not "could not build"
        if serialized is None:
            raise BackendError(_build_failure(capture, "", flags))
        cache_outcome = None
        if cache_file is not None:
            cache_outcome, content = cache.outcome(cache_file, timing_cache, entries_before,
                                                   config, capture, trt)
            cache.write_cache(cache_file.path, content)
    return _Built(bytes(memoryview(serialized)), capture, build_seconds, profile_records, flags,
                  cache_outcome)


def save_plan(build: EngineBuild, path: str | os.PathLike) -> Path:
    """Write the engine plan to ``path`` atomically (temporary file, then rename)."""
    return ir.atomic_write_bytes(path, build.plan)


def uses_external_data(model: onnx.ModelProto) -> bool:
    """True if any initializer of the model keeps its values in an external file."""
    return any(tensor.data_location == onnx.TensorProto.EXTERNAL for tensor in _all_tensors(model))


def _all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Initializers and tensor attributes of the model's graphs, subgraphs and functions."""
    graphs: list[onnx.GraphProto] = [model.graph]
    node_lists = [function.node for function in model.functions]
    while graphs or node_lists:
        if graphs:
            graph = graphs.pop()
            yield from graph.initializer
            node_lists.append(graph.node)
            continue
        for node in node_lists.pop():
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    yield attribute.t
                yield from attribute.tensors
                if attribute.HasField("g"):
                    graphs.append(attribute.g)
                graphs.extend(attribute.graphs)


def _parse(parser: Any, model: onnx.ModelProto, model_dir: Path | None, capture: LogCapture) -> None:
    """Parse the model into the parser's network; BackendError naming the rejected node(s)."""
    if uses_external_data(model):
        if model_dir is None:
            raise InputError("the model keeps weights in external data files; give the folder they "
                             "are in (model_dir)")
        # The parser resolves external data against the folder of the path it is given.
        ok = parser.parse(model.SerializeToString(), os.fspath(Path(model_dir) / "model.onnx"))
    elif model.ByteSize() > onnx.checker.MAXIMUM_PROTOBUF:
        # Too large to serialize in one piece: write it with external weights and parse the file.
        with tempfile.TemporaryDirectory(prefix="trtcompile-") as folder:
            path = ir.save(model, Path(folder) / "model.onnx")
            ok = parser.parse_from_file(os.fspath(path))
    else:
        ok = parser.parse(model.SerializeToString())
    if not ok:
        raise BackendError(parser_error_line(parser, capture))


def _dynamic_inputs(network: Any) -> dict[str, list[int]]:
    """Network inputs with unknown dimensions (and shape-tensor inputs), name -> shape."""
    dynamic = {}
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        shape = list(tensor.shape)
        if -1 in shape or tensor.is_shape_tensor:
            dynamic[tensor.name] = shape
    return dynamic


def _add_profiles(builder: Any, config: Any, network: Any, profiles: Sequence[Profile] | None,
                  capture: LogCapture) -> list[dict]:
    """Add one optimization profile per entry; returns them in JSON form.

    Raises BackendError if the network has dynamic inputs and no profile was given, InputError if
    a profile names an unknown input, misses a dynamic one, or gives shapes that do not fit.
    """
    dynamic = _dynamic_inputs(network)
    if not profiles:
        if dynamic:
            listed = ", ".join(f"'{name}' {shape}" for name, shape in dynamic.items())
            raise BackendError(f"the network has dynamic inputs ({listed}); give an optimization "
                               "profile (min, opt, max shapes) for each of them")
        return []
    inputs = {network.get_input(i).name: network.get_input(i) for i in range(network.num_inputs)}
    records = []
    for index, entry in enumerate(profiles):
        unknown = sorted(set(entry) - set(inputs))
        if unknown:
            raise InputError(f"optimization profile {index} names {', '.join(map(repr, unknown))}, "
                             f"not an input of the network (inputs: {', '.join(inputs)})")
        missing = [name for name in dynamic if name not in entry]
        if missing:
            raise InputError(f"optimization profile {index} gives no shapes for dynamic input(s) "
                             + ", ".join(f"'{name}' {dynamic[name]}" for name in missing))
        profile = builder.create_optimization_profile()
        record: dict[str, dict[str, list[int]]] = {}
        for name, shapes in entry.items():
            tensor = inputs[name]
            low, opt, high = _profile_shapes(index, name, shapes)
            if tensor.is_shape_tensor:
                profile.set_shape_input(name, low, opt, high)
            else:
                _check_profile_shapes(index, name, list(tensor.shape), low, opt, high)
                profile.set_shape(name, low, opt, high)
            record[name] = {"min": low, "opt": opt, "max": high}
        if config.add_optimization_profile(profile) < 0:
            reason = "; ".join(capture.errors()[-2:]) or "invalid profile"
            raise BackendError(f"TensorRT rejected optimization profile {index}: {reason}")
        records.append(record)
    return records


def _profile_shapes(index: int, name: str, shapes: Any) -> tuple[list[int], list[int], list[int]]:
    try:
        low, opt, high = ([int(d) for d in shape] for shape in shapes)
    except (TypeError, ValueError):
        raise InputError(f"optimization profile {index}, input '{name}': expected three shapes "
                         f"(min, opt, max) of integers, got {shapes!r}") from None
    return low, opt, high


def _check_profile_shapes(index: int, name: str, network_shape: list[int], low: list[int],
                          opt: list[int], high: list[int]) -> None:
    """InputError unless min <= opt <= max fit the input's rank and fixed dimensions."""
    where = f"optimization profile {index}, input '{name}' {network_shape}"
    for label, shape in (("min", low), ("opt", opt), ("max", high)):
        if len(shape) != len(network_shape):
            raise InputError(f"{where}: {label} shape {shape} has rank {len(shape)}, "
                             f"the input has rank {len(network_shape)}")
    for axis, fixed in enumerate(network_shape):
        if not 0 <= low[axis] <= opt[axis] <= high[axis]:
            raise InputError(f"{where}: dimension {axis} needs 0 <= min <= opt <= max, "
                             f"got {low[axis]}, {opt[axis]}, {high[axis]}")
        if fixed != -1 and not low[axis] == opt[axis] == high[axis] == fixed:
            raise InputError(f"{where}: dimension {axis} is fixed at {fixed}, the profile gives "
                             f"{low[axis]}, {opt[axis]}, {high[axis]}")


def _build_failure(capture: LogCapture, exception_text: str, flags: Sequence[str] = ()) -> str:
    lines = capture.errors()[-3:]
    if exception_text:
        lines.append(" ".join(exception_text.split()))
    detail = " | ".join(lines) if lines else "the builder gave no reason (see the build log)"
    hint = build_config.failure_hint(list(flags), detail)
    return f"TensorRT could not build the engine: {detail}" + (
        f" ({'+'.join(flags)}: {hint})" if hint else "")


def _engine_layers(capture: LogCapture, known_nodes: set[str]) -> tuple[LayerReport, str]:
    """The engine layers read from the captured log, and a note when they are unavailable or a
    layer line could not be read (the other layers are kept, see :func:`read_layer_report`)."""
    message = find_layer_report(capture.texts())
    if message is None:
        if capture.foreign_logger or not capture.messages:
            return LayerReport([]), ("no engine layer report: another TensorRT logger was "
                                     "registered first in this process, so the builder's messages "
                                     "did not reach trtcompile")
        return LayerReport([]), "no engine layer report: the builder did not log its layers"
    report = read_layer_report(message, known_nodes)
    if report.problems:
        return report, ("the engine layer report was not fully read: "
                        + "; ".join(report.problems[:3])
                        + (f"; and {len(report.problems) - 3} more" if len(report.problems) > 3 else ""))
    return report, ""
