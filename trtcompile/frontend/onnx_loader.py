"""Load and validate an ONNX model file.

Everything that can be wrong with a file a user hands us is checked here and reported as one
:class:`InputError` line, before anything is written: a missing path, a folder, an empty file,
bytes that are not an ONNX protobuf, a truncated file, a graph that reads tensors nobody defines,
and external-data references that point outside the model's folder (checked for every tensor
*before* any external file is opened, so a model cannot make us read ``/etc/passwd``).

Models whose IR version is newer than ONNX Runtime and TensorRT accept are taken down to
:data:`trtcompile.ir.IR_VERSION` (the version every model leaves the compiler with).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper

from trtcompile import ir
from trtcompile.errors import InputError
from trtcompile.frontend.model import FrontendOptions, LoadedModel


def load(path: str | Path, options: FrontendOptions | None = None) -> LoadedModel:
    """Read, validate and return the ONNX model at ``path``. Raises InputError on bad input."""
    options = options or FrontendOptions()
    path = Path(path)
    _check_frontend_options(options)
    model = read_model(path)
    model_dir = path.resolve().parent
    check_external_data(model, model_dir, path)
    if _uses_external_data(model):
        try:
            external_data_helper.load_external_data_for_model(model, os.fspath(model_dir))
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: cannot read external data: {exc}") from None
    original_ir_version = model.ir_version
    if model.ir_version > ir.IR_VERSION:
        # ONNX Runtime 1.31 and TensorRT reject IR > 13; nothing a compiler pass relies on needs more
        # than IR 10, so the model is read as IR 10 (as ir.export_model writes every model).
        model.ir_version = ir.IR_VERSION
    check_graph(model, path)
    if options.input_shapes:
        set_input_shapes(model, options.input_shapes, path)
    opset = next((o.version for o in model.opset_import if ir.is_onnx_domain(o.domain)), None)
    note = f", IR version {original_ir_version} read as {model.ir_version}" \
        if original_ir_version != model.ir_version else ""
    return LoadedModel(
        model=model, source_path=path, kind="onnx", model_dir=model_dir,
        description=f"ONNX model {path.name} (opset {opset}, {len(model.graph.node)} nodes{note})",
    )


def read_model(path: Path) -> onnx.ModelProto:
    """Parse ``path`` as an ONNX protobuf without touching external data."""
    if not path.exists():
        raise InputError(f"model not found: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not an ONNX file or TensorFlow SavedModel")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not data:
        raise InputError(f"{path} is empty (0 bytes): expected an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError):
        raise InputError(f"{path} is not an ONNX model (cannot parse it as an ONNX protobuf; "
                         "a truncated or corrupted file?)") from None
    # Arbitrary bytes sometimes parse as a protobuf made of unknown fields: a real model has a graph
    # with outputs and says which opset it uses.
    if not model.HasField("graph") or not model.opset_import:
        raise InputError(f"{path} is not an ONNX model (no graph or no opset import; "
                         "a truncated or corrupted file?)")
    if not model.graph.output:
        raise InputError(f"{path}: the graph has no outputs (a truncated or incomplete model?)")
    return model


def _iter_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor stored in a graph: initializers and node attributes, in subgraphs too."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _iter_attribute_tensors(node)


def _iter_attribute_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        if attr.HasField("g"):
            yield from _iter_tensors(attr.g)
        for subgraph in attr.graphs:
            yield from _iter_tensors(subgraph)


def _all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    yield from _iter_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _iter_attribute_tensors(node)


def _uses_external_data(model: onnx.ModelProto) -> bool:
    return any(external_data_helper.uses_external_data(t) for t in _all_tensors(model))


def check_external_data(model: onnx.ModelProto, model_dir: Path, path: Path) -> list[str]:
    """Refuse external-data locations outside ``model_dir``, missing files and short files; return
    the locations (relative to ``model_dir``, each once, sorted).

    Runs before any external file is read. A location must be a relative path that stays inside the
    model's folder after resolving ``..`` and symbolic links.
    """
    root = model_dir.resolve()
    locations: set[str] = set()
    for tensor in _all_tensors(model):
        if not external_data_helper.uses_external_data(tensor):
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        where = f"{path}: tensor '{tensor.name}' stores its data in"
        if not location:
            raise InputError(f"{where} an external file but names no location")
        if os.path.isabs(location) or Path(location).drive:
            raise InputError(f"{where} '{location}', an absolute path; external data must be a "
                             "relative path inside the model's folder")
        target = (root / location).resolve()
        if target != root and root not in target.parents:
            raise InputError(f"{where} '{location}', outside the model's folder; external data must "
                             "stay inside the folder of the .onnx file")
        if not target.is_file():
            raise InputError(f"{where} '{location}', which does not exist next to the model")
        try:
            offset = int(info.get("offset", 0) or 0)
            length = int(info["length"]) if info.get("length") else None
        except ValueError:
            raise InputError(f"{where} '{location}' with a non-numeric offset or length") from None
        size = target.stat().st_size
        if offset < 0 or offset > size or (length is not None and offset + length > size):
            raise InputError(f"{where} '{location}' at bytes {offset}..{offset + (length or 0)}, "
                             f"past the end of the file ({size} bytes; a truncated data file?)")
        locations.add(location)
    return sorted(locations)


def check_graph(model: onnx.ModelProto, path: Path) -> None:
    """Every tensor a node reads is defined; then the onnx checker (first line of its message)."""
    graph = model.graph
    defined = {""}  # an empty name is an omitted optional input
    defined.update(v.name for v in graph.input)
    defined.update(t.name for t in graph.initializer)
    defined.update(s.values.name for s in graph.sparse_initializer)
    for node in graph.node:
        defined.update(node.output)
    for node in graph.node:
        for name in node.input:
            if name not in defined:
                label = node.name or f"{node.op_type} node"
                raise InputError(f"{path}: node '{label}' reads tensor '{name}', which no node, "
                                 "initializer or graph input defines")
    for output in graph.output:
        if output.name not in defined:
            raise InputError(f"{path}: graph output '{output.name}' is not produced by any node")
    try:
        if model.ByteSize() > onnx.checker.MAXIMUM_PROTOBUF:
            onnx.checker.check_model(os.fspath(path))
        else:
            onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path} is not a valid ONNX model: {first}") from None


def set_input_shapes(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]], path: Path) -> None:
    """Fix the shapes of graph inputs (``--input-shape``); a fixed dimension must match."""
    inputs = {v.name: v for v in model.graph.input}
    for name, shape in shapes.items():
        value = inputs.get(name)
        if value is None:
            raise InputError(f"--input-shape names '{name}', which is not an input of {path.name} "
                             f"(inputs: {', '.join(inputs) or 'none'})")
        dims = value.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            raise InputError(f"--input-shape {name}: {len(shape)} dimensions given, the input has "
                             f"{len(dims)}")
        for axis, (dim, size) in enumerate(zip(dims, shape)):
            if dim.HasField("dim_value") and dim.dim_value >= 0 and dim.dim_value != size:
                raise InputError(f"--input-shape {name}: dimension {axis} is fixed to {dim.dim_value} "
                                 f"in the model, got {size}")
            dim.Clear()
            dim.dim_value = int(size)


def _check_frontend_options(options: FrontendOptions) -> None:
    """Flags that only mean something when lowering TensorFlow are errors for an ONNX input."""
    defaults = FrontendOptions()
    misplaced = []
    if options.signature != defaults.signature:
        misplaced.append("--signature")
    if options.inputs_as_nchw:
        misplaced.append("--inputs-as-nchw")
    if options.opset is not None:
        misplaced.append("--opset")
    if options.outputs:
        misplaced.append("--outputs")
    if options.lowering != defaults.lowering:
        misplaced.append("--lowering")
    if misplaced:
        raise InputError(f"{', '.join(misplaced)} appl{'ies' if len(misplaced) == 1 else 'y'} to "
                         "TensorFlow models only; an ONNX model is compiled as it is")
