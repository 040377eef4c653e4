"""What ``precision-fp16{keep=auto}`` measures on the user's data, and the keep-list it derives.

The FP32 model runs on ONNX Runtime (CPU, as parity runs it) with every top-level tensor added as
an output, one batch at a time, on up to ``samples`` samples. Per top-level node:

* ``max_abs_fp32``: the largest finite magnitude among its float inputs and outputs;
* ``alone_error``: the node converted to float16 alone (a one-node model converted by the pass's
  own rules, fed its captured FP32 inputs rounded to float16) against its FP32 outputs, as the
  largest ``|fp16 - fp32|`` over the largest ``|fp32|`` of that output (infinite where float16
  gives a NaN or an infinity FP32 does not), on the first :data:`ALONE_SAMPLES` samples.

Then the keep-list: every node whose range exceeds ``data_max`` (overflow); then, while the
converted model's outputs on the samples are outside FP16's tolerances or a float16 tensor of
it is not finite, more nodes by largest alone-error (1, 2, 4, ... per round, at most
``max_rounds`` rounds); then up to :data:`GIVE_BACK` nodes of the last round go back to
float16, smallest error first, while the model still passes. Cost: one full run per batch, one
one-node session per candidate node run on the first batches, one converted-model run per check.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from passes.precision_fp16.half import FLOAT16, Half
from trtcompile import calibration, ir, verify
from trtcompile.calibration import measuring
from trtcompile.errors import InputError
from trtcompile.pm import PassContext, PassResult

#: The resource key the flow (or a PassManager's caller) puts the samples under.
RESOURCE = "precision-fp16"
#: ``ctx.resources`` key of the tolerances parity judges the compile by (a PrecisionTolerances).
TOLERANCES = "parity-tolerances"

#: Samples each node's error alone is measured on (the first batches): it ranks the nodes, while
#: the ranges and the whole-model check take every sample measured. One one-node session per
#: candidate runs per batch, the bulk of the cost (googlenet-onnx at batch 1, 26 nodes, 32
#: samples, two CPU cores: the pass takes 7 s measuring every sample alone, 1-3.5 s with 8).
ALONE_SAMPLES = 8

#: The counts :func:`finish` reports (what was measured and decided, not rewrites).
COUNTS = ("measured_samples", "measured_nodes", "kept_for_overflow", "kept_for_error",
          "kept_not_finite", "whole_model_checks", "outputs_outside_fp16_tolerance")

#: Nodes of the last round's batch handed back to float16 at most, one check each.
GIVE_BACK = 4

#: What the table calls each reason a node was kept by the data.
OVERFLOW = "overflow"
ERROR = "error"
NOT_FINITE = "not finite"

#: Converts a copy of the graph with the given node -> reason keep-list; returns its result.
Convert = Callable[[gs.Graph, Mapping[str, str]], PassResult]


@dataclass
class NodeRisk:
    """One row of the precision risk table."""

    name: str
    op: str
    max_abs_fp32: float = 0.0
    #: None: not converted by the static rules (so not measured alone).
    alone_error: float | None = None
    kept: bool = False
    reason: str | None = None
    #: Why the data kept it (``overflow``, ``error``, ``not finite``), None otherwise.
    kept_by: str | None = None
    #: Whether it reads or writes a float tensor (only those are in the table).
    floating: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The report's row (infinite errors as the string ``inf``: JSON has no infinity)."""
        error = self.alone_error
        return {"name": self.name, "op": self.op,
                "max_abs_fp32": measuring.json_number(self.max_abs_fp32),
                "alone_error": None if error is None else measuring.json_number(error),
                "kept": self.kept, "kept_by": self.kept_by, "reason": self.reason}


@dataclass
class Measurement:
    """The keep-list the data gave (node -> reason) and the per-node rows."""

    rows: dict[str, NodeRisk]
    reasons: dict[str, str] = field(default_factory=dict)
    samples: int = 0
    rounds: int = 0
    within_tolerance: bool = True


def data_of(ctx: PassContext) -> calibration.CalibrationData | None:
    """The samples ``ctx.resources["precision-fp16"]`` holds (a ``CalibrationData``, a
    ``Calibration`` or a dict of arrays by input name), or None."""
    given = ctx.resources.get(RESOURCE)
    if isinstance(given, calibration.Calibration):
        given = given.data
    if isinstance(given, Mapping) and given and all(
            isinstance(v, np.ndarray) for v in given.values()):
        given = calibration.CalibrationData(dict(given), source="given arrays")
    if isinstance(given, calibration.CalibrationData) and given.num_samples:
        return given
    return None


def require_data(ctx: PassContext) -> calibration.CalibrationData:
    """The samples, or InputError in one line saying what to give."""
    data = data_of(ctx)
    if data is None:
        raise InputError("precision-fp16{keep=auto} measures the model on data: give "
                         "--calib-data FILE or --inputs FILE (from Python: "
                         'ctx.resources["precision-fp16"] = CalibrationData), or use keep=static')
    return data


def tolerances_of(ctx: PassContext, half: Half) -> calibration.PrecisionTolerances:
    """The tolerances the converted model's outputs must meet: those parity will judge them by
    (``ctx.resources["parity-tolerances"]``, a compile's ``--atol``/``--rtol``), else ``half``'s
    defaults."""
    given = ctx.resources.get(TOLERANCES)
    return given if given is not None else calibration.precision_tolerances(half.precision)


def measure(graph: gs.Graph, data: calibration.CalibrationData, convert: Convert, *,
            user_keep: Mapping[str, str], data_max: float, samples: int,
            max_rounds: int, half: Half = FLOAT16,
            tolerances: calibration.PrecisionTolerances | None = None) -> Measurement:
    """Measure ``graph`` (FP32, unchanged) on ``data`` and decide which nodes stay float32 when
    the rest is converted to ``half`` (float16; bfloat16 runs as its float32 emulation on ONNX
    Runtime, see :mod:`trtcompile.ir.bfloat16`) so that its outputs meet ``tolerances``
    (``half``'s defaults when None)."""
    model = ir.export_model(graph.copy())
    batches = measuring.sample_batches(model, data, samples)
    # The static rules' verdict: only the nodes they convert are candidates to measure alone.
    static = graph.copy()
    convert(static, user_keep)
    converted = _converted_nodes(static, half)
    rows = {node.name: NodeRisk(node.name, node.op_type) for node in model.graph.node
            if node.name}
    measurement = Measurement(rows, samples=sum(measuring.batch_size(b) for b in batches))

    capture = measuring.capture_model(model)
    names = [value.name for value in capture.graph.output]
    session = verify.inference_session(capture)
    singles = {node.name: measuring.single_node_model(model, node) for node in model.graph.node
               if node.name in converted}
    single_sessions: dict[str, Any] = {}
    reference_outputs = []
    alone: dict[str, measuring.RelativeError] = {}
    fp32_not_finite: set[str] = set()  # tensors FP32 itself makes infinite or NaN on the data
    seen = 0
    for feed in batches:
        values = dict(zip(names, session.run(None, feed)))
        values.update(feed)
        reference_outputs.append([values[v.name] for v in model.graph.output])
        peaks = {name: verify.output_peak([array]) for name, array in values.items()
                 if np.asarray(array).dtype.kind == "f"}
        fp32_not_finite.update(name for name in peaks if not np.all(np.isfinite(values[name])))
        for node in model.graph.node:
            row = rows.get(node.name)
            if row is None:
                continue
            read = [peaks[name] for name in [*node.input, *node.output] if name in peaks]
            row.floating |= bool(read)
            row.max_abs_fp32 = max(row.max_abs_fp32, *read, 0.0)
            if node.name in singles and seen < ALONE_SAMPLES:
                _alone_error(node, singles[node.name], single_sessions, values, convert,
                             alone.setdefault(node.name, measuring.RelativeError()), half)
        seen += measuring.batch_size(feed)
    errors = {name: error.value for name, error in alone.items() if error.value is not None}
    for name, error in errors.items():
        rows[name].alone_error = error

    reasons = dict(user_keep)
    for name in converted:
        row = rows.get(name)
        if row is not None and row.max_abs_fp32 > data_max:
            reasons[name] = (f"overflow risk: |x| exceeds data-max={data_max:g} on the data "
                             f"({half.name} ends at {half.max:g})")
            row.kept_by = OVERFLOW

    by_error = sorted((n for n in converted if n not in reasons and errors.get(n, 0.0) > 0),
                      key=lambda n: (-errors[n], n))
    if tolerances is None:
        tolerances = calibration.precision_tolerances(half.precision)

    def check(keep: Mapping[str, str]) -> tuple[list[str], bool]:
        measurement.rounds += 1
        trial = graph.copy()
        convert(trial, keep)
        return _check(trial, model, batches, reference_outputs, tolerances, fp32_not_finite,
                      half)

    taken: list[str] = []
    passed = False
    for round_index in range(max_rounds):
        not_finite, passed = check(reasons)
        fresh = [n for n in not_finite if n not in reasons]
        for name in fresh:
            reasons[name] = f"{half.name} result not finite on the data"
            if name in rows:
                rows[name].kept_by = NOT_FINITE
        if fresh:
            passed = False
            continue
        passed = passed and not not_finite
        if passed:
            break
        taken = [n for n in by_error if n not in reasons][:2 ** round_index]
        if not taken:
            break
        for name in taken:
            reasons[name] = (f"among the largest {half.name} errors alone, kept until the outputs "
                             f"met {half.precision.upper()} tolerance on the data")
            rows[name].kept_by = ERROR
    else:
        not_finite, passed = check(reasons)
        passed = passed and not not_finite
    if passed:
        # The last round kept a batch of nodes where fewer may do: give back its smallest
        # errors one at a time while the model still passes (at most GIVE_BACK checks).
        for name in list(reversed(taken[1:]))[:GIVE_BACK]:
            reason = reasons.pop(name)
            not_finite, still = check(reasons)
            if still and not not_finite:
                rows[name].kept_by = None
            else:
                reasons[name] = reason
    measurement.within_tolerance = passed
    measurement.reasons = {n: r for n, r in reasons.items() if n not in user_keep}
    return measurement


def finish(measurement: Measurement, result: PassResult, data_max: float,
           half: Half = FLOAT16) -> None:
    """Mark the rows the conversion kept in float32 (with its reason), and put the table, what it
    was measured for (``precision_risk_setting``: the precision and the ``data_max`` applied) and
    the counts into ``result``."""
    reasons = {}
    for rejection in result.rejections:
        for name in rejection.nodes:
            reasons.setdefault(name, rejection.reason)
    for row in measurement.rows.values():
        row.reason = reasons.get(row.name)
        row.kept = row.reason is not None
    ranked = sorted((r for r in measurement.rows.values() if r.floating),
                    key=lambda r: risk_key(r, data_max))
    result.tables["precision_risk"] = [row.to_dict() for row in ranked]
    result.tables["precision_risk_setting"] = [{"precision": half.precision,
                                                "data_max": data_max}]
    result.count("measured_samples", measurement.samples)
    result.count("measured_nodes", sum(1 for r in measurement.rows.values()
                                       if r.alone_error is not None))
    for kind, key in ((OVERFLOW, "kept_for_overflow"), (ERROR, "kept_for_error"),
                      (NOT_FINITE, "kept_not_finite")):
        kept = sum(1 for r in measurement.rows.values() if r.kept_by == kind)
        if kept:
            result.count(key, kept)
    result.count("whole_model_checks", measurement.rounds)
    if not measurement.within_tolerance:
        result.count("outputs_outside_fp16_tolerance")


def risk_key(row: NodeRisk, data_max: float) -> tuple:
    """Riskiest first: over ``data_max``, then by alone-error, then by range."""
    error = row.alone_error if row.alone_error is not None else -1.0
    return (row.max_abs_fp32 <= data_max, -error, -row.max_abs_fp32, row.name)


# --------------------------------------------------------------------------------------------


def _converted_nodes(converted: gs.Graph, half: Half) -> set[str]:
    """Names of the top-level nodes the conversion made compute in ``half``."""
    names = set()
    for node in converted.nodes:
        if any(isinstance(t, gs.Variable) and t.dtype == half.np_type for t in node.outputs) or any(
                t.dtype == half.np_type for t in node.inputs if t.dtype is not None):
            names.add(node.name)
    return names


def _alone_error(node: onnx.NodeProto, single: onnx.ModelProto, sessions: dict[str, Any],
                 values: Mapping[str, np.ndarray], convert: Convert,
                 error: measuring.RelativeError, half: Half) -> None:
    """Add to ``error`` the node converted alone, on its captured inputs of one batch, against
    its captured outputs."""
    if node.name not in sessions:
        typed = measuring.typed(single, values)
        graph = ir.import_model(typed)
        convert(graph, {})
        # ONNX Runtime's CPU provider runs a float16 op it has no kernel for in float32 and,
        # when its inputs are Casts from float32 and its outputs Casts back, drops those Casts:
        # the rounding and the overflow a GPU engine would show disappear. So the node reads
        # float16 inputs given as such (rounded here), and each result is read where it is
        # float16, before the Cast back to float32.
        rounded = _feed_half(graph, half)
        compared = {}
        for tensor in list(graph.outputs):
            producer = ir.producer(tensor)
            inner = producer.inputs[0] if producer is not None and producer.op == "Cast" else None
            compared[tensor.name] = (inner.name if inner is not None and inner.dtype == half.np_type
                                     else tensor.name)
            if compared[tensor.name] != tensor.name:
                graph.outputs.append(inner)
        graph.cleanup(remove_unused_graph_inputs=True)
        sessions[node.name] = (verify.inference_session(ir.export_model(graph)), compared, rounded)
    session, compared, rounded = sessions[node.name]
    feed = {}
    for item in session.get_inputs():
        source = rounded.get(item.name)
        feed[item.name] = half.round(values[source]) if source is not None else values[item.name]
    produced = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
    for name, inner in compared.items():
        error.add(values[name], produced[inner])


def _check(trial: gs.Graph, model: onnx.ModelProto, batches: list[dict[str, np.ndarray]],
           reference_outputs: list[list[np.ndarray]], tolerances: calibration.PrecisionTolerances,
           fp32_not_finite: set[str], half: Half) -> tuple[list[str], bool]:
    """Run the converted ``trial`` on the batches: the nodes to blame for its float16 tensors
    holding a NaN or an infinity where FP32 holds none (their producer; for a Cast the pass
    inserted, the model's nodes reading it), and whether its outputs are within FP16's
    tolerances."""
    originals = {node.name for node in model.graph.node}
    extra = []
    blame: dict[str, list[str]] = {}
    for tensor in _half_tensors(trial, half):
        producer = ir.producer(tensor)
        source = producer.inputs[0].name if producer.op == "Cast" and producer.inputs else ""
        if tensor.name in fp32_not_finite or source in fp32_not_finite:
            continue
        if producer.name in originals:
            blame[tensor.name] = [producer.name]
        else:
            blame[tensor.name] = [r.name for r in tensor.outputs if r.name in originals]
        extra.append(tensor)
    _hold_half(trial, half)
    trial.outputs = [*trial.outputs, *extra]
    session = verify.inference_session(ir.export_model(trial))
    names = [o.name for o in session.get_outputs()]
    count = len(model.graph.output)
    infinite: set[str] = set()
    produced_outputs = []
    for feed in batches:
        produced = dict(zip(names, session.run(None, feed)))
        produced_outputs.append([produced[v.name] for v in model.graph.output])
        infinite.update(name for name in names[count:] if not np.all(np.isfinite(produced[name])))
    # Only where it starts: a tensor computed from an infinite one is its consequence.
    tensors = trial.tensors()
    not_finite: dict[str, None] = {}
    for name in sorted(infinite, key=lambda n: names.index(n)):
        if not _upstream(tensors[name]) & infinite:
            not_finite.update(dict.fromkeys(blame[name]))
    passed = True
    for index in range(count):
        verdict = verify.compare_output([r[index] for r in reference_outputs],
                                        [p[index] for p in produced_outputs],
                                        atol=tolerances.atol, rtol=tolerances.rtol,
                                        atol_range=tolerances.atol_range)
        passed &= verdict.passed
    return list(not_finite), passed


def _upstream(tensor: gs.Tensor) -> set[str]:
    """Names of the tensors ``tensor`` is computed from, at any distance."""
    found: set[str] = set()
    stack = [tensor]
    while stack:
        for node in stack.pop().inputs:
            for source in node.inputs:
                if source.name and source.name not in found:
                    found.add(source.name)
                    stack.append(source)
    return found


def _feed_half(graph: gs.Graph, half: Half) -> dict[str, str]:
    """Make the ``half`` Casts of ``graph``'s inputs inputs themselves (fed rounded); return each
    new input's name -> the float32 tensor it rounds."""
    rounded = {}
    inputs = []
    for tensor in graph.inputs:
        casts = [reader for reader in tensor.outputs if reader.op == "Cast"
                 and reader.attrs.get("to") == half.elem]
        for cast in casts:
            stored = cast.outputs[0]
            cast.outputs = []
            inputs.append(stored)
            rounded[stored.name] = tensor.name
        if len(casts) < len(tensor.outputs):
            inputs.append(tensor)
    graph.inputs = inputs
    return rounded


def _hold_half(graph: gs.Graph, half: Half) -> None:
    """Store every float16 tensor a top-level node writes through an ``Identity``.

    ONNX Runtime's CPU provider has no float16 kernel for most ops (Add, Mul, Sub, ...): it runs
    each connected region of them in float32 and casts only at the region's edges, so a tensor
    inside the region is never rounded to float16 nor overflows, whatever the graph says (its
    value read as a graph output is rounded, but its readers took the float32 one). An Identity,
    which has a float16 kernel, after every producer splits the regions at every tensor: each is
    then held in float16 between layers as a GPU engine holds it. The result is checked only.
    (A bfloat16 model runs as its emulation, which rounds every tensor anyway.)"""
    scope = ir.NameScope(graph)
    for node in list(graph.nodes):
        for index, tensor in enumerate(node.outputs):
            if not (isinstance(tensor, gs.Variable) and tensor.dtype == half.np_type):
                continue
            raw = gs.Variable(scope.fresh(f"{tensor.name}_raw"), dtype=half.np_type,
                              shape=tensor.shape)
            node.outputs[index] = raw
            graph.nodes.append(gs.Node("Identity", scope.fresh(f"{node.name}_hold"),
                                       inputs=[raw], outputs=[tensor]))
    ir.toposort(graph)


def _half_tensors(graph: gs.Graph, half: Half) -> list[gs.Variable]:
    """The ``half`` tensors top-level nodes of ``graph`` write, other than its outputs."""
    outputs = {t.name for t in graph.outputs}
    return [tensor for node in graph.nodes for tensor in node.outputs
            if isinstance(tensor, gs.Variable) and tensor.dtype == half.np_type
            and tensor.name not in outputs]
