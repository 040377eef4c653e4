"""Engine-build controls measured: build time without and with the builder cache, and plan size
plain, refittable and weight-stripped.

Model: a chain of six 3x3 Conv+Relu (64 channels, 56x56, batch 1; 0.9 MB of FP32 weights), built
by :func:`trtcompile.backend.build_engine` with TensorRT's default settings except the option
measured. Build time is the builder's own time (``build_serialized_network``), the median of
``--repeats`` builds: without a cache; with a new cache file (the build that writes it); with the
file the previous build wrote (the build that reuses it). A build the TensorRT in use cannot do
here is listed with its one-line reason instead of a figure.

Run: ``python -m benchmarks.build_options [--repeats 3] [--no-write]``. Prints the figures and
writes the ``build-options`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from benchmarks.markdown_section import machine_line, write_section

SECTION = "build-options"


def conv_chain(layers: int = 6, channels: int = 64, size: int = 56) -> onnx.ModelProto:
    """``layers`` Conv+Relu on a 1x``channels``x``size``x``size`` input."""
    nodes, weights, previous = [], [], "x"
    for i in range(layers):
        weights += [numpy_helper.from_array(np.random.RandomState(i).randn(
            channels, channels, 3, 3).astype(np.float32) * 0.05, f"w{i}"),
            numpy_helper.from_array(np.zeros(channels, np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", [previous, f"w{i}", f"b{i}"], [f"c{i}"],
                                   name=f"conv{i}", pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        previous = f"r{i}"
    shape = [1, channels, size, size]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, shape)], [helper.make_tensor_value_info(
            previous, TensorProto.FLOAT, shape)], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def build(model: onnx.ModelProto, **options):
    """One build with ``options`` (BuildOptions fields): the EngineBuild, or the error's text."""
    from trtcompile import backend
    from trtcompile.backend.options import BuildOptions
    from trtcompile.errors import TrtcompileError

    try:
        return backend.build_engine(model, progress=False, build=BuildOptions(**options))
    except TrtcompileError as error:
        return str(error)


def measure(repeats: int) -> dict:
    """The figures: build seconds by cache use, plan bytes by weight option."""
    model = conv_chain()
    times: dict[str, list[float]] = {"no cache": [], "new cache": [], "reused cache": []}
    cache_records = []
    for _ in range(repeats):
        plain = build(model)
        times["no cache"].append(plain.build_seconds)
        with tempfile.TemporaryDirectory() as folder:
            path = str(Path(folder) / "builder.cache")
            first = build(model, timing_cache=path)
            second = build(model, timing_cache=path)
            times["new cache"].append(first.build_seconds)
            times["reused cache"].append(second.build_seconds)
            cache_records.append(second.cache)
    sizes = {}
    for label, options in (("plain", {}), ("refittable", {"refittable": True}),
                           ("stripped (--strip-weights)", {"strip_weights": True}),
                           ("refittable + stripped", {"refittable": True,
                                                      "strip_weights": True})):
        result = build(model, **options)
        sizes[label] = result if isinstance(result, str) else len(result.plan)
    from trtcompile import backend

    info = backend.backend_info()
    return {"times": {k: statistics.median(v) for k, v in times.items()}, "sizes": sizes,
            "cache": cache_records[-1], "backend": f"{info.module} {info.version}",
            "weights_bytes": sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer),
            "repeats": repeats}


def markdown(figures: dict) -> str:
    """The section of docs/benchmarks.md."""
    cache = figures["cache"]
    lines = [
        "## Engine-build controls: builder cache and weight-stripped plans",
        "",
        f"Written by `python -m benchmarks.build_options` with {figures['backend']}. Model: six "
        f"3x3 Conv+Relu, 64 channels, 56x56 ({figures['weights_bytes'] / 1e6:.2f} MB of FP32 "
        "weights). Build time is the builder's own (`build_serialized_network`), the median of "
        f"{figures['repeats']} builds; each cached pair of builds uses a new cache file. "
        + machine_line(),
        "",
        "| build | seconds |",
        "| --- | ---: |",
    ]
    lines += [f"| {label} | {seconds:.3f} |" for label, seconds in figures["times"].items()]
    lines += ["", f"The second build's cache record: status `{cache['status']}`, "
                  f"{cache['bytes_before']} bytes read, {cache['entries_before']} timing entries, "
                  f"{cache['hits']} hits, {cache['misses']} misses"
                  + (f"; the builder said: \"{'; '.join(cache['notes'])}\"" if cache["notes"]
                     else "") + ".",
              "", "| plan | bytes |", "| --- | ---: |"]
    for label, value in figures["sizes"].items():
        # A refused build: its reason is the hint after the builder's own words.
        cell = f"{value}" if isinstance(value, int) else \
            f"not built here: {value.rsplit(': ', 1)[-1].rstrip(')') if ': ' in value else value}"
        lines.append(f"| {label} | {cell} |")
    if figures["backend"].startswith("tensorrt_rtx"):
        lines += ["", "TensorRT-RTX times no tactics (its timing cache calls are no-ops), so its "
                      "cache holds only the builder's small compilation cache, and without a GPU "
                      "it compiles no refittable weights: on such a machine the cache cannot "
                      "shorten a build and stripped plans cannot be measured. Standard TensorRT "
                      "on a GPU gives both figures with the same script."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    text = markdown(measure(args.repeats))
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
