"""``report.json``: :func:`build_report` assembles one JSON-ready dict from what each stage of a
compile produced (model, passes, parity, engine, the graphs before and after, provenance, files,
times, tool versions); :func:`dumps` writes it as valid JSON. The terminal and HTML renderings are
drawn from this dict alone."""

from __future__ import annotations

import importlib.metadata
import json
import platform
from collections.abc import Mapping, Sequence
from typing import Any

import onnx

#: Distributions whose versions every report records (those installed).
TOOL_DISTRIBUTIONS = ("onnx", "onnxruntime", "onnx-graphsurgeon", "polygraphy", "numpy",
                      "tensorrt", "tensorrt-rtx", "tf2onnx", "tensorflow", "tensorflow-cpu", "keras")

#: Graphs up to this many nodes are recorded node by node under ``graphs`` (for the HTML report's
#: before/after picture); larger ones by their counts only.
GRAPH_RECORDED_NODES = 3000


def tool_versions() -> dict[str, str]:
    """Versions of trtcompile, Python and the installed tools the compile depends on."""
    from trtcompile.version import __version__

    versions = {"trtcompile": __version__, "python": platform.python_version()}
    for name in TOOL_DISTRIBUTIONS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _value_info(value: onnx.ValueInfoProto) -> dict[str, Any]:
    tensor_type = value.type.tensor_type
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
             for d in tensor_type.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name \
        if tensor_type.elem_type else None
    return {"name": value.name, "shape": shape, "dtype": dtype}


def model_summary(loaded, optimized: onnx.ModelProto) -> dict[str, Any]:
    """Where the model came from and its interface."""
    model = loaded.model
    initializers = {init.name for init in model.graph.initializer}
    return {
        "source": str(loaded.source_path) if loaded.source_path else None,
        "kind": loaded.kind,
        "description": loaded.description,
        "ir_version": model.ir_version,
        "opset": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "inputs": [_value_info(v) for v in model.graph.input if v.name not in initializers],
        "outputs": [_value_info(v) for v in model.graph.output],
        "optimized_functions": [f"{f.domain}.{f.name}" for f in optimized.functions],
    }


#: ``parity.engine`` of a report whose compile did not record the engine parity stage.
ENGINE_PARITY_NOT_RECORDED = {"status": "not run", "reason": "not checked"}


def parity_section(parity, tolerances: Mapping[str, Any],
                   engine: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``parity`` section: verdict, per-output errors of the end-to-end comparison, all
    comparisons, which outputs failed, and the engine parity stage (``engine``, see
    :class:`trtcompile.flow.EngineParity`)."""
    engine = dict(engine) if engine is not None else dict(ENGINE_PARITY_NOT_RECORDED)
    if parity is None:
        return {"checked": False, "passed": None, "outputs": {}, "tolerances": dict(tolerances),
                "comparisons": [], "failed": [], "engine": engine}
    primary = parity.primary
    return {
        "checked": True,
        "passed": parity.passed,
        "reference": primary.reference,
        "candidate": primary.candidate,
        "outputs": {name: o.to_dict() for name, o in primary.outputs.items()},
        "tolerances": dict(tolerances),
        "comparisons": [c.to_dict() for c in parity.comparisons],
        "input_shapes": list(getattr(parity, "input_shapes", [])),
        "failed": [{"reference": c.reference, "candidate": c.candidate, "output": name}
                   for c, name in parity.failures()],
        "engine": engine,
    }


def graph_edges(graph: onnx.GraphProto) -> list[list[int]]:
    """Producer -> consumer edges between the graph's top-level nodes, by index, each once."""
    producer = {name: i for i, node in enumerate(graph.node) for name in node.output if name}
    edges: dict[tuple[int, int], None] = {}
    for j, node in enumerate(graph.node):
        for name in node.input:
            i = producer.get(name)
            if i is not None and i != j:
                edges.setdefault((i, j), None)
    return [list(edge) for edge in edges]


def graph_section(model: onnx.ModelProto, optimized: onnx.ModelProto,
                  provenance: Mapping[str, Sequence[str]],
                  input_names: Sequence[str] = ()) -> dict[str, Any]:
    """The ``graphs`` section: the input and optimized graphs node by node (name, op, and for the
    optimized graph's fused layers the ops of their function body; for every optimized node that
    is not an input node left as it was, ``origins``: the input nodes it stands for; for every
    input node that is not in the optimized graph as it was, ``became``: the optimized nodes that
    stand for it, empty when a pass removed it), with the edges between them by index. A graph
    above :data:`GRAPH_RECORDED_NODES` nodes is recorded by its counts only (``nodes`` null).
    ``input_names``: the input nodes' names as the passes saw them (unnamed nodes get names on
    import, :func:`trtcompile.ir.import_model`)."""
    from trtcompile.ir import TRTCOMPILE_DOMAIN, is_onnx_domain

    functions = {(f.domain, f.name): f for f in optimized.functions}
    became: dict[str, list[str]] = {}
    for name, origins in provenance.items():
        for origin in origins:
            became.setdefault(origin, []).append(name)
    optimized_names = {node.name for node in optimized.graph.node}

    def body_ops(function) -> list[str]:
        return [node.op_type if is_onnx_domain(node.domain) else f"{node.domain}.{node.op_type}"
                for node in function.node]

    def describe(graph: onnx.GraphProto, which: str) -> dict[str, Any]:
        record: dict[str, Any] = {"node_count": len(graph.node), "nodes": None, "edges": None}
        if len(graph.node) > GRAPH_RECORDED_NODES:
            return record
        nodes = []
        names = [node.name for node in graph.node]
        if which == "input" and len(input_names) == len(names):
            names = list(input_names)
        for node, node_name in zip(graph.node, names):
            op = node.op_type if is_onnx_domain(node.domain) else f"{node.domain}.{node.op_type}"
            entry: dict[str, Any] = {"name": node_name, "op": op}
            if which == "input":
                if node_name not in optimized_names or node_name in provenance:
                    entry["became"] = became.get(node_name, [])
            else:
                function = functions.get((node.domain, node.op_type))
                if node.domain == TRTCOMPILE_DOMAIN and function is not None:
                    entry["fused"] = body_ops(function)
                if node.name in provenance:
                    entry["origins"] = list(provenance[node.name])
            nodes.append(entry)
        record["nodes"] = nodes
        record["edges"] = graph_edges(graph)
        return record

    return {"recorded_nodes": GRAPH_RECORDED_NODES, "input": describe(model.graph, "input"),
            "optimized": describe(optimized.graph, "optimized")}


def engine_origins(engine: Mapping[str, Any],
                   provenance: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """The ``engine`` section with each engine layer's ``original_nodes``: the input model's nodes
    its ONNX nodes stand for (a fused call node: the nodes it absorbed, see
    :attr:`trtcompile.pass_manager.PipelineReport.provenance`)."""
    engine = dict(engine)
    if engine.get("layers"):
        layers = []
        for layer in engine["layers"]:
            origins: dict[str, None] = {}
            for node in layer.get("onnx_nodes", []):
                origins.update(dict.fromkeys(provenance.get(node, [node])))
            layers.append({**layer, "original_nodes": list(origins)})
        engine["layers"] = layers
    return engine


def precision_risk_section(passes: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The precision risk table of the last pass run that measured one (``precision-fp16`` or
    ``quantize-int8`` with data): the pass, the precision it writes (``fp16``, ``bf16``, ``int8``),
    the ``data-max`` it applied (None for INT8), the samples, and per node ``name``, ``op``, ``max_abs_fp32``,
    ``alone_error``, ``kept``, ``kept_by``, ``reason`` (INT8 also ``amax``), riskiest first.
    None when no pass measured."""
    measured = [record for record in passes if record.get("tables", {}).get("precision_risk")]
    if not measured:
        return None
    record = measured[-1]
    # precision-fp16 says what it measured for (fp16 or bf16, and the data-max it applied, which
    # for bf16 is 1/128 of bfloat16's range unless given).
    (setting,) = record["tables"].get("precision_risk_setting") or [{}]
    return {"pass": record["pipeline_text"],
            "precision": "int8" if record["name"] == "quantize-int8"
            else setting.get("precision", "fp16"),
            "data_max": setting.get("data_max", record["options"].get("data-max")),
            "samples": record["counts"].get("measured_samples", 0),
            "nodes": record["tables"]["precision_risk"]}


def build_report(*, loaded, pipeline_report, optimized: onnx.ModelProto, parity,
                 parity_options: Mapping[str, Any], engine: Mapping[str, Any],
                 files: Mapping[str, str], seconds: Mapping[str, float],
                 error: Exception | None, shapes: Mapping[str, Any] | None = None,
                 engine_parity: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Assemble report.json from the stages' results (see docs/cli.md for every key)."""
    pipeline = pipeline_report.to_dict()
    provenance = pipeline.get("provenance", {})
    report = {
        "trtcompile_report": 1,
        "status": {
            "passed": error is None,
            "exit_code": getattr(error, "exit_code", 0) if error else 0,
            "error": str(error) if error else None,
        },
        "model": model_summary(loaded, optimized),
        "pipeline": pipeline["pipeline"],
        "lowering": loaded.lowering.to_dict() if loaded.lowering is not None else None,
        "layers": pipeline["layers"],
        "histogram": pipeline["histogram"],
        "passes": pipeline["passes"],
        "fixed_points": pipeline["fixed_points"],
        "engine_guided": pipeline.get("engine_guided", []),
        "passes_seconds": pipeline["seconds"],
        "precision_risk": precision_risk_section(pipeline["passes"]),
        "shapes": dict(shapes) if shapes is not None else None,
        "parity": parity_section(parity, parity_options, engine_parity),
        "engine": engine_origins(engine, provenance),
        "provenance": provenance,
        "graphs": graph_section(loaded.model, optimized, provenance,
                                getattr(pipeline_report, "input_node_names", ())),
        "files": dict(files),
        "seconds": {k: round(v, 6) for k, v in seconds.items()},
        "tools": tool_versions(),
    }
    return report


def dumps(report: Mapping[str, Any]) -> str:
    """report.json text (infinite errors are written as strings, keeping the file valid JSON)."""
    return json.dumps(_finite(report), indent=2) + "\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
