"""Transposes left after transpose-cancellation on faithfully lowered Keras networks.

tf2onnx with its own optimizers off (``optimizers={}``) lowers a Keras (NHWC) network faithfully:
every Conv and pool is wrapped in an NHWC->NCHW Transpose before and an NCHW->NHWC Transpose after.
For each network this measures Transposes and nodes before and after the pipeline, the time of
``transpose-cancellation`` and of the whole pipeline, which Transposes remain (and why), and ONNX
Runtime parity of the optimized model against the lowered one. A synthetic NHWC chain of about
100,000 nodes measures how the pass scales.

Networks: Keras InceptionV3, ResNet50 and MobileNetV2 (``weights=None``, batch 1). Lowered models are
cached as files (:mod:`benchmarks.keras_models`).

Run: ``python -m benchmarks.transpose_cancellation [--cache-dir DIR] [--models inceptionv3,...]``.
Writes the ``transpose-cancellation`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from benchmarks import keras_models
from benchmarks.keras_models import KERAS_MODELS, add_cache_dir_argument
from benchmarks.markdown_section import machine_line, write_section

#: The pipeline measured (explicit, so the figures do not move with the default pipeline).
PIPELINE = ("fold-constants,dead-layer-elimination,transpose-cancellation,"
            "dead-layer-elimination")
PASS = "transpose-cancellation"

#: Nodes of the synthetic scaling graph (blocks of Transpose, Conv, Transpose, Relu).
SYNTHETIC_NODES = 100_000

@dataclass
class Measurement:
    """Figures of one network."""

    name: str
    transposes_before: int
    transposes_after: int
    boundary_transposes: int  # of those left, how many read a graph input or write an output
    nodes_before: int
    nodes_after: int
    pass_seconds: float
    pipeline_seconds: float
    stats: dict[str, int]
    remaining: list[str]  # "<reason>" per Transpose left
    parity: str


def lowered_model(key: str, cache_dir: Path) -> onnx.ModelProto:
    """The faithful tf2onnx lowering (optimizers off) of a Keras application, cached."""
    return keras_models.lowered_model(key, cache_dir, faithful=True)


def _transposes(graph: gs.Graph) -> list[gs.Node]:
    return [node for node in graph.nodes if node.op == "Transpose"]


def measure(key: str, cache_dir: Path) -> Measurement:
    """Run the pipeline on one network and collect the figures."""
    from trtcompile import ir, verify
    from trtcompile.pass_manager import PassManager

    model = lowered_model(key, cache_dir)
    model.ir_version = min(model.ir_version or ir.IR_VERSION, ir.IR_VERSION)
    graph = ir.import_model(model)
    transposes_before, nodes_before = len(_transposes(graph)), len(graph.nodes)
    report = PassManager(PIPELINE).run(graph)
    optimized = ir.export_model(graph)
    record = next(r for r in report.records if r.name == PASS)
    boundary = {t.name for t in graph.inputs} | ir.output_names(graph)
    left = _transposes(graph)
    boundary_left = sum(1 for n in left
                        if n.inputs[0].name in boundary or n.outputs[0].name in boundary)
    parity = verify.compare_models(model, optimized, seed=0)
    return Measurement(
        name=key, transposes_before=transposes_before, transposes_after=len(left),
        boundary_transposes=boundary_left, nodes_before=nodes_before, nodes_after=len(graph.nodes),
        pass_seconds=record.seconds, pipeline_seconds=report.seconds, stats=dict(record.counts),
        remaining=[r.reason for r in record.rejections], parity=parity.summary())


def synthetic_chain(num_nodes: int) -> gs.Graph:
    """An NHWC chain as a faithful lowering writes it: Transpose, Conv, Transpose, Relu, repeated."""
    x = gs.Variable("input", np.float32, (1, 4, 4, 3))
    weight = gs.Constant("weight", np.full((3, 3, 1, 1), 0.1, np.float32))
    nodes: list[gs.Node] = []
    current: gs.Tensor = x
    for block in range(num_nodes // 4):
        nchw, conv, nhwc, relu = (gs.Variable(f"b{block}_{n}", np.float32)
                                  for n in ("nchw", "conv", "nhwc", "relu"))
        nodes += [
            gs.Node("Transpose", f"b{block}_to_nchw", {"perm": [0, 3, 1, 2]}, [current], [nchw]),
            gs.Node("Conv", f"b{block}_conv", {}, [nchw, weight], [conv]),
            gs.Node("Transpose", f"b{block}_to_nhwc", {"perm": [0, 2, 3, 1]}, [conv], [nhwc]),
            gs.Node("Relu", f"b{block}_relu", {}, [nhwc], [relu]),
        ]
        current = relu
    current.shape = (1, 4, 4, 3)
    return gs.Graph(nodes=nodes, inputs=[x], outputs=[current], opset=17)


def measure_synthetic(num_nodes: int) -> tuple[int, int, int, float]:
    """(nodes, Transposes before, Transposes after, pass seconds) on the synthetic chain."""
    from trtcompile.pass_manager import PassManager

    graph = synthetic_chain(num_nodes)
    nodes, before = len(graph.nodes), len(_transposes(graph))
    report = PassManager(PASS).run(graph)
    return nodes, before, len(_transposes(graph)), report.records[0].seconds


def markdown(results: list[Measurement], synthetic: tuple[int, int, int, float] | None) -> str:
    """The ``transpose-cancellation`` section."""
    lines = [
        "## Transpose cancellation on faithfully lowered networks",
        "",
        "Written by `python -m benchmarks.transpose_cancellation`. Keras applications",
        "(`weights=None`, batch 1, NHWC input named `input`) lowered by",
        "`tf2onnx.convert.from_keras(..., opset=17, optimizers={})`: tf2onnx's own optimizers are off,",
        "so every Conv and pool sits between an NHWC->NCHW and an NCHW->NHWC Transpose.",
        f"Pipeline: `{PIPELINE}`. *Seconds* are the pass alone and the whole pipeline (the pass",
        "manager's timing, fingerprinting included). Parity: ONNX Runtime, optimized vs lowered model,",
        "seeded random input, atol 1e-4, rtol 1e-3.",
        machine_line(),
        "",
        "| network | Transposes: input | after | of which at graph inputs/outputs | nodes: input "
        "| after | pass s | pipeline s | parity |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for m in results:
        lines.append(
            f"| {m.name} | {m.transposes_before} | {m.transposes_after} | "
            f"{m.boundary_transposes} | {m.nodes_before} | {m.nodes_after} | "
            f"{m.pass_seconds:.3f} | {m.pipeline_seconds:.2f} | "
            f"{'passed' if m.parity.startswith('passed') else m.parity} |")
    lines += ["", "What the pass did, and why each remaining Transpose stayed:", ""]
    for m in results:
        counts = ", ".join(f"{k}={v}" for k, v in sorted(m.counts.items()))
        reasons = "; ".join(sorted(set(m.remaining))) or "none left"
        lines.append(f"- **{m.name}**: {counts}. Left: {reasons}.")
    if synthetic is not None:
        nodes, before, after, seconds = synthetic
        lines += [
            "",
            f"Scaling: a synthetic NHWC chain of {nodes:,} nodes (blocks of Transpose, Conv, "
            f"Transpose, Relu) goes from {before:,} Transposes to {after} in {seconds:.1f} s "
            "(the pass alone, as the pass manager times it).",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure and print the figures; write the docs section unless ``--no-write``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_cache_dir_argument(parser)
    parser.add_argument("--models", default=",".join(KERAS_MODELS),
                        help="comma-separated subset of: " + ", ".join(KERAS_MODELS))
    parser.add_argument("--synthetic-nodes", type=int, default=SYNTHETIC_NODES,
                        help="size of the scaling graph (0 skips it)")
    parser.add_argument("--no-write", action="store_true", help="print, do not update the docs")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    results = []
    for key in args.models.split(","):
        if key not in KERAS_MODELS:
            parser.error(f"unknown model '{key}'; choose from {', '.join(KERAS_MODELS)}")
        m = measure(key, args.cache_dir)
        results.append(m)
        print(f"{key}: transposes {m.transposes_before} -> {m.transposes_after}, nodes "
              f"{m.nodes_before} -> {m.nodes_after}, {m.pass_seconds:.3f} s; {m.parity}",
              file=sys.stderr)
    synthetic = measure_synthetic(args.synthetic_nodes) if args.synthetic_nodes > 0 else None
    text = markdown(results, synthetic)
    print(text)
    if not args.no_write:
        write_section("transpose-cancellation", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
