"""Measure lowering Keras applications to ONNX: peak memory and time of the TensorFlow worker.

For each model (``weights=None``, nothing is downloaded) the script

1. builds it and saves it as a ``.keras`` file in a temporary folder (a separate process, not measured);
2. runs the frontend's worker, ``python -m trtcompile.frontend.tf_lowering REQUEST``, under
   ``/usr/bin/time -v`` and records the worker's *maximum resident set size* and wall-clock seconds,
   plus the worker's own timing of the lowering stages (``LoweringResult.seconds``: loading the
   ``.keras`` file, freezing, grappler, tf2onnx; TensorFlow's import excluded);
3. writes a table into docs/benchmarks.md (section ``frontend-lowering``).

Usage: ``python benchmarks/frontend_lowering.py [--models VGG19 ResNet50 ...] [--lowering faithful]``.
Models run one after another, never in parallel, so the figures are not disturbed by each other.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.keras_models import SAVE_KERAS_SCRIPT  # noqa: E402
from benchmarks.markdown_section import machine_line, write_section  # noqa: E402

MODELS = ["VGG19", "InceptionV3", "ResNet50", "ResNet152", "MobileNetV2"]

#: Child process that builds an application and saves it as a ``.keras`` file (not measured).
BUILD = SAVE_KERAS_SCRIPT


def time_v(command: list[str], env: dict) -> tuple[float, float, int, str]:
    """Run ``command`` under /usr/bin/time -v: (peak RSS MiB, wall seconds, exit code, output)."""
    completed = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True, env=env)
    text = completed.stderr
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text).group(1)
    seconds = 0.0
    for part in wall.split(":"):
        seconds = seconds * 60 + float(part)
    return rss_kb / 1024.0, seconds, completed.returncode, completed.stdout + text


def measure(name: str, lowering: str, work: Path, env: dict) -> dict:
    """Build ``name``, then lower it in the measured worker; returns one table row."""
    keras_file = work / f"{name}.keras"
    built = subprocess.run([sys.executable, "-c", BUILD, name, str(keras_file)], capture_output=True,
                           text=True, env=env, check=True)
    params = int(built.stdout.strip().splitlines()[-1])
    out_dir = work / f"{name}-out"
    out_dir.mkdir()
    request = work / f"{name}.json"
    options = {"signature": "serving_default", "input_shapes": {}, "inputs_as_nchw": [], "opset": None,
               "outputs": [], "lowering": lowering, "safe_mode": True}
    request.write_text(json.dumps({"path": str(keras_file), "kind": "keras", "options": options,
                                   "out_dir": str(out_dir)}))
    rss_mb, wall, code, output = time_v(
        [sys.executable, "-m", "trtcompile.frontend.tf_lowering", str(request)], env)
    if code != 0:
        raise RuntimeError(f"lowering {name} failed (exit {code}):\n{output[-3000:]}")
    result = json.loads((out_dir / "result.json").read_text())
    import onnx

    model = onnx.load(str(out_dir / "model.onnx"), load_external_data=False)
    transposes = sum(1 for node in model.graph.node if node.op_type == "Transpose")
    return {"model": name, "params": params, "peak_rss_mb": rss_mb, "wall_s": wall,
            "lowering_s": result["seconds"], "source_ops": result["source_ops"],
            "onnx_nodes": result["onnx_nodes"], "transposes": transposes,
            "hidden": result["hidden_weights"], "stages": result["stage_seconds"]}


def markdown(rows: list[dict], lowering: str) -> str:
    """The ``frontend-lowering`` section of docs/benchmarks.md."""
    lines = [
        "## Frontend: lowering Keras applications to ONNX",
        "",
        f"Written by `benchmarks/frontend_lowering.py` (lowering mode `{lowering}`). Each Keras "
        "application is built with `weights=None`, saved as `.keras`, then lowered by the frontend's "
        "worker process (`python -m trtcompile.frontend.tf_lowering`) run under `/usr/bin/time -v`: "
        "*peak RSS* is its maximum resident set size, *wall* its elapsed time including Python and "
        "TensorFlow start-up; *lowering* is the worker's own timing of loading the `.keras` file, "
        "freezing, grappler and tf2onnx. *TF ops* counts the frozen graph's operations other than "
        "Const/Identity/NoOp/Placeholder; *hidden* is how many large weights were kept out of grappler. "
        "One model at a time. " + machine_line(),
        "",
        "| model | parameters | peak RSS (MiB) | wall (s) | lowering (s) | TF ops | ONNX nodes | Transposes | hidden |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(f"| {row['model']} | {row['params']:,} | {row['peak_rss_mb']:,.0f} | {row['wall_s']:.1f} | "
                     f"{row['lowering_s']:.1f} | {row['source_ops']} | {row['onnx_nodes']} | "
                     f"{row['transposes']} | {row['hidden']} |")
    lines += [
        "",
        "For comparison, tf2onnx's own `from_keras` on VGG19 in one process exceeded 23 GB and was "
        "killed. Two causes, both measured: `convert_variables_to_constants_v2` rebuilds an eager "
        "function from the frozen graph after freezing (about 25 s and 5 GB of extra copies of the "
        "weights on VGG19), and grappler copies the whole frozen graph many times (9.5 GB peak on "
        "VGG19). The frontend freezes without the rebuild and keeps large MatMul/convolution weights "
        "out of grappler (see `trtcompile/frontend/tf_lowering/`).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure every model, one after another; write the docs section unless ``--no-write``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--lowering", default="faithful", choices=["faithful", "tf2onnx-optimized"])
    parser.add_argument("--no-write", action="store_true", help="print the table, leave docs alone")
    args = parser.parse_args(argv)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    rows = []
    with tempfile.TemporaryDirectory(prefix="frontend-lowering-") as work:
        for name in args.models:
            row = measure(name, args.lowering, Path(work), env)
            print(json.dumps(row), flush=True)
            rows.append(row)
    text = markdown(rows, args.lowering)
    print(text)
    if not args.no_write:
        write_section("frontend-lowering", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
