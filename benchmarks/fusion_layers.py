"""Layers after vertical fusion, horizontal fusion and concat elimination, in ONNX and in TensorRT.

For each network: the ONNX layer count after every pass of the fusion pipeline, the engine compute
layers TensorRT builds from the input model and from each optimized variant, build times, ONNX
Runtime parity and the model's arithmetic (MACs, :mod:`trtcompile.ir.cost`). Variants:

* ``default``: the fusion pipeline as shipped (no rewrite adds arithmetic);
* ``all merges``: ``horizontal-fusion{free-split-only=false}`` (every legal merge, Split outputs
  feeding convolutions included), to show what those merges cost in the engine;
* ``pad-kernels``: ``horizontal-fusion{pad-kernels=true}`` within the default MAC budget (10%);
* ``fewest layers``: ``pad-kernels`` plus ``average-pool-conv-fusion``, both with
  ``max-extra-macs=0.5``: the fewest layers these passes reach, and the arithmetic it costs.

Networks: Keras InceptionV3, ResNet50 and MobileNetV2 (``weights=None``, batch 1), lowered by tf2onnx
with its own optimizers on (they fold BatchNorm into the convolutions and remove the NHWC/NCHW
transposes), and the built-in GoogLeNet-style example. Lowered models are cached as files
(:mod:`benchmarks.keras_models`).

Run: ``python -m benchmarks.fusion_layers [--cache-dir DIR] [--models inceptionv3,resnet50,...]``.
Writes the ``fusion-layers`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import onnx

import passes
from benchmarks import keras_models
from benchmarks.keras_models import KERAS_MODELS, add_cache_dir_argument
from benchmarks.markdown_section import machine_line, write_section

#: The default pipeline, and variants of it that change one option each.
PIPELINE = passes.PIPELINES["default"]
#: The same with every legal horizontal merge, to measure what Splits cost in the engine.
PIPELINE_ALL_MERGES = PIPELINE.replace("horizontal-fusion,", "horizontal-fusion{free-split-only=false},")
#: Kernel-padding merges within the default MAC budget.
PIPELINE_PAD_KERNELS = PIPELINE.replace("horizontal-fusion,", "horizontal-fusion{pad-kernels=true},")
#: The named pipeline `fewest-layers`: every layer-saving rewrite that adds arithmetic, with a budget
#: of half the model's MACs.
PIPELINE_FEWEST_LAYERS = passes.PIPELINES["fewest-layers"]

#: (label, pipeline) of every optimized variant, in table order.
VARIANTS = (("default", PIPELINE), ("all merges", PIPELINE_ALL_MERGES),
            ("pad-kernels", PIPELINE_PAD_KERNELS), ("fewest layers", PIPELINE_FEWEST_LAYERS))

#: The built-in example measured next to the Keras applications.
EXAMPLE = "googlenet-onnx"


@dataclass
class Variant:
    """One optimized model: per-pass layers, engine figures, parity."""

    label: str
    pipeline: str
    onnx_layers: int = 0
    macs: int = 0
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
    macs: int
    engine_types: dict[str, int]
    variants: list[Variant]

    def variant(self, label: str) -> Variant:
        """The variant called ``label``."""
        return next(v for v in self.variants if v.label == label)


def lowered_model(key: str, cache_dir: Path) -> onnx.ModelProto:
    """The model of ``key``: the built-in example, or the tf2onnx lowering (optimizers on) of a Keras
    application (:func:`benchmarks.keras_models.lowered_model`)."""
    if key == EXAMPLE:
        from trtcompile.examples import load_example

        return load_example(EXAMPLE).model
    return keras_models.lowered_model(key, cache_dir)


def measure(key: str, cache_dir: Path) -> Measurement:
    """Optimize one network with every variant and build engines from input and outputs."""
    from trtcompile import ir, verify
    from trtcompile.backend import build_engine, layer_type_histogram
    from trtcompile.ir import cost
    from trtcompile.pass_manager import PassManager

    model = lowered_model(key, cache_dir)
    model.ir_version = min(model.ir_version or ir.IR_VERSION, ir.IR_VERSION)
    base = build_engine(model, progress=False)
    input_graph = ir.import_model(model)
    input_layers = ir.layer_count(input_graph)
    input_macs = cost.graph_macs(input_graph).macs
    variants = []
    for label, pipeline in VARIANTS:
        graph = ir.import_model(model)
        report = PassManager(pipeline).run(graph)
        macs = cost.graph_macs(graph).macs
        optimized = ir.export_model(graph)
        build = build_engine(optimized, progress=False)
        parity = verify.compare_models(model, optimized, seed=0)
        stats: dict[str, int] = {}
        for record in report.records:
            for name, n in record.counts.items():
                stats[name] = stats.get(name, 0) + n
        variants.append(Variant(
            label=label, pipeline=pipeline, onnx_layers=report.layers_after, macs=macs,
            after_pass=[(r.text if r.iteration is None else f"{r.text} (iteration {r.iteration})",
                         r.layers_after) for r in report.records],
            engine_layers=build.compute_layers, build_seconds=build.build_seconds,
            parity=parity.summary(), stats=stats))
    return Measurement(key, input_layers, base.compute_layers, base.build_seconds, input_macs,
                       layer_type_histogram(base.layers, compute_only=True), variants)


def _parity(variant: Variant) -> str:
    return "passed" if variant.parity.startswith("passed") else variant.parity


def _macs_change(m: Measurement, variant: Variant) -> str:
    from trtcompile.ir.cost import format_macs

    if variant.macs == m.macs:
        return "±0"
    return f"+{format_macs(variant.macs - m.macs)} (+{100.0 * (variant.macs - m.macs) / m.macs:.1f}%)"


def markdown(results: list[Measurement]) -> str:
    """The ``fusion-layers`` section."""
    from trtcompile.ir.cost import format_macs

    labels = [label for label, _ in VARIANTS]
    lines = [
        "## Fusion: layers in ONNX and in the TensorRT engine",
        "",
        "Written by `python -m benchmarks.fusion_layers`. Keras applications (`weights=None`, batch 1)",
        "lowered by tf2onnx 1.17 with its optimizers on, and the built-in `googlenet-onnx` example.",
        "ONNX layers are top-level nodes (a fused-layer call counts as one); engine layers are the",
        "compute layers the TensorRT builder reports for the plan it built (`EngineBuild.compute_layers`);",
        "MACs are the multiply-accumulates of Conv/Gemm/MatMul (`trtcompile.ir.cost`, FLOPs ≈ 2 × MACs).",
        "",
        f"- default: the named pipeline `default`, `{PIPELINE}`",
        "- all merges: the same with `horizontal-fusion{free-split-only=false}`",
        "- pad-kernels: the same with `horizontal-fusion{pad-kernels=true}` (default budget "
        "`max-extra-macs=0.1`)",
        "- fewest layers: the named pipeline `fewest-layers`: the same with "
        "`horizontal-fusion{pad-kernels=true max-extra-macs=0.5},"
        "average-pool-conv-fusion{max-extra-macs=0.5}`",
        "",
        machine_line(),
        "",
        "| network | ONNX layers: input | " + " | ".join(labels) + " | engine layers: input | "
        + " | ".join(labels) + " |",
        "|---|" + "---:|" * (2 * len(labels) + 2),
    ]
    for m in results:
        lines.append(
            f"| {m.name} | {m.onnx_layers} | "
            + " | ".join(str(m.variant(label).onnx_layers) for label in labels)
            + f" | {m.engine_layers} | "
            + " | ".join(str(m.variant(label).engine_layers) for label in labels) + " |")
    lines += [
        "",
        "| network | MACs: input | added: " + " | added: ".join(labels[1:]) + " | build s: input | "
        + " | ".join(labels) + " | parity |",
        "|---|" + "---:|" * (len(labels) + 1 + len(labels)) + "---|",
    ]
    for m in results:
        parities = {_parity(v) for v in m.variants}
        lines.append(
            f"| {m.name} | {format_macs(m.macs)} | "
            + " | ".join(_macs_change(m, m.variant(label)) for label in labels[1:])
            + f" | {m.build_seconds:.2f} | "
            + " | ".join(f"{m.variant(label).build_seconds:.2f}" for label in labels)
            + f" | {'passed (all variants)' if parities == {'passed'} else '; '.join(sorted(parities))} |")
    lines += ["", "The default pipeline adds no arithmetic (its MACs equal the input's in every row).",
              "", "Layers after each pass (default options), and what the other variants did:", ""]
    for m in results:
        default = m.variant("default")
        steps = " → ".join(f"{text} {n}" for text, n in default.after_pass)
        lines.append(f"- **{m.name}**: input {m.onnx_layers} → {steps}")
        types = ", ".join(f"{k} {v}" for k, v in m.engine_types.items())
        lines.append(f"  - input engine layers by type: {types}")
        for label in labels[1:]:
            variant = m.variant(label)
            done = {k: v for k, v in variant.counts.items()
                    if k.startswith(("merged_", "conv_merges", "matmul_merges", "gemm_merges",
                                     "padded_kernel_merges", "fused_pools", "border_scaled"))}
            if not done:
                continue
            lines.append(
                f"  - {label}: {', '.join(f'{k}={v}' for k, v in sorted(done.items()))}; ONNX "
                f"{default.onnx_layers} → {variant.onnx_layers}, engine {default.engine_layers} → "
                f"{variant.engine_layers} compute layers, MACs {_macs_change(m, variant)} "
                f"(parity {_parity(variant)})")
    lines += [
        "",
        "TensorRT already fuses each convolution with its bias and activation and writes the branches",
        "of a Concat into its buffer, so vertical fusion and concat elimination do not lower the engine",
        "count further; it also merges MatMuls that share an input by itself. It does not merge",
        "parallel convolutions, but it lowers every Split output that is not a Concat range to a copy",
        "layer, so merging N convolutions whose outputs feed other layers gives one convolution plus N",
        "copies: the \"all merges\" column. `horizontal-fusion` therefore merges convolutions only when",
        "their outputs feed one Concat side by side (the Split then vanishes).",
        "",
        "Fewer engine layers by adding arithmetic. In InceptionV3's last two modules a 1x3 and a 3x1",
        "convolution read one tensor and fill one Concat; `pad-kernels` zero-pads both to 3x3 and",
        "merges them (4 layers fewer, the 8 convolutions' MACs tripled). The pool branch of 9 modules",
        "(3x3 average pool, then a 1x1 convolution) becomes one 3x3 convolution with the border",
        "divisor as a constant scale that TensorRT-RTX fuses into the same layer",
        "(`average-pool-conv-fusion`: 9 layers fewer, those convolutions' MACs times 9). Both are exact",
        "for finite inputs. Together they reach the fewest layers in the table at a large price in",
        "arithmetic; whether that is faster depends on whether the engine is bound by per-layer",
        "overhead (small batch) or by arithmetic, which cannot be measured without a GPU.",
        "The passes keep such rewrites within `max-extra-macs` (10% of the model's MACs by default:",
        "enough for the padded merges, not for the pool fusions, whose arithmetic is memory-bound",
        "pooling traded for compute-bound convolution).",
        "",
        "Engine layers no graph rewrite here removes (InceptionV3, measured): the input NHWC→NCHW",
        "transpose (the model's input layout; a `kgen` layer), the copies of the two stride-2 max pools",
        "into their module's Concat (`kgen` moves; they stay when the pool is moved to the front of the",
        "Concat and the readers' weights are permuted), the global average pool (TensorRT already fuses",
        "it with the last Concat into one `kgen`) and the final Softmax.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure and print the figures; write the docs section unless ``--no-write``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_cache_dir_argument(parser)
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
              f"{m.engine_layers} -> {[v.engine_layers for v in m.variants]}, MACs {m.macs} -> "
              f"{[v.macs for v in m.variants]} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    text = markdown(results)
    print(text)
    if not args.no_write:
        write_section("fusion-layers", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
