"""The terminal report: :func:`render` draws the model line, the pass table, parity, the engine,
the partition and engine parity from a ``report.json`` dict, so what the terminal shows and what
the file holds cannot disagree."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from trtcompile.report.document import ENGINE_PARITY_NOT_RECORDED
from trtcompile.report.tables import (
    format_counts,
    format_pass_table,
    format_seconds,
    format_table,
    wrap_line,
)

#: Engine layers shown in the terminal excerpt (report.json lists them all).
ENGINE_EXCERPT_LAYERS = 12

#: Nodes of the precision risk table shown in the terminal (report.json and the HTML report
#: list them all).
RISK_EXCERPT_NODES = 5


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
    if inputs and inputs.get("kind") in ("held-out calibration samples", "calibration samples",
                                               "measured samples"):
        lines.append(f"  inputs: {inputs['floating_point']}")
    elif inputs:
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


def format_precision_risk(report: Mapping[str, Any]) -> list[str]:
    """The riskiest nodes for the reduced precision on the user's data (nothing when no pass
    measured): the range each reaches in FP32, the error the precision gives it alone, and
    whether it stayed in higher precision and why."""
    risk = report.get("precision_risk")
    if not risk:
        return []
    nodes = risk["nodes"]
    int8 = risk.get("precision") == "int8"
    low, high = ("INT8", "float") if int8 else (str(risk.get("precision", "fp16")).upper(), "FP32")
    kept = sum(1 for node in nodes if node["kept"])
    head = f"precision risk ({risk['pass']}, {risk['samples']} samples"
    if risk.get("data_max") is not None:
        head += f", data-max {risk['data_max']:g}"
    if int8:
        head += f"): {len(nodes)} layers considered, {kept} left in higher precision"
    else:
        by_data = sum(1 for node in nodes if node.get("kept_by"))
        head += (f"): {len(nodes)} float nodes, {kept} kept in FP32, {by_data} of them by the "
                 "data")
    rows = []
    for node in nodes[:RISK_EXCERPT_NODES]:
        error = node["alone_error"]
        rows.append((node["name"], node["op"], _error(node["max_abs_fp32"]),
                     "-" if error is None else _error(error), high if node["kept"] else low,
                     node["reason"] or ""))
    lines = [head]
    lines += ["  " + line for line in format_table(
        ("node", "op", "max |x| fp32", f"{low.lower()} error alone", "runs in", "reason"), rows,
        (False, False, True, True, False, False))]
    if len(nodes) > RISK_EXCERPT_NODES:
        lines.append(f"  ({RISK_EXCERPT_NODES} of {len(nodes)} nodes shown, riskiest first; all "
                     "are in report.json and the HTML report)")
    return lines


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
    segments = segment_engines(report)
    if not engine.get("built") and segments:
        first = segments[0]["engine_report"]
        partition = report["partition"]
        total = sum(s["engine_report"].get("compute_layers", 0) for s in segments)
        return [f"engines: {len(segments)} segment engine{'s' if len(segments) != 1 else ''} built "
                f"({first.get('backend')} {first.get('version')}), {total} compute layers",
                f"  {partition['coverage']:.1%} of {partition['compute_nodes']} compute nodes in "
                "engines, the rest on ONNX Runtime (see partition)"]
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
    lines += format_build(engine)
    precisions = engine.get("compute_layer_precisions")
    if layers and precisions:
        lines.append(f"  compute layers by precision: {format_counts(precisions)}")
    if engine.get("int8"):
        lines.append(f"  {engine['int8']['summary']}")
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


def format_build(engine: Mapping[str, Any]) -> list[str]:
    """The build options that differ from TensorRT's defaults, the plan's properties read back,
    and what the build did with the builder cache (one line each, when there is something)."""
    lines = []
    options = {key: value for key, value in (engine.get("build_options") or {}).items()
               if value not in (None, False, [], ())}
    if options:
        lines.append("  build options: " + ", ".join(
            f"{key}={','.join(map(str, value)) if isinstance(value, list) else value}"
            for key, value in options.items()))
    plan = engine.get("plan_properties") or {}
    if plan:
        targets = plan.get("compute_capabilities")
        parts = [f"targets {', '.join(targets) if targets else 'not in its header'}",
                 f"refittable {'yes' if plan.get('refittable') else 'no'}",
                 f"stripped {'yes' if plan.get('stripped') else 'no'}",
                 f"hardware compatibility {plan.get('hardware_compatibility', 'none')}"]
        if plan.get("plugin_layers"):
            parts.append(f"plugin layers {', '.join(plan['plugin_layers'])}")
        lines.append(f"  plan: {'; '.join(parts)} (read back from the {plan.get('read_back')})")
    cache = engine.get("cache")
    if cache:
        note = f"; {cache['notes'][0]}" if cache.get("notes") and cache["status"] != "created" else ""
        lines.append(f"  builder cache {cache['path']}: {cache['verdict']}, {cache['bytes_before']}"
                     f" -> {cache['bytes_after']} bytes, {cache['hits']} hits, "
                     f"{cache['misses']} misses{note}")
    return lines


def segment_engines(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The partition's segments that have an engine, each with its ``engine_report`` (none for a
    whole-model compile or a dry run)."""
    partition = report.get("partition") or {}
    return [segment for segment in partition.get("segments", [])
            if segment.get("engine") and segment.get("engine_report")]


def segment_engine_text(segment: Mapping[str, Any]) -> str:
    """``segments/segment_0.engine: 7 engine layers (5 compute), built in 98.1 ms``."""
    engine = segment.get("engine_report") or {}
    layers = [layer for layer in engine.get("layers", []) if layer.get("profile", 0) == 0]
    counted = (f"{len(layers)} engine layers ({segment['compute_layers']} compute)" if layers
               else f"{segment['compute_layers']} compute layers")
    built = (f", built in {format_seconds(engine['build_seconds'])}"
             if engine.get("build_seconds") is not None else "")
    return f"{segment['engine']}: {counted}{built}"


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
                status = segment_engine_text(segment)
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


def format_engine_check(report: Mapping[str, Any]) -> list[str]:
    """The engine check's verdict (``trtcompile.flow.engine_check``), one line plus one per group
    it undid; nothing when there was no engine to check."""
    check = report.get("engine_check")
    if not check or (check["status"] == "not run" and not report["engine"].get("built")):
        return []
    if check["status"] == "not run":
        return [f"  engine check: not run ({check['reason']})"]
    cost = f"{check['builds']} build{'s' if check['builds'] != 1 else ''}, {check['seconds']:.1f} s"
    head = (f"  engine check: {check['optimized_layers']} compute layers after the pipeline, "
            f"{check['baseline_layers']} without it")
    if check["status"] == "kept":
        return [f"{head}: kept ({cost})"]
    if check["status"] == "regrouped":
        lines = [f"{head}: undid {len(check['undone'])} group(s) by engine verdict, delivered "
                 f"{check['delivered_layers']} ({cost})"]
        return lines + [f"    undone: {u['group']} ({u['reason']})" for u in check["undone"]]
    return [f"{head}: delivered the model without the rewrites, {check['delivered_layers']} "
            f"({check['reason']}; {cost})"]


def render(report: Mapping[str, Any], output_dir: str | None = None,
           copies: Mapping[str, str] | None = None) -> str:
    """The whole terminal report: model line, pass table, parity, engine, engine parity, and
    every file written (OUT's, then ``copies``: flag -> path of each copy written elsewhere).
    The pass table and the pipeline fit :data:`TERMINAL_WIDTH` columns."""
    lines = []
    model = report["model"]
    lines.append(f"model: {model['description'] or model['source']}")
    lines += wrap_line(f"pipeline: {report['pipeline'] or '(no passes)'}")  # report.json: whole
    lines += format_profiles(report)
    lines.append("")
    lines += format_pass_table(report)
    risk = format_precision_risk(report)
    if risk:
        lines += ["", *risk]
    lines.append("")
    lines += format_parity(report)
    lines.append("")
    lines += format_engine(report, output_dir)
    lines += format_engine_check(report)
    partition = format_partition(report)
    if partition:
        lines += ["", *partition]
    lines.append("")
    lines += format_engine_parity(report)
    if output_dir:
        lines.append("")
        names = ", ".join(report["files"].values())
        lines.append(f"wrote {output_dir.rstrip('/')}/: {names}")
    for flag, path in (copies or {}).items():
        lines.append(f"wrote {path} ({flag})")
    return "\n".join(lines) + "\n"
