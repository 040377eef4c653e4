"""Build TensorRT engines from ONNX models: parse, add optimization profiles, build, report layers.

The backend works with either TensorRT package: ``tensorrt`` when it can be imported, else
``tensorrt_rtx`` (TensorRT for RTX, which builds serialized plans without a GPU). Networks are
strongly typed: precision is whatever the graph says (Cast, QuantizeLinear/DequantizeLinear), since
TensorRT 11 and TensorRT-RTX have no builder precision flags.

**Logging.** The layer report is one VERBOSE message of the builder, so each build records every
message. TensorRT documents one process-wide logger (a second builder's logger "is ignored", it
warns); the backend therefore keeps one router ``ILogger`` per TensorRT module for all its builders
and runtimes, points it at a capture for the duration of a build, and serializes builds with a lock.
(The Python bindings of TensorRT-RTX 1.7 do deliver messages to the logger a builder was created
with even when another library's builder is alive; should a TensorRT version not, the build still
succeeds and carries no layer report, with a log line saying why.)

Every failure a user can act on raises :class:`trtcompile.errors.BackendError` with one line.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
import tempfile
import threading
import time
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from trtcompile import interrupts, ir
from trtcompile.backend.engine_report import (
    EngineBuild,
    LayerReport,
    find_layer_report,
    read_layer_report,
)
from trtcompile.backend.progress import make_progress_monitor, progress_enabled
from trtcompile.errors import BackendError, InputError

#: Python modules tried in order of preference.
TENSORRT_MODULES = ("tensorrt", "tensorrt_rtx")

#: One optimization profile: input name -> (min, opt, max) shapes (values, for shape-tensor inputs).
Profile = Mapping[str, tuple[Sequence[int], Sequence[int], Sequence[int]]]

#: Message of the error run_engine raises when no GPU can execute the engine.
NO_GPU_MESSAGE = "executing an engine needs a supported NVIDIA GPU; none is available here"

_SEVERITY_TAGS = {0: "F", 1: "E", 2: "W", 3: "I", 4: "V"}  # INTERNAL_ERROR ... VERBOSE
_FOREIGN_LOGGER = "differs from one already registered"
_CUDA_ERROR = re.compile(r"cudaError (\d+): ([^)\n]*)")


# --------------------------------------------------------------------------------------------
# Choosing the TensorRT module
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackendInfo:
    """Which TensorRT Python module the backend uses, and its version."""

    module: str
    version: str


def load_tensorrt() -> types.ModuleType:
    """The TensorRT module: ``tensorrt`` if importable, else ``tensorrt_rtx``.

    Raises BackendError if neither can be imported.
    """
    reasons = []
    for name in TENSORRT_MODULES:
        try:
            return importlib.import_module(name)
        except (ImportError, OSError) as error:  # OSError: the package is there, its libraries not
            reasons.append(f"{name}: {error}")
    interrupts.check()  # a signal during the import is not a missing package
    raise BackendError("no TensorRT Python module can be imported (" + "; ".join(reasons)
                       + "); install tensorrt or tensorrt-rtx")


def backend_info() -> BackendInfo:
    """Name and version of the TensorRT module the backend uses."""
    trt = load_tensorrt()
    return BackendInfo(module=trt.__name__, version=str(getattr(trt, "__version__", "unknown")))


# --------------------------------------------------------------------------------------------
# Logging
# --------------------------------------------------------------------------------------------


class LogCapture:
    """The messages TensorRT logged while a capture was active, as ``(tag, text)`` pairs.

    Tags: ``F`` internal error, ``E`` error, ``W`` warning, ``I`` info, ``V`` verbose. With ``echo``,
    warnings and errors are also written to stderr as they arrive; with ``echo="all"``, every
    message (``--verbose``).
    """

    def __init__(self, echo: bool | str = False):
        self.echo = echo
        self._echo_tags = "FEWIV" if echo == "all" else "FEW" if echo else ""
        self.messages: list[tuple[str, str]] = []
        self.foreign_logger = False

    def record(self, tag: str, text: str) -> None:
        self.messages.append((tag, text))
        if _FOREIGN_LOGGER in text:
            self.foreign_logger = True
        if tag in self._echo_tags:
            from tqdm import tqdm

            label = {"F": "internal error", "E": "error", "W": "warning", "I": "info",
                     "V": "verbose"}[tag]
            tqdm.write(f"TensorRT {label}: {text}", file=sys.stderr)

    def texts(self) -> list[str]:
        return [text for _, text in self.messages]

    def lines(self) -> list[str]:
        """Every message as ``[tag] text``."""
        return [f"[{tag}] {text}" for tag, text in self.messages]

    def errors(self) -> list[str]:
        """Error messages, each flattened to one line."""
        return [" ".join(text.split()) for tag, text in self.messages if tag in "FE"]


_ROUTERS: dict[str, Any] = {}
_ROUTERS_LOCK = threading.Lock()
_CAPTURE_LOCK = threading.Lock()


def log_router(trt: types.ModuleType) -> Any:
    """The backend's process-wide ``ILogger`` for module ``trt`` (created on first use).

    While a capture is active it receives every message; otherwise it writes warnings and errors
    to stderr, like TensorRT's default logger.
    """
    with _ROUTERS_LOCK:
        router = _ROUTERS.get(trt.__name__)
        if router is None:
            router = _make_router(trt)
            _ROUTERS[trt.__name__] = router
        return router


def _make_router(trt: types.ModuleType) -> Any:
    class LogRouter(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.capture: LogCapture | None = None

        def log(self, severity: Any, msg: str) -> None:
            # TensorRT calls this from native code, which must not see Python exceptions.
            try:
                tag = _SEVERITY_TAGS.get(int(severity), "V")
                capture = self.capture
                if capture is not None:
                    capture.record(tag, msg)
                elif tag in "FEW":
                    print(f"TensorRT: {msg}", file=sys.stderr)
            except Exception:  # noqa: BLE001
                pass

    return LogRouter()


@contextlib.contextmanager
def capture_log(trt: types.ModuleType, *, echo: bool | str = False) -> Iterator[LogCapture]:
    """Record TensorRT's messages for the duration of a block (one block at a time per process)."""
    router = log_router(trt)
    with _CAPTURE_LOCK:
        capture = LogCapture(echo=echo)
        router.capture = capture
        try:
            yield capture
        finally:
            router.capture = None


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


def build_engine(model: onnx.ModelProto, *, model_dir: Path | None = None, progress: bool = True,
                 profiles: Sequence[Profile] | None = None, workspace_bytes: int | None = None,
                 echo_log: bool | str = False) -> EngineBuild:
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

    Raises BackendError if the parser rejects the model or the build fails, InputError if a profile
    does not fit the network's inputs.
    """
    # Signals are recorded, not raised, while TensorRT runs: it would swallow the exception (see
    # trtcompile.interrupts); the monitor cancels the build and the block raises Interrupted.
    with interrupts.deferred():
        trt = load_tensorrt()
        plan, capture, build_seconds, profile_records = _build(
            trt, model, model_dir, progress, profiles, workspace_bytes, echo_log)
    known_nodes = {node.name for node in model.graph.node if node.name}
    report, note = _engine_layers(capture, known_nodes)
    log_lines = capture.lines()
    if note:
        log_lines.append(f"[W] {note}")
    return EngineBuild(plan=plan, backend=trt.__name__, version=str(trt.__version__),
                       layers=report.layers, build_seconds=build_seconds, profiles=profile_records,
                       log_lines=log_lines, layer_report_problems=report.problems)


def _build(trt: types.ModuleType, model: onnx.ModelProto, model_dir: Path | None, progress: bool,
           profiles: Sequence[Profile] | None, workspace_bytes: int | None,
           echo_log: bool | str) -> tuple[bytes, LogCapture, float, list[dict]]:
    """Parse and build under a log capture: (plan, the capture, build seconds, profiles). The
    TensorRT objects are released when it returns, before the logger they use."""
    router = log_router(trt)
    with capture_log(trt, echo=echo_log) as capture:
        builder = trt.Builder(router)
        network = builder.create_network(_network_flags(trt))
        parser = trt.OnnxParser(network, router)
        _parse(parser, model, model_dir, capture)
        config = builder.create_builder_config()
        profile_records = _add_profiles(builder, config, network, profiles, capture)
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        if workspace_bytes is not None:
            if workspace_bytes <= 0:
                raise InputError(f"workspace size must be positive, got {workspace_bytes} bytes")
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
        monitor = make_progress_monitor(trt, display=progress_enabled(progress),
                                        cancelled=interrupts.pending)
        config.progress_monitor = monitor
        start = time.perf_counter()
        try:
            serialized = builder.build_serialized_network(network, config)
        except Exception as error:  # the bindings raise for some invalid networks
            raise BackendError(_build_failure(capture, str(error))) from error
        finally:
            monitor.close()
        build_seconds = time.perf_counter() - start
        if monitor.error is not None:
            capture.record("W", f"progress display stopped: {monitor.error!r}")
        interrupts.check()  # a cancelled build returns None: say why, not "could not build"
    if serialized is None:
        raise BackendError(_build_failure(capture, ""))
    return bytes(memoryview(serialized)), capture, build_seconds, profile_records


def save_plan(build: EngineBuild, path: str | os.PathLike) -> Path:
    """Write the engine plan to ``path`` atomically (temporary file, then rename)."""
    return ir.atomic_write_bytes(path, build.plan)


def _network_flags(trt: types.ModuleType) -> int:
    """Strongly typed networks where supported (the graph decides precision); explicit batch on
    TensorRT 8, where it is not yet the default."""
    members = trt.NetworkDefinitionCreationFlag.__members__
    flags = 0
    if "STRONGLY_TYPED" in members:
        flags |= 1 << int(members["STRONGLY_TYPED"])
    major = int(str(getattr(trt, "__version__", "10")).split(".")[0] or 10)
    if "EXPLICIT_BATCH" in members and major < 10:
        flags |= 1 << int(members["EXPLICIT_BATCH"])
    return flags


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


def parser_error_line(parser: Any, capture: LogCapture | None = None) -> str:
    """One line naming the node(s) TensorRT's ONNX parser rejected and why."""
    parts: list[str] = []
    for index in range(parser.num_errors):
        error = parser.get_error(index)
        node_name, operator = error.node_name(), error.node_operator()
        if node_name:
            where = f"node '{node_name}'" + (f" ({operator})" if operator else "")
        elif error.node() >= 0:
            where = f"node #{error.node()}" + (f" ({operator})" if operator else "")
        else:
            where = ""
        stack = list(error.local_function_stack()) if hasattr(error, "local_function_stack") else []
        if stack:
            where += " inside function call " + " > ".join(f"'{name}'" for name in stack)
        description = rejection_reason(clean_parser_description(error.desc()), error.func(),
                                       operator, parser="the parser")
        part = f"{where}: {description}" if where else description
        if part not in parts:
            parts.append(part)
    if not parts and capture is not None:
        parts = capture.errors()[-3:]
    detail = "; ".join(parts) if parts else "no reason given"
    return f"TensorRT's ONNX parser rejected the model: {detail}"


#: Descriptions TensorRT's parser gives when an op checker simply returned false.
UNHELPFUL_DESCRIPTIONS = frozenset({"", "false", "0"})


def rejection_reason(description: str, checker: str, op_type: str,
                     parser: str = "TensorRT's ONNX parser") -> str:
    """``description`` in words when the parser's own is an unhelpful ``false``: the op is not
    supported, or (when the failing checker is another op's) something inside this node."""
    if description.lower() not in UNHELPFUL_DESCRIPTIONS:
        return description
    checker = checker or ""
    if not op_type or not checker or checker.lower() == f"check{op_type}".lower():
        return (f"{parser} does not support {op_type or 'this op'} here"
                + (f" ({checker})" if checker else ""))
    return f"{parser} rejects this {op_type} node ({checker} failed inside it)"


def clean_parser_description(description: str) -> str:
    """The readable part of a parser error description.

    Descriptions are often assertion texts: ``Assertion failed: (cond): message`` or
    ``cond && "message"``; the message is what a user can act on.
    """
    text = " ".join(description.split())
    if text.startswith("Assertion failed: "):
        text = text[len("Assertion failed: "):]
    quoted = re.fullmatch(r'.*&& "(.+)"', text)
    if quoted:
        return quoted.group(1)
    if text.startswith("("):
        depth = 0
        for position, char in enumerate(text):
            depth += {"(": 1, ")": -1}.get(char, 0)
            if depth == 0:
                rest = text[position + 1:]
                if rest.startswith(": ") and rest[2:].strip():
                    return rest[2:].strip()
                break
    return text


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


def _build_failure(capture: LogCapture, exception_text: str) -> str:
    lines = capture.errors()[-3:]
    if exception_text:
        lines.append(" ".join(exception_text.split()))
    detail = " | ".join(lines) if lines else "the builder gave no reason (see the build log)"
    return f"TensorRT could not build the engine: {detail}"


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


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


def run_engine(plan: bytes, feeds: Mapping[str, np.ndarray], profile: int = 0) -> dict[str, np.ndarray]:
    """Run a serialized engine once on ``feeds`` (input name -> array); returns outputs by name.

    ``profile`` is the optimization profile to run with (the feeds' shapes must lie within it).
    Needs a GPU the engine was built for: without one this raises BackendError saying so (with the
    CUDA runtime's reason when it gives one).
    """
    trt = load_tensorrt()
    return _execute(trt, deserialize_engine(plan), feeds, profile)


def deserialize_engine(plan: bytes) -> Any:
    """The engine of a serialized plan, ready to run: the supported-GPU check. Without a GPU the
    engine was built for this raises BackendError saying so (with the CUDA runtime's reason)."""
    trt = load_tensorrt()
    router = log_router(trt)
    with capture_log(trt) as capture:
        runtime = trt.Runtime(router)
        try:
            engine = runtime.deserialize_cuda_engine(bytes(plan))
        except Exception as error:  # noqa: BLE001 - reported below with the log
            capture.record("E", str(error))
            engine = None
    if engine is None:
        raise BackendError(_engine_load_failure(capture))
    return engine


def run_deserialized(engine: Any, feeds: Mapping[str, np.ndarray], profile: int = 0
                     ) -> dict[str, np.ndarray]:
    """Run an engine from :func:`deserialize_engine` once on ``feeds``; outputs by name."""
    return _execute(load_tensorrt(), engine, feeds, profile)


def _engine_load_failure(capture: LogCapture) -> str:
    errors = capture.errors()
    for text in errors:
        match = _CUDA_ERROR.search(text)
        if match:
            return f"{NO_GPU_MESSAGE} ({match.group(2).strip()})"
    if any("cuda" in text.lower() for text in errors):
        return f"{NO_GPU_MESSAGE} ({errors[-1]})"
    detail = errors[-1] if errors else "no reason given"
    return f"TensorRT could not load the engine plan: {detail}"


def _execute(trt: types.ModuleType, engine: Any, feeds: Mapping[str, np.ndarray],
             profile: int = 0) -> dict[str, np.ndarray]:
    """Copy inputs to the device, run the engine once with optimization profile ``profile``, copy
    outputs back."""
    from polygraphy import cuda

    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    input_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    missing = [n for n in input_names if n not in feeds]
    if missing:
        raise InputError(f"no data for engine input(s) {', '.join(missing)}")
    if not 0 <= profile < max(engine.num_optimization_profiles, 1):
        raise InputError(f"optimization profile {profile} does not exist; the engine has "
                         f"{engine.num_optimization_profiles}")
    context = engine.create_execution_context()
    stream = cuda.Stream()
    device_buffers = []
    try:
        if profile:  # a new context starts on profile 0; tensor names are shared by all profiles
            context.set_optimization_profile_async(profile, stream.ptr)
        for name in input_names:
            host = np.ascontiguousarray(feeds[name], dtype=trt.nptype(engine.get_tensor_dtype(name)))
            if engine.is_shape_inference_io(name):
                context.set_tensor_address(name, host.ctypes.data)
                continue
            if not context.set_input_shape(name, host.shape):
                raise InputError(f"input '{name}' has shape {list(host.shape)}, which the engine's "
                                 f"optimization profile {profile} does not allow")
            buffer = cuda.DeviceArray(shape=host.shape, dtype=host.dtype)
            buffer.copy_from(host, stream)
            context.set_tensor_address(name, buffer.ptr)
            device_buffers.append(buffer)
        outputs: dict[str, tuple[np.ndarray, Any]] = {}
        for name in names:
            if name in input_names:
                continue
            shape = tuple(context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise BackendError(f"output '{name}' has a data-dependent shape {list(shape)}; "
                                   "running such engines is not supported")
            host = np.empty(shape, dtype=trt.nptype(engine.get_tensor_dtype(name)))
            buffer = cuda.DeviceArray(shape=shape, dtype=host.dtype)
            context.set_tensor_address(name, buffer.ptr)
            device_buffers.append(buffer)
            outputs[name] = (host, buffer)
        if not context.execute_async_v3(stream.ptr):
            raise BackendError("TensorRT failed to execute the engine")
        for host, buffer in outputs.values():
            buffer.copy_to(host, stream)
        stream.synchronize()
        return {name: host for name, (host, _) in outputs.items()}
    finally:
        for buffer in device_buffers:
            buffer.free()
        stream.free()
