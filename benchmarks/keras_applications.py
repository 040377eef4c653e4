"""Compile Keras applications end to end with the real command line, and measure every stage.

For each network (Keras InceptionV3, ResNet50, MobileNetV2, VGG19; ``weights=None``,
``classifier_activation=None`` so the outputs are logits and parity compares numbers that vary, not a
near-uniform softmax) the script

1. builds the model and exports it with ``model.export(dir)`` as a TensorFlow SavedModel into a
   cache folder (reused when present; built in a child process so TensorFlow's memory goes with it);
2. runs ``trtcompile compile SAVEDMODEL -o OUT --no-progress`` in a child process under
   ``/usr/bin/time -v`` with the default pipeline and, for InceptionV3 and ResNet50, also with
   ``--pipeline fewest-layers``. The whole compile is measured: wall seconds, the peak resident set
   of its largest process (``/usr/bin/time``) and the peak of the summed resident sets of the
   compile's process tree (the command line and its lowering worker; sampled from ``/proc``);
3. compiles the ``lowered.onnx`` of the default run with ``--pipeline none`` (no trtcompile pass),
   so TensorRT alone and TensorRT after the passes are compared on the same faithful lowering;
4. reads every figure from ``report.json`` (lowering, layers after every pass run, parity of each
   comparison, engine compute layers, build seconds) and counts the Transposes left in
   ``optimized.onnx`` and where they are (reading a graph input, writing a graph output, or inside);
5. runs the lowered model on ONNX Runtime with the parity check's seeded input to give the scale of
   the logits next to the parity errors.

Run: ``python -m benchmarks.keras_applications [--cache-dir DIR] [--models inceptionv3,resnet50,...]``
(one model at a time; VGG19's lowering alone peaks near 6 GB). ``--render-only`` rewrites the section
from the stored results. Writes the ``keras-applications`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.markdown_section import machine_line, write_section  # noqa: E402

#: key -> (Keras application, pipelines compiled from the SavedModel). ``fewest-layers`` runs where
#: the layer targets are set (InceptionV3) or where a regression would show (ResNet50).
MODELS: dict[str, tuple[str, tuple[str, ...]]] = {
    "inceptionv3": ("InceptionV3", ("default", "fewest-layers")),
    "resnet50": ("ResNet50", ("default", "fewest-layers")),
    "mobilenetv2": ("MobileNetV2", ("default",)),
    "vgg19": ("VGG19", ("default",)),
}

#: A compile whose process tree holds more than this is a failure (the issue's memory bound).
MEMORY_LIMIT_MIB = 8 * 1024

_EXPORT_SCRIPT = """
import json, os, shutil, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras
name, path = sys.argv[1], sys.argv[2]
keras.utils.set_random_seed(0)
model = getattr(keras.applications, name)(weights=None, classifier_activation=None)
partial = path + ".partial"
shutil.rmtree(partial, ignore_errors=True)
model.export(partial, verbose=False)
with open(path + ".json", "w") as f:
    json.dump({"application": name, "parameters": int(model.count_params()),
               "input_shape": [d for d in model.inputs[0].shape]}, f)
os.replace(partial, path)
"""

_LOGIT_SCALE_SCRIPT = """
import json, sys
import numpy as np, onnx, onnxruntime as ort
from trtcompile import verify
path, shapes, seed = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
model = onnx.load(path)
feeds = verify.feed_data(model, seed=seed, input_shapes=shapes)
session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
names = [o.name for o in session.get_outputs()]
values = session.run(names, feeds)
print(json.dumps({n: {"max_abs": float(np.abs(v).max()), "std": float(v.std())}
                  for n, v in zip(names, values)}))
"""


# --------------------------------------------------------------------------------------------
# Running a command and measuring it
# --------------------------------------------------------------------------------------------


def _descendants(root: int) -> list[int]:
    """Process ids of ``root`` and everything it started (one scan of /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                # The command name may hold spaces and parentheses: the fields after the last ')'.
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def _rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


@dataclass
class Measured:
    """One measured command: exit code, wall seconds, peak memory, its output's tail."""

    exit_code: int
    wall_seconds: float
    peak_rss_mib: float  # the largest single process (/usr/bin/time -v)
    peak_tree_rss_mib: float  # the whole process tree at once (sampled every 0.2 s)
    output_tail: str


def run_measured(command: list[str], env: dict[str, str], log_path: Path) -> Measured:
    """Run ``command`` under ``/usr/bin/time -v``, sampling its process tree's memory meanwhile."""
    with open(log_path, "w") as log:
        process = subprocess.Popen(["/usr/bin/time", "-v", *command], stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT, env=env)
        peak = 0.0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.wait(0.2):
                peak = max(peak, sum(_rss_mib(pid) for pid in _descendants(process.pid)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = process.wait()
        done.set()
        sampler.join()
    text = log_path.read_text(errors="replace")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    seconds = 0.0
    for part in (wall.group(1).split(":") if wall else []):
        seconds = seconds * 60 + float(part)
    timing_start = text.rfind("Command being timed:")
    tail = text[:timing_start] if timing_start >= 0 else text
    return Measured(code, seconds, int(rss.group(1)) / 1024.0 if rss else 0.0, peak, tail[-4000:])


# --------------------------------------------------------------------------------------------
# Reading a compile's outputs
# --------------------------------------------------------------------------------------------


def transposes_left(model_path: Path) -> dict[str, int]:
    """Transposes of a model by place: reading a graph input, writing a graph output, inside."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    inputs = {i.name for i in model.graph.input}
    outputs = {o.name for o in model.graph.output}
    places: Counter[str] = Counter()
    for node in model.graph.node:
        if node.op_type != "Transpose":
            continue
        if node.input[0] in inputs:
            places["graph input"] += 1
        elif node.output[0] in outputs:
            places["graph output"] += 1
        else:
            places["internal"] += 1
    # Fused-layer bodies are plain ONNX: a Transpose there would be a layer TensorRT has to run too.
    places["in fused layers"] = sum(1 for f in model.functions for n in f.node if n.op_type == "Transpose")
    return {place: n for place, n in places.items() if n}


@dataclass
class PassRun:
    """One row of the report's per-pass table."""

    name: str
    iteration: int | None
    layers_before: int
    layers_after: int
    stats: dict[str, int]


@dataclass
class Compile:
    """Figures of one ``trtcompile compile`` run."""

    pipeline: str
    measured: Measured
    status: dict = field(default_factory=dict)
    pipeline_text: str = ""
    lowering: dict | None = None
    layers_input: int = 0
    layers_optimized: int = 0
    passes: list[PassRun] = field(default_factory=list)
    transposes: dict[str, int] = field(default_factory=dict)
    transpose_rejections: list[str] = field(default_factory=list)
    parity: list[dict] = field(default_factory=list)
    parity_shapes: list[dict] = field(default_factory=list)
    engine: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.measured.exit_code == 0 and bool(self.status.get("passed"))

    def pass_deltas(self) -> dict[str, int]:
        """Layers each pass removed over all its runs, in first-run order."""
        deltas: dict[str, int] = {}
        for run in self.passes:
            deltas[run.name] = deltas.get(run.name, 0) + run.layers_after - run.layers_before
        return deltas


def read_compile(pipeline: str, measured: Measured, out_dir: Path) -> Compile:
    """The figures of one compile from its ``report.json`` and ``optimized.onnx``."""
    result = Compile(pipeline=pipeline, measured=measured)
    report_path = out_dir / "report.json"
    if not report_path.exists():
        result.status = {"passed": False, "exit_code": measured.exit_code,
                         "error": "no report.json written"}
        return result
    report = json.loads(report_path.read_text())
    result.status = report["status"]
    result.pipeline_text = report.get("pipeline", "")
    result.lowering = report.get("lowering")
    result.layers_input = report["layers"]["input"]
    result.layers_optimized = report["layers"]["optimized"]
    result.passes = [PassRun(p["name"], p["iteration"], p["layers_before"], p["layers_after"],
                             dict(p["counts"])) for p in report["passes"]]
    result.transpose_rejections = sorted({r["reason"] for p in report["passes"]
                                          if p["name"] == "transpose-cancellation"
                                          for r in p["rejections"]})
    parity = report.get("parity") or {}
    result.parity_shapes = parity.get("input_shapes") or []
    for comparison in parity.get("comparisons") or []:
        outputs = comparison["outputs"]
        result.parity.append({
            "comparison": f"{comparison['candidate']} vs {comparison['reference']}",
            "passed": comparison["passed"],
            "max_abs": max((o["max_abs"] for o in outputs.values()), default=0.0),
            "max_rel": max((o["max_rel"] for o in outputs.values()), default=0.0),
            "atol": comparison["atol"], "rtol": comparison["rtol"]})
    engine = report.get("engine") or {}
    result.engine = {key: engine.get(key) for key in
                     ("built", "reason", "compute_layers", "compute_layer_types", "build_seconds",
                      "plan_bytes")}
    result.seconds = report.get("seconds") or {}
    if (out_dir / "optimized.onnx").exists():
        result.transposes = transposes_left(out_dir / "optimized.onnx")
    return result


# --------------------------------------------------------------------------------------------
# One network
# --------------------------------------------------------------------------------------------


@dataclass
class Network:
    """Every figure of one Keras application."""

    key: str
    application: str
    parameters: int
    export_seconds: float | None
    compiles: list[Compile]
    tensorrt_alone: Compile | None
    logit_scale: dict[str, dict[str, float]]

    def compile(self, pipeline: str) -> Compile | None:
        return next((c for c in self.compiles if c.pipeline == pipeline), None)


def cli_command() -> list[str]:
    """The installed command line, run by this Python."""
    return [sys.executable, "-c", "import sys; from trtcompile.cli import main; sys.exit(main())"]


def export_savedmodel(application: str, path: Path, env: dict[str, str]) -> tuple[dict, float | None]:
    """The SavedModel of a Keras application, from the cache or exported in a child process."""
    seconds = None
    if not (path / "saved_model.pb").exists() or not Path(f"{path}.json").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"exporting Keras {application} as a SavedModel ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run([sys.executable, "-c", _EXPORT_SCRIPT, application, str(path)], env=env,
                       check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
    return json.loads(Path(f"{path}.json").read_text()), seconds


def compile_measured(model: Path, out_dir: Path, pipeline: str, env: dict[str, str],
                     extra: tuple[str, ...] = ()) -> Compile:
    """``trtcompile compile MODEL -o OUT_DIR --pipeline PIPELINE``, measured, and its report."""
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    command = [*cli_command(), "compile", str(model), "-o", str(out_dir), "--no-progress",
               "--pipeline", pipeline, *extra]
    measured = run_measured(command, env, out_dir.parent / f"{out_dir.name}.log")
    return read_compile(pipeline, measured, out_dir)


def logit_scale(lowered: Path, shapes: dict, env: dict[str, str], seed: int = 0) -> dict:
    """Largest magnitude and spread of each output of ``lowered`` on the parity check's input."""
    completed = subprocess.run([sys.executable, "-c", _LOGIT_SCALE_SCRIPT, str(lowered),
                                json.dumps(shapes), str(seed)], env=env, capture_output=True,
                               text=True, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def measure(key: str, cache_dir: Path, env: dict[str, str]) -> Network:
    """Export one network, compile it with each of its pipelines, and build TensorRT alone."""
    application, pipelines = MODELS[key]
    savedmodel = cache_dir / f"{key}_savedmodel"
    info, export_seconds = export_savedmodel(application, savedmodel, env)
    runs = cache_dir / "runs"
    compiles = []
    for pipeline in pipelines:
        print(f"{key}: trtcompile compile --pipeline {pipeline} ...", file=sys.stderr, flush=True)
        compiles.append(compile_measured(savedmodel, runs / f"{key}-{pipeline}", pipeline, env))
        _print_compile(key, compiles[-1])
    default_out = runs / f"{key}-{pipelines[0]}"
    alone, scale = None, {}
    if (default_out / "lowered.onnx").exists():
        print(f"{key}: TensorRT alone on lowered.onnx ...", file=sys.stderr, flush=True)
        alone = compile_measured(default_out / "lowered.onnx", runs / f"{key}-none", "none", env,
                                 extra=("--no-parity",))
        _print_compile(key, alone)
        shapes = compiles[0].parity_shapes[0] if compiles[0].parity_shapes else {}
        scale = logit_scale(default_out / "lowered.onnx", shapes, env)
    return Network(key, application, info["parameters"], export_seconds, compiles, alone, scale)


def _print_compile(key: str, run: Compile) -> None:
    engine = run.engine.get("compute_layers")
    print(f"{key} [{run.pipeline}]: exit {run.measured.exit_code}, layers {run.layers_input} -> "
          f"{run.layers_optimized}, engine {engine}, transposes {run.transposes}, "
          f"wall {run.measured.wall_seconds:.1f} s, peak {run.measured.peak_rss_mib:.0f} MiB "
          f"(tree {run.measured.peak_tree_rss_mib:.0f} MiB)", file=sys.stderr, flush=True)
    if not run.ok:
        print(f"{key} [{run.pipeline}] FAILED: {run.status.get('error')}\n{run.measured.output_tail}",
              file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Stored results and the docs section
# --------------------------------------------------------------------------------------------


def save(network: Network, results_dir: Path) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{network.key}.json").write_text(json.dumps(asdict(network), indent=1))


def load(path: Path) -> Network:
    data = json.loads(path.read_text())

    def compile_from(raw: dict | None) -> Compile | None:
        if raw is None:
            return None
        raw = dict(raw, measured=Measured(**raw["measured"]),
                   passes=[PassRun(**p) for p in raw["passes"]])
        return Compile(**raw)

    data["compiles"] = [compile_from(c) for c in data["compiles"]]
    data["tensorrt_alone"] = compile_from(data["tensorrt_alone"])
    return Network(**data)


#: Short names of passes for the table headers.
_SHORT = {"dead-layer-elimination": "dead-layer", "fold-constants": "fold",
          "transpose-cancellation": "transpose", "conv-bias-activation-fusion": "conv-fusion",
          "horizontal-fusion": "horizontal", "average-pool-conv-fusion": "pool-conv",
          "concat-elimination": "concat"}


def _transpose_text(places: dict[str, int]) -> str:
    if not places:
        return "0"
    return f"{sum(places.values())} (" + ", ".join(f"{n} at {p}" if p.startswith("graph") else f"{n} {p}"
                                              for p, n in places.items()) + ")"


def _parity_text(run: Compile) -> str:
    if not run.parity:
        return "not checked"
    return "passed" if all(p["passed"] for p in run.parity) else "FAILED"


def _chain(run: Compile) -> str:
    """Layers after every pass run, fixed-point iterations marked ``#n``."""
    steps = [f"lowered {run.layers_input}"]
    for p in run.passes:
        label = p.name if p.iteration is None else f"{p.name} #{p.iteration}"
        steps.append(f"{label} {p.layers_after}")
    return " → ".join(steps)


def _counts(run: Compile) -> str:
    total: Counter[str] = Counter()
    for p in run.passes:
        total.update(p.counts)
    return ", ".join(f"{k}={v}" for k, v in sorted(total.items())) or "none"


def markdown(networks: list[Network]) -> str:
    default_pipeline, fewest_pipeline = "", ""
    for network in networks:
        for run in network.compiles:
            if run.pipeline == "default" and run.pipeline_text:
                default_pipeline = run.pipeline_text
            if run.pipeline == "fewest-layers" and run.pipeline_text:
                fewest_pipeline = run.pipeline_text
    pass_names: list[str] = []
    for network in networks:
        for run in network.compiles:
            for name in run.pass_deltas():
                if name not in pass_names:
                    pass_names.append(name)
    lines = [
        "## Keras applications, end to end through the command line",
        "",
        "Written by `python -m benchmarks.keras_applications`. Each Keras application is built with "
        "`weights=None, classifier_activation=None` (the outputs are logits, so parity compares "
        "values that vary; a softmax over random weights is nearly uniform) and exported with "
        "`model.export(dir)` as a TensorFlow SavedModel. Each row is one run of the command line, "
        "`trtcompile compile SAVEDMODEL -o OUT --no-progress --pipeline P`, in a child process under "
        "`/usr/bin/time -v`: the TensorFlow lowering (faithful: tf2onnx's own optimizers off), the "
        "passes, parity on ONNX Runtime against TensorFlow (seed 0, one batch of 1, atol 1e-4, "
        "rtol 1e-3) and the TensorRT engine build. *TensorRT alone* is "
        "`trtcompile compile OUT/lowered.onnx --pipeline none --no-parity`: the same faithful "
        "lowering built without any trtcompile pass. Engine figures are compute layers (all engine "
        "layers but stream markers and host shape calls). *Wall* and *peak RSS* cover the whole "
        "compile, TensorFlow start-up, lowering worker and reference run included: *peak RSS* is the "
        "largest process (`/usr/bin/time`), *tree* the most the command line and its worker held at "
        "once (sampled every 0.2 s). One model at a time. " + machine_line(),
        "",
        f"- `default`: `{default_pipeline}`",
        *([f"- `fewest-layers`: `{fewest_pipeline}`"] if fewest_pipeline else []),
        "",
        "| network | pipeline | lowering: TF ops → ONNX nodes (s) | optimized layers | Transposes left | "
        "parity | engine layers: TensorRT alone | trtcompile | build s | wall s | peak RSS MiB (tree) |",
        "|---|---|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for network in networks:
        alone = network.tensorrt_alone
        alone_layers = alone.engine.get("compute_layers") if alone and alone.ok else "failed"
        for run in network.compiles:
            low = run.lowering or {}
            lowering = (f"{low.get('source_ops')} → {low.get('onnx_nodes')} ({low.get('seconds', 0):.1f})"
                        if low else "n/a")
            engine = run.engine.get("compute_layers") if run.engine.get("built") else "not built"
            build = run.engine.get("build_seconds")
            lines.append(
                f"| {network.application} | {run.pipeline} | {lowering} | {run.layers_optimized} | "
                f"{_transpose_text(run.transposes)} | {_parity_text(run)} | {alone_layers} | {engine} | "
                f"{build:.2f} | {run.measured.wall_seconds:.1f} | "
                f"{run.measured.peak_rss_mib:,.0f} ({run.measured.peak_tree_rss_mib:,.0f}) |"
                if build is not None else
                f"| {network.application} | {run.pipeline} | {lowering} | {run.layers_optimized} | "
                f"{_transpose_text(run.transposes)} | {_parity_text(run)} | {alone_layers} | {engine} | "
                f"n/a | {run.measured.wall_seconds:.1f} | "
                f"{run.measured.peak_rss_mib:,.0f} ({run.measured.peak_tree_rss_mib:,.0f}) |")
    lines += [
        "",
        "Layers each pass removed (over all its runs) from the lowered ONNX nodes to the optimized "
        "layers (a fused-layer call counts as one); the columns add up from the first to the last:",
        "",
        "| network | pipeline | lowered | " + " | ".join(_SHORT.get(n, n) for n in pass_names)
        + " | optimized |",
        "|---|---|---:|" + "---:|" * len(pass_names) + "---:|",
    ]
    for network in networks:
        for run in network.compiles:
            deltas = run.pass_deltas()
            cells = [(f"{deltas[n]:+d}" if deltas.get(n) else ("0" if n in deltas else "")) for n in pass_names]
            lines.append(f"| {network.application} | {run.pipeline} | {run.layers_input} | "
                         + " | ".join(cells) + f" | {run.layers_optimized} |")
    lines += [
        "",
        "Parity of each comparison: the largest absolute error over the outputs, in brackets the "
        "same divided by the largest |logit| of the lowered model on the same seeded input (the "
        "error at the logits' own scale), and the largest elementwise relative error. With `atol` "
        "1e-4 a verdict is only as strong as the logits are large: random weights shrink the "
        "activations layer by layer, so the scaled error is the figure that shows agreement:",
        "",
        "| network | pipeline | largest logit | lowered vs tensorflow: max abs (scaled) | max rel | "
        "optimized vs lowered: max abs (scaled) | max rel | optimized vs tensorflow: max abs (scaled) "
        "| max rel |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for network in networks:
        scale = max((s["max_abs"] for s in network.logit_scale.values()), default=float("nan"))
        for run in network.compiles:
            by_name = {p["comparison"]: p for p in run.parity}
            cells = []
            for name in ("lowered vs tensorflow", "optimized vs lowered", "optimized vs tensorflow"):
                p = by_name.get(name)
                cells += ([f"{p['max_abs']:.2e} ({p['max_abs'] / scale:.1e})",
                           f"{p['max_rel']:.2e}" + ("" if p["passed"] else " FAILED")]
                          if p else ["n/a", "n/a"])
            lines.append(f"| {network.application} | {run.pipeline} | {scale:.3g} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "TensorRT alone keeps most of the faithful lowering's NHWC/NCHW Transposes as layout-copy "
        "layers (`kgen` in the per-type lists below); after `transpose-cancellation` only the one "
        "at the NHWC graph input is left. A Transpose reported *internal* is one a pass gave a "
        "reason to keep (listed below), e.g. VGG19's NHWC Flatten before its first Dense layer: the "
        "default pipeline leaves it to TensorRT, which absorbs an NHWC flatten into the gemm, while "
        "`transpose-cancellation{fold-matmul-weights=true}` folds it into the Dense weights and "
        "costs TensorRT a layout copy (VGG19: 25 -> 26 engine layers).",
        "",
        "Layers after every pass run, and what the passes did:",
        "",
    ]
    for network in networks:
        lines.append(f"- **{network.application}** ({network.parameters:,} parameters)")
        for run in network.compiles:
            lines.append(f"  - {run.pipeline}: {_chain(run)}")
            lines.append(f"    - counts: {_counts(run)}")
            types = run.engine.get("compute_layer_types") or {}
            if types:
                lines.append("    - engine layers by type: " + ", ".join(
                    f"{t} {n}" for t, n in sorted(types.items(), key=lambda item: -item[1])))
            if run.transpose_rejections:
                lines.append("    - Transposes left because: " + "; ".join(run.transpose_rejections))
            if not run.ok:
                lines.append(f"    - **failed** (exit {run.measured.exit_code}): {run.status.get('error')}")
        alone = network.tensorrt_alone
        if alone is not None:
            types = alone.engine.get("compute_layer_types") or {}
            lines.append(f"  - TensorRT alone on the lowered model: {alone.engine.get('compute_layers')} "
                         "compute layers (" + ", ".join(
                             f"{t} {n}" for t, n in sorted(types.items(), key=lambda item: -item[1]))
                         + f"), build {alone.engine.get('build_seconds') or 0:.2f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path,
                        default=Path(tempfile.gettempdir()) / "trtcompile-benchmark-models",
                        help="folder for the SavedModels, the compile outputs and the results")
    parser.add_argument("--models", default=",".join(MODELS),
                        help="comma-separated subset of: " + ", ".join(MODELS))
    parser.add_argument("--render-only", action="store_true",
                        help="write the section from the stored results, compile nothing")
    parser.add_argument("--no-write", action="store_true", help="print, do not update the docs")
    args = parser.parse_args(argv)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", POLYGRAPHY_USE_TENSORRT_RTX="1")
    results_dir = args.cache_dir / "results"
    keys = args.models.split(",")
    unknown = [k for k in keys if k not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    failed = False
    networks = []
    for key in keys:
        if args.render_only:
            networks.append(load(results_dir / f"{key}.json"))
        else:
            networks.append(measure(key, args.cache_dir, env))
            save(networks[-1], results_dir)
        network = networks[-1]
        runs = [*network.compiles, *([network.tensorrt_alone] if network.tensorrt_alone else [])]
        for run in runs:
            if not run.ok or run.measured.peak_tree_rss_mib > MEMORY_LIMIT_MIB:
                failed = True
    text = markdown(networks)
    print(text)
    if not args.no_write:
        write_section("keras-applications", text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
