"""Stages 1 and 2 of the lowering: the model's source function (SavedModel signature, Keras
``call`` traced as a ``tf.function``, or a frozen ``GraphDef``), frozen to a ``GraphDef`` with its
variables as constants, and the ONNX names of its inputs and outputs (see
:mod:`trtcompile.frontend.tf_lowering` for why freezing avoids ``convert_variables_to_constants_v2``).

TensorFlow is imported inside the functions only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from trtcompile.errors import InputError
from trtcompile.frontend.tf_lowering.records import SourceGraph, TensorBinding

#: Ops not counted as source operations (graph plumbing, not computation).
PLUMBING_OPS = frozenset({"Const", "Identity", "IdentityN", "NoOp", "Placeholder"})


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its native start-up banner (CPU features, oneDNN, absl) kept off the
    user's terminal.

    Those lines are written by C++ to file descriptor 2 before any log-level setting applies, so
    the descriptor itself is pointed at a temporary file for the import; what was written is
    replayed only if the import fails.
    """
    import sys
    import tempfile

    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0].strip()


def _onnx_name(tf_tensor_name: str) -> str:
    return tf_tensor_name[:-2] if tf_tensor_name.endswith(":0") else tf_tensor_name


def _shape_list(shape) -> list[int | None]:
    return [None if d is None else int(d) for d in shape.as_list()] if shape.rank is not None else []


def _freeze(concrete_function, trackable=None):
    """GraphDef of ``concrete_function`` with its variables as constants (stage 2), and the
    contents of the lookup tables it reads by shared name.

    With the object that owns the function (``trackable``: the loaded SavedModel, the Keras
    model), the tables it reads (StaticHashTable, StaticVocabularyTable) are exported as
    ``tf2onnx.convert --saved-model`` does it (``tf_loader.from_trackable``): table resources are
    taken out of the function's captures before freezing (TensorFlow cannot freeze them), their
    placeholders become ``HashTableV2`` nodes named by shared name, and their keys and values go
    to ``process_tf_graph`` as ``initialized_tables``, so ``LookupTableFindV2`` lowers with its
    table.
    """
    from tf2onnx import tf_loader

    if trackable is None or not _reads_tables(concrete_function):
        graph_def = tf_loader.convert_variables_to_constants_large_model(concrete_function)
        return tf_loader.fix_freezing_errors_part2(graph_def), {}
    return _freeze_with_tables(concrete_function, trackable)


def _freeze_with_tables(concrete_function, trackable):
    """tf2onnx's ``from_trackable`` on the large-model freezing path. That path inlines the
    signature's function call with an ``Identity`` per argument, so a lookup reads its table
    through a chain of Identities; tf2onnx matches tables to the placeholder a lookup reads
    directly, so the chain is followed here first."""
    from tensorflow.python.ops import lookup_ops
    from tf2onnx import tf_loader, tf_utils

    # pylint: disable=protected-access - tf2onnx's own table export, step by step
    removed, placeholder_to_resource, graph_captures, function_captures = \
        tf_loader._remove_non_variable_resources_from_captures(concrete_function)
    try:
        graph_def = tf_loader.convert_variables_to_constants_large_model(concrete_function)
    finally:
        tf_loader._restore_captured_resources(concrete_function, graph_captures, function_captures)
    graph_def = tf_loader.fix_freezing_errors_part2(graph_def)
    _read_tables_directly(graph_def)
    table_info = tf_utils.get_hash_table_info(graph_def)
    placeholder_to_table_info: dict = {}
    tf_loader._get_hash_table_info_from_trackable(trackable, table_info, removed,
                                                  placeholder_to_table_info)
    tables = {}
    for info in table_info:
        if info.shared_name is not None:
            handle = lookup_ops.hash_table_v2(info.key_dtype, info.val_dtype,
                                              shared_name=info.shared_name)
        elif info.resource_input in placeholder_to_resource \
                and info.resource_input not in placeholder_to_table_info:
            handle = placeholder_to_resource[info.resource_input]
            info.shared_name = f"table_{len(tables)}_{info.resource_input}".encode()
            placeholder_to_table_info[info.resource_input] = info
        else:
            continue
        try:
            keys, values = lookup_ops.lookup_table_export_v2(handle, info.key_dtype, info.val_dtype)
        except Exception as error:  # TensorFlow raises many types for a table it cannot export
            raise InputError(f"cannot read the contents of lookup table "
                             f"{info.shared_name.decode(errors='replace')}: {first_line(error)}") from None
        tables[info.shared_name] = (keys.numpy(), values.numpy())
    tf_utils.replace_placeholders_with_tables(graph_def, placeholder_to_table_info)
    return graph_def, tables


def _read_tables_directly(graph_def) -> None:
    """Make every table lookup read its table's placeholder, past the Identities between."""
    nodes = {node.name: node for node in graph_def.node}
    for node in graph_def.node:
        if node.op not in TABLE_OPS or not node.input:
            continue
        source = node.input[0].split(":")[0]
        for _ in range(len(nodes)):  # bounded: a malformed graph may hold an Identity cycle
            producer = nodes.get(source)
            if producer is None or producer.op != "Identity" or not producer.input:
                break
            source = producer.input[0].split(":")[0]
        if source in nodes and nodes[source].op == "Placeholder":
            node.input[0] = source


#: Ops that read a lookup table resource.
TABLE_OPS = frozenset({"LookupTableFindV2", "LookupTableSizeV2", "LookupTableExportV2"})


def _reads_tables(concrete_function) -> bool:
    """True when the function (or a function it calls) looks up a table."""
    graph_def = concrete_function.graph.as_graph_def()
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    return any(node.op in TABLE_OPS for node in nodes)


def _bindings_from_function(concrete_function, input_keys: Sequence[str],
                            output_keys: Sequence[str]) -> tuple[list[TensorBinding], list[TensorBinding]]:
    """Bind the function's non-resource inputs/outputs (in flattened order) to ONNX names."""
    import tensorflow as tf

    tf_inputs = [t for t in concrete_function.inputs if t.dtype != tf.resource][:len(input_keys)]
    tf_outputs = [t for t in concrete_function.outputs if t.dtype != tf.resource]
    inputs = [TensorBinding(onnx_name=key, tf_name=t.name, feed_key=key, shape=_shape_list(t.shape),
                            dtype=t.dtype.name) for key, t in zip(input_keys, tf_inputs)]
    outputs = [TensorBinding(onnx_name=key, tf_name=t.name, feed_key=key, shape=_shape_list(t.shape),
                             dtype=t.dtype.name) for key, t in zip(output_keys, tf_outputs)]
    return inputs, outputs


def load_signature(path: Path, signature: str):
    """The concrete function of ``signature`` in the SavedModel at ``path``."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as error:  # TensorFlow raises many types for unreadable SavedModels
        raise InputError(f"cannot load SavedModel {path}: {first_line(error)}") from None
    signatures = dict(getattr(loaded, "signatures", {}) or {})
    if not signatures:
        raise InputError(f"SavedModel {path} has no serving signatures; export one with "
                         f"tf.saved_model.save(obj, path, signatures=obj.__call__.get_concrete_function("
                         f"tf.TensorSpec(...))) or Keras model.export(path)")
    if signature not in signatures:
        available = ", ".join(sorted(signatures)) or "none"
        raise InputError(f"SavedModel {path} has no signature '{signature}' (available: {available}); "
                         f"choose one with --signature")
    return loaded, signatures[signature]


def _source_from_savedmodel(path: Path, signature: str) -> SourceGraph:
    import tensorflow as tf

    loaded, function = load_signature(path, signature)
    _args, kwargs = function.structured_input_signature
    if _args:
        raise InputError(f"signature '{signature}' of {path} takes positional arguments; "
                         f"export a signature with named inputs")
    input_keys = sorted(kwargs)  # the flattened order of a dict structure
    structured = function.structured_outputs
    if isinstance(structured, Mapping):
        output_keys = sorted(structured)
    else:
        flat = tf.nest.flatten(structured)
        output_keys = [f"output_{i}" for i in range(len(flat))]
    inputs, outputs = _bindings_from_function(function, input_keys, output_keys)
    graph_def, tables = _freeze(function, loaded)
    return SourceGraph(graph_def, inputs, outputs, initialized_tables=tables)


def load_keras_model(path: Path, safe_mode: bool):
    """Load a ``.keras``/``.h5`` model for inference; every failure is an InputError."""
    import zipfile

    if path.suffix.lower() == ".keras" and path.is_file() and not zipfile.is_zipfile(path):
        raise InputError(f"cannot load Keras model {path}: not a Keras archive (.keras is a zip file "
                         f"written by model.save); a truncated or corrupted file?")
    import keras

    try:
        return keras.saving.load_model(str(path), compile=False, safe_mode=safe_mode)
    except Exception as error:  # Keras raises ValueError/TypeError/OSError/... for unusable files
        text = str(error)
        custom = re.search(r"Could not locate (?:class|function) '([^']+)'", text)
        if custom:
            raise InputError(f"cannot load Keras model {path}: it uses the custom object '{custom.group(1)}', "
                             f"which is not registered here; save the model as a SavedModel "
                             f"(model.export) to lower it without its Python code") from None
        if "safe_mode" in text:
            raise InputError(f"cannot load Keras model {path}: it contains Python code (e.g. a Lambda "
                             f"layer) that Keras safe mode refuses to load; export it as a SavedModel "
                             f"(model.export) instead") from None
        raise InputError(f"cannot load Keras model {path}: {first_line(error)}") from None


def keras_io_names(model) -> tuple[list[str], list[str]]:
    """Names of a Keras model's inputs and outputs (input layer names, output layer names)."""
    if not getattr(model, "inputs", None):
        raise InputError(f"Keras model '{model.name}' has no defined inputs; build it with keras.Input "
                         f"before saving")
    input_names = [t.name for t in model.inputs]
    output_names = []
    for index, tensor in enumerate(model.outputs):
        history = getattr(tensor, "_keras_history", None)
        layer = getattr(history, "operation", None) if history is not None else None
        output_names.append(layer.name if layer is not None else f"output_{index}")
    if len(set(output_names)) != len(output_names):
        output_names = [f"{name}_{i}" for i, name in enumerate(output_names)]
    return input_names, output_names


def _source_from_keras(path: Path, safe_mode: bool) -> SourceGraph:
    import tensorflow as tf

    model = load_keras_model(path, safe_mode)
    input_names, output_names = keras_io_names(model)
    specs = []
    for name, tensor in zip(input_names, model.inputs):
        # Traced with the model's own shapes (unknown batch stays unknown); --input-shape overrides
        # are applied by tf2onnx, the same way for every source kind.
        specs.append(tf.TensorSpec(tensor.shape, tensor.dtype, name=name))

    def forward(*inputs):
        results = model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
        flat = tf.nest.flatten(results)
        return {name: tf.identity(t, name=name) for name, t in zip(output_names, flat)}

    function = tf.function(forward, input_signature=specs).get_concrete_function()
    inputs, outputs = _bindings_from_function(function, input_names, sorted(output_names))
    order = {name: i for i, name in enumerate(output_names)}
    outputs.sort(key=lambda binding: order[binding.onnx_name])  # the model's own output order
    graph_def, tables = _freeze(function, model)
    return SourceGraph(graph_def, inputs, outputs, initialized_tables=tables)


def read_graph_def(path: Path):
    """Parse a frozen GraphDef file."""
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except Exception as error:
        raise InputError(f"{path} is not a frozen TensorFlow GraphDef: {first_line(error)}") from None
    if not graph_def.node:
        raise InputError(f"{path} is not a frozen TensorFlow GraphDef (no nodes)")
    return graph_def


def _tensor_name(name: str) -> str:
    return name if ":" in name else f"{name}:0"


def _source_from_frozen(path: Path, outputs: Sequence[str]) -> SourceGraph:
    graph_def = read_graph_def(path)
    nodes = {node.name: node for node in graph_def.node}
    variables = [n.name for n in graph_def.node if n.op in ("VariableV2", "VarHandleOp", "Variable")]
    if variables:
        raise InputError(f"{path} is not frozen: it still holds variables (e.g. '{variables[0]}'); "
                         f"freeze it or pass the SavedModel folder")
    if not outputs:
        raise InputError(f"frozen graph {path} needs --outputs (tensor names such as "
                         f"'{_suggest_outputs(graph_def)}')")
    output_tensors = [_tensor_name(name) for name in outputs]
    for tensor in output_tensors:
        if tensor.split(":")[0] not in nodes:
            raise InputError(f"output '{tensor}' is not a node of {path} "
                             f"(graph outputs look like: {_suggest_outputs(graph_def)})")
    # Inputs: the placeholders the outputs depend on.
    reachable, stack = set(), [t.split(":")[0] for t in output_tensors]
    while stack:
        name = stack.pop()
        if name in reachable or name not in nodes:
            continue
        reachable.add(name)
        stack.extend(i.lstrip("^").split(":")[0] for i in nodes[name].input)
    import tensorflow as tf

    inputs = []
    for node in graph_def.node:
        if node.op == "Placeholder" and node.name in reachable:
            shape = tf.TensorShape(node.attr["shape"].shape)
            tensor = f"{node.name}:0"
            inputs.append(TensorBinding(onnx_name=_onnx_name(tensor), tf_name=tensor, feed_key=tensor,
                                        shape=_shape_list(shape),
                                        dtype=tf.dtypes.as_dtype(node.attr["dtype"].type).name))
    output_bindings = [TensorBinding(onnx_name=_onnx_name(t), tf_name=t, feed_key=t) for t in output_tensors]
    return SourceGraph(graph_def, inputs, output_bindings)


def _suggest_outputs(graph_def) -> str:
    consumed = {i.lstrip("^").split(":")[0] for node in graph_def.node for i in node.input}
    sinks = [n.name for n in graph_def.node if n.name not in consumed and n.op not in ("NoOp", "Const")]
    return ", ".join(f"{name}:0" for name in sinks[:3]) or "none found"


def source_graph(path: Path, kind: str, options) -> SourceGraph:
    """Stage 1 and 2: the frozen graph of the model at ``path`` and its ONNX-named bindings."""
    if kind == "savedmodel":
        return _source_from_savedmodel(path, options.signature)
    if kind in ("keras", "h5"):
        return _source_from_keras(path, options.safe_mode)
    if kind == "frozen-pb":
        return _source_from_frozen(path, options.outputs)
    raise InputError(f"unknown TensorFlow model kind '{kind}'")


def count_source_ops(graph_def) -> int:
    """Computation ops of a frozen graph: nodes other than Const/Identity/NoOp/Placeholder."""
    return sum(1 for node in graph_def.node if node.op not in PLUMBING_OPS)
