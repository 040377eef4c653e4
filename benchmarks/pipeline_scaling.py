"""Time the default pipeline (no parity, no engine) on the built-in example and synthetic graphs.

Usage: ``python -m benchmarks.pipeline_scaling [--sizes 1000,2000,10000,20000,50000,100000] [--repeats 3]
[--no-write]``

For each graph the pipeline runs ``--repeats`` times on fresh copies; the table gives the minimum,
median and maximum wall time of ``PassManager.run`` (building the graph is not timed) and, where the
graph half its size was measured too, the ratio of the medians: the scaling target bounds it (doubling
the graph at most 2.3x the time). The figures are written to the "pipeline-scaling" section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

from benchmarks.markdown_section import machine_line, write_section
from benchmarks.synthetic import synthetic_graph
from trtcompile import ir
from trtcompile.pass_manager import PassManager, default_pipeline_text

#: Allowed growth of time when the graph doubles.
DOUBLING_LIMIT = 2.3


def _example_graph():
    from trtcompile import examples

    return ir.import_model(examples.googlenet_onnx())


def time_pipeline(make_graph, repeats: int) -> tuple[list[float], int, int]:
    """Run the default pipeline ``repeats`` times on fresh graphs; return times and layer counts."""
    times, before, after = [], 0, 0
    for _ in range(repeats):
        graph = make_graph()
        gc.collect()
        start = time.perf_counter()
        report = PassManager(default_pipeline_text()).run(graph)
        times.append(time.perf_counter() - start)
        before, after = report.layers_before, report.layers_after
    return times, before, after


def main(argv: list[str] | None = None) -> int:
    """Measure and print the figures; write the docs section unless ``--no-write``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,2000,10000,20000,50000,100000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    rows = []
    try:
        times, before, after = time_pipeline(_example_graph, args.repeats)
        rows.append(("built-in example (googlenet-onnx)", before, after, times, None))
    except ImportError:
        pass
    medians: dict[int, float] = {}
    for size in (int(s) for s in args.sizes.split(",")):
        times, before, after = time_pipeline(lambda size=size: synthetic_graph(size), args.repeats)
        median = statistics.median(times)
        ratio = median / medians[size // 2] if size // 2 in medians and size % 2 == 0 else None
        rows.append((f"synthetic {size:,} nodes", before, after, times, ratio))
        medians[size] = median
        print(f"{size}: {min(times):.2f}/{median:.2f}/{max(times):.2f} s, layers {before} -> {after}",
              flush=True)
    lines = [
        "## Pipeline scaling",
        "",
        "`python -m benchmarks.pipeline_scaling` times `PassManager(default pipeline).run(graph)` "
        f"({args.repeats} runs per graph, fresh graph each run, graph construction not timed; no "
        "parity, no engine). Synthetic graphs repeat a 10-node block (conv, bias add, BatchNorm, "
        "ReLU, two parallel 1x1 convs, concat, identity, residual add) on 1x4x4x4 tensors.",
        "",
        f"Default pipeline: `{default_pipeline_text()}`",
        "",
        "| graph | layers before | layers after | min s | median s | max s | median vs half the graph |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, before, after, times, ratio in rows:
        ratio_text = f"{ratio:.2f}x (limit {DOUBLING_LIMIT}x)" if ratio else ""
        lines.append(f"| {name} | {before} | {after} | {min(times):.2f} | "
                     f"{statistics.median(times):.2f} | {max(times):.2f} | {ratio_text} |")
    lines += ["", "Targets: 100k nodes under 30 s; doubling the graph at most 2.3x the time.", "",
              machine_line()]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("pipeline-scaling", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
