"""The partition stage of a compile: a model TensorRT partly rejects still compiles, as in TF-TRT.

When TensorRT's parser rejects nodes of the optimized model (:func:`trtcompile.backend.
query_support`), or the user forces ops to fall back (``--exclude-ops``), or asks for the plan only
(``--partition-only``), the compile flow runs this stage instead of building one engine:

1. the ``partition`` pass rewrites the optimized graph: each TensorRT segment becomes one call to
   ``trtcompile.TensorRTSegment_N``, the rest stays for ONNX Runtime (``partitioned.onnx``, checked
   against the input model on ONNX Runtime);
2. each segment becomes a standalone ONNX model (``segments/segment_N.onnx``: the function body
   under the model's tensor names, its weights as initializers) and one engine
   (``segments/segment_N.engine``) with the optimization profiles that segment sees: the shapes
   of its input tensors when the whole model runs at each profile's min, opt and max shapes
   (observed on ONNX Runtime, so data-dependent shapes after a fallback node are covered at
   those points);
3. ``partitioned_ctx.onnx`` is the deployment form for ONNX Runtime's TensorRT and NV TensorRT-RTX
   execution providers: every segment with an engine is an ``EPContext`` node (domain
   ``com.microsoft``) pointing at its engine file, the fallback nodes are unchanged.

The report's ``partition`` section (:func:`partition_section`) lists the segments, the fallback
nodes with their op and reason, and the coverage.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from trtcompile import ir
from trtcompile.flow import culprits
from trtcompile.flow.engine import engine_summary

#: Files the stage writes into the output folder.
PARTITIONED_ONNX = "partitioned.onnx"
SEGMENTS_DIR = "segments"
EPCONTEXT_ONNX = "partitioned_ctx.onnx"
OUTPUT_NAMES = (PARTITIONED_ONNX, SEGMENTS_DIR, EPCONTEXT_ONNX)

#: EPContext node schema (ONNX Runtime's EP context design): op type and domain.
EPCONTEXT_OP = "EPContext"
EPCONTEXT_DOMAIN = "com.microsoft"
#: The ``source`` attribute naming the execution provider that runs each TensorRT module's plans.
EPCONTEXT_SOURCES = {"tensorrt": "TensorrtExecutionProvider",
                     "tensorrt_rtx": "NvTensorRTRTXExecutionProvider"}


@dataclass
class Segment:
    """One TensorRT segment of a partitioned model and what became of it."""

    name: str
    index: int
    #: Names of the optimized model's nodes in the segment, in order.
    nodes: list[str]
    compute_nodes: int
    #: The segment as a standalone ONNX model (the engine's input).
    model: onnx.ModelProto
    #: Optimization profiles of its engine (None: static shapes).
    profiles: list[dict[str, tuple[list[int], list[int], list[int]]]] | None = None
    engine: Any = None  # trtcompile.backend.EngineBuild
    engine_path: str | None = None
    onnx_path: str | None = None
    why_not_engine: str | None = None

    @property
    def inputs(self) -> list[str]:
        return [value.name for value in self.model.graph.input]

    @property
    def outputs(self) -> list[str]:
        return [value.name for value in self.model.graph.output]

    def to_dict(self) -> dict[str, Any]:
        """``report.json``'s entry for the segment."""
        return {
            "name": self.name,
            "nodes": list(self.nodes),
            "compute_nodes": self.compute_nodes,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "onnx": self.onnx_path,
            "engine": self.engine_path,
            "compute_layers": self.engine.compute_layers if self.engine is not None else None,
            "why_not_engine": self.why_not_engine,
            "engine_report": engine_summary(self.engine, self.model, self.engine_path)
            if self.engine is not None else None,
        }


@dataclass
class PartitionOutcome:
    """What the partition stage produced."""

    model: onnx.ModelProto
    record: Any  # trtcompile.pm.PassRecord of the partition pass
    segments: list[Segment]
    fallback: list[dict[str, str]]
    min_segment_size: int
    exclude_ops: tuple[str, ...]
    dry_run: bool
    #: Why the stage ran ("TensorRT rejects 3 nodes", "--exclude-ops", "--partition-only").
    trigger: str
    support: Any = None  # trtcompile.backend.SupportReport
    parity: Any = None  # trtcompile.flow.ParityVerdict
    total_compute_nodes: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    epcontext: onnx.ModelProto | None = None
    #: Nodes the parser accepts and TensorRT's builder fails on, with the builder's words: they
    #: run on ONNX Runtime (found by building, see trtcompile.flow.culprits).
    build_failures: dict[str, str] = field(default_factory=dict)
    #: Whether segment engines were built (False for --partition-only: the plan asks TensorRT's
    #: parser only, and a planned segment may still fail to build).
    builds_tried: bool = True
    #: Builds the search for failing nodes took, and partition rounds run.
    build_checks: int = 0
    build_rounds: int = 1

    @property
    def coverage(self) -> float:
        """Fraction of the optimized model's compute nodes in engines (in planned segments when
        no engine is built: a dry run)."""
        if not self.total_compute_nodes:
            return 0.0
        covered = sum(s.compute_nodes for s in self.segments
                      if s.engine is not None or (self.dry_run and s.why_not_engine is None))
        return covered / self.total_compute_nodes


# --------------------------------------------------------------------------------------------
# Segments as standalone models
# --------------------------------------------------------------------------------------------


def segment_calls(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, onnx.FunctionProto]]:
    """(call node, function) of every TensorRT segment of a partitioned model, in graph order."""

    functions = {(f.domain, f.name): f for f in model.functions}
    return [(node, functions[(node.domain, node.op_type)]) for node in model.graph.node
            if node.domain == ir.TRTCOMPILE_DOMAIN and node.op_type.startswith(ir.SEGMENT_PREFIX)
            and (node.domain, node.op_type) in functions]


def segment_model(model: onnx.ModelProto, call: onnx.NodeProto, function: onnx.FunctionProto,
                  types: Mapping[str, onnx.TypeProto]) -> onnx.ModelProto:
    """The segment ``call`` makes as a model of its own: the function body with its parameters
    renamed to the tensors the call binds, weights as initializers, inputs and outputs typed."""
    rename = dict(zip(function.input, call.input))
    rename.update(zip(function.output, call.output))
    nodes = []
    for node in function.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.input[:] = [rename.get(name, name) for name in node.input]
        copy.output[:] = [rename.get(name, name) for name in node.output]
        nodes.append(copy)
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}

    def value_info(name: str) -> onnx.ValueInfoProto:
        value = onnx.ValueInfoProto(name=name)
        if name in types:
            value.type.CopyFrom(types[name])
        return value

    inputs = [value_info(name) for name in dict.fromkeys(call.input) if name and name not in initializers]
    weights = [initializers[name] for name in dict.fromkeys(call.input) if name in initializers]
    graph = onnx.helper.make_graph(nodes, function.name, inputs,
                                   [value_info(name) for name in call.output], weights)
    standalone = onnx.helper.make_model(graph, opset_imports=list(model.opset_import))
    standalone.ir_version = model.ir_version
    called = {(n.domain, n.op_type) for n in nodes}
    standalone.functions.extend(f for f in model.functions if (f.domain, f.name) in called)
    return standalone


def dynamic_inputs(model: onnx.ModelProto) -> list[str]:
    """Inputs of ``model`` whose shape is not fully known."""
    names = []
    for value in model.graph.input:
        tensor_type = value.type.tensor_type
        if not tensor_type.HasField("shape") or any(
                not d.HasField("dim_value") for d in tensor_type.shape.dim):
            names.append(value.name)
    return names


def observed_shapes(model: onnx.ModelProto, names: Sequence[str],
                    feeds: Mapping[str, np.ndarray],
                    types: Mapping[str, onnx.TypeProto]) -> dict[str, list[int]]:
    """Shapes tensors ``names`` of ``model`` take when it runs on ``feeds`` (ONNX Runtime)."""
    import onnxruntime as ort

    shapes = {name: list(feeds[name].shape) for name in names if name in feeds}
    wanted = [name for name in names if name not in shapes]
    if not wanted:
        return shapes
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {value.name for value in probe.graph.output}
    for name in wanted:
        if name in existing:
            continue
        value = onnx.ValueInfoProto(name=name)
        if name in types:
            value.type.tensor_type.elem_type = types[name].tensor_type.elem_type
        probe.graph.output.append(value)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    results = session.run(wanted, dict(feeds))
    shapes.update({name: list(np.shape(result)) for name, result in zip(wanted, results)})
    return shapes


def segment_profiles(optimized: onnx.ModelProto, segments: Sequence[Segment], plan: Any,
                     feeds_at: Callable[[Mapping[str, Sequence[int]] | None], dict[str, np.ndarray]],
                     types: Mapping[str, onnx.TypeProto]) -> None:
    """Set each segment's optimization profiles: per profile of ``plan``, the shapes its dynamic
    inputs take when the model runs at the profile's min, opt and max shapes (dimension-wise
    min and max, so min <= opt <= max holds where shapes depend on data)."""
    wanted = sorted({name for s in segments for name in dynamic_inputs(s.model)})
    if not wanted:
        return
    bounds: list[tuple[dict, dict, dict]] = []
    if plan.profiles:
        for profile in plan.profiles:
            names = list(profile)
            sets = [{name: list(profile[name][k]) for name in names} for k in range(3)]
            observed = [observed_shapes(optimized, wanted, feeds_at(s), types) for s in sets]
            bounds.append(tuple(observed))  # type: ignore[arg-type]
    else:
        observed = observed_shapes(optimized, wanted, feeds_at(None), types)
        bounds.append((observed, observed, observed))
    for segment in segments:
        names = dynamic_inputs(segment.model)
        if not names:
            continue
        profiles = []
        for low, opt, high in bounds:
            entry = {}
            for name in names:
                shapes = [low[name], opt[name], high[name]]
                entry[name] = ([min(d) for d in zip(*shapes)], list(opt[name]),
                               [max(d) for d in zip(*shapes)])
            profiles.append(entry)
        segment.profiles = profiles


# --------------------------------------------------------------------------------------------
# EPContext export
# --------------------------------------------------------------------------------------------


def epcontext_model(partitioned: onnx.ModelProto, segments: Sequence[Segment], *, backend: str,
                    version: str) -> onnx.ModelProto:
    """``partitioned`` with every segment that has an engine replaced by an ``EPContext`` node, as
    ONNX Runtime's EP context design specifies: domain ``com.microsoft``, ``main_context=1`` (the
    node holds its own context), ``embed_mode=0`` (``ep_cache_context`` is the engine file's path
    relative to the model), ``source`` the execution provider, ``ep_sdk_version`` the TensorRT
    version, ``partition_name`` the segment. Its inputs are the engine's (weights are in the plan)
    and its outputs the segment's. Segments without an engine stay function calls."""
    model = onnx.ModelProto()
    model.CopyFrom(partitioned)
    by_name = {s.name: s for s in segments if s.engine_path is not None}
    source = EPCONTEXT_SOURCES.get(backend, EPCONTEXT_SOURCES["tensorrt"])
    nodes = []
    replaced = set()
    for node in model.graph.node:
        segment = by_name.get(node.name)
        if segment is None:
            nodes.append(node)
            continue
        replaced.add((node.domain, node.op_type))
        nodes.append(onnx.helper.make_node(
            EPCONTEXT_OP, segment.inputs, segment.outputs, name=node.name, domain=EPCONTEXT_DOMAIN,
            main_context=1, embed_mode=0, ep_cache_context=segment.engine_path, source=source,
            ep_sdk_version=version, partition_name=segment.name))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    kept = [f for f in model.functions if (f.domain, f.name) not in replaced]
    del model.functions[:]
    model.functions.extend(kept)
    used = {name for node in model.graph.node for name in node.input}
    used |= {name for f in model.functions for node in f.node for name in node.input}
    initializers = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(initializers)
    if not any(entry.domain == EPCONTEXT_DOMAIN for entry in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(EPCONTEXT_DOMAIN, 1))
    return model


# --------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------


def fallback_entries(model: onnx.ModelProto, rejections: Sequence[Any]) -> list[dict[str, str]]:
    """``{node, op, reason}`` of every top-level node of the partitioned model outside segments,
    the reason being the first the pass gave for it."""

    reasons: dict[str, str] = {}
    for rejection in rejections:
        for name in rejection.nodes:
            reasons.setdefault(name, rejection.reason)
    entries = []
    for node in model.graph.node:
        if node.domain == ir.TRTCOMPILE_DOMAIN and node.op_type.startswith(ir.SEGMENT_PREFIX):
            continue
        op = node.op_type if not node.domain or node.domain == "ai.onnx" else \
            f"{node.domain}.{node.op_type}"
        entries.append({"node": node.name, "op": op,
                        "reason": reasons.get(node.name, "not in a segment")})
    return entries


#: Rounds of build, blame, re-partition a stage runs at most (each moves at least one node to
#: the fallback side; a model with more nodes TensorRT's builder fails on is rare).
MAX_BUILD_ROUNDS = 8


def with_build_failures(support: Any, failures: Mapping[str, str]) -> Any:
    """The parser's support classification with the nodes TensorRT's builder fails on added as
    unsupported (their reason: the builder's words)."""
    import dataclasses

    if not failures:
        return support
    unsupported = {**dict(getattr(support, "unsupported", {}) or {}), **failures}
    if dataclasses.is_dataclass(support):
        return dataclasses.replace(support, unsupported=unsupported)
    return unsupported


def _partition(optimized: onnx.ModelProto, support: Any, min_segment_size: int,
               exclude_ops: Sequence[str], model_dir: Path | None, seed: int,
               log: Callable[[str], None]):
    """The partition pass over ``optimized``: (partitioned model, the pass's record, segments)."""
    from passes.partition import Partition
    from trtcompile.backend.support import value_types
    from trtcompile.pm import PassContext, PassManager

    graph = ir.import_model(optimized)
    partition = Partition(min_segment_size=min_segment_size, exclude_ops=tuple(exclude_ops))
    ctx = PassContext(model_dir=model_dir, seed=seed, resources={"partition": support}, log=log)
    report = PassManager([partition], ctx=ctx).run(graph)
    partitioned = ir.export_model(graph)
    types = value_types(optimized)
    segments = []
    for index, (call, function) in enumerate(segment_calls(partitioned)):
        standalone = segment_model(partitioned, call, function, types)
        body = ir.import_model(standalone)
        segments.append(Segment(name=call.name, index=index, nodes=[n.name for n in function.node],
                                compute_nodes=ir.compute_node_count(body.nodes), model=standalone))
    return partitioned, report.records[0], segments


def run_partition(optimized: onnx.ModelProto, *, support: Any, min_segment_size: int,
                  exclude_ops: Sequence[str], trigger: str, dry_run: bool,
                  model_dir: Path | None, seed: int, plan: Any,
                  feeds_at: Callable[[Mapping[str, Sequence[int]] | None], dict[str, np.ndarray]],
                  progress: bool = False, log: Callable[[str], None] = lambda message: None,
                  build_failures: Mapping[str, str] | None = None,
                  workspace_bytes: int | None = None, build: Any = None) -> PartitionOutcome:
    """Partition ``optimized`` and (unless ``dry_run``) build one engine per segment.

    A segment whose build fails is searched for the node the builder fails on
    (:func:`trtcompile.flow.culprits.find_build_culprit`); that node moves to the fallback side
    with the builder's words as its reason, the model is partitioned again and the segments
    built (those unchanged keep their engines), for at most :data:`MAX_BUILD_ROUNDS` rounds.
    ``build_failures`` (node -> reason) are nodes already known to fail the build."""
    from trtcompile.backend.support import value_types

    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    total = ir.compute_node_count(ir.import_model(optimized).nodes)
    failures = dict(build_failures or {})
    partitioned, record, segments = _partition(
        optimized, with_build_failures(support, failures), min_segment_size, exclude_ops,
        model_dir, seed, log)
    seconds["partition"] = time.perf_counter() - t0
    outcome = PartitionOutcome(
        model=partitioned, record=record, segments=segments,
        fallback=fallback_entries(partitioned, record.rejections),
        min_segment_size=min_segment_size, exclude_ops=tuple(exclude_ops), dry_run=dry_run,
        trigger=trigger, support=support, total_compute_nodes=total, seconds=seconds,
        build_failures=dict(failures), builds_tried=not dry_run)
    if dry_run or not segments:
        return outcome

    types = value_types(optimized)
    built: dict[tuple[str, ...], Segment] = {}
    t0 = time.perf_counter()
    for round_index in range(MAX_BUILD_ROUNDS):
        _build_segments(outcome.segments, optimized, plan, feeds_at, types, built, model_dir,
                        progress, workspace_bytes, log, build)
        found = {}
        for segment in outcome.segments:
            if segment.engine is not None or not (segment.why_not_engine or "").startswith(
                    culprits.BUILD_FAILURE):
                continue
            log(f"finding the node TensorRT's builder fails on in {segment.name}")
            culprit = culprits.find_build_culprit(
                segment.model, _range_builder(segment, model_dir, workspace_bytes, build),
                segment.why_not_engine)
            if culprit is not None:
                log(f"  {culprit.node} ({culprit.op}) after {culprit.builds} builds: "
                    "it runs on ONNX Runtime")
                found[culprit.node] = culprit.reason
                outcome.build_checks += culprit.builds
        if not found:
            break
        failures.update(found)
        t1 = time.perf_counter()
        partitioned, record, segments = _partition(
            optimized, with_build_failures(support, failures), min_segment_size, exclude_ops,
            model_dir, seed, log)
        seconds["partition"] += time.perf_counter() - t1
        outcome.model, outcome.record, outcome.segments = partitioned, record, segments
        outcome.fallback = fallback_entries(partitioned, record.rejections)
        outcome.build_failures = dict(failures)
        outcome.build_rounds = round_index + 2
    seconds["engines"] = time.perf_counter() - t0
    return outcome


def _build_segments(segments: Sequence[Segment], optimized: onnx.ModelProto, plan: Any,
                    feeds_at: Callable, types: Mapping[str, onnx.TypeProto],
                    built: dict[tuple[str, ...], Segment], model_dir: Path | None,
                    progress: bool, workspace_bytes: int | None,
                    log: Callable[[str], None], build: Any = None) -> None:
    """Profiles, then an engine, for every segment (a segment of the same nodes as one built in
    an earlier round takes its engine)."""
    from trtcompile import backend
    from trtcompile.errors import BackendError, InputError

    todo = []
    for segment in segments:
        earlier = built.get(tuple(segment.nodes))
        if earlier is not None:
            segment.profiles, segment.engine = earlier.profiles, earlier.engine
            segment.why_not_engine = earlier.why_not_engine
        else:
            todo.append(segment)
    if not todo:
        return
    try:
        segment_profiles(optimized, todo, plan, feeds_at, types)
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's errors share no base class
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]
        for segment in todo:
            if dynamic_inputs(segment.model):
                segment.why_not_engine = f"its input shapes could not be observed: {reason}"
    for segment in todo:
        if segment.why_not_engine is None:
            log(f"building the TensorRT engine of {segment.name} ({len(segment.nodes)} nodes)")
            try:
                segment.engine = backend.build_engine(segment.model, model_dir=model_dir,
                                                      progress=progress, profiles=segment.profiles,
                                                      workspace_bytes=workspace_bytes, build=build)
            except (BackendError, InputError) as exc:
                segment.why_not_engine = str(exc)
        built[tuple(segment.nodes)] = segment


def _range_builder(segment: Segment, model_dir: Path | None, workspace_bytes: int | None,
                   build: Any = None) -> Callable[[onnx.ModelProto], str | None]:
    """Builds a node range of ``segment`` with the segment's profiles (restricted to the inputs
    the range reads) and the compile's build options: None when it builds, else the builder's
    words."""

    def try_build(model: onnx.ModelProto) -> str | None:
        return build_error(model, culprits.restrict_profiles(segment.profiles, model), model_dir,
                           workspace_bytes, build)

    return try_build


def build_error(model: onnx.ModelProto, profiles: Any, model_dir: Path | None,
                workspace_bytes: int | None = None, build: Any = None) -> str | None:
    """None when TensorRT builds ``model``, else why not (one line)."""
    from trtcompile import backend
    from trtcompile.errors import BackendError, InputError

    try:
        backend.build_engine(model, model_dir=model_dir, progress=False, profiles=profiles,
                             workspace_bytes=workspace_bytes, build=build)
    except (BackendError, InputError) as exc:
        return str(exc)
    return None


def write_outputs(outcome: PartitionOutcome, folder: Path) -> dict[str, str]:
    """Write ``partitioned.onnx``, the segment models and engines and ``partitioned_ctx.onnx``
    into ``folder``; returns the ``files`` entries (key -> path relative to ``folder``)."""
    from trtcompile import backend

    files = {"partitioned": PARTITIONED_ONNX}
    ir.save(outcome.model, folder / PARTITIONED_ONNX)
    if outcome.segments:
        (folder / SEGMENTS_DIR).mkdir(exist_ok=True)
        files["segments"] = SEGMENTS_DIR
    for segment in outcome.segments:
        segment.onnx_path = f"{SEGMENTS_DIR}/segment_{segment.index}.onnx"
        ir.save(segment.model, folder / segment.onnx_path)
        if segment.engine is not None:
            segment.engine_path = f"{SEGMENTS_DIR}/segment_{segment.index}.engine"
            backend.save_plan(segment.engine, folder / segment.engine_path)
    built = [s for s in outcome.segments if s.engine is not None]
    if built:
        outcome.epcontext = epcontext_model(outcome.model, outcome.segments,
                                            backend=built[0].engine.backend,
                                            version=built[0].engine.version)
        ir.save(outcome.epcontext, folder / EPCONTEXT_ONNX)
        files["epcontext"] = EPCONTEXT_ONNX
    return files


def partition_section(outcome: PartitionOutcome) -> dict[str, Any]:
    """``report.json``'s ``partition``."""
    parity = outcome.parity
    return {
        "coverage": round(outcome.coverage, 6),
        "segments": [segment.to_dict() for segment in outcome.segments],
        "fallback": list(outcome.fallback),
        "min_segment_size": outcome.min_segment_size,
        "exclude_ops": list(outcome.exclude_ops),
        "dry_run": outcome.dry_run,
        "trigger": outcome.trigger,
        "builds_tried": outcome.builds_tried,
        "build_failures": dict(outcome.build_failures),
        "build_checks": outcome.build_checks,
        "build_rounds": outcome.build_rounds,
        "compute_nodes": outcome.total_compute_nodes,
        "pass": outcome.record.to_dict(),
        "support": outcome.support.to_dict() if hasattr(outcome.support, "to_dict") else None,
        "parity": None if parity is None else {
            "passed": parity.passed,
            "comparisons": [c.to_dict() for c in parity.comparisons],
        },
        "seconds": {k: round(v, 6) for k, v in outcome.seconds.items()},
    }


__all__ = ["EPCONTEXT_ONNX", "MAX_BUILD_ROUNDS", "PARTITIONED_ONNX", "SEGMENTS_DIR",
           "PartitionOutcome", "Segment", "build_error", "epcontext_model", "partition_section",
           "run_partition", "segment_model", "with_build_failures", "write_outputs"]
