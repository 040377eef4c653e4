"""Engine compute layers of transformers as torch's default (dynamo) exporter writes them, against
the peers.

Models: Hugging Face ``transformers`` built from configs in code (nothing is downloaded, weights
random, biases and normalization scales that an initializer leaves constant get small random
values as in :mod:`benchmarks.model_suite`): ``bert`` (BERT-base, 12 layers, with pooler),
``distilbert`` (DistilBERT, 6 layers), ``vit`` (ViT-B/16, 224x224, with pooler); sequence 128,
batch 1, static shapes: the engine suite's exports (:func:`benchmarks.model_suite.torch_export`,
the same cached files). Exporters:

* ``dynamo``: ``torch.onnx.export(model, args)``, torch's default exporter (opset 18), with the
  attention transformers picks by default (``scaled_dot_product_attention``, which the exporter
  decomposes: operand scales, the key swap as Reshape-Transpose-Reshape, a NaN guard);
* ``dynamo-eager``: the same exporter with ``attn_implementation="eager"`` (the matmul-softmax
  attention the TorchScript exporter sees; that form, ``dynamo=False``, is the engine suite's).

Columns: engine compute layers TensorRT builds from the export as given, after onnxsim, after
onnxslim (each with its defaults), and after the ``default`` pipeline of the code run. A run with
``--label before`` stores the default pipeline's figure under that label instead, so the table can
show the pipeline of an earlier commit next to the current one (run this file with that commit's
packages first on the path).

Run: ``python -m benchmarks.transformer_exports [--cache-dir DIR] [--models bert,vit]
[--exporters dynamo] [--label before|after] [--no-write]``. Writes the ``transformer-exports``
section of docs/benchmarks.md from every figure saved in the cache folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import onnx

from benchmarks.keras_models import add_cache_dir_argument
from benchmarks.markdown_section import machine_line, write_section

MODELS = {"bert": "BERT-base (12 layers)", "distilbert": "DistilBERT (6 layers)",
          "vit": "ViT-B/16 (12 layers)"}
EXPORTERS = ("dynamo", "dynamo-eager")
SECTION = "transformer-exports"

#: Model -> its key in benchmarks.model_suite, whose export (benchmarks.torch_exports) is shared.
SUITE_KEYS = {"bert": "bert-hf", "distilbert": "distilbert-hf", "vit": "vit-hf"}


def load(key: str, exporter: str, cache_dir: Path) -> onnx.ModelProto:
    """The export of ``key`` by ``exporter``: the engine suite's export (the same cached file)."""
    from benchmarks import model_suite

    return model_suite.torch_export(SUITE_KEYS[key], exporter, cache_dir)


def measure(key: str, exporter: str, cache_dir: Path, label: str, peers: bool) -> dict:
    """Engine compute layers of one export: as given and after each peer (when ``peers``), and
    after the default pipeline (under ``label``), with the pipeline's parity and its
    attention-head-layout counts."""
    from benchmarks import engine_suite
    from trtcompile import ir, verify
    from trtcompile.pass_manager import PassManager

    model = load(key, exporter, cache_dir)
    model.ir_version = min(model.ir_version or ir.IR_VERSION, ir.IR_VERSION)
    figures: dict = {}
    if peers:
        figures["TensorRT"] = engine_suite._compute_layers(model)
        for name in engine_suite.peers():
            simplified = engine_suite._peer(name, model)
            figures[name] = None if simplified is None else engine_suite._compute_layers(simplified)
    graph = ir.import_model(model)
    report = PassManager("default").run(graph)
    optimized = ir.export_model(graph)
    figures[label] = engine_suite._compute_layers(optimized)
    figures[f"{label} parity"] = verify.compare_models(model, optimized, seed=0).summary().split(" ")[0]
    figures[f"{label} attention"] = {kind: n for record in report.records
                                     if record.name == "attention-head-layout"
                                     for kind, n in sorted(record.counts.items())}
    return figures


def _cell(value) -> str:
    return "-" if value is None else str(value)


def markdown(saved: dict) -> str:
    """The section, from every saved figure (``model/exporter`` -> column -> value)."""
    columns = ["before", "after", "TensorRT", "onnxsim", "onnxslim"]
    heads = ["ours before", "ours after", "TensorRT alone", "onnxsim + TensorRT",
             "onnxslim + TensorRT"]
    lines = [
        "## Transformers from torch's dynamo exporter",
        "",
        "Written by `python -m benchmarks.transformer_exports`. Hugging Face transformers built from",
        "configs (random weights, nothing downloaded), batch 1, sequence 128 (ViT: 224x224),",
        "exported by `torch.onnx.export` with its default exporter (dynamo, opset 18): *dynamo* with",
        "the attention transformers picks by default (`scaled_dot_product_attention`), *dynamo-eager*",
        "with `attn_implementation=\"eager\"` (the TorchScript exporter's form, `dynamo=False`, is in",
        "the engine suite above). Figures are engine compute layers (TensorRT-RTX, FP32). *ours",
        "before*: the `default` pipeline before attention-head-layout read the dynamo form (rules 5",
        "and 6); *ours after*: with them. Peers with their defaults, then TensorRT.",
        "",
        machine_line(),
        "",
        "| model | exporter | " + " | ".join(heads) + " | parity (after) |",
        "|---|---|" + "---:|" * len(columns) + "---|",
    ]
    for key, title in MODELS.items():
        for exporter in EXPORTERS:
            row = saved.get(f"{key}/{exporter}")
            if row is None:
                continue
            lines.append(f"| {title} | {exporter} | " + " | ".join(_cell(row.get(c)) for c in columns)
                         + f" | {row.get('after parity', '-')} |")
    lines += ["", "What attention-head-layout did (after):", ""]
    for key, title in MODELS.items():
        for exporter in EXPORTERS:
            row = saved.get(f"{key}/{exporter}")
            if row is not None and row.get("after attention") is not None:
                counts = ", ".join(f"{k}={v}" for k, v in row["after attention"].items()) or "nothing"
                lines.append(f"- **{title}, {exporter}**: {counts}")
    lines += [
        "",
        "What the peers change, and what TensorRT makes of it (op histograms of the BERT-base",
        "dynamo export, then the engine layer lists):",
        "",
        "- onnxsim writes each projection `MatMul` + bias `Add` on `[1, 128, 768]` as `Reshape` to",
        "  2-D, `Gemm`, `Reshape` back (Add 110 -> 38, Gemm 1 -> 73, Reshape 72 -> 120) and folds",
        "  the constant embedding lookups (`GatherElements` of the token types, a `Gather`); onnxslim",
        "  does the same Gemm rewrite. TensorRT already fuses each bias `Add` into a neighbour (the",
        "  intermediate GEMM with its GELU, `FcAdd...`; the residual `Add` and LayerNorm kernel) and",
        "  the lookups into the embedding kernel (`CastGathAddAdd...`): 159 layers before and after",
        "  either. On ViT onnxsim also merges the Q/K/V projections into one Gemm and a `Split`",
        "  per block (12 Splits, one engine layer more each: 221 against 209). Run on our output",
        "  the peers add layers or none (BERT, 2 layers: 25, onnxsim 31, onnxslim 25). So no peer",
        "  simplification becomes a rule: on these static-shape exports TensorRT rewards none.",
        "- What the dynamo export loses is the attention layout: its `scaled_dot_product_attention`",
        "  form (the query and the transposed key each scaled by the root of the scale, the key",
        "  swapped by `Reshape [B*H, S, D]`, `Transpose`, `Reshape [B, H, D, S]`, and",
        "  `Where(IsNaN(P), 0, P)` after the Softmax) kept attention-head-layout from matching, and",
        "  with its NaN guard between the transposed probabilities and the context GEMM the rewritten",
        "  block builds 8 layers instead of 7. Rules 5 (operand scales into the per-head weights, the",
        "  swap read as a Transpose) and 6 (the guard dropped for self-attention with finite masks)",
        "  give the dynamo form the eager form's engine.",
        "- The TorchScript exporter's form (`dynamo=False`) is the engine suite's `bert-hf`,",
        "  `distilbert-hf` and `vit-hf`: rules 5 and 6 do not apply there, and the `default` pipeline",
        "  writes the same graph for all 15 models of that suite with and without them (equal",
        "  `trtcompile.ir.model_digest`), so its engine figures stand.",
        "- Exports with dynamic batch and sequence (`dynamic_shapes`) compute the head-split shapes",
        "  in the graph (`Shape`, `Gather`, `Concat`); attention-head-layout does not match them, and",
        "  the peers do not fold them without fixed input shapes either.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure, save the figures in the cache folder and write the docs section."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_cache_dir_argument(parser)
    parser.add_argument("--models", default=",".join(MODELS), help="subset of: " + ", ".join(MODELS))
    parser.add_argument("--exporters", default=",".join(EXPORTERS),
                        help="subset of: " + ", ".join(EXPORTERS))
    parser.add_argument("--label", default="after", choices=("before", "after"),
                        help="column the default pipeline's figure goes to (peers only with after)")
    parser.add_argument("--no-write", action="store_true", help="print, do not update the docs")
    parser.add_argument("--render-only", action="store_true", help="write the section from saved figures")
    args = parser.parse_args(argv)
    os.environ.setdefault("POLYGRAPHY_USE_TENSORRT_RTX", "1")
    saved_path = args.cache_dir / "transformer_exports.json"
    saved = json.loads(saved_path.read_text()) if saved_path.exists() else {}
    for key in [] if args.render_only else args.models.split(","):
        for exporter in args.exporters.split(","):
            if key not in MODELS or exporter not in EXPORTERS:
                parser.error(f"unknown model or exporter: {key}, {exporter}")
            figures = measure(key, exporter, args.cache_dir, args.label, peers=args.label == "after")
            saved.setdefault(f"{key}/{exporter}", {}).update(figures)
            print(f"{key} {exporter}: {figures}", file=sys.stderr, flush=True)
            saved_path.parent.mkdir(parents=True, exist_ok=True)
            saved_path.write_text(json.dumps(saved, indent=1))
    text = markdown(saved)
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
