"""Lowering TensorFlow models to ONNX with tf2onnx, and running them as the parity reference.

This module imports TensorFlow; :mod:`trtcompile.frontend.tensorflow` imports it only inside a lowering
(normally in a worker process started with ``python -m trtcompile.frontend.tf_lowering``) or when the
reference runner is first called, so importing trtcompile stays fast.

The lowering, stage by stage:

1. **Source function.** A SavedModel signature (``tf.saved_model.load(...).signatures[name]``), or a
   ``tf.function`` traced over a Keras model's ``call`` (``.keras``/``.h5``, loaded with
   ``compile=False`` and Keras safe mode), or a frozen ``GraphDef`` (``.pb``). The ONNX graph's input
   and output names come from here: signature keys, Keras input/output layer names, or frozen-graph
   tensor names without the ``:0`` suffix.
2. **Freezing.** Variables become ``Const`` nodes in a ``GraphDef`` by TensorFlow's own
   ``_replace_variables_by_constants`` (through tf2onnx's ``convert_variables_to_constants_large_model``).
   The public ``convert_variables_to_constants_v2`` does the same work and then rebuilds an eager
   ``ConcreteFunction`` from the frozen graph, which nobody needs here: for Keras VGG19 that rebuild
   alone copied the 574 MB of weights a dozen times (about 25 s and 5 GB).
3. **Grappler** with tf2onnx's settings (``constfold``, ``function``, ``dependency``), as tf2onnx
   always does. Grappler copies the whole ``GraphDef`` many times (meta-graph export, serialization,
   one copy per optimizer and iteration, deserialization): on VGG19 it peaked at 9.5 GB. Large weights
   that grappler cannot fold anyway (kernels of MatMul/convolutions, :data:`HIDDEN_WEIGHT_BYTES` and up)
   are therefore replaced by placeholders while grappler runs and put back afterwards; grappler still
   sees, and folds, everything else exactly as in a plain tf2onnx conversion.
4. **tf2onnx** ``process_tf_graph`` (handlers + rewriters) with the requested opset, shape overrides
   and ``inputs_as_nchw``; then tf2onnx's ONNX optimizers: none in ``faithful`` mode (our passes do that
   work), all of them in ``tf2onnx-optimized`` mode.

The reference runner (:class:`TensorFlowReference`) runs the original model with TensorFlow on
ONNX-named feeds and returns ONNX-named outputs.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import re
import resource
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import onnx  # noqa: E402

from trtcompile import checks  # noqa: E402
from trtcompile.errors import InputError  # noqa: E402
from trtcompile.shapes import format_dims  # noqa: E402

#: Constants of at least this many bytes that only feed MatMul/convolution weight inputs are hidden
#: from grappler (see the module docstring, stage 3).
HIDDEN_WEIGHT_BYTES = 16 * 1024 * 1024

#: Ops whose second input is a weight grappler never folds into anything when it is large.
WEIGHT_CONSUMERS = frozenset({
    "MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Conv2D", "Conv3D",
    "DepthwiseConv2dNative", "Conv2DBackpropInput", "Conv3DBackpropInputV2", "Einsum",
})

#: Ops not counted as source operations (graph plumbing, not computation).
PLUMBING_OPS = frozenset({"Const", "Identity", "IdentityN", "NoOp", "Placeholder"})

#: Opsets tf2onnx 1.17 lowers to that the passes and TensorRT support.
SUPPORTED_OPSETS = range(checks.MIN_OPSET, checks.MAX_OPSET + 1)

DEFAULT_OPSET = 17


@dataclass
class TensorBinding:
    """One ONNX graph input or output and the TensorFlow tensor it stands for."""

    onnx_name: str
    tf_name: str  # tensor in the frozen graph, e.g. "serving_default_image:0"
    feed_key: str  # how the reference passes/receives it: signature key, Keras name, or tensor name
    shape: list[int | None] = field(default_factory=list)  # TensorFlow's shape (NHWC for images)
    dtype: str = "float32"
    nchw: bool = False  # the ONNX input is the NCHW transpose of the TensorFlow input


@dataclass
class LoweringResult:
    """What a lowering produced besides the ONNX model (JSON-serializable)."""

    tool: str
    mode: str
    source_kind: str
    source_ops: int
    onnx_nodes: int
    seconds: float
    peak_rss_mb: float
    inputs: list[TensorBinding]
    outputs: list[TensorBinding]
    hidden_weights: int = 0
    #: Seconds per stage: load (source + freeze), grappler, tf2onnx, onnx-optimizers.
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "LoweringResult":
        data = json.loads(text)
        data["inputs"] = [TensorBinding(**b) for b in data["inputs"]]
        data["outputs"] = [TensorBinding(**b) for b in data["outputs"]]
        return cls(**data)


@dataclass
class SourceGraph:
    """A frozen TensorFlow graph with the ONNX names of its inputs and outputs."""

    graph_def: object  # tf.compat.v1.GraphDef
    inputs: list[TensorBinding]
    outputs: list[TensorBinding]


# --------------------------------------------------------------------------------------------
# Stage 1 + 2: source function, frozen graph
# --------------------------------------------------------------------------------------------



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

def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0].strip()


def _onnx_name(tf_tensor_name: str) -> str:
    return tf_tensor_name[:-2] if tf_tensor_name.endswith(":0") else tf_tensor_name


def _shape_list(shape) -> list[int | None]:
    return [None if d is None else int(d) for d in shape.as_list()] if shape.rank is not None else []


def _freeze(concrete_function):
    """GraphDef of ``concrete_function`` with its variables as constants (stage 2)."""
    from tf2onnx import tf_loader

    graph_def = tf_loader.convert_variables_to_constants_large_model(concrete_function)
    return tf_loader.fix_freezing_errors_part2(graph_def)


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
        raise InputError(f"cannot load SavedModel {path}: {_first_line(error)}") from None
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

    _loaded, function = load_signature(path, signature)
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
    return SourceGraph(_freeze(function), inputs, outputs)


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
        raise InputError(f"cannot load Keras model {path}: {_first_line(error)}") from None


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
    return SourceGraph(_freeze(function), inputs, outputs)


def read_graph_def(path: Path):
    """Parse a frozen GraphDef file."""
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except Exception as error:
        raise InputError(f"{path} is not a frozen TensorFlow GraphDef: {_first_line(error)}") from None
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


# --------------------------------------------------------------------------------------------
# Stage 3: grappler, with large weights hidden
# --------------------------------------------------------------------------------------------


def _bypass_constant_identities(graph_def, keep: set[str]) -> None:
    """Make consumers of ``Identity(Const)`` read the constant directly (what grappler's dependency
    optimizer does anyway), so weights are seen with their real consumers."""
    constants = {node.name for node in graph_def.node if node.op == "Const"}
    # A SavedModel signature puts a chain of Identities between a weight and its reader (one per
    # function-call boundary, then ReadVariableOp's): follow each chain to its constant.
    source = {node.name: node.input[0].split(":")[0] for node in graph_def.node
              if node.op == "Identity" and len(node.input) == 1 and not node.input[0].startswith("^")
              and node.input[0].split(":")[-1] in ("0", node.input[0]) and node.name not in keep}
    alias = {}
    for name, target in source.items():
        for _ in range(len(source)):  # bounded: a malformed graph may hold an Identity cycle
            if target not in source:
                break
            target = source[target]
        if target in constants:
            alias[name] = target
    if not alias:
        return
    for node in graph_def.node:
        for index, name in enumerate(node.input):
            if name.startswith("^"):
                if name[1:] in alias:
                    node.input[index] = "^" + alias[name[1:]]
            elif name.split(":")[0] in alias and name.split(":")[-1] in ("0", name):
                node.input[index] = alias[name.split(":")[0]]
    kept = [node for node in graph_def.node if node.name not in alias]
    del graph_def.node[:]
    graph_def.node.extend(kept)


def _hide_large_weights(graph_def) -> dict[str, object]:
    """Swap large weight constants for placeholders; returns the hidden NodeDefs by name."""
    consumers: dict[str, list] = collections.defaultdict(list)
    for node in graph_def.node:
        for index, name in enumerate(node.input):
            if not name.startswith("^"):
                consumers[name.split(":")[0]].append((node.op, index))
    hidden = {}
    for position, node in enumerate(graph_def.node):
        if node.op != "Const" or len(node.attr["value"].tensor.tensor_content) < HIDDEN_WEIGHT_BYTES:
            continue
        uses = consumers.get(node.name, [])
        if not uses or not all(op in WEIGHT_CONSUMERS and index >= 1 for op, index in uses):
            continue
        from tensorflow.core.framework import node_def_pb2

        placeholder = node_def_pb2.NodeDef(name=node.name, op="Placeholder")
        placeholder.attr["dtype"].CopyFrom(node.attr["dtype"])
        placeholder.attr["shape"].shape.CopyFrom(node.attr["value"].tensor.tensor_shape)
        hidden[node.name] = node_def_pb2.NodeDef()
        hidden[node.name].CopyFrom(node)
        graph_def.node[position].CopyFrom(placeholder)
    return hidden


def _restore_hidden(graph_def, hidden: Mapping[str, object]) -> None:
    for position, node in enumerate(graph_def.node):
        if node.op == "Placeholder" and node.name in hidden:
            graph_def.node[position].CopyFrom(hidden[node.name])


def run_grappler(graph_def, input_names: list[str], output_names: list[str]):
    """Stage 3: tf2onnx's grappler pass with large weights hidden. Returns (graph_def, hidden count)."""
    import tensorflow as tf
    from tf2onnx import tf_loader

    _bypass_constant_identities(graph_def, {name.split(":")[0] for name in output_names})
    hidden = _hide_large_weights(graph_def)
    with tf.Graph().as_default():
        optimized = tf_loader.tf_optimize(input_names, output_names, graph_def)
    del graph_def
    _restore_hidden(optimized, hidden)
    return optimized, len(hidden)


# --------------------------------------------------------------------------------------------
# Stage 4: tf2onnx
# --------------------------------------------------------------------------------------------


class _UnsupportedOps(logging.Handler):
    """Collects tf2onnx's reports of ops it has no handler for or failed to convert."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.problems: list[tuple[str, str, str]] = []  # (op type, node name, reason)

    def emit(self, record: logging.LogRecord) -> None:
        message = str(record.msg)
        args = record.args if isinstance(record.args, tuple) else ()
        if message.startswith("Tensorflow op [") and len(args) >= 2:
            self.problems.append((str(args[1]), str(args[0]), "has no ONNX lowering"))
        elif message.startswith("Failed to convert node") and len(args) >= 1:
            self.problems.append(("", str(args[0]), "failed to convert"))


@contextlib.contextmanager
def _collect_unsupported_ops():
    handler = _UnsupportedOps()
    logger = logging.getLogger("tf2onnx")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def _node_op(graph_def, node_name: str) -> str:
    for node in graph_def.node:
        if node.name == node_name:
            return node.op
    return "?"


def _check_overrides(source: SourceGraph, options) -> None:
    names = [binding.onnx_name for binding in source.inputs]
    by_name = {binding.onnx_name: binding for binding in source.inputs}
    for name, shape in options.input_shapes.items():
        if name not in by_name:
            raise InputError(f"--input-shape names '{name}', which is not an input (inputs: {', '.join(names)})")
        expected = by_name[name].shape
        shape = list(shape)
        if expected and len(shape) != len(expected):
            raise InputError(f"--input-shape {name}: rank {len(shape)} does not match the model's "
                             f"{format_dims(expected)}")
        for given, known in zip(shape, expected):
            if given is None or int(given) <= 0 or (known is not None and int(given) != known):
                raise InputError(f"--input-shape {name}={format_dims(shape)} conflicts with the model's "
                                 f"{format_dims(expected)} (only unknown dimensions can be set, to positive sizes)")
    for name in options.inputs_as_nchw:
        if name not in by_name:
            raise InputError(f"--inputs-as-nchw names '{name}', which is not an input (inputs: {', '.join(names)})")
        if len(by_name[name].shape) != 4:
            raise InputError(f"--inputs-as-nchw {name}: input has shape {format_dims(by_name[name].shape)}, "
                             f"not a 4-D NHWC image")
    if options.opset is not None and options.opset not in SUPPORTED_OPSETS:
        raise InputError(f"--opset {options.opset} is not supported (use {SUPPORTED_OPSETS.start} to "
                         f"{SUPPORTED_OPSETS.stop - 1})")
    if options.lowering not in ("faithful", "tf2onnx-optimized"):
        raise InputError(f"--lowering must be 'faithful' or 'tf2onnx-optimized', not '{options.lowering}'")


def convert(source: SourceGraph, options, stage_seconds: dict[str, float] | None = None
            ) -> tuple[onnx.ModelProto, int]:
    """Stages 3 and 4: grappler, then tf2onnx. Returns the ONNX model and the hidden-weight count."""
    stage_seconds = {} if stage_seconds is None else stage_seconds
    clock = time.perf_counter()
    import tensorflow as tf
    from tf2onnx import optimizer
    from tf2onnx.tfonnx import process_tf_graph

    input_names = [b.tf_name for b in source.inputs]
    output_names = [b.tf_name for b in source.outputs]
    rename = {b.tf_name: b.onnx_name for b in source.inputs + source.outputs}
    shape_override = {}
    for binding in source.inputs:
        shape = options.input_shapes.get(binding.onnx_name)
        if shape is not None:
            shape_override[binding.tf_name] = [int(d) for d in shape]
    nchw = [b.tf_name for b in source.inputs if b.onnx_name in set(options.inputs_as_nchw)]
    graph_def = source.graph_def
    source.graph_def = None  # the only reference left is ours: grappler's copies can be freed early
    graph_def, hidden = run_grappler(graph_def, input_names, output_names)
    stage_seconds["grappler"] = time.perf_counter() - clock
    clock = time.perf_counter()
    opset = options.opset or DEFAULT_OPSET
    with tf.device("/cpu:0"), tf.Graph().as_default() as tf_graph, _collect_unsupported_ops() as unsupported:
        try:
            tf.import_graph_def(graph_def, name="")
        except Exception as error:
            raise InputError(f"TensorFlow cannot import the frozen graph: {_first_line(error)}") from None
        try:
            onnx_graph = process_tf_graph(
                tf_graph, continue_on_error=False, opset=opset, shape_override=shape_override or None,
                inputs_as_nchw=nchw, input_names=input_names, output_names=output_names,
                tensors_to_rename=rename)
        except Exception as error:
            problem = unsupported.problems[-1] if unsupported.problems else None
            if problem is None:
                raise
            op_type = problem[0] or _node_op(graph_def, problem[1])
            raise InputError(f"tf2onnx cannot lower TensorFlow op {op_type} (node '{problem[1]}'): "
                             f"{_first_line(error)}") from None
        if unsupported.problems:
            op_type, node_name, reason = unsupported.problems[0]
            op_type = op_type or _node_op(graph_def, node_name)
            others = len(unsupported.problems) - 1
            more = f" (and {others} more)" if others else ""
            raise InputError(f"TensorFlow op {op_type} (node '{node_name}') {reason} in tf2onnx{more}; "
                             f"replace it in the model or export without it")
        del graph_def
        stage_seconds["tf2onnx"] = time.perf_counter() - clock
        clock = time.perf_counter()
        optimizers = {} if options.lowering == "faithful" else None
        onnx_graph = optimizer.optimize_graph(onnx_graph, catch_errors=True, optimizers=optimizers)
        model = onnx_graph.make_model(f"lowered from TensorFlow by tf2onnx ({options.lowering})")
        stage_seconds["onnx-model"] = time.perf_counter() - clock
    return model, hidden


def tool_name() -> str:
    """The lowering tool and its version, as reports show it (``tf2onnx 1.17.0``)."""
    import tf2onnx

    return f"tf2onnx {tf2onnx.__version__}"


def lower(path: Path, kind: str, options) -> tuple[onnx.ModelProto, LoweringResult]:
    """Lower the TensorFlow model at ``path`` to ONNX (all stages). Raises InputError on bad input."""
    start = time.perf_counter()
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    source = source_graph(path, kind, options)
    stage_seconds = {"load": time.perf_counter() - start}
    _check_overrides(source, options)
    source_ops = count_source_ops(source.graph_def)
    for binding in source.inputs:
        binding.nchw = binding.onnx_name in set(options.inputs_as_nchw)
    inputs, outputs = list(source.inputs), list(source.outputs)
    model, hidden = convert(source, options, stage_seconds)
    result = LoweringResult(
        tool=tool_name(), mode=options.lowering, source_kind=kind, source_ops=source_ops,
        onnx_nodes=len(model.graph.node), seconds=time.perf_counter() - start,
        peak_rss_mb=peak_rss_mb(), inputs=inputs, outputs=outputs, hidden_weights=hidden,
        stage_seconds={name: round(value, 3) for name, value in stage_seconds.items()})
    return model, result


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


# --------------------------------------------------------------------------------------------
# The reference runner
# --------------------------------------------------------------------------------------------


class TensorFlowReference:
    """Runs the source model with TensorFlow on ONNX-named feeds; returns ONNX-named outputs.

    The model is loaded on the first call (TensorFlow is imported then, not before). Inputs lowered
    with ``inputs_as_nchw`` are transposed back to NHWC before TensorFlow sees them.
    """

    def __init__(self, path: Path, kind: str, options, inputs: Sequence[TensorBinding],
                 outputs: Sequence[TensorBinding]):
        self.path, self.kind, self.options = Path(path), kind, options
        self.inputs, self.outputs = list(inputs), list(outputs)
        self._run = None

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._run is None:
            self._run = self._build()
        missing = [b.onnx_name for b in self.inputs if b.onnx_name not in feeds]
        if missing:
            raise InputError(f"reference run is missing inputs: {', '.join(missing)}")
        tf_feeds = {}
        for binding in self.inputs:
            value = np.asarray(feeds[binding.onnx_name])
            if binding.nchw:
                value = np.transpose(value, (0, 2, 3, 1))
            tf_feeds[binding.feed_key] = value.astype(binding.dtype, copy=False)
        results = self._run(tf_feeds)
        return {b.onnx_name: np.asarray(results[b.feed_key]) for b in self.outputs}

    def _build(self):
        from trtcompile import progress

        with progress.stage("importing TensorFlow for the reference run",
                            getattr(self.options, "progress", False)):
            import_tensorflow_quietly()
            import tensorflow as tf

        if self.kind == "savedmodel":
            loaded, function = load_signature(self.path, self.options.signature)

            def run_signature(feeds):
                outputs = function(**{k: tf.constant(v) for k, v in feeds.items()})
                if not isinstance(outputs, Mapping):
                    outputs = {f"output_{i}": t for i, t in enumerate(tf.nest.flatten(outputs))}
                return {k: t.numpy() for k, t in outputs.items()}

            run_signature.keep_alive = loaded  # the signature needs its SavedModel object alive
            return run_signature
        if self.kind in ("keras", "h5"):
            model = load_keras_model(self.path, self.options.safe_mode)
            input_names, output_names = keras_io_names(model)

            def run_keras(feeds):
                values = [tf.constant(feeds[name]) for name in input_names]
                results = model(values if len(values) > 1 else values[0], training=False)
                return {name: t.numpy() for name, t in zip(output_names, tf.nest.flatten(results))}

            return run_keras
        if self.kind == "frozen-pb":
            graph_def = read_graph_def(self.path)
            feed_names = [b.feed_key for b in self.inputs]
            fetch_names = [b.feed_key for b in self.outputs]
            wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
            pruned = wrapped.prune([wrapped.graph.get_tensor_by_name(n) for n in feed_names],
                                   [wrapped.graph.get_tensor_by_name(n) for n in fetch_names])

            def run_frozen(feeds):
                results = pruned(*[tf.constant(feeds[n]) for n in feed_names])
                return {n: t.numpy() for n, t in zip(fetch_names, results)}

            return run_frozen
        raise InputError(f"no TensorFlow reference for model kind '{self.kind}'")


# --------------------------------------------------------------------------------------------
# Worker process
# --------------------------------------------------------------------------------------------


def worker_main(argv: Sequence[str]) -> int:
    """``python -m trtcompile.frontend.tf_lowering REQUEST.json``: lower one model in this process.

    The request names the model, its kind, the frontend options and an output folder; the worker
    writes ``model.onnx`` and ``result.json`` there, or ``error.json`` for bad input.
    """
    import tensorflow  # noqa: F401  (imported first so that result.seconds times the lowering alone)

    from trtcompile.frontend import FrontendOptions

    request = json.loads(Path(argv[0]).read_text())
    out_dir = Path(request["out_dir"])
    options_data = request["options"]
    options_data["input_shapes"] = {k: list(v) for k, v in options_data["input_shapes"].items()}
    options = FrontendOptions(**options_data)
    try:
        model, result = lower(Path(request["path"]), request["kind"], options)
    except InputError as error:
        (out_dir / "error.json").write_text(json.dumps({"message": str(error)}))
        return 2
    model_path = out_dir / "model.onnx"
    if model.ByteSize() > onnx.checker.MAXIMUM_PROTOBUF:
        onnx.save_model(model, str(model_path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location="model.onnx.data")
    else:
        model_path.write_bytes(model.SerializeToString())
    del model
    result.peak_rss_mb = peak_rss_mb()
    (out_dir / "result.json").write_text(result.to_json())
    return 0


if __name__ == "__main__":
    try:
        sys.exit(worker_main(sys.argv[1:]))
    except Exception:  # a bug: the parent shows this traceback
        traceback.print_exc()
        sys.exit(70)
