"""Partitioning on real networks with an op TensorRT rejects: coverage, segments, build time.

For each network (the built-in ``googlenet-onnx`` example, and Keras ResNet50 and MobileNetV2 with
``weights=None``, exported as SavedModels and lowered by the TensorFlow frontend) the script

1. takes the ONNX model (the lowered one for Keras applications) and inserts, on the output of
   the ReLU (or ReLU6) closest to the middle of the graph, ``Cast(uint32) -> BitShift(right, by a uint32
   initializer) -> Cast(float)``: the BitShift-on-uint32 pattern TensorRT's parser rejects (ReLU
   outputs are non-negative, so the uint32 cast is defined; the shift by 0 keeps integers);
2. compiles the original model (one whole-model engine) and the modified one (partitioned) with
   the compile flow's Python face (:func:`trtcompile.flow.compile_model`, default pipeline,
   default profiles), with ``--min-segment-size`` 3 (the default);
3. reads from the results: coverage (compute nodes in engines), segments, fallback nodes, the
   parser queries the support classification took, parity of ``partitioned.onnx``, each
   segment's engine compute layers and build seconds, and the whole compile's wall time.

Run: ``python -m benchmarks.partition [--cache-dir DIR] [--models googlenet-onnx,resnet50,...]``.
Writes the ``partition`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from benchmarks.markdown_section import machine_line, write_section

MODELS = ("googlenet-onnx", "resnet50", "mobilenetv2")
KERAS = {"resnet50": "ResNet50", "mobilenetv2": "MobileNetV2"}


def insert_bitshift(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """``model`` with Cast(uint32)-BitShift-Cast(float) on the middle ReLU's output; returns the
    model and the ReLU's name."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = list(model.graph.node)
    # ReLU, or ReLU6 (MobileNetV2 lowers it to Clip with min 0): non-negative outputs.
    relus = [i for i, node in enumerate(nodes) if node.op_type in ("Relu", "Clip")]
    middle = min(relus, key=lambda i: abs(i - len(nodes) / 2))
    relu = nodes[middle]
    source = relu.output[0]
    names = {"u": f"{source}__as_uint32", "s": f"{source}__shifted", "f": f"{source}__back"}
    inserted = [
        helper.make_node("Cast", [source], [names["u"]], name="inserted/to_uint32",
                         to=TensorProto.UINT32),
        helper.make_node("BitShift", [names["u"], "inserted/shift_amount"], [names["s"]],
                         name="inserted/bitshift", direction="RIGHT"),
        helper.make_node("Cast", [names["s"]], [names["f"]], name="inserted/to_float",
                         to=TensorProto.FLOAT),
    ]
    for node in nodes[middle + 1:]:
        node.input[:] = [names["f"] if name == source else name for name in node.input]
    for output in model.graph.output:
        if output.name == source:
            raise ValueError("the middle ReLU is a graph output")
    del model.graph.node[:]
    model.graph.node.extend(nodes[:middle + 1] + inserted + nodes[middle + 1:])
    model.graph.initializer.append(numpy_helper.from_array(np.array([0], np.uint32),
                                                           "inserted/shift_amount"))
    return model, relu.name or f"node {middle}"


def source_model(key: str, cache_dir: Path) -> onnx.ModelProto:
    """The network as ONNX: the built-in example, or a Keras application's lowering."""
    if key == "googlenet-onnx":
        from trtcompile.examples import googlenet_onnx

        return googlenet_onnx()
    from benchmarks.keras_applications import export_savedmodel
    from trtcompile.frontend import FrontendOptions, load_model

    saved = cache_dir / KERAS[key]
    export_savedmodel(KERAS[key], saved, dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    return load_model(saved, FrontendOptions()).model


def compile_once(path: Path, out: Path) -> tuple[dict, float]:
    from trtcompile.flow import CompileOptions, compile_model

    start = time.perf_counter()
    result = compile_model(path, out, CompileOptions(progress=False))
    return result.report, time.perf_counter() - start


def measure(key: str, cache_dir: Path) -> dict:
    from trtcompile import ir

    model = source_model(key, cache_dir)
    with tempfile.TemporaryDirectory(prefix="trtcompile-partition-") as folder:
        folder = Path(folder)
        ir.save(model, folder / "original.onnx")
        whole, whole_seconds = compile_once(folder / "original.onnx", folder / "whole")
        modified, relu = insert_bitshift(model)
        ir.save(modified, folder / "modified.onnx")
        report, seconds = compile_once(folder / "modified.onnx", folder / "partitioned")
    partition = report["partition"]
    segments = partition["segments"]
    return {
        "network": key, "after": relu, "status": report["status"],
        "whole_layers": whole["engine"].get("compute_layers"),
        "whole_build": whole["engine"].get("build_seconds"), "whole_wall": whole_seconds,
        "coverage": partition["coverage"], "compute_nodes": partition["compute_nodes"],
        "segments": [(s["name"], s["compute_nodes"], s["compute_layers"],
                      (s["engine_report"] or {}).get("build_seconds")) for s in segments],
        "fallback": [(f["node"], f["op"], f["reason"]) for f in partition["fallback"]],
        "queries": (partition["support"] or {}).get("queries"),
        "parity": partition["parity"]["passed"] if partition["parity"] else None,
        "support_seconds": report["seconds"].get("support"),
        "wall": seconds,
    }


def render(rows: list[dict]) -> str:
    lines = [
        "## Partitioning a network with an op TensorRT rejects",
        "",
        "Written by `python -m benchmarks.partition`. Each network gets `Cast(uint32) -> "
        "BitShift -> Cast(float)` inserted on the output of its middle ReLU (TensorRT's parser "
        "rejects BitShift and uint32 tensors; ONNX Runtime runs them) and is compiled with the "
        "default pipeline and `--min-segment-size 3`; the unmodified network is compiled too, "
        "as one whole-model engine. Coverage is the fraction of the optimized graph's compute "
        "nodes inside segment engines; support queries are the parser queries the classification "
        "took (each parses the remaining model once). Wall times are of the whole compile (load, "
        "passes, parity, support query, engines); the first network's whole-model compile also "
        "pays the process's one-time imports.",
        "",
        machine_line(),
        "",
        "| network | inserted after | whole model: engine compute layers (build s) | coverage | "
        "segments: compute nodes → engine compute layers (build s) | fallback nodes | support "
        "queries (s) | partitioned parity | compile wall s: whole / partitioned |",
        "|---|---|---:|---:|---|---|---:|---|---:|",
    ]
    for row in rows:
        segments = "; ".join(f"{name}: {nodes} → {layers} ({build:.2f})" for name, nodes, layers,
                             build in row["segments"])
        fallback = ", ".join(f"{op}" for _, op, _ in row["fallback"])
        lines.append(
            f"| {row['network']} | `{row['after']}` | {row['whole_layers']} "
            f"({row['whole_build']:.2f}) | {row['coverage']:.1%} of {row['compute_nodes']} | "
            f"{segments} | {len(row['fallback'])} ({fallback}) | {row['queries']} "
            f"({row['support_seconds']:.2f}) | {'passed' if row['parity'] else 'FAILED'} | "
            f"{row['whole_wall']:.1f} / {row['wall']:.1f} |")
    lines += ["", "Fallback reasons, as the report gives them:", ""]
    reasons = {}
    for row in rows:
        for node, op, reason in row["fallback"]:
            reasons.setdefault((op, reason), node)
    lines += [f"- `{op}`: {reason}" for (op, reason) in reasons]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path,
                        default=Path(tempfile.gettempdir()) / "trtcompile-benchmarks")
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args(argv)
    rows = []
    for key in [k.strip() for k in args.models.split(",") if k.strip()]:
        if key not in MODELS:
            parser.error(f"--models {key}: expected some of {', '.join(MODELS)}")
        print(f"measuring {key} ...", file=sys.stderr, flush=True)
        row = measure(key, args.cache_dir)
        print(row, file=sys.stderr, flush=True)
        rows.append(row)
    path = write_section("partition", render(rows))
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
