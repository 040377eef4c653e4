"""The compile report: ``report.json`` and its terminal rendering.

:func:`build_report` assembles one JSON-ready dict from what each stage produced; the terminal
output (:func:`render`) is drawn from that same dict, so what the table shows and what
``report.json`` holds cannot disagree.

Terminal layout::

    pass                          layers before  after  delta     time  counts
    lowering (tf2onnx 1.17.0)          312 ops    431            1.2 s  tensorflow_ops=312 ...
    dead-layer-elimination                 61     61      0   0.4 ms
    ...
    total                                  61     38    -23   41.0 ms

    parity: passed (seed 0, atol=0.0001, rtol=0.001)
    ...
    engine: TensorRT-RTX 1.7.1.116, model.engine
    ...
    engine parity: not run — executing an engine needs a supported NVIDIA GPU; ...
"""

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

#: Engine layers shown in the terminal excerpt (report.json lists them all).
ENGINE_EXCERPT_LAYERS = 12

#: Distinct rejection reasons shown per pass in the terminal (report.json has every rejection).
REJECTION_REASONS_SHOWN = 5

#: Graphs up to this many nodes are recorded node by node under ``graphs`` (for the HTML report's
#: before/after picture); larger ones by their counts only.
GRAPH_RECORDED_NODES = 3000


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


def tool_versions() -> dict[str, str]:
    """Versions of trtcompile, Python and the installed tools the compile depends on."""
    from trtcompile import __version__

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


# --------------------------------------------------------------------------------------------
# Terminal rendering
# --------------------------------------------------------------------------------------------


def format_seconds(seconds: float) -> str:
    """``0.4 ms``, ``41.0 ms``, ``1.23 s``."""
    if seconds < 1.0:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def format_counts(counts: Mapping[str, Any]) -> str:
    """``fused_conv_relu=53 removed_dead=4``."""
    return " ".join(f"{key}={value}" for key, value in counts.items())


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]],
                 right: Sequence[bool]) -> list[str]:
    """Plain-text table: columns padded to their widest cell, numbers right-aligned; the last
    column is not padded (no trailing spaces)."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = []
        for i, cell in enumerate(row):
            cell = str(cell)
            last = i == len(row) - 1
            if right[i]:
                cells.append(cell.rjust(widths[i]))
            else:
                cells.append(cell if last else cell.ljust(widths[i]))
        lines.append("  ".join(cells).rstrip())
    return lines


def pass_label(record: Mapping[str, Any]) -> str:
    """The table's pass column: the pass as pipeline text (with its non-default options), and the
    fixed-point iteration when inside one."""
    label = record.get("pipeline_text") or record["name"]
    if record.get("iteration"):
        label += f" #{record['iteration']}"
    return label


def format_pass_table(report: Mapping[str, Any]) -> list[str]:
    """The per-pass table (lowering first when there is one) and the rejection summary."""
    header = ("pass", "layers before", "layers after", "delta", "time", "counts")
    right = (False, True, True, True, True, False)
    rows = []
    lowering = report.get("lowering")
    if lowering:
        rows.append((
            f"lowering ({lowering['tool']}, {lowering['mode']})",
            f"{lowering['source_ops']} TF ops", f"{lowering['onnx_nodes']} nodes", "",
            format_seconds(lowering["seconds"]),
            format_counts({"tensorflow_ops": lowering["source_ops"],
                           "onnx_nodes": lowering["onnx_nodes"]}),
        ))
    for record in report["passes"]:
        rows.append((pass_label(record), str(record["layers_before"]), str(record["layers_after"]),
                     f"{record['delta']:+d}" if record["delta"] else "0",
                     format_seconds(record["seconds"]), format_counts(record["stats"])))
    layers = report["layers"]
    total_delta = layers["optimized"] - layers["input"]
    rows.append(("total", str(layers["input"]), str(layers["optimized"]),
                 f"{total_delta:+d}" if total_delta else "0",
                 format_seconds(report.get("passes_seconds", 0.0)), ""))
    lines = format_table(header, rows, right)
    lines.insert(len(lines) - 1, "-" * max(len(line) for line in lines))

    for fixed_point in report.get("fixed_points", []):
        state = "converged" if fixed_point["converged"] else "did NOT converge"
        lines.append(f"{fixed_point['pipeline']}: {state} after {fixed_point['iterations']} "
                     f"iteration{'s' if fixed_point['iterations'] != 1 else ''}")
    for tried in report.get("engine_guided", []):
        after = tried["engine_after"] if tried["engine_after"] is not None else "no engine"
        lines.append(f"engine-guided: {tried['group']}: engine {tried['engine_before']} -> {after} "
                     f"compute layers: {'kept' if tried['kept'] else tried['reason']}")
    rejections = rejection_summary(report["passes"])
    if rejections:
        lines.append("skipped candidates:")
        for pass_name, reasons in rejections.items():
            for reason, count in list(reasons.items())[:REJECTION_REASONS_SHOWN]:
                lines.append(f"  {pass_name}: {count} x {reason}")
            if len(reasons) > REJECTION_REASONS_SHOWN:
                hidden = sum(list(reasons.values())[REJECTION_REASONS_SHOWN:])
                lines.append(f"  {pass_name}: {hidden} more, for {len(reasons) - REJECTION_REASONS_SHOWN} "
                             "other reasons (all are in report.json)")
    return lines


def rejection_summary(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Per pass, the number of distinct rejected candidates by reason (repeated fixed-point runs
    rejecting the same candidate count once)."""
    seen: dict[str, set] = {}
    summary: dict[str, dict[str, int]] = {}
    for record in records:
        for rejection in record.get("rejections", []):
            key = (tuple(rejection["nodes"]), rejection["reason"])
            if key in seen.setdefault(record["name"], set()):
                continue
            seen[record["name"]].add(key)
            reasons = summary.setdefault(record["name"], {})
            reasons[rejection["reason"]] = reasons.get(rejection["reason"], 0) + 1
    return summary


def rejections_of(records: Sequence[Mapping[str, Any]], pass_name: str) -> list[dict[str, Any]]:
    """Every distinct candidate ``pass_name`` rejected (``{"nodes": [...], "reason": ...}``), in
    the order first rejected; repeated fixed-point runs rejecting the same candidate count once."""
    seen: dict[tuple, dict[str, Any]] = {}
    for record in records:
        if record["name"] != pass_name:
            continue
        for rejection in record.get("rejections", []):
            seen.setdefault((tuple(rejection["nodes"]), rejection["reason"]), rejection)
    return list(seen.values())


def format_why_not(report: Mapping[str, Any], pass_name: str,
                   ops: Mapping[str, str] | None = None) -> list[str]:
    """``--why-not PASS``: each candidate the pass considered and left alone, its nodes (with their
    op types when ``ops`` knows them) and the reason."""
    records = [r for r in report["passes"] if r["name"] == pass_name]
    if not records:
        return [f"why not {pass_name}: the pass did not run (pipeline: "
                f"{report['pipeline'] or 'no passes'})"]
    runs = f"{len(records)} run{'s' if len(records) != 1 else ''}"
    counts: dict[str, int] = {}
    for record in records:
        for key, value in record["stats"].items():
            counts[key] = counts.get(key, 0) + value
    rewrote = f"; it rewrote: {format_counts(counts)}" if counts else "; it rewrote nothing"
    rejections = rejections_of(records, pass_name)
    if not rejections:
        return [f"why not {pass_name}: no candidate was left alone ({runs}{rewrote})"]
    ops = ops or {}

    def node(name: str) -> str:
        return f"{name} ({ops[name]})" if name in ops else name

    reasons = {r["reason"] for r in rejections}
    lines = [f"why not {pass_name}: {len(rejections)} candidate{'s' if len(rejections) != 1 else ''}"
             f" left alone, {len(reasons)} reason{'s' if len(reasons) != 1 else ''} ({runs}{rewrote})"]
    rows = [(", ".join(node(n) for n in r["nodes"]) or "-", r["reason"]) for r in rejections]
    lines += ["  " + line for line in format_table(("nodes", "reason"), rows, (False, False))]
    return lines


def _error(value: Any) -> str:
    return value if isinstance(value, str) else f"{value:.3g}"


def format_parity(report: Mapping[str, Any]) -> list[str]:
    """Verdict line, then one line per compared output of every comparison."""
    parity = report["parity"]
    tolerances = parity["tolerances"]
    settings = (f"seed {tolerances.get('seed', 0)}, atol={tolerances['atol']:g}, "
                f"rtol={tolerances['rtol']:g}")
    if tolerances.get("atol_range"):
        settings += f", atol_range={tolerances['atol_range']:g}"
    if not parity["checked"]:
        return ["parity: not checked (--no-parity)"]
    verdict = "passed" if parity["passed"] else "FAILED"
    lines = [f"parity: {verdict} ({settings})"]
    inputs = tolerances.get("inputs")
    if inputs:
        lines.append(f"  inputs: floating point {inputs['floating_point']}, integer "
                     f"{inputs['integer']}")
    if tolerances.get("note"):
        lines.append(f"  tolerances: {tolerances['note']}")
    top1 = tolerances.get("top1_agreement")
    if top1 and top1.get("checked"):
        for name, outcome in top1["outputs"].items():
            lines.append(f"  top-1 agreement of '{name}' with the input model: "
                         f"{outcome['agreement']:.1%} on {outcome['samples']} held-out samples "
                         f"(needs {top1['threshold']:.0%}): "
                         f"{'ok' if outcome['passed'] else 'FAILED'}")
    elif top1:
        lines.append(f"  top-1 agreement: not checked ({top1['reason']})")
    checked = parity.get("input_shapes") or []
    if checked:
        lines.append(f"  input shapes checked: {'; '.join(shape_set_text(s) for s in checked)}")
    lines += comparison_table(parity["comparisons"], several_shapes=len(checked) > 1)
    return lines


def comparison_table(comparisons: Sequence[Mapping[str, Any]], several_shapes: bool) -> list[str]:
    """One indented row per compared output of every comparison (labelled with its input shapes
    when several shape sets were checked)."""
    rows = []
    for comparison in comparisons:
        label = f"{comparison['candidate']} vs {comparison['reference']}"
        if several_shapes:
            label += f" at {shape_set_text(comparison.get('input_shapes', {}))}"
        if not comparison["outputs"]:
            rows.append((label, "(no outputs)", "", "", "FAILED"))
        for name, output in comparison["outputs"].items():
            rows.append((label, name, f"max_abs={_error(output['max_abs'])}",
                         f"max_rel={_error(output['max_rel'])}",
                         "ok" if output["passed"] else "FAILED"))
    return ["  " + line for line in format_table(
        ("comparison", "output", "max abs error", "max rel error", "result"), rows,
        (False, False, True, True, False))]


def format_engine_parity(report: Mapping[str, Any]) -> list[str]:
    """``engine parity: not run — <reason>`` in one line, or the verdict and one row per output
    of the engine against the optimized model on ONNX Runtime."""
    engine = report["parity"].get("engine") or ENGINE_PARITY_NOT_RECORDED
    if engine["status"] == "not run":
        return [f"engine parity: not run — {engine['reason']}"]
    verdict = "passed" if engine["status"] == "passed" else "FAILED"
    seed = report["parity"]["tolerances"].get("seed", 0)
    lines = [f"engine parity: {verdict} ({engine['candidate']} vs {engine['reference']} on ONNX "
             f"Runtime, seed {seed}, atol={engine['atol']:g}, rtol={engine['rtol']:g})"]
    if engine.get("note"):
        lines.append(f"  tolerances: {engine['note']}")
    lines += comparison_table(engine["comparisons"],
                              several_shapes=len(engine.get("input_shapes", [])) > 1)
    return lines


def shape_set_text(shapes: Mapping[str, Sequence[int]]) -> str:
    """``input:1x3x224x224,mask:1x16``."""
    return ",".join(f"{name}:{'x'.join(map(str, shape))}" for name, shape in shapes.items())


def format_profiles(report: Mapping[str, Any]) -> list[str]:
    """Which optimization profiles the compile used, one line each (nothing for static models)."""
    shapes = report.get("shapes")
    if not shapes or not shapes.get("profiles"):
        return []
    lines = [f"optimization profiles ({shapes['source']}):"]
    for index, profile in enumerate(shapes["profiles"]):
        parts = []
        for name, dims in profile.items():
            low, opt, high = ("x".join(map(str, dims[key])) for key in ("min", "opt", "max"))
            parts.append(f"{name} {low}" if low == opt == high
                         else f"{name} min {low} opt {opt} max {high}")
        lines.append(f"  {index}: {', '.join(parts)}")
    return lines


def format_engine(report: Mapping[str, Any], output_dir: str | None = None) -> list[str]:
    """Backend and version, engine layers (compute layers), build time, and an excerpt of the
    engine layers with the ONNX nodes fused into each."""
    engine = report["engine"]
    if not engine.get("built"):
        reason = engine.get("reason", "not built")
        detail = f": {engine['error']}" if engine.get("error") else ""
        return [f"engine: not built ({reason}){detail}"]
    path = engine.get("path", "")
    if output_dir and path and not str(path).startswith(str(output_dir)):
        path = f"{output_dir.rstrip('/')}/{path}"
    # With several optimization profiles the engine holds one copy of the network per profile;
    # the first profile's layers are the network.
    layers = [layer for layer in engine.get("layers", []) if layer.get("profile", 0) == 0]
    counted = (f"{len(layers)} ({engine['compute_layers']} compute)" if layers
               else "not reported by the builder")
    lines = [
        f"engine: {engine['backend']} {engine['version']}, {path}",
        f"  engine layers: {counted}; graph layers {report['layers']['input']} -> "
        f"{report['layers']['optimized']}; build time {format_seconds(engine['build_seconds'])}",
    ]
    precisions = engine.get("compute_layer_precisions")
    if layers and precisions:
        lines.append(f"  compute layers by precision: {format_counts(precisions)}")
    for problem in engine.get("layer_report_problems", [])[:3]:
        lines.append(f"  not fully read: {problem[:200]}")
    excerpt = [layer for layer in layers if layer.get("compute")][:ENGINE_EXCERPT_LAYERS]
    if excerpt:
        rows = [(layer["name"], layer["type"], layer.get("precision", "-"),
                 ",".join(layer.get("datatypes", [])) or "-",
                 ", ".join(layer.get("onnx_nodes", [])) or "-")
                for layer in excerpt]
        lines += ["  " + line for line in format_table(
            ("engine layer", "type", "precision", "output datatypes", "ONNX nodes"), rows,
            (False,) * 5)]
        if len(excerpt) < len(layers):
            lines.append(f"  ({len(excerpt)} of {len(layers)} engine layers shown; all are in "
                         "report.json)")
    return lines


#: Fallback nodes listed in the terminal (all are in report.json).
PARTITION_EXCERPT_NODES = 20


def format_partition(report: Mapping[str, Any]) -> list[str]:
    """The partition: coverage, one row per segment, one row per fallback node with its reason
    (by node, not by op type: TF-TRT printed "Total nonconverted OPs" per type)."""
    partition = report.get("partition")
    if not partition:
        return []
    covered = "planned in segments" if partition.get("dry_run") else "in engines"
    lines = [f"partition: {partition['trigger']}; {partition['coverage']:.1%} of "
             f"{partition['compute_nodes']} compute nodes {covered}, "
             f"{len(partition['segments'])} segment{'s' if len(partition['segments']) != 1 else ''}"
             f", {len(partition['fallback'])} fallback node"
             f"{'s' if len(partition['fallback']) != 1 else ''} "
             f"(min-segment-size {partition['min_segment_size']})"]
    parity = partition.get("parity")
    if parity is not None:
        lines.append(f"  partitioned vs input on ONNX Runtime: "
                     f"{'passed' if parity['passed'] else 'FAILED'}")
    if partition["segments"]:
        rows = []
        for segment in partition["segments"]:
            if segment["engine"]:
                status = f"{segment['engine']} ({segment['compute_layers']} compute layers)"
            elif partition.get("dry_run") and not segment["why_not_engine"]:
                status = "not built (dry run)"
            else:
                status = f"not built: {segment['why_not_engine']}"
            rows.append((segment["name"], str(len(segment["nodes"])), str(segment["compute_nodes"]),
                         status))
        lines += ["  " + line for line in format_table(
            ("segment", "nodes", "compute", "engine"), rows, (False, True, True, False))]
    fallback = partition["fallback"]
    if fallback:
        rows = [(entry["node"], entry["op"], entry["reason"])
                for entry in fallback[:PARTITION_EXCERPT_NODES]]
        lines += ["  " + line for line in format_table(
            ("fallback node", "op", "reason"), rows, (False, False, False))]
        if len(fallback) > PARTITION_EXCERPT_NODES:
            lines.append(f"  ({PARTITION_EXCERPT_NODES} of {len(fallback)} fallback nodes shown; "
                         "all are in report.json)")
    return lines


def render(report: Mapping[str, Any], output_dir: str | None = None) -> str:
    """The whole terminal report: model line, pass table, parity, engine, engine parity, files."""
    lines = []
    model = report["model"]
    lines.append(f"model: {model['description'] or model['source']}")
    lines.append(f"pipeline: {report['pipeline'] or '(no passes)'}")
    lines += format_profiles(report)
    lines.append("")
    lines += format_pass_table(report)
    lines.append("")
    lines += format_parity(report)
    lines.append("")
    lines += format_engine(report, output_dir)
    partition = format_partition(report)
    if partition:
        lines += ["", *partition]
    lines.append("")
    lines += format_engine_parity(report)
    if output_dir:
        lines.append("")
        names = ", ".join(report["files"].values())
        lines.append(f"wrote {output_dir.rstrip('/')}/: {names}")
    return "\n".join(lines) + "\n"


__all__ = ["build_report", "dumps", "format_engine", "format_engine_parity", "format_parity",
           "format_partition",
           "format_pass_table", "format_why_not", "rejections_of", "render", "tool_versions"]
