"""Time the default pipeline (no parity, no engine) on the built-in example and synthetic graphs,
in total and per pass, and check that no pass grows faster than n log n.

Usage: ``python -m benchmarks.pipeline_scaling [--sizes 25000,50000,100000,200000] [--repeats 3]
[--no-write]``

For each graph the pipeline runs ``--repeats`` times on fresh copies; the tables give the minimum,
median and maximum wall time of ``PassManager.run`` (building the graph is not timed) and the median
seconds of each pass (all its runs in the pipeline added up). Between two sizes where one is twice
the other, a pass's growth is the ratio of its medians; the check fails (exit code 1) when a pass
that takes at least :data:`MIN_CHECKED_SECONDS` grows by more than n log n allows (2 x log(2n) /
log(n)) times :data:`NOISE` (timings on a shared machine vary by that much), and the whole
pipeline when it grows by more than :data:`DOUBLING_LIMIT`. The figures are written to the
"pipeline-scaling" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import time
from collections import defaultdict

from benchmarks.markdown_section import machine_line, write_section
from benchmarks.synthetic import synthetic_graph
from trtcompile import ir
from trtcompile.pass_manager import PassManager, default_pipeline_text

#: Allowed growth of the whole pipeline's time when the graph doubles.
DOUBLING_LIMIT = 2.3

#: Timings on a shared 2-core machine vary by this factor between runs.
NOISE = 1.25

#: Passes faster than this at the larger size are not checked (their growth is noise).
MIN_CHECKED_SECONDS = 0.2


def _example_graph():
    from trtcompile import examples

    return ir.import_model(examples.googlenet_onnx())


def time_pipeline(make_graph, repeats: int) -> tuple[list[float], int, int, dict[str, list[float]]]:
    """Run the default pipeline ``repeats`` times on fresh graphs; return the times, the layer
    counts and each pass's seconds per run."""
    times, before, after = [], 0, 0
    per_pass: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeats):
        graph = make_graph()
        gc.collect()
        start = time.perf_counter()
        report = PassManager(default_pipeline_text()).run(graph)
        times.append(time.perf_counter() - start)
        before, after = report.layers_before, report.layers_after
        seconds: dict[str, float] = defaultdict(float)
        for record in report.records:
            seconds[record.name] += record.seconds
        for name, value in seconds.items():
            per_pass[name].append(value)
    return times, before, after, per_pass


def nlogn_growth(size: int) -> float:
    """How much n log n grows from ``size`` to twice it."""
    return 2 * math.log(2 * size) / math.log(size)


def growth_failures(medians: dict[int, dict[str, float]]) -> list[str]:
    """Passes (and the whole pipeline, ``total``) that grew faster than allowed between a size and
    twice it, each as one line."""
    failures = []
    for size in sorted(medians):
        larger = medians.get(2 * size)
        if larger is None:
            continue
        allowed = nlogn_growth(size) * NOISE
        for name, seconds in larger.items():
            small = medians[size].get(name)
            if not small or (name != "total" and seconds < MIN_CHECKED_SECONDS):
                continue
            limit = DOUBLING_LIMIT if name == "total" else allowed
            if seconds / small > limit:
                failures.append(f"{name}: {small:.2f} s at {size:,} nodes, {seconds:.2f} s at "
                                f"{2 * size:,} ({seconds / small:.2f}x, limit {limit:.2f}x)")
    return failures


def main(argv: list[str] | None = None) -> int:
    """Measure and print the figures; write the docs section unless ``--no-write``. Exit code 1
    when a pass grows faster than n log n (see the module's docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="25000,50000,100000,200000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    rows = []
    try:
        times, before, after, _ = time_pipeline(_example_graph, args.repeats)
        rows.append(("built-in example (googlenet-onnx)", before, after, times, None))
    except ImportError:
        pass
    medians: dict[int, dict[str, float]] = {}
    for size in (int(s) for s in args.sizes.split(",")):
        times, before, after, per_pass = time_pipeline(lambda size=size: synthetic_graph(size),
                                                       args.repeats)
        medians[size] = {"total": statistics.median(times),
                         **{name: statistics.median(v) for name, v in per_pass.items()}}
        half = medians.get(size // 2) if size % 2 == 0 else None
        ratio = medians[size]["total"] / half["total"] if half else None
        rows.append((f"synthetic {size:,} nodes", before, after, times, ratio))
        print(f"{size}: {min(times):.2f}/{medians[size]['total']:.2f}/{max(times):.2f} s, layers "
              f"{before} -> {after}", flush=True)
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
    sizes = sorted(medians)
    names = sorted({n for m in medians.values() for n in m if n != "total"},
                   key=lambda n: -medians[sizes[-1]].get(n, 0.0))
    lines += ["", "Median seconds per pass (all its runs in the pipeline added up); the rest of the "
              "total is the pass manager's own work (a structural fingerprint of the graph after "
              "each pass, provenance):", "",
              "| pass | " + " | ".join(f"{s:,} nodes" for s in sizes) + " |",
              "|---|" + "---:|" * len(sizes)]
    lines += [f"| {name} | " + " | ".join(f"{medians[s].get(name, 0.0):.2f}" for s in sizes) + " |"
              for name in names]
    failures = growth_failures(medians)
    lines += ["", "Check: no pass may grow faster than n log n when the graph doubles (x"
              f"{nlogn_growth(sizes[0]) if sizes else 2.0:.2f} at {sizes[0] if sizes else 0:,} "
              f"nodes, with {NOISE}x for timing noise; passes under {MIN_CHECKED_SECONDS} s not "
              f"checked), the pipeline at most {DOUBLING_LIMIT}x: "
              + ("passed." if not failures else "FAILED: " + "; ".join(failures) + "."),
              "", machine_line()]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("pipeline-scaling", text)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
