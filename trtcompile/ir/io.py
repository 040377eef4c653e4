"""Loading and saving the IR: ONNX models in and out, with the IR version ONNX Runtime and TensorRT
accept, and files written atomically."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import onnx_graphsurgeon as gs

from trtcompile.ir.graph import (
    IR_VERSION,
    TRTCOMPILE_DOMAIN,
    NameScope,
    call_key,
    function_key,
    iter_nodes,
    scope_nodes,
    scopes,
)

from trtcompile.ir.interface import OverridableInput, overridable_initializers

#: The first IR version in which an initializer need not be a graph input: from it on, one that is
#: an input too is a default the caller may override (before it, every initializer is an input).
OVERRIDABLE_IR_VERSION = 4


def import_model(model: onnx.ModelProto) -> gs.Graph:
    """Import an ONNX model into the IR (local functions included).

    Unnamed nodes get names (``<op>_<n>``): reports, rejection reasons and TensorRT's layer metadata
    all refer to nodes by name.
    """
    graph = gs.import_onnx(model)
    _import_overridable_initializers(graph, model)
    name_nodes(graph)
    return graph


def overridable_initializer_names(model: onnx.ModelProto) -> list[str]:
    """Names of the model's overridable initializers: main-graph inputs that are also initializers,
    in input order (none before IR version 4, where every initializer is an input)."""
    if model.ir_version and model.ir_version < OVERRIDABLE_IR_VERSION:
        return []
    initializers = {init.name for init in model.graph.initializer}
    return [value.name for value in model.graph.input if value.name in initializers]


def _import_overridable_initializers(graph: gs.Graph, model: onnx.ModelProto) -> None:
    """Make each overridable initializer a graph input again (:class:`OverridableInput`), in its
    place among the inputs, with the type the input declares and the initializer as default.

    onnx-graphsurgeon imports it as a constant read by the nodes (and by If/Loop/Scan bodies,
    which share the outer graph's tensor objects); those readers now read the input."""
    names = overridable_initializer_names(model)
    if not names:
        return
    from onnx_graphsurgeon.importers.onnx_importer import OnnxImporter

    wanted = set(names)
    declared = {value.name: value for value in model.graph.input if value.name in wanted}
    defaults = {init.name: init for init in model.graph.initializer if init.name in wanted}
    replacements: dict[str, OverridableInput] = {}
    replaced: dict[str, gs.Tensor] = {}  # the constant each name stood for (bodies may shadow it)
    for name in names:
        typed = OnnxImporter.import_tensor(declared[name])
        replacements[name] = OverridableInput(name, typed.dtype, typed.shape,
                                              default=OnnxImporter.import_tensor(defaults[name]))
    for node in scope_nodes(graph):
        for index, tensor in enumerate(node.inputs):
            if tensor.name in wanted and isinstance(tensor, gs.Constant):
                if replaced.setdefault(tensor.name, tensor) is tensor:
                    node.inputs[index] = replacements[tensor.name]
    for index, tensor in enumerate(graph.outputs):
        if tensor.name in wanted and isinstance(tensor, gs.Constant):
            graph.outputs[index] = replacements[tensor.name]
    by_name = {tensor.name: tensor for tensor in graph.inputs}
    by_name.update(replacements)
    graph.inputs = [by_name[value.name] for value in model.graph.input if value.name in by_name]


def name_nodes(graph: gs.Graph) -> None:
    """Give every unnamed node of the graph (and of its subgraphs and functions) a unique name."""
    unnamed = [node for node in iter_nodes(graph) if not node.name]
    if not unnamed:
        return
    scope = NameScope(graph)
    for node in unnamed:
        node.name = scope.fresh(f"{node.op}_0")


def export_model(graph: gs.Graph, *, ir_version: int = IR_VERSION) -> onnx.ModelProto:
    """Export the IR to an ONNX model whose IR version ONNX Runtime and TensorRT accept.

    Local functions that no node calls any more are dropped, so a pass that fused and then
    un-fused a layer leaves no orphan definition behind.
    """
    called = {call_key(node) for node in iter_nodes(graph)}
    graph.functions = [f for f in graph.functions if function_key(f) in called]
    _string_constants_as_protos(graph)
    model = gs.export_onnx(graph, do_type_check=False)
    model.ir_version = min(model.ir_version, ir_version) if model.ir_version else ir_version
    overridable = overridable_initializers(graph)
    if overridable:
        # Each default is written back as the initializer of its input (an input with an
        # initializer of its name is an overridable default from IR version 4 on).
        from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

        model.graph.initializer.extend(OnnxExporter.export_tensor_proto(tensor.default)
                                       for tensor in overridable)
        model.ir_version = max(model.ir_version, OVERRIDABLE_IR_VERSION)
    inputs = {value.name for value in model.graph.input}
    if model.ir_version < 4 and any(t.name not in inputs for t in model.graph.initializer):
        # IR 3 requires every initializer to be a graph input; a folded weight is not one, and
        # shape inference and checkers then reject the model (silently, in non-strict inference).
        model.ir_version = 4
    if not any(o.domain == TRTCOMPILE_DOMAIN for o in model.opset_import) and graph.functions:
        model.opset_import.append(onnx.helper.make_opsetid(TRTCOMPILE_DOMAIN, 1))
    return model


def _string_constants_as_protos(graph: gs.Graph) -> None:
    """Give every string constant whose values were read (a loaded initializer, a lowered
    ``Constant`` node) its values as a TensorProto again.

    onnx-graphsurgeon exports a constant's values as raw bytes, which ONNX forbids for strings
    (``make_tensor`` raises); from a TensorProto (its lazy form) it writes them as they are."""
    from onnx_graphsurgeon.ir.tensor import LazyValues

    for node in iter_nodes(graph):
        for tensor in [*node.inputs, *(v for v in node.attrs.values() if isinstance(v, gs.Constant))]:
            if not isinstance(tensor, gs.Constant) or isinstance(tensor._values, LazyValues):
                continue
            values = tensor._values
            if isinstance(values, np.ndarray) and values.dtype.kind in "OUS":
                tensor._values = LazyValues(onnx.numpy_helper.from_array(
                    values.astype(object), tensor.name))


def load(path: str | os.PathLike) -> gs.Graph:
    """Load an ONNX file (with external data resolved against its folder) into the IR; a file
    that is missing or not an ONNX model raises InputError naming it."""
    from trtcompile.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"model not found: {path}")
    try:
        model = onnx.load(os.fspath(path))
    except Exception as exc:  # noqa: BLE001 - protobuf's and onnx's errors share no base class
        raise InputError(f"{path} is not an ONNX model ({type(exc).__name__}: "
                         f"{str(exc).strip()[:200]})") from None
    try:
        return import_model(model)
    except Exception as exc:  # noqa: BLE001 - onnx-graphsurgeon's import errors vary
        raise InputError(f"{path}: onnx-graphsurgeon cannot import it ({type(exc).__name__}: "
                         f"{str(exc).strip()[:200]})") from None


def save(model: onnx.ModelProto | gs.Graph, path: str | os.PathLike) -> Path:
    """Write a model atomically: to a temporary file in the same folder, then rename.

    Models above protobuf's 2 GiB limit are written with their weights in one external-data file
    next to the model.
    """
    if isinstance(model, gs.Graph):
        model = export_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if model.ByteSize() > onnx.checker.MAXIMUM_PROTOBUF:
            data_name = f"{path.name}.data"
            onnx.save_model(
                model, tmp_name, save_as_external_data=True, all_tensors_to_one_file=True,
                location=data_name,
            )
        else:
            with open(tmp_name, "wb") as f:
                f.write(model.SerializeToString())
        _publish(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(tmp_name: str, path: Path) -> None:
    """Give a finished temporary file the usual permissions and move it into place."""
    os.chmod(tmp_name, 0o666 & ~_umask())
    os.replace(tmp_name, path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        _publish(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return path


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive advisory lock (``fcntl.flock``) on the file ``path`` (created if absent)
    for the duration of the ``with`` block; other processes taking the same lock wait.

    Guards cache entries several processes may fill at once (the Keras example export, INT8
    calibration caches): the first one in computes and publishes the entry, the others find it
    complete when they get the lock. The lock file stays (deleting it would let two processes
    lock two different files of the same name). The lock is released when the process dies.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def evaluable_ir_version(graph: gs.Graph) -> Iterator[gs.Graph]:
    """Make the graph and every If/Loop/Scan body export with an IR version ONNX Runtime loads
    for the duration of the ``with`` block (for evaluating parts of it, as constant folding does).

    onnx-graphsurgeon evaluates each body as a model of its own; a body carries no IR version, so
    it would be written with onnx's newest one, which ONNX Runtime rejects.
    """
    previous = [(g, g.ir_version) for g in scopes(graph)]
    for g, version in previous:
        if version is None or version > IR_VERSION:
            g.ir_version = IR_VERSION
    try:
        yield graph
    finally:
        for g, version in previous:
            g.ir_version = version


#: ONNX Runtime's log severities: 0 verbose, 1 info, 2 warning (its default), 3 error, 4 fatal.
ORT_WARNING_SEVERITY, ORT_ERROR_SEVERITY = 2, 3
#: ONNX Runtime's default logger severity as trtcompile last set it: ONNX Runtime has a setter and
#: no getter, so a block that raises it restores this value.
_ort_severity = ORT_WARNING_SEVERITY


def set_onnxruntime_severity(severity: int) -> None:
    """Set ONNX Runtime's default logger severity (every session without its own
    ``log_severity_level`` logs through it) and remember it for :func:`quiet_graphsurgeon`."""
    import onnxruntime

    global _ort_severity
    onnxruntime.set_default_logger_severity(severity)
    _ort_severity = severity


@contextlib.contextmanager
def quiet_graphsurgeon() -> Iterator[None]:
    """Silence onnx-graphsurgeon's warnings in the ``with`` block (a pass that reports failures as
    rejections, such as folding, has no use for its log lines), and ONNX Runtime's warnings about
    the graphs it evaluates for onnx-graphsurgeon (its sessions use the default logger: folding
    the TorchScript export of Swin-T printed 205 "UnsqueezeElimination cannot remove node" lines
    about the constant parts it evaluates, none about the user's model)."""
    import onnxruntime
    from onnx_graphsurgeon.logger import G_LOGGER

    previous, severity = G_LOGGER.severity, _ort_severity
    G_LOGGER.severity = G_LOGGER.ERROR
    onnxruntime.set_default_logger_severity(max(severity, ORT_ERROR_SEVERITY))
    try:
        yield
    finally:
        G_LOGGER.severity = previous
        onnxruntime.set_default_logger_severity(severity)
