"""Layers after vertical fusion, horizontal fusion and concat elimination, in ONNX and in TensorRT.

For each network: the ONNX layer count after every pass of the fusion pipeline, and the engine
compute layers TensorRT builds from the input model and from the optimized model, side by side with
build times and ONNX Runtime parity. A second optimized variant runs ``horizontal-fusion`` with
``free-split-only=false`` (every legal merge, Split outputs feeding convolutions included) to show
what those merges cost in the engine, which is why the default leaves them alone.

Networks: Keras InceptionV3, ResNet50 and MobileNetV2 (``weights=None``, batch 1), lowered by tf2onnx
with its own optimizers on (they fold BatchNorm into the convolutions and remove the NHWC/NCHW
transposes), and the built-in GoogLeNet-style example. Lowered models are cached as files; each
lowering runs in a child process so TensorFlow's memory goes away with it.

Run: ``python -m benchmarks.fusion_layers [--cache-dir DIR] [--models inceptionv3,resnet50,...]``.
Writes the ``fusion-layers`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from benchmarks.markdown_section import machine_line, write_section

#: The fusion pipeline measured (explicit, so the figures do not move with the default pipeline).
PIPELINE = ("dead-layer-elimination,fold-constants,"
            "fixed-point(conv-bias-activation-fusion,horizontal-fusion,concat-elimination),"
            "dead-layer-elimination")
#: The same with every legal horizontal merge, to measure what Splits cost in the engine.
PIPELINE_ALL_MERGES = PIPELINE.replace("horizontal-fusion", "horizontal-fusion{free-split-only=false}")

KERAS_MODELS = {
    "inceptionv3": ("InceptionV3", 299),
    "resnet50": ("ResNet50", 224),
    "mobilenetv2": ("MobileNetV2", 224),
}
EXAMPLE = "googlenet-onnx"

_LOWER_SCRIPT = """
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras, onnx, tensorflow as tf, tf2onnx
name, size, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
model = getattr(keras.applications, name)(weights=None)
spec = (tf.TensorSpec((1, size, size, 3), tf.float32, name="input"),)
lowered, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
lowered.ir_version = 10
tmp = path + ".tmp"
onnx.save(lowered, tmp)
os.replace(tmp, path)
"""


@dataclass
class Variant:
    """One optimized model: per-pass layers, engine figures, parity."""

    pipeline: str
    onnx_layers: int = 0
    after_pass: list[tuple[str, int]] = field(default_factory=list)
    engine_layers: int = 0
    build_seconds: float = 0.0
    parity: str = ""
    stats: dict[str, int] = field(default_factory=dict)


@dataclass
class Measurement:
    """Figures of one network."""

    name: str
    onnx_layers: int
    engine_layers: int
    build_seconds: float
    variants: list[Variant]


def lowered_model(key: str, cache_dir: Path) -> onnx.ModelProto:
    """The tf2onnx lowering of a Keras application, from the cache or made in a child process."""
    if key == EXAMPLE:
        from trtcompile.examples import load_example

        return load_example(EXAMPLE).model
    class_name, size = KERAS_MODELS[key]
    path = cache_dir / f"{key}_tf2onnx.onnx"
    if not path.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        print(f"lowering Keras {class_name} with tf2onnx ...", file=sys.stderr)
        subprocess.run([sys.executable, "-c", _LOWER_SCRIPT, class_name, str(size), str(path)],
                       check=True)
    return onnx.load(str(path))


def measure(key: str, cache_dir: Path) -> Measurement:
    """Optimize one network with both pipelines and build engines from input and outputs."""
    from trtcompile import ir, verify
    from trtcompile.backend import build_engine
    from trtcompile.pass_manager import PassManager

    model = lowered_model(key, cache_dir)
    model.ir_version = min(model.ir_version or ir.IR_VERSION, ir.IR_VERSION)
    base = build_engine(model, progress=False)
    input_layers = ir.layer_count(ir.import_model(model))
    variants = []
    for pipeline in (PIPELINE, PIPELINE_ALL_MERGES):
        graph = ir.import_model(model)
        report = PassManager(pipeline).run(graph)
        optimized = ir.export_model(graph)
        build = build_engine(optimized, progress=False)
        parity = verify.compare_models(model, optimized, seed=0)
        stats: dict[str, int] = {}
        for record in report.records:
            for name, n in record.stats.items():
                stats[name] = stats.get(name, 0) + n
        variants.append(Variant(
            pipeline=pipeline, onnx_layers=report.layers_after,
            after_pass=[(r.text if r.iteration is None else f"{r.text} (iteration {r.iteration})",
                         r.layers_after) for r in report.records],
            engine_layers=build.compute_layers, build_seconds=build.build_seconds,
            parity=parity.summary(), stats=stats))
    return Measurement(key, input_layers, base.compute_layers, base.build_seconds, variants)


def markdown(results: list[Measurement]) -> str:
    """The ``fusion-layers`` section."""
    lines = [
        "## Fusion: layers in ONNX and in the TensorRT engine",
        "",
        "Written by `python -m benchmarks.fusion_layers`. Keras applications (`weights=None`, batch 1)",
        "lowered by tf2onnx 1.17 with its optimizers on, and the built-in `googlenet-onnx` example.",
        "ONNX layers are top-level nodes (a fused-layer call counts as one); engine layers are the",
        "compute layers the TensorRT builder reports for the plan it built (`EngineBuild.compute_layers`).",
        f"Pipeline: `{PIPELINE}`; \"all merges\" runs `horizontal-fusion{{free-split-only=false}}`.",
        machine_line(),
        "",
        "| network | ONNX layers: input | optimized | all merges | engine layers: input | optimized "
        "| all merges | build s: input | optimized | parity (optimized) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for m in results:
        opt, every = m.variants
        lines.append(
            f"| {m.name} | {m.onnx_layers} | {opt.onnx_layers} | {every.onnx_layers} | "
            f"{m.engine_layers} | {opt.engine_layers} | {every.engine_layers} | "
            f"{m.build_seconds:.2f} | {opt.build_seconds:.2f} | "
            f"{'passed' if opt.parity.startswith('passed') else opt.parity} |")
    lines += ["", "Layers after each pass (default options):", ""]
    for m in results:
        opt, every = m.variants
        steps = " → ".join(f"{text} {n}" for text, n in opt.after_pass)
        lines.append(f"- **{m.name}**: input {m.onnx_layers} → {steps}")
        merged = {k: v for k, v in every.stats.items() if k.startswith(("merged_", "conv_merges",
                                                                         "matmul_merges",
                                                                         "gemm_merges"))}
        if merged:
            lines.append(f"  - all merges: {', '.join(f'{k}={v}' for k, v in sorted(merged.items()))};"
                         f" engine {m.engine_layers} → {every.engine_layers} compute layers "
                         f"(parity {'passed' if every.parity.startswith('passed') else every.parity})")
    lines += [
        "",
        "TensorRT already fuses each convolution with its bias and activation and writes the branches",
        "of a Concat into its buffer, so vertical fusion and concat elimination do not lower the engine",
        "count further; it also merges MatMuls that share an input by itself. It does not merge",
        "parallel convolutions, but it lowers every Split output that is not a Concat range to a copy",
        "layer, so merging N convolutions whose outputs feed other layers gives one convolution plus N",
        "copies: the \"all merges\" column. `horizontal-fusion` therefore merges convolutions only when",
        "their outputs feed one Concat side by side (the Split then vanishes).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path,
                        default=Path(tempfile.gettempdir()) / "trtcompile-benchmark-models",
                        help="folder for the lowered ONNX models")
    parser.add_argument("--models", default=",".join([*KERAS_MODELS, EXAMPLE]),
                        help="comma-separated subset of: " + ", ".join([*KERAS_MODELS, EXAMPLE]))
    parser.add_argument("--no-write", action="store_true", help="print, do not update the docs")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("POLYGRAPHY_USE_TENSORRT_RTX", "1")
    results = []
    for key in args.models.split(","):
        start = time.perf_counter()
        results.append(measure(key, args.cache_dir))
        m = results[-1]
        print(f"{key}: onnx {m.onnx_layers} -> {[v.onnx_layers for v in m.variants]}, engine "
              f"{m.engine_layers} -> {[v.engine_layers for v in m.variants]} "
              f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    text = markdown(results)
    print(text)
    if not args.no_write:
        write_section("fusion-layers", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
