"""Stage 4 of the lowering, and the lowering as a whole: tf2onnx's ``process_tf_graph`` and ONNX
optimizers on the grappler output (:func:`convert`), after the user's overrides are checked, and
:func:`lower` running all four stages with their timings."""

from __future__ import annotations

import contextlib
import logging
import resource
import time
from pathlib import Path

import onnx

from trtcompile import checks
from trtcompile.errors import InputError
from trtcompile.frontend.tf_lowering.freeze import (
    count_source_ops,
    first_line,
    source_graph,
)
from trtcompile.frontend.tf_lowering import check as lowering_check
from trtcompile.frontend.tf_lowering.grappler import run_grappler
from trtcompile.frontend.tf_lowering.records import LoweringResult, SourceGraph
from trtcompile.shapes import format_dims

#: Opsets tf2onnx 1.17 lowers to that the passes and TensorRT support.
SUPPORTED_OPSETS = range(checks.MIN_OPSET, checks.MAX_OPSET + 1)

DEFAULT_OPSET = 17


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


def _fits(shape: list, expected: list) -> bool:
    """Whether ``shape`` sets only unknown dimensions of ``expected``, to positive sizes."""
    return len(shape) == len(expected) and all(
        given is not None and int(given) > 0 and (known is None or int(given) == known)
        for given, known in zip(shape, expected))


def _layout_note(name: str, shape: list, expected: list, nchw: bool) -> str:
    """For a 4-D image input: which layout ``--input-shape`` takes (the TensorFlow model's, NHWC,
    also under ``--inputs-as-nchw``, which transposes only the ONNX input), and the NHWC shape
    meant when ``shape`` is its NCHW form."""
    if len(expected) != 4:
        return ""
    note = ("; --input-shape takes the TensorFlow model's NHWC layout"
            + (f", also with --inputs-as-nchw {name}" if nchw else ""))
    if len(shape) == 4:
        as_nhwc = [shape[0], shape[2], shape[3], shape[1]]
        if _fits(as_nhwc, expected):
            note += f": {name}:{'x'.join(str(int(d)) for d in as_nhwc)}"
    return note


def _check_overrides(source: SourceGraph, options) -> None:
    names = [binding.onnx_name for binding in source.inputs]
    by_name = {binding.onnx_name: binding for binding in source.inputs}
    for name, shape in options.input_shapes.items():
        if name not in by_name:
            raise InputError(f"--input-shape names '{name}', which is not an input (inputs: {', '.join(names)})")
        expected = by_name[name].shape
        shape = list(shape)
        layout = _layout_note(name, shape, expected, name in set(options.inputs_as_nchw))
        if expected and len(shape) != len(expected):
            raise InputError(f"--input-shape {name}: rank {len(shape)} does not match the model's "
                             f"{format_dims(expected)}{layout}")
        if not _fits(shape, expected):
            raise InputError(f"--input-shape {name}={format_dims(shape)} conflicts with the model's "
                             f"{format_dims(expected)} (only unknown dimensions can be set, to "
                             f"positive sizes){layout}")
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
            ) -> tuple[onnx.ModelProto, int, str]:
    """Stages 3 and 4: grappler, then tf2onnx, then the check of the lowered model (see
    :mod:`~trtcompile.frontend.tf_lowering.check`). Returns the ONNX model, the hidden-weight
    count and the lowering mode actually used (``faithful`` falls back to ``tf2onnx-optimized``
    when its model fails the checker even after the cleanup; the note says so)."""
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
    tf_ops = {node.name: node.op for node in graph_def.node}
    with tf.device("/cpu:0"), tf.Graph().as_default() as tf_graph, _collect_unsupported_ops() as unsupported:
        try:
            tf.import_graph_def(graph_def, name="")
        except Exception as error:
            raise InputError(f"TensorFlow cannot import the frozen graph: {first_line(error)}") from None
        try:
            onnx_graph = process_tf_graph(
                tf_graph, continue_on_error=False, opset=opset, shape_override=shape_override or None,
                inputs_as_nchw=nchw, input_names=input_names, output_names=output_names,
                tensors_to_rename=rename, initialized_tables=source.initialized_tables or None)
        except Exception as error:
            problem = unsupported.problems[-1] if unsupported.problems else None
            if problem is None:
                origin = _failing_tf_node(error, tf_ops)
                if origin is None:
                    raise
                raise InputError(f"tf2onnx cannot lower TensorFlow op {origin[0]} (node "
                                 f"'{origin[1]}'): {first_line(error)}") from None
            op_type = problem[0] or _node_op(graph_def, problem[1])
            raise InputError(f"tf2onnx cannot lower TensorFlow op {op_type} (node '{problem[1]}'): "
                             f"{first_line(error)}") from None
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
        mode = options.lowering
        optimizers = {} if mode == "faithful" else None
        onnx_graph = optimizer.optimize_graph(onnx_graph, catch_errors=True, optimizers=optimizers)
        model = onnx_graph.make_model(f"lowered from TensorFlow by tf2onnx ({mode})")
        stage_seconds["onnx-model"] = time.perf_counter() - clock
        clock = time.perf_counter()
        source.cleaned = dict(lowering_check.clean_lowered(model))
        problem = lowering_check.checker_problem(model)
        if problem is not None and mode == "faithful":
            # What tf2onnx's own optimizers remove (the faithful mode turns them off) may be all
            # that is wrong: lower with them, and say so.
            onnx_graph = optimizer.optimize_graph(onnx_graph, catch_errors=True)
            model = onnx_graph.make_model("lowered from TensorFlow by tf2onnx (tf2onnx-optimized)")
            source.cleaned = dict(lowering_check.clean_lowered(model))
            source.note = ("the faithful lowering fails the ONNX checker "
                           f"({_short(problem)}); lowered with tf2onnx's optimizers instead")
            mode = "tf2onnx-optimized"
            problem = lowering_check.checker_problem(model)
        stage_seconds["check"] = time.perf_counter() - clock
        if problem is not None:
            raise InputError(lowering_check.lowering_error(problem, tf_ops, mode))
    return model, hidden, mode


def _short(problem: str) -> str:
    """The checker's first sentence, for a note."""
    return problem.split(". ==>")[0].split(" ==> ")[0][:200]


def _failing_tf_node(error: BaseException, tf_ops: dict[str, str]) -> tuple[str, str] | None:
    """``(op, node)`` of the TensorFlow node a tf2onnx error message names, if it names one."""
    text = str(error)
    for name in sorted(tf_ops, key=len, reverse=True):
        if name and name in text:
            return tf_ops[name], name
    return None


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
    model, hidden, mode = convert(source, options, stage_seconds)
    result = LoweringResult(
        tool=tool_name(), mode=mode, source_kind=kind, source_ops=source_ops,
        onnx_nodes=len(model.graph.node), seconds=time.perf_counter() - start,
        peak_rss_mb=peak_rss_mb(), inputs=inputs, outputs=outputs, hidden_weights=hidden,
        stage_seconds={name: round(value, 3) for name, value in stage_seconds.items()},
        note=source.note, cleaned=dict(source.cleaned), tables=len(source.initialized_tables))
    return model, result


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
