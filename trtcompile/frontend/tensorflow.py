"""TensorFlow frontend: SavedModel folders, Keras ``.keras``/``.h5`` files and frozen ``.pb`` graphs.

:func:`load` lowers the model to ONNX with tf2onnx and returns a :class:`LoadedModel` carrying the
lowering record (the first row of the per-pass report) and a TensorFlow reference runner for parity.

The lowering itself lives in :mod:`trtcompile.frontend.tf_lowering` (see its docstring for the stages
and why each is done the way it is). By default it runs in a worker process: TensorFlow's peak memory
during freezing and grappler is then bounded by the worker's lifetime and returned to the system as
soon as the ONNX model exists, the compiler process never imports TensorFlow unless parity against
TensorFlow is requested, and a lowering killed for lack of memory is reported as such.

Loading is safe by default: ``.keras`` files are read in Keras safe mode (no arbitrary Python code).
A SavedModel, however, runs the TensorFlow ops it contains: load only SavedModels from trusted sources.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import onnx

from trtcompile import progress
from trtcompile.errors import InputError
from trtcompile.frontend.model import FrontendOptions, LoadedModel, LoweringRecord

#: Source kinds by file suffix (folders are SavedModels).
KIND_BY_SUFFIX = {".keras": "keras", ".h5": "h5", ".hdf5": "h5", ".pb": "frozen-pb"}


def source_kind(path: Path) -> str:
    """``savedmodel``, ``keras``, ``h5`` or ``frozen-pb``; InputError for anything else."""
    if path.is_dir():
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            return "savedmodel"
        raise InputError(f"{path} is a folder but not a TensorFlow SavedModel (no saved_model.pb)")
    kind = KIND_BY_SUFFIX.get(path.suffix.lower())
    if kind is None:
        raise InputError(f"{path} is not a TensorFlow model (expected a SavedModel folder, "
                         f".keras, .h5 or a frozen .pb)")
    if kind == "frozen-pb" and path.name == "saved_model.pb":
        raise InputError(f"{path} is the graph of a SavedModel: pass its folder {path.parent} instead")
    return kind


def load(path: str | Path, options: FrontendOptions | None = None, *, isolate: bool = True) -> LoadedModel:
    """Lower the TensorFlow model at ``path`` to ONNX.

    ``isolate`` runs the lowering in a worker process (the default; see the module docstring);
    ``isolate=False`` runs it in this process (faster when TensorFlow is already imported, as in tests).
    Raises :class:`InputError` for unusable input; nothing is written anywhere in either case.
    """
    options = options or FrontendOptions()
    path = Path(path)
    if not path.exists():
        raise InputError(f"model not found: {path}")
    kind = source_kind(path)
    if kind == "frozen-pb" and not options.outputs:
        raise InputError(f"frozen graph {path} needs --outputs (the names of its output tensors, "
                         f"e.g. --outputs logits:0)")
    if options.lowering not in ("faithful", "tf2onnx-optimized"):
        raise InputError(f"--lowering must be 'faithful' or 'tf2onnx-optimized', not '{options.lowering}'")

    start = time.perf_counter()
    if isolate:
        model, result = _lower_in_worker(path, kind, options)
    else:
        from trtcompile.frontend import tf_lowering

        model, result = tf_lowering.lower(path, kind, options)
    seconds = time.perf_counter() - start  # what the user waits for, worker start-up included

    from trtcompile.frontend.tf_lowering import TensorFlowReference

    record = LoweringRecord(
        tool=result.tool, mode=result.mode, source_kind=result.source_kind, source_ops=result.source_ops,
        onnx_nodes=result.onnx_nodes, seconds=seconds, peak_rss_mb=result.peak_rss_mb,
        note=result.note, cleaned=dict(result.cleaned), tables=result.tables)
    note = f"; {result.note}" if result.note else ""
    return LoadedModel(
        model=model, source_path=path, kind=kind, model_dir=None, lowering=record,
        reference=TensorFlowReference(path, kind, options, result.inputs, result.outputs),
        reference_name="tensorflow",
        description=f"TensorFlow {kind} {path.name}, lowered by {result.tool} ({result.mode}){note}",
    )


def _options_json(options: FrontendOptions) -> dict:
    data = asdict(options)
    data.pop("progress")  # the worker draws nothing; the parent shows the elapsed time
    data["input_shapes"] = {k: [int(d) for d in v] for k, v in options.input_shapes.items()}
    data["inputs_as_nchw"] = list(options.inputs_as_nchw)
    data["outputs"] = list(options.outputs)
    return data


def _lower_in_worker(path: Path, kind: str, options: FrontendOptions):
    """Run :func:`tf_lowering.worker_main` in a child process and collect its model and record."""
    from trtcompile.frontend.tf_lowering import LoweringResult

    work_dir = Path(tempfile.mkdtemp(prefix="trtcompile-lowering-"))
    try:
        request = work_dir / "request.json"
        request.write_text(json.dumps({
            "path": str(path.resolve()), "kind": kind, "options": _options_json(options),
            "out_dir": str(work_dir),
        }))
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        log_path = work_dir / "worker.log"
        # subprocess.run kills the worker if an interrupt (SIGINT, SIGTERM) unwinds the wait.
        with open(log_path, "wb") as log, \
                progress.stage(f"lowering {path.name} with tf2onnx", options.progress):
            completed = subprocess.run(
                [sys.executable, "-m", "trtcompile.frontend.tf_lowering", str(request)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
        error_file = work_dir / "error.json"
        if error_file.exists():
            raise InputError(json.loads(error_file.read_text())["message"])
        if completed.returncode != 0 or not (work_dir / "result.json").exists():
            if completed.returncode == -signal.SIGKILL:
                raise RuntimeError(f"lowering {path} was killed (SIGKILL), most likely for lack of memory")
            tail = log_path.read_text(errors="replace").strip().splitlines()[-15:]
            raise RuntimeError(f"lowering {path} failed in the TensorFlow worker (exit {completed.returncode}):\n"
                               + "\n".join(tail))
        result = LoweringResult.from_json((work_dir / "result.json").read_text())
        model = onnx.load(str(work_dir / "model.onnx"))  # external data, if any, is read in here
        return model, result
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
