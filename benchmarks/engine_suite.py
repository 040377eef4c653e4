"""Engine compute layers on held-out-style models: TensorRT alone, peers, the default pipeline and
engine-guided tuning.

For each model of :mod:`benchmarks.model_suite`: ONNX nodes and layers, the engine compute layers
TensorRT builds from the model as given, after onnxslim, after onnxsim (each when installed), after
the default pipeline and after ``engine-guided(default)``; MACs of the input and of each of ours
(:mod:`trtcompile.ir.cost`); ONNX Runtime parity of ours against the input.

Run: ``python -m benchmarks.engine_suite [--cache-dir DIR] [--models a,b,...] [--no-write]``.
Writes the ``engine-suite`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import sys
import time
from dataclasses import dataclass, field

import onnx

from benchmarks import model_suite
from benchmarks.keras_models import add_cache_dir_argument
from benchmarks.markdown_section import machine_line, write_section

#: The tuned pipeline measured next to the default one.
ENGINE_GUIDED = "tuned"
#: Column of what ``trtcompile compile`` delivers: the default pipeline behind the engine check.
CHECKED = "compile"


@dataclass
class Row:
    """Figures of one model."""

    name: str
    nodes: int
    layers: int
    macs: int
    unpriced: int  # input layers whose MACs are unknown (their operand shapes are not inferred)
    engine: dict[str, int | None] = field(default_factory=dict)  # column -> compute layers
    macs_after: dict[str, int] = field(default_factory=dict)  # ours -> MACs
    parity: dict[str, str] = field(default_factory=dict)
    tuned: str = ""  # what engine-guided kept


def _compute_layers(model: onnx.ModelProto) -> int | None:
    from trtcompile import ir
    from trtcompile.backend import build_engine

    model.ir_version = min(model.ir_version or ir.IR_VERSION, ir.IR_VERSION)
    try:
        return build_engine(model, progress=False).compute_layers
    except Exception as error:  # noqa: BLE001 - a peer's output TensorRT rejects is a figure too
        print(f"  build failed: {str(error).splitlines()[0][:200]}", file=sys.stderr)
        return None


def _peer(name: str, model: onnx.ModelProto) -> onnx.ModelProto | None:
    try:
        if name == "onnxslim":
            import onnxslim

            return onnxslim.slim(onnx.ModelProto.FromString(model.SerializeToString()))
        import onnxsim

        simplified, ok = onnxsim.simplify(onnx.ModelProto.FromString(model.SerializeToString()))
        return simplified if ok else None
    except Exception as error:  # noqa: BLE001
        print(f"  {name} failed: {str(error).splitlines()[0][:200]}", file=sys.stderr)
        return None


def peers() -> list[str]:
    """The peer simplifiers installed here."""
    return [name for name in ("onnxslim", "onnxsim") if importlib.util.find_spec(name) is not None]


def _compile(model: onnx.ModelProto, **options):
    """``trtcompile compile`` of ``model`` into a folder that is removed afterwards, quietly and
    without running the engine; the compile's result."""
    import tempfile

    from trtcompile.flow import CompileOptions, compile_model

    with tempfile.TemporaryDirectory() as out:
        return compile_model(model, out, CompileOptions(progress=False, engine_parity="off", **options))


def _segment_layers(model: onnx.ModelProto, pipeline: str) -> tuple[int | None, object]:
    """Kernels of a partitioned compile of ``model`` (the partitioner splits off what TensorRT
    cannot build): the compute layers of its segment engines plus the compute nodes left to ONNX
    Runtime (fallback nodes and segments whose engine failed), so a compile that builds less is
    not counted as one with fewer layers; and the compile's result."""
    result = _compile(model, pipeline=pipeline, engine_check=False)
    outcome = result.partition
    built = [] if outcome is None else [s for s in outcome.segments if s.engine is not None]
    if not built:
        print(f"  no segment engine: {result.error}", file=sys.stderr)
        return None, result
    on_runtime = outcome.total_compute_nodes - sum(s.compute_nodes for s in built)
    return sum(s.engine.compute_layers for s in built) + on_runtime, result


def measure(key: str, cache_dir, pipelines: dict[str, str]) -> Row:
    """Build every column of one model."""
    from trtcompile import ir, verify
    from trtcompile.ir import cost
    from trtcompile.pass_manager import PassManager

    model = model_suite.load(key, cache_dir)
    model.ir_version = min(model.ir_version or ir.IR_VERSION, ir.IR_VERSION)
    graph = ir.import_model(model)
    summary = cost.graph_macs(graph)
    row = Row(key, len(model.graph.node), ir.layer_count(graph), summary.macs, len(summary.unknown))
    if key in model_suite.PARTITIONED:
        return _measure_partitioned(row, model, pipelines)
    row.engine["TensorRT"] = _compute_layers(model)
    for name in peers():
        simplified = _peer(name, model)
        row.engine[name] = None if simplified is None else _compute_layers(simplified)
    for label, pipeline in pipelines.items():
        graph = ir.import_model(model)
        report = PassManager(pipeline).run(graph)
        optimized = ir.export_model(graph)
        row.engine[label] = _compute_layers(optimized)
        row.macs_after[label] = cost.graph_macs(graph).macs
        row.parity[label] = verify.compare_models(model, optimized, seed=0).summary()
        for record in report.records:
            if record.name == "engine-guided":
                row.tuned = ", ".join(f"{k}={v}" for k, v in sorted(record.counts.items()))
    row.engine[CHECKED] = _checked_compile(model, row.engine["TensorRT"], row.engine.get("default"))
    return row


def _checked_compile(model: onnx.ModelProto, alone: int | None, default: int | None) -> int | None:
    """Compute layers of the engine ``trtcompile compile`` delivers with the default pipeline: its
    engine check never delivers more than TensorRT builds from the model as given, undoing the
    pass groups that cost layers (trtcompile.flow.engine_check). When the default pipeline is not
    worse the compile delivers its engine, so only a worse model is compiled again."""
    if default is None or alone is None or default <= alone:
        return default
    result = _compile(model, parity=False)
    return None if result.engine is None else result.engine.compute_layers


def _measure_partitioned(row: Row, model: onnx.ModelProto, pipelines: dict[str, str]) -> Row:
    """Every column of a model TensorRT cannot build whole: each one compiled partitioned (no
    pass for TensorRT alone and the peers' outputs), figures summed over the segment engines."""
    from trtcompile import ir
    from trtcompile.ir import cost

    row.engine["TensorRT"], _ = _segment_layers(model, "none")
    for name in peers():
        simplified = _peer(name, model)
        row.engine[name] = None if simplified is None else _segment_layers(simplified, "none")[0]
    for label, pipeline in pipelines.items():
        row.engine[label], result = _segment_layers(model, pipeline)
        row.macs_after[label] = cost.graph_macs(ir.import_model(result.optimized)).macs
        row.parity[label] = (result.parity.primary.summary() if result.parity is not None
                             else str(result.error or "not run"))
    # The engine check compares whole-model engines; a partitioned compile delivers its segments.
    row.engine[CHECKED] = row.engine.get("default")
    return row


def _cell(value: int | None) -> str:
    return "failed" if value is None else str(value)


def markdown(rows: list[Row], pipelines: dict[str, str]) -> str:
    """The ``engine-suite`` section."""
    from trtcompile.ir.cost import format_macs

    columns = ["TensorRT", *peers(), *pipelines]
    if any(CHECKED in r.engine for r in rows):
        columns.insert(columns.index("default") + 1, CHECKED)
    lines = [
        "## Engine layers on exported models, against peers",
        "",
        "Written by `python -m benchmarks.engine_suite`. Models of `benchmarks/model_suite.py`:",
        "networks built in PyTorch (`-torch`) and Hugging Face transformers models built from",
        "configs (`-hf`, sequence 128), each exported with `torch.onnx.export(dynamo=False, opset",
        "17)` and with torch's default exporter (`-dynamo`, opset 18); TensorFlow models lowered by",
        "tf2onnx with its optimizers on (`-keras`, `-tf`); the light models shipped in the onnx",
        "package (`-light`); all weights random. Engine columns are the compute layers",
        "TensorRT builds from the model as given (*TensorRT*), after each peer simplifier with its",
        "defaults, after the `default` pipeline, what `trtcompile compile` delivers (*compile*: the",
        "default pipeline behind the engine check, which undoes the pass groups whose engine has more",
        "layers than TensorRT alone) and after the named pipeline `tuned` (engine-guided). MACs are",
        "`trtcompile.ir.cost`'s multiply-accumulates. A model TensorRT cannot build whole",
        "(`ssd-nms-tf`: its NonMaxSuppression) is compiled partitioned in every column; its figure",
        "is the compute layers of the segment engines plus the compute nodes left to ONNX Runtime.",
        "*-*: not measured (engine-guided tuning builds an engine per rewrite group it tries; it runs",
        "on the convolutional models, whose rewrites it tunes).",
        "",
        machine_line(),
        "",
        "| model | ONNX nodes | layers | " + " | ".join(columns) + " | MACs | MACs: default | "
        "MACs: engine-guided | parity |",
        "|---|" + "---:|" * (2 + len(columns) + 3) + "---|",
    ]
    for r in rows:
        parities = {("passed" if p.startswith("passed") else p) for p in r.parity.values()}
        lines.append(
            f"| {r.name} | {r.nodes} | {r.layers} | "
            + " | ".join(_cell(r.engine.get(c)) if c in r.engine else "-" for c in columns)
            + f" | {format_macs(r.macs)}{f' + {r.unpriced} unpriced' if r.unpriced else ''} | "
            + " | ".join(format_macs(r.macs_after[label]) if label in r.macs_after else "-"
                         for label in pipelines)
            + f" | {'; '.join(sorted(parities))} |")
    peer_columns = ["TensorRT", *peers()]
    compared = [(r, min(v for c in peer_columns if (v := r.engine.get(c)) is not None))
                for r in rows if r.engine.get("default") is not None]
    for label in [c for c in columns if c in pipelines or c == CHECKED]:
        measured = [(r, best) for r, best in compared if label in r.engine]
        at_most = sum(1 for r, best in measured if r.engine[label] is not None and r.engine[label] <= best)
        fewer = sum(1 for r, best in measured if r.engine[label] is not None and r.engine[label] < best)
        lines += ["", f"`{label}` against the best peer (the fewest of TensorRT alone and the "
                      f"simplifiers): at most as many layers on {at_most} of the {len(measured)} "
                      f"models measured, fewer on {fewer}."]
    lines += ["", "*unpriced*: layers of the input whose operand shapes ONNX shape inference does not find",
              "(so their MACs are not in the input's figure; after folding they are priced).", "",
              "What engine-guided kept:", ""]
    lines += [f"- **{r.name}**: {r.tuned or 'nothing'}" for r in rows]
    lines += [
        "",
        "What the engine layer lists show (DETAILED builder log, `trtcompile.backend.engine_report`):",
        "",
        "- TensorRT already fuses every convolution with its bias, BatchNorm, residual Add and",
        "  activation (SiLU and HardSwish included), writes Concat branches into their buffer,",
        "  fuses LayerNormalization and the erf GELU into their neighbours and merges the Q/K/V",
        "  MatMuls itself; restating those fusions in the graph leaves the engine as it was, and",
        "  merging the Q/K/V MatMuls in the graph costs slice layers (so `horizontal-fusion` no",
        "  longer does it).",
        "- What it does not do: a Split of a convolution's output becomes slice copies",
        "  (`conv-split-fission` gives each piece its own convolution: the YOLO-style C2f blocks);",
        "  constant subgraphs in the model as given become layers (the light models build their",
        "  weights with ConstantOfShape: `fold-constants`, as the peers do). A result above",
        "  `fold-constants`' `size-threshold` (64 MiB) still folds when it only becomes weights",
        "  (VGG19's 411 MB fc6 Gemm weight, one `Repl` layer when computed: 28 -> 27 layers; the",
        "  model grows 164 -> 575 MB and the engine 103 -> 514 MB, peak memory of",
        "  `trtcompile compile` 1.8 -> 2.9 GB); a large broadcast read as data stays computed.",
        "- Sibling convolutions with bit-identical weights (the light models fill weights with",
        "  ConstantOfShape) stay separate engine layers: `common-subexpression-elimination`",
        "  merges them after vertical fusion (GoogLeNet 80 -> 78, Inception v2 87 -> 82, also",
        "  fewer MACs). Run before fusion it costs layers: a merged convolution whose readers",
        "  have different BatchNorms no longer fuses (Inception v2: 84).",
        "- In FP32 TensorRT copies each attention head split out of the merged Q/K/V GEMM (bias",
        "  Add + Reshape + Transpose, three layers per block) and the merged heads once more:",
        "  `attention-head-layout` gives the projections per-head weights, drops the key bias",
        "  (Softmax does not see it), folds the value bias into the output bias and computes the",
        "  scores transposed, so the GEMMs read the heads in place (9 -> 7 layers per block; BERT",
        "  and DistilBERT pay one layer for their transposed mask). FP16 engines keep TensorRT's",
        "  own fused attention kernel, which that form would break, so the pass leaves them alone.",
        "  The same holds for the form torch's dynamo exporter writes for transformers' default",
        "  attention (scaled_dot_product_attention: scalar scales on the query and the transposed",
        "  key, the key's axes swapped by Reshape-Transpose-Reshape, a NaN guard after the",
        "  Softmax), and for a scalar scale between a projection and its head split (Whisper and",
        "  CLIP scale the projected query): Whisper's encoder 60 -> 48, CLIP's 81 -> 69. GPT-2's",
        "  merged Conv1D projection (Reshape-Gemm-Reshape, then a Split of the features) gives each",
        "  piece its columns of the weights: 53 -> 45 from either exporter. Only at batch 1: a",
        "  per-head GEMM of a batch reads the projected input once per head, which TensorRT copies",
        "  out (a block at batch 2: 10 -> 14 layers), so Swin-T's windowed attention, a batch of",
        "  windows, keeps its form except in the last stage (one window): 225 -> 219 (dynamo),",
        "  224 -> 218 (TorchScript export, once `fold-constants` folds the shapes inference learns",
        "  only after a first fold: its head splits are computed from Shape ops).",
        "- Grouped-query attention (Llama: 8 query heads, 2 key/value heads, rotary embeddings):",
        "  TensorRT copies the value's head split and its repeat (`Unsqueeze-Expand-Reshape`) out",
        "  of the merged Q/K/V GEMM, one kernel per block; the rotary kernels absorb the query's",
        "  and the key's. `grouped-query-attention` lets the scores and context GEMMs read the",
        "  shared heads by broadcast (`[B, kv, g, M, N]` against `[B, kv, 1, ., .]`) and writes",
        "  the block's projections as one per-head GEMM sliced along the heads, so the value is",
        "  read in place: 57 -> 53 from either exporter, no MACs added (either rewrite alone",
        "  leaves 57). Measured beside the suite on 2-layer exports of both torch exporters:",
        "  Mistral (4 key/value heads) and Phi-3 (merged `qkv_proj`) 29 -> 27, Qwen2 (biased",
        "  projections) 29 -> 25, Gemma (one key/value head) 29 -> 27, a multi-head Llama 27 as",
        "  before. FP16 engines keep the repeat: TensorRT fuses that attention into one kernel",
        "  (Llama FP16: 46 layers, 53 with the broadcast form), so the pass leaves them alone.",
        "- The peers' simplifications TensorRT does not reward: onnxsim and onnxslim turn",
        "  MatMul + bias Add into Reshape-Gemm-Reshape (BERT: 110 -> 38 Adds, 159 engine layers",
        "  either way, TensorRT fuses the bias); onnxsim merges ViT's Q/K/V into one Gemm and a",
        "  Split (12 layers more). What it does reward: no-op layers, removed by",
        "  `dead-layer-elimination` rule 5 (the zero Pads of tf2onnx's NMS lowering: ssd-nms-tf",
        "  66 -> 65; the context Reshape of the dynamo Whisper export, which let attention match).",
        "- A global average pool behind a convolution whose result feeds a linear layer or a",
        "  Softmax becomes a layout copy and a reduction (`Tran`, `Mean`), or a reduction kernel",
        "  that recomputes the convolution's activation: `global-pool-window` writes it as an",
        "  `AveragePool` over the whole map, which reads the convolution's layout in place",
        "  (ResNet-50 58 -> 57, MobileNetV3 87 -> 82 with its squeeze-excitation pools, SqueezeNet",
        "  33 -> 32; EfficientNet-B0 stays at 116). A classifier Gemm on a flattened map of more",
        "  than one position costs a `Resh` copy: `flatten-gemm-conv` writes it as a convolution",
        "  whose kernel covers the map (VGG-19 27 -> 26). Both leave the forms where TensorRT fuses",
        "  the reduction or the Gemm into one kernel itself (a pool that is a graph output or feeds",
        "  a pointwise layer, DenseNet's pool after BatchNorm and ReLU: 189 -> 190 as a window; a",
        "  small Gemm whose result is a graph output).",
        "- Left as TensorRT builds them: the squeeze-excitation scale (`Mul` of a per-channel gate,",
        "  one layer per block in EfficientNet and MobileNetV3), the NHWC input move, the head",
        "  merge before each attention output projection and the LRN layers of GoogLeNet.",
        "- `tuned` (engine-guided) keeps kernel padding and pool folding only where they remove",
        "  engine layers within 10% more MACs: on InceptionV3 the padded 1x3/3x1 merges; on",
        "  EfficientNet-B0 (116 -> 100, +9.0% MACs) and MobileNetV3 (82 -> 78, +5.6%) the",
        "  squeeze-excitation pools, now windows, folded into the first 1x1 convolution of the gate.",
        "  The targets of 100 (InceptionV3) and 70 (GoogLeNet) layers are not reached: the",
        "  remaining rewrites that remove layers cost more arithmetic than that budget",
        "  (`fewest-layers` reaches 100 on InceptionV3 at +44.5% MACs).",
        "- Ahead of the best peer on the YOLO-style network (`conv-split-fission`), BERT,",
        "  DistilBERT, ViT, Swin-T, CLIP, Whisper and GPT-2 (`attention-head-layout`), Llama",
        "  (`grouped-query-attention`), ResNet-50,",
        "  MobileNetV3, DeepLabV3, the UNet and SqueezeNet (`global-pool-window`, fusion) and",
        "  VGG-19 (`flatten-gemm-conv`); equal to it on the others (EfficientNet-B0, T5's encoder",
        "  with its relative position bias, the Keras, detection and light models: what TensorRT",
        "  leaves unfused there, the squeeze-excitation scale, the NHWC input move, the head",
        "  merge, no exact rewrite tried removed).",
        "  Both torch exporters give the same figures on every convolutional network (the dynamo",
        "  export folds BatchNorm the same way).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure and print the figures; write the docs section unless ``--no-write``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_cache_dir_argument(parser)
    parser.add_argument("--models", default=",".join(model_suite.available_keys()),
                        help="comma-separated subset of: " + ", ".join(model_suite.available_keys()))
    parser.add_argument("--no-guided", action="store_true", help="skip the engine-guided column")
    parser.add_argument("--no-write", action="store_true", help="print, do not update the docs")
    parser.add_argument("--render-only", action="store_true",
                        help="write the section from the figures saved in the cache (each run "
                             "updates the rows of the models it measures)")
    args = parser.parse_args(argv)
    saved = args.cache_dir / "engine_suite.json"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("POLYGRAPHY_USE_TENSORRT_RTX", "1")
    pipelines = {"default": "default"}
    if not args.no_guided:
        pipelines["engine-guided"] = ENGINE_GUIDED
    # The figures of every model measured so far, by name: a run over a subset updates its rows.
    saved_rows = {row["name"]: Row(**row) for row in json.loads(saved.read_text())} if saved.exists() else {}
    for key in ([] if args.render_only else args.models.split(",")):
        start = time.perf_counter()
        r = saved_rows[key] = measure(key, args.cache_dir, pipelines)
        print(f"{key}: nodes {r.nodes}, engine {r.engine}, MACs {r.macs} -> {r.macs_after} "
              f"({time.perf_counter() - start:.0f} s) {r.tuned}", file=sys.stderr, flush=True)
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps([dataclasses.asdict(row) for row in saved_rows.values()]))
    for row in saved_rows.values():  # figures saved before the compile column: derived when no
        alone, default = row.engine.get("TensorRT"), row.engine.get("default")  # check was needed
        if CHECKED not in row.engine and None not in (alone, default) and (
                default <= alone or row.name in model_suite.PARTITIONED):
            row.engine[CHECKED] = default
    order = {key: index for index, key in enumerate(model_suite.available_keys())}
    rows = sorted(saved_rows.values(), key=lambda row: order.get(row.name, len(order)))
    if any("engine-guided" in row.engine for row in rows):  # measured by an earlier run
        pipelines.setdefault("engine-guided", ENGINE_GUIDED)
    text = markdown(rows, pipelines)
    print(text)
    if not args.no_write:
        write_section("engine-suite", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
