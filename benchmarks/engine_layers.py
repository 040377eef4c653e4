"""Engine layers TensorRT builds from the tf2onnx lowering of Keras applications, by layer type.

Calibrates what "engine compute layers" means (see :mod:`trtcompile.backend.engine_report`): every
final engine layer except stream synchronisation markers (``signal``/``wait``) and host shape calls
(``shape_call``). Networks: Keras InceptionV3 (299x299), ResNet50 and MobileNetV2 (224x224),
``weights=None``, batch 1, lowered by ``tf2onnx.convert.from_keras(..., opset=17)`` with tf2onnx's
own optimizers on, built unchanged (no trtcompile pass) with the default builder settings.

Run: ``python -m benchmarks.engine_layers [--cache-dir DIR] [--models inceptionv3,resnet50,...]``.
Prints the figures and writes the ``engine-layers`` section of docs/benchmarks.md (unless
``--no-write``). Lowered models are cached as files (:mod:`benchmarks.keras_models`, shared with
``benchmarks.fusion_layers``).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks.keras_models import KERAS_MODELS, add_cache_dir_argument, lowered_model
from benchmarks.markdown_section import machine_line, write_section

SECTION = "engine-layers"


@dataclass
class EngineFigures:
    """Engine figures of one network."""

    name: str
    onnx_nodes: int
    engine_layers: int  # all layers of the first profile, markers included
    compute_layers: int
    compute_types: dict[str, int]
    marker_types: dict[str, int]
    build_seconds: float
    plan_megabytes: float


def measure(key: str, cache_dir: Path) -> EngineFigures:
    """Build the lowered network and count its engine layers by type."""
    from trtcompile.backend import build_engine, layer_type_histogram

    model = lowered_model(key, cache_dir)
    build = build_engine(model, progress=False)
    first = [layer for layer in build.layers if layer.profile == 0]
    return EngineFigures(
        name=key, onnx_nodes=len(model.graph.node), engine_layers=len(first),
        compute_layers=build.compute_layers,
        compute_types=layer_type_histogram(first, compute_only=True),
        marker_types=layer_type_histogram([layer for layer in first if not layer.compute]),
        build_seconds=build.build_seconds, plan_megabytes=len(build.plan) / 1e6)


def _types(histogram: dict[str, int]) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in histogram.items()) or "none"


def markdown(results: list[EngineFigures], backend: str) -> str:
    """The benchmarks page section."""
    lines = [
        "## Engine layers of unoptimized networks",
        "",
        "Written by `python -m benchmarks.engine_layers`. Keras applications (`weights=None`, batch 1)"
        " lowered by `tf2onnx.convert.from_keras(..., opset=17)` with tf2onnx's optimizers on, built"
        f" by {backend} without any trtcompile pass. *Compute layers* are all engine layers except"
        " stream synchronisation markers (`signal`, `wait`) and host shape calls (`shape_call`).",
        "",
        "| network | ONNX nodes | engine layers | compute layers | compute layer types | markers "
        "| build s | plan MB |",
        "|---|---:|---:|---:|---|---|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r.name} | {r.onnx_nodes} | {r.engine_layers} | {r.compute_layers} | "
                     f"{_types(r.compute_types)} | {_types(r.marker_types)} | "
                     f"{r.build_seconds:.1f} | {r.plan_megabytes:.1f} |")
    lines += ["", machine_line() + " No GPU: plans are built, not run; build times are CPU-only."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure and print the figures; write the docs section unless ``--no-write``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_cache_dir_argument(parser)
    parser.add_argument("--models", default=",".join(KERAS_MODELS),
                        help="comma-separated subset of: " + ", ".join(KERAS_MODELS))
    parser.add_argument("--no-write", action="store_true", help="print, do not update the docs")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from trtcompile.backend import backend_info

    info = backend_info()
    results = []
    for key in args.models.split(","):
        if key not in KERAS_MODELS:
            parser.error(f"unknown model {key!r}; choose from {', '.join(KERAS_MODELS)}")
        figures = measure(key, args.cache_dir)
        results.append(figures)
        print(f"{key}: {figures.compute_layers} engine compute layers "
              f"({_types(figures.compute_types)}); {figures.engine_layers - figures.compute_layers} "
              f"markers ({_types(figures.marker_types)}); built in {figures.build_seconds:.1f} s",
              file=sys.stderr)
    text = markdown(results, f"{info.module} {info.version}")
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
