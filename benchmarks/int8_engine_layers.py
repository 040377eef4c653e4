"""INT8 engines against FP32 engines: compute layers, convolutions in INT8, quantizing kernels,
and the INT8 layer accounting of each engine.

For each Keras application (ResNet50, MobileNetV2, EfficientNet-B0; ``weights=None``,
``classifier_activation=None``, batch 1), and, when PyTorch and transformers are installed, the
PyTorch ResNet-50 and the transformers DistilBERT of :mod:`benchmarks.model_suite`, the script

1. saves the model as ``.keras`` (or ``.onnx``) into a cache folder (in a child process, so
   TensorFlow's memory goes with it) and writes seeded calibration samples for its inputs (floats
   in ``[-1, 1)``, token ids in ``[0, 1000)``, attention masks of ones);
2. runs ``trtcompile compile MODEL -o OUT --batch 1 --no-parity`` at ``--precision fp32`` and
   ``--precision int8 --calib-data CALIB`` in child processes with the real command line;
3. reads each ``report.json``: engine compute layers, compute layers per precision, how many
   convolution layers (``correlation``, and ``gemm``/``runtime_fusion`` layers that run a
   convolution, e.g. 1x1 convolutions TensorRT lowers to GEMMs) the engine runs in INT8, and the
   *quantizing kernels*: ``kgen`` layers that write ``Int8`` (the requantizing epilogues of INT8
   convolutions, and the quantization of the network input), and the INT8 layer accounting
   (``engine.int8``: products, epilogues, reformats, Q/DQ kernels, placements that cost layers);
4. writes the ``int8-engine-layers`` section of docs/benchmarks.md.

Run: ``python -m benchmarks.int8_engine_layers [--cache-dir DIR] [--models resnet50,...]``
(keys: ``resnet50``, ``mobilenetv2``, ``efficientnetb0``, ``resnet50-torch``, ``distilbert-hf``);
``--render-only`` rewrites the section from the stored results.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.markdown_section import machine_line, write_section  # noqa: E402

#: key -> Keras application name.
MODELS = {"resnet50": "ResNet50", "mobilenetv2": "MobileNetV2", "efficientnetb0": "EfficientNetB0"}
#: key of benchmarks.model_suite -> name in the table (PyTorch and transformers exports).
SUITE_MODELS = {"resnet50-torch": "ResNet-50 (PyTorch)", "distilbert-hf": "DistilBERT (transformers)"}

#: Calibration samples per model (a benchmark of layer placement, not of accuracy).
CALIBRATION_SAMPLES = 32

_EXPORT_SCRIPT = """
import json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras
name, path = sys.argv[1], sys.argv[2]
keras.utils.set_random_seed(0)
model = getattr(keras.applications, name)(weights=None, classifier_activation=None)
model.save(path + ".partial.keras")
os.replace(path + ".partial.keras", path)
print(json.dumps({"input": model.inputs[0].name, "shape": [d or 1 for d in model.inputs[0].shape]}))
"""


def export(key: str, cache_dir: Path) -> tuple[Path, dict]:
    """The model's ``.keras`` file and its input (name, shape), from the cache or exported."""
    path = cache_dir / f"{key}.keras"
    meta_path = cache_dir / f"{key}.input.json"
    if not (path.exists() and meta_path.exists()):
        out = subprocess.run([sys.executable, "-c", _EXPORT_SCRIPT, MODELS[key], str(path)],
                             check=True, capture_output=True, text=True).stdout
        meta_path.write_text(out.strip().splitlines()[-1])
    return path, json.loads(meta_path.read_text())


def available_suite_models() -> list[str]:
    """The model_suite models this machine can export (PyTorch and transformers installed)."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return []
    return [key for key in SUITE_MODELS
            if key.endswith("-torch") or importlib.util.find_spec("transformers") is not None]


def export_suite_model(key: str, cache_dir: Path) -> Path:
    """The ONNX file of model_suite model ``key`` (exported into the cache if needed)."""
    import onnx

    from benchmarks import model_suite

    path = cache_dir / f"{key}.onnx"
    if not path.exists():
        onnx.save(model_suite.load(key, cache_dir), path)
    return path


def calibration_samples(model_path: Path, samples: int) -> dict[str, np.ndarray]:
    """Seeded samples for every input of an ONNX model: floats in ``[-1, 1)``, integer token ids
    in ``[0, 1000)``, integer masks (an input named ``*mask*``) all ones."""
    import onnx

    model = onnx.load(model_path, load_external_data=False)
    rng = np.random.default_rng(0)
    initializers = {init.name for init in model.graph.initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        shape = [samples, *[d.dim_value or 1 for d in tensor.shape.dim][1:]]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        if np.issubdtype(dtype, np.floating):
            feeds[value.name] = rng.uniform(-1, 1, shape).astype(dtype)
        elif "mask" in value.name:
            feeds[value.name] = np.ones(shape, dtype=dtype)
        else:
            feeds[value.name] = rng.integers(0, 1000, shape).astype(dtype)
    return feeds


def compile_model(model: Path, out: Path, precision: str, calib: Path | None) -> dict:
    """Run the command line; returns its report.json."""
    argv = [sys.executable, "-m", "trtcompile.cli", "compile", str(model), "-o", str(out),
            "--no-parity", "--no-progress", "-q", "--precision", precision]
    if calib is not None:
        argv += ["--calib-data", str(calib)]
    subprocess.run(argv, check=True)
    return json.loads((out / "report.json").read_text())


def engine_figures(report: dict) -> dict:
    """Compute layers, per precision, convolutions in INT8, quantizing kernels, from a report."""
    engine = report["engine"]
    layers = [layer for layer in engine["layers"] if layer["profile"] == 0 and layer["compute"]]
    convs = [layer for layer in layers if _runs_convolution(layer)]
    quantizers = [layer for layer in layers if layer["type"] == "kgen" and "Int8" in layer["datatypes"]]
    return {
        "compute_layers": engine["compute_layers"],
        "precisions": engine["compute_layer_precisions"],
        "conv_layers": len(convs),
        "int8_conv_layers": sum(layer["precision"] == "INT8" for layer in convs),
        "quantizing_kernels": len(quantizers),
        "qdq_nodes": sum(report["histogram"]["optimized"].get(op, 0)
                         for op in ("QuantizeLinear", "DequantizeLinear")),
        "problems": engine.get("layer_report_problems", []),
        "accounting": _accounting_figures(engine.get("int8")),
    }


def _accounting_figures(accounting: dict | None) -> dict | None:
    """The INT8 layer accounting's counts, layers per quantized node, and costly placements."""
    if not accounting:
        return None
    per_node: dict[int, int] = {}
    for record in accounting["layers"]:
        per_node[record["engine_layers"]] = per_node.get(record["engine_layers"], 0) + 1
    return {"quantized_layers": accounting["quantized_layers"], "classes": accounting["classes"],
            "layers_per_node": dict(sorted(per_node.items())),
            "costly_placements": [p["reason"] for p in accounting["placements"]
                                  if p["between_int8"]],
            "input_placements": sum(1 for p in accounting["placements"] if not p["between_int8"])}


def _runs_convolution(layer: dict) -> bool:
    return layer["type"] == "correlation" or (
        layer["type"] in ("gemm", "runtime_fusion") and "__gemm_from_conv1x1" in layer.get("notes", []))


def measure(key: str, cache_dir: Path) -> dict:
    calib = cache_dir / f"{key}.calib.npz"
    with tempfile.TemporaryDirectory() as work:
        if key in SUITE_MODELS:
            model = export_suite_model(key, cache_dir)
            fp32_report = compile_model(model, Path(work) / "fp32", "fp32", None)
            np.savez(calib, **calibration_samples(model, CALIBRATION_SAMPLES))
        else:
            model, _ = export(key, cache_dir)
            fp32_report = compile_model(model, Path(work) / "fp32", "fp32", None)
            # The lowered model's input (tf2onnx may rename the Keras input).
            lowered = Path(work) / "fp32" / "optimized.onnx"
            np.savez(calib, **calibration_samples(lowered, CALIBRATION_SAMPLES))
        fp32 = engine_figures(fp32_report)
        int8_report = compile_model(model, Path(work) / "int8", "int8", calib)
        int8 = engine_figures(int8_report)
        for precision, report in (("fp32", fp32_report), ("int8", int8_report)):
            (cache_dir / f"{key}.{precision}.report.json").write_text(json.dumps(report))
    return {"model": MODELS.get(key) or SUITE_MODELS[key], "fp32": fp32, "int8": int8}


def render(results: list[dict]) -> str:
    lines = [
        "## INT8 engines: compute layers against FP32",
        "",
        f"{machine_line().rstrip('.')}. Keras applications (`weights=None`, logits), the "
        "PyTorch ResNet-50 and the transformers DistilBERT (sequence 128) of "
        "benchmarks/model_suite.py with random weights, batch 1, "
        "`trtcompile compile MODEL --precision fp32|int8` with the default pipeline, "
        f"INT8 calibrated on {CALIBRATION_SAMPLES} seeded samples. *Convs in INT8*: convolution "
        "layers whose input and weights are Int8. *Quantizing kernels*: `kgen` layers writing "
        "Int8. Run `python -m benchmarks.int8_engine_layers`.",
        "",
        "| model | FP32 compute layers | INT8 compute layers | INT8 / FP16 / FP32 layers | "
        "convs in INT8 | quantizing kernels | INT8 - FP32 - quantizing | Q/DQ nodes |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for result in results:
        fp32, int8 = result["fp32"], result["int8"]
        p = int8["precisions"]
        rest = int8["compute_layers"] - fp32["compute_layers"] - int8["quantizing_kernels"]
        lines.append(
            f"| {result['model']} | {fp32['compute_layers']} | {int8['compute_layers']} | "
            f"{p.get('INT8', 0)} / {p.get('FP16', 0)} / {p.get('FP32', 0)} | "
            f"{int8['int8_conv_layers']} of {int8['conv_layers']} | {int8['quantizing_kernels']} | "
            f"{rest:+d} | {int8['qdq_nodes']} |")
    lines += [
        "",
        "Every convolution runs in INT8, and the INT8 engine still has more compute layers than "
        "the FP32 one. The reason is in the layer list: TensorRT-RTX 1.7 runs an INT8 "
        "convolution as the integer product only, writing Float, and a generated kernel after it "
        "(`MulAddRelu...MulMinMaxRoundCast`) applies the dequantizing scale, bias, BatchNorm, "
        "activation, the residual Add and the requantization for the next layer; an FP32 "
        "convolution keeps that epilogue in the convolution. The same holds on a chain of three "
        "3x3 convolutions for every compute capability the builder targets (SM86, SM89, SM120; "
        "SM75 has no INT8 convolution and runs them in FP16), with or without bias, activation, "
        "or a Q/DQ pair on the skip input of a residual Add. No Q/DQ placement that keeps the "
        "next convolution in INT8 removes these kernels, so the target *INT8 compute layers <= "
        "FP32* is not reachable with this builder: the INT8 engine is the FP32 engine plus one "
        "epilogue kernel per INT8 convolution, less the epilogues TensorRT shares (negative "
        "*INT8 - FP32 - quantizing*: the two convolutions of a projection block end in one "
        "Add kernel; EfficientNet-B0's SiLU and squeeze-excitation kernels of the FP32 engine "
        "are absorbed by the epilogues).",
    ]
    lines += render_accounting(results)
    return "\n".join(lines) + "\n"


def render_accounting(results: list[dict]) -> list[str]:
    """The INT8 layer accounting table and what it shows."""
    lines = [
        "",
        "### INT8 layer accounting",
        "",
        "`report.json`'s `engine.int8` (docs/precision.md): each compute layer of the INT8 engine "
        "classified as the *product* of a quantized layer, its *epilogue*, a *reformat*, a *Q/DQ "
        "kernel* (a quantization running alone) or *other* (float layers of the graph); the "
        "classes add up to the compute layers. *Layers per quantized layer*: how many quantized "
        "layers became 2, 3, ... engine layers (a product and its epilogues shared with other "
        "layers count for each). *Costly placements*: Q/DQ placements with a reformat or Q/DQ "
        "kernel between two INT8 layers.",
        "",
        "| model | quantized layers | products | epilogues | reformats | Q/DQ kernels | other | "
        "= compute layers | layers per quantized layer | costly placements |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for result in results:
        accounting = result["int8"].get("accounting")
        if not accounting:
            continue
        c = accounting["classes"]
        per_node = ", ".join(f"{count} x {layers}" for layers, count in
                             accounting["layers_per_node"].items())
        costly = "; ".join(accounting["costly_placements"]) or "none"
        lines.append(
            f"| {result['model']} | {accounting['quantized_layers']} | {c['product']} | "
            f"{c['epilogue']} | {c['reformat']} | {c['qdq']} | {c['other']} | "
            f"{sum(c.values())} | {per_node} | {costly} |")
    lines += [
        "",
        "No engine has a reformat or copy layer between two INT8 layers: TensorRT-RTX 1.7 folds "
        "layout changes, channel padding, Concat, Reshape/Transpose and Resize into the "
        "epilogues. Each quantized layer is one product and one epilogue (the two convolutions "
        "of a projection block share one epilogue); the other extra layer is the quantization of "
        "a network input that arrives in Float (the Keras models' runs in the input's layout "
        "transpose, counted as other). Fewer products than quantized layers: TensorRT fuses "
        "DistilBERT's Q, K and V projections into one GEMM per attention layer (each keeps its "
        "own epilogue), and computes one 1x1 squeeze-excitation expand convolution of "
        "EfficientNetB0 inside the epilogue of the reduce convolution (no layer of its own). "
        "The small graphs of tests/backend/int8_models.py show the same, and one placement "
        "that costs a layer: a QuantizeLinear after an AveragePool between two INT8 "
        "convolutions runs as a kernel of its own, because the AveragePool runs in Float; a "
        "second pair on the pool's input does not change that (the pool stays Float), and no "
        "placement that keeps the next convolution in INT8 removes it (the squeeze of a "
        "squeeze-excitation gate written as GlobalAveragePool does the same; Keras "
        "EfficientNetB0's squeezes are ReduceMean, which TensorRT computes with the quantization "
        "inside the depthwise convolution's epilogue, at no extra layer).",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache-dir", type=Path,
                        default=Path(os.environ.get("TMPDIR", "/tmp")) / "trtcompile-int8-bench")
    parser.add_argument("--models", default=",".join([*MODELS, *available_suite_models()]))
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args()
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    results_path = args.cache_dir / "results.json"
    if args.render_only:
        results = json.loads(results_path.read_text())
    else:
        results = []
        for key in args.models.split(","):
            results.append(measure(key, args.cache_dir))
            print(json.dumps(results[-1]), flush=True)
        results_path.write_text(json.dumps(results, indent=1))
    write_section("int8-engine-layers", render(results))


if __name__ == "__main__":
    main()
